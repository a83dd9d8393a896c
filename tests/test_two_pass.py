"""A reading of two passes: the image read again at a second size, rescored on both passes' maps."""

import copy
import json

import numpy as np
import pytest
import torch
from shapes import make_dataset

from mlcnn_core import cli
from mlcnn_core.data import Sample
from mlcnn_core.evaluate import evaluate
from mlcnn_core.modelfile import ModelFileError, add_labels, load_model, new_model, save_model
from mlcnn_core.newlabels import fit_new_rows
from mlcnn_core.predict import PredictConfig, Predictor, card_reading, final_scores, soft_final_scores
from mlcnn_core.rescore import FEATURES

ONE = (0.9, 0.9, 4.6, 1.7, -7.0)
TWO = (0.9, 0.9, 4.6, 1.7, 0.5, 0.5, 2.0, 1.0, -7.0)


def _threshold(bias: float) -> dict:
    return {"kind": "global", "bias": bias, "weights": [], "at_least_one": True}


def _two_pass_model(labels=("a", "b", "c")):
    torch.manual_seed(0)
    model = new_model("tiny", labels=list(labels), name="two")
    model.card["prediction"] = PredictConfig(keep_ratio=0.5, short_side=96, second_short_side=64,
                                             rescore=TWO).to_dict()
    model.card["threshold"] = _threshold(0.4)
    model.card["single_pass"] = {"rescore": list(ONE), "threshold": _threshold(0.3)}
    model.card["summed_threshold"] = _threshold(3.0)
    return model


@pytest.mark.parametrize("bad", [{"second_short_side": 64},                              # no rescoring
                                 {"second_short_side": 64, "rescore": ONE},              # one pass's weights
                                 {"second_short_side": 32, "rescore": TWO},              # too small
                                 {"rescore": TWO}])                                      # two passes' weights
def test_two_pass_settings_are_validated(bad):
    with pytest.raises(ValueError):
        PredictConfig.from_dict(bad)


def test_two_pass_settings_round_trip_through_the_card():
    cfg = PredictConfig(short_side=288, second_short_side=248, rescore=TWO)
    again = PredictConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.passes == [288, 248]
    assert PredictConfig.from_dict({}).passes == [256] and PredictConfig().second_short_side is None


def test_a_label_alive_in_either_pass_is_scored_on_both():
    torch.manual_seed(0)
    first, second = torch.randn(2, 3, 5, 6) * 3, torch.randn(2, 3, 4, 4) * 3
    cfg = PredictConfig(keep_ratio=1.0, second_short_side=128, rescore=(*ONE[:-1], 0.0, 0.0, 0.0, 0.0, ONE[-1]))
    scores, maps, winner = final_scores(first, cfg, second)
    one, one_maps, one_winner = final_scores(first, PredictConfig(keep_ratio=1.0, rescore=ONE))
    # the maps and winners are the first pass's; with the second pass's weights at 0 a label alive in
    # the first pass gets the one-pass score
    assert torch.equal(maps, one_maps) and torch.equal(winner, one_winner)
    alive_first = one > 0
    assert torch.allclose(scores[alive_first], one[alive_first])
    alive_second = final_scores(second, PredictConfig(keep_ratio=1.0, rescore=ONE))[0] > 0
    assert torch.all((scores > 0) == (alive_first | alive_second))
    assert torch.all((scores >= 0) & (scores < 1))


def test_the_passes_given_must_match_the_reading():
    first, second = torch.randn(1, 3, 5, 6), torch.randn(1, 3, 4, 4)
    two = PredictConfig(second_short_side=128, rescore=TWO)
    with pytest.raises(ValueError, match="two passes"):
        final_scores(first, two)
    with pytest.raises(ValueError, match="two passes"):
        final_scores(first, PredictConfig(rescore=ONE), second)
    with pytest.raises(ValueError, match="two passes"):
        soft_final_scores(first, two)


def test_soft_two_pass_scores_follow_the_hard_ones_and_are_differentiable():
    torch.manual_seed(1)
    first = (torch.randn(4, 3, 5, 6) * 4).requires_grad_(True)
    second = (torch.randn(4, 3, 3, 4) * 4).requires_grad_(True)
    cfg = PredictConfig(keep_ratio=0.5, second_short_side=128, rescore=TWO)
    soft = soft_final_scores(first, cfg, sharpness=200.0, second=second)
    soft.sum().backward()
    assert first.grad is not None and second.grad is not None and second.grad.abs().sum() > 0
    hard = final_scores(first.detach(), cfg, second.detach())[0]
    alive = hard > 0
    assert torch.allclose(soft.detach()[alive], hard[alive], atol=0.05)


def test_card_readings_one_flag_away():
    card = _two_pass_model().card
    one = card_reading(card, single_pass=True)
    assert one["prediction"]["second_short_side"] is None and tuple(one["prediction"]["rescore"]) == ONE
    assert one["threshold"]["bias"] == 0.3
    summed = card_reading(card, summed=True)
    assert summed["prediction"]["second_short_side"] is None and summed["prediction"]["rescore"] is None
    assert summed["threshold"]["bias"] == 3.0
    assert card_reading(card) == card | {"prediction": PredictConfig.from_dict(card["prediction"]).to_dict()}
    assert card["prediction"]["second_short_side"] == 64  # the card itself is left as it was
    no_kept = {k: v for k, v in card.items() if k != "single_pass"}
    with pytest.raises(ValueError, match="single_pass"):
        card_reading(no_kept, single_pass=True)
    one_pass = card_reading(card, single_pass=True)
    assert card_reading(one_pass, single_pass=True) == one_pass  # a one-pass card has nothing to drop


