"""rescore.py: the logistic model between the summed vector and the threshold."""

import json

import numpy as np
import pytest
import torch

from mlcnn_core import cli
from mlcnn_core.modelfile import new_model, save_model
from mlcnn_core.predict import PredictConfig, Predictor, final_scores, rescore_examples, soft_final_scores
from mlcnn_core.rescore import FEATURES, fit_rescore, label_features

WEIGHTS = (0.9, 0.9, 4.6, 1.7, -7.0)


def test_features_of_a_small_sure_drawing_and_a_large_vague_one():
    maps = torch.zeros(1, 2, 6, 6)
    maps[0, 0, 1, 1] = 1.0                  # one position, fully sure
    maps[0, 1, 2:6, 2:6] = 0.5              # sixteen positions, half sure
    sums = maps.sum(dim=(2, 3))
    f = label_features(maps, sums)[0]
    assert f.shape == (2, len(FEATURES))
    assert f[0, 0] == pytest.approx(np.log(2.0)) and f[1, 0] == pytest.approx(np.log(9.0))
    assert f[0, 1] == 1.0 and f[1, 1] == 0.5
    assert f[0, 2] == pytest.approx(1 / 4) and f[1, 2] == pytest.approx(0.5)   # 3×3 mean at the best spot
    assert f[0, 3] == pytest.approx(1 / 8) and f[1, 3] == 1.0


def test_fit_learns_which_feature_separates_true_from_false():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2000, len(FEATURES)))
    y = x[:, 1] + 0.05 * rng.standard_normal(2000) > 0.6
    w = fit_rescore(x, y)
    p = 1 / (1 + np.exp(-(x @ np.array(w[:-1]) + w[-1])))
    assert ((p > 0.5) == y).mean() > 0.95
    assert abs(w[1]) > 5 * max(abs(w[0]), abs(w[2]), abs(w[3]))


def test_fit_refuses_candidates_of_one_kind():
    with pytest.raises(ValueError, match="both kinds"):
        fit_rescore(np.ones((10, len(FEATURES))), np.zeros(10, bool))


def test_rescored_scores_keep_pruned_labels_at_zero_and_lie_in_0_1():
    torch.manual_seed(0)
    raw = 3 * torch.randn(2, 5, 4, 6)
    summed = final_scores(raw, PredictConfig(keep_ratio=1.0, multiscale=False))[0]
    scores = final_scores(raw, PredictConfig(keep_ratio=1.0, multiscale=False, rescore=WEIGHTS))[0]
    assert torch.equal(scores == 0, summed == 0)
    assert ((scores[summed > 0] > 0) & (scores[summed > 0] < 1)).all()


def test_rescoring_on_the_sum_alone_ranks_like_the_sum():
    torch.manual_seed(1)
    raw = 3 * torch.randn(1, 6, 5, 5)
    cfg = PredictConfig(keep_ratio=0.5, multiscale=False)
    summed = final_scores(raw, cfg)[0][0]
    rescored = final_scores(raw, PredictConfig(keep_ratio=0.5, multiscale=False, rescore=(1, 0, 0, 0, 0)))[0][0]
    alive = summed > 0
    assert torch.equal(summed[alive].argsort(), rescored[alive].argsort())


def test_soft_rescored_scores_follow_the_hard_ones_and_are_differentiable():
    torch.manual_seed(2)
    raw = (3 * torch.randn(2, 6, 5, 7)).requires_grad_(True)
    cfg = PredictConfig(keep_ratio=0.5, multiscale=False, rescore=WEIGHTS)
    hard = final_scores(raw.detach(), cfg)[0]
    soft = soft_final_scores(raw, cfg, sharpness=2000.0)
    alive = hard > 0
    assert torch.allclose(soft[alive], hard[alive], atol=0.02)
    soft.sum().backward()
    assert raw.grad.abs().sum() > 0


def test_examples_are_the_labels_that_survive_pruning():
    raw = torch.full((1, 3, 2, 2), -5.0)
    raw[0, 0, 0, :] = 5.0
    raw[0, 1, 1, :] = 5.0
    truth = np.array([[True, False, True]])
    features, labels = rescore_examples(raw, truth, PredictConfig(keep_ratio=1.0, multiscale=False))
    assert features.shape == (2, len(FEATURES)) and labels.tolist() == [True, False]


@pytest.mark.parametrize("bad", [{"rescore": [1.0, 2.0]}, {"rescore": WEIGHTS, "scores": "raw"},
                                 {"rescore": [1, 2, 3, 4, float("nan")]}])
def test_rescore_settings_are_validated(bad):
    with pytest.raises(ValueError):
        PredictConfig.from_dict(bad)


def test_rescore_round_trips_through_the_card():
    cfg = PredictConfig(keep_ratio=0.5, rescore=WEIGHTS)
    again = PredictConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and PredictConfig.from_dict(PredictConfig().to_dict()).rescore is None


def test_summed_flag_gives_the_paper_vector_with_its_own_threshold(tmp_path):
    model = new_model("tiny", labels=["a", "b", "c"], name="r")
    model.card["prediction"] = PredictConfig(keep_ratio=0.5, rescore=WEIGHTS).to_dict()
    model.card["threshold"] = {"kind": "global", "bias": 0.5, "weights": [], "at_least_one": True}
    model.card["summed_threshold"] = {"kind": "global", "bias": 3.0, "weights": [], "at_least_one": True}
    path = save_model(model, tmp_path / "r.safetensors")
    args = cli.build_parser().parse_args(["predict", "--model", str(path), "--summed", "x.jpg"])
    summed = Predictor(cli._load_for_prediction(args))
    assert summed.config.rescore is None and summed.threshold.bias == 3.0
    args = cli.build_parser().parse_args(["predict", "--model", str(path), "x.jpg"])
    rescored = Predictor(cli._load_for_prediction(args))
    assert rescored.config.rescore == WEIGHTS and rescored.threshold.bias == 0.5
    rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    assert float(rescored.predict_array(rgb).scores.max()) <= 1.0


def test_summed_flag_without_a_summed_threshold_is_refused(tmp_path):
    model = new_model("tiny", labels=["a", "b"], name="r")
    model.card["prediction"] = PredictConfig(rescore=WEIGHTS).to_dict()
    path = save_model(model, tmp_path / "r.safetensors")
    args = cli.build_parser().parse_args(["predict", "--model", str(path), "--summed", "x.jpg"])
    with pytest.raises(SystemExit, match="summed_threshold"):
        cli._load_for_prediction(args)


def test_the_app_shows_rescored_scores_as_they_are_and_sums_as_shares():
    from mlcnn_core.tag_rules import display_confidences

    assert display_confidences({"a": 0.9, "b": 0.3}, rescored=True) == {"a": 0.9, "b": 0.3}
    shares = display_confidences({"a": 6.0, "b": 2.0, "c": -1.0}, rescored=False)
    assert shares == {"a": 0.75, "b": 0.25, "c": 0.0}