def test_single_pass_flag_and_a_card_without_its_one_pass_reading(tmp_path):
    model = _two_pass_model()
    path = save_model(model, tmp_path / "two.safetensors")
    args = cli.build_parser().parse_args(["predict", "--model", str(path), "--single-pass", "x.jpg"])
    one = Predictor(cli._load_for_prediction(args))
    assert one.config.passes == [96] and one.config.rescore == ONE and one.threshold.bias == 0.3
    args = cli.build_parser().parse_args(["predict", "--model", str(path), "x.jpg"])
    two = Predictor(cli._load_for_prediction(args))
    assert two.config.passes == [96, 64] and two.threshold.bias == 0.4
    del model.card["single_pass"]
    bare = save_model(model, tmp_path / "bare.safetensors")
    args = cli.build_parser().parse_args(["predict", "--model", str(bare), "--single-pass", "x.jpg"])
    with pytest.raises(SystemExit, match="single_pass"):
        cli._load_for_prediction(args)


@pytest.mark.parametrize("edit", [lambda kept: kept.update(rescore=[1.0, 2.0]),
                                  lambda kept: kept.update(threshold={"kind": "linear", "weights": [1.0], "bias": 0}),
                                  lambda kept: kept.pop("threshold")])
def test_a_tampered_one_pass_reading_is_refused_on_load(tmp_path, edit):
    from test_modelfile import rewrite_card

    path = save_model(_two_pass_model(), tmp_path / "two.safetensors")
    assert load_model(path).card["single_pass"]["threshold"]["bias"] == 0.3
    bad = rewrite_card(path, tmp_path / "bad.safetensors", lambda card, header: edit(card["single_pass"]))
    with pytest.raises(ModelFileError, match="bad model card"):
        load_model(bad)


def test_two_pass_predictions_keep_the_first_pass_maps_and_cost_both_passes(tmp_path):
    model = _two_pass_model()
    two = Predictor(model, device="cpu", bf16=False)
    one = Predictor(model, device="cpu", bf16=False,
                    config=PredictConfig.from_dict(card_reading(model.card, single_pass=True)["prediction"]))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (120, 200, 3), dtype=np.uint8), rng.integers(0, 255, (150, 100, 3), dtype=np.uint8)]
    for p2, p1 in zip(two.predict_arrays(images), one.predict_arrays(images), strict=True):
        assert np.array_equal(p2.maps, p1.maps) and p2.peaks == p1.peaks
        assert p2.scores.shape == (3,) and np.all((p2.scores >= 0) & (p2.scores < 1))
    assert two.predict_arrays(images)[0].scores == pytest.approx(two.predict_array(images[0]).scores, abs=1e-5)
    from PIL import Image

    samples = []
    for i, rgb in enumerate(images):
        Image.fromarray(rgb).save(tmp_path / f"{i}.png")
        samples.append(Sample(str(tmp_path / f"{i}.png"), ("a",)))
    both = evaluate(model, samples, device="cpu", bf16=False, baseline=True)
    alone = copy.copy(model)
    alone.card = card_reading(model.card, single_pass=True)
    single = evaluate(alone, samples, device="cpu", bf16=False, baseline=True)
    assert both["single_pass"]["passes"] == [96, 64] and single["single_pass"]["passes"] == [96]
    cost2, cost1 = both["single_pass"]["cost"]["gflops_per_image"], single["single_pass"]["cost"]["gflops_per_image"]
    assert 1.2 < cost2 / cost1 < 1.8   # a 64 px pass costs about (64/96)² of a 96 px one
    assert both["cost_ratio"]["flops"] == pytest.approx(single["cost_ratio"]["flops"] * cost1 / cost2)


def test_new_label_rows_are_fitted_through_both_passes(tmp_path):
    items = make_dataset(tmp_path / "new", 24, seed=3)
    model = _two_pass_model(labels=("red-square", "blue-circle", "green-triangle"))
    model.card["single_pass"]["threshold"] = {"kind": "linear", "bias": 0.2, "weights": [0.1, 0.1, 0.1],
                                              "at_least_one": True}
    add_labels(model, ["zz-red"])
    assert len(model.card["single_pass"]["threshold"]["weights"]) == 4
    old = model.net.head.fcs[-1].weight.detach().clone()
    samples = [Sample(str(p), tuple(labels + (["zz-red"] if "red-square" in labels else []))) for p, labels in items]
    report = fit_new_rows(model, samples, ["zz-red"], steps=20)
    assert set(report) == {"zz-red"} and report["zz-red"]["images"] > 0
    new = model.net.head.fcs[-1].weight.detach()
    assert torch.equal(new[:3], old[:3]) and not torch.equal(new[3], old[3])
    assert Predictor(model, device="cpu").predict_file(items[0][0]).scores.shape == (4,)


def test_fine_tuning_a_two_pass_model_keeps_its_reading_and_drops_stale_thresholds(tmp_path):
    parent = save_model(_two_pass_model(labels=("red-square", "blue-circle", "green-triangle")),
                        tmp_path / "parent.safetensors")
    make_dataset(tmp_path / "train", 24, seed=4)
    make_dataset(tmp_path / "val", 32, seed=5)
    out = tmp_path / "child.safetensors"
    assert cli.main(["train", "--init", str(parent), "--data", str(tmp_path / "train"), "--val-data",
                     str(tmp_path / "val"), "--out", str(out), "--epochs", "1", "--workers", "0"]) == 0
    card = load_model(out).card
    assert card["prediction"]["second_short_side"] == 64 and len(card["prediction"]["rescore"]) == 2 * len(FEATURES) + 1
    # its threshold was refitted for the new weights; the parent's other readings' were not
    assert "single_pass" not in card and "summed_threshold" not in card
