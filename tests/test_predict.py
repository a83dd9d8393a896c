import numpy as np
import pytest
import torch

from mlcnn_core.metrics import average_precision, mean_average_precision, set_metrics
from mlcnn_core.modelfile import new_model
from mlcnn_core.predict import (
    PredictConfig,
    Predictor,
    final_scores,
    map_peaks,
    multiscale_maps,
    prune_and_sum,
    soft_final_scores,
)
from mlcnn_core.threshold import Threshold, best_image_threshold, fit_global, fit_linear


def test_multiscale_stride_one_is_mean_of_same_size_average_pools():
    torch.manual_seed(0)
    conf = torch.rand(1, 2, 7, 9)
    out = multiscale_maps(conf, PredictConfig())
    assert out.shape == conf.shape
    # centre position: the 3/5/7 windows fit inside, so it is the plain mean of the three windows
    c = conf[0, 0]
    expected = np.mean([c[3 - r:4 + r, 4 - r:5 + r].mean().item() for r in (1, 2, 3)])
    assert out[0, 0, 3, 4].item() == pytest.approx(expected, rel=1e-5)
    # corner: padding is not counted
    corner = np.mean([c[:1 + r, :1 + r].mean().item() for r in (1, 2, 3)])
    assert out[0, 0, 0, 0].item() == pytest.approx(corner, rel=1e-5)


def test_multiscale_kernel_stride_and_off():
    conf = torch.rand(1, 3, 7, 7)
    kernel = multiscale_maps(conf, PredictConfig(pool_stride="kernel"))
    assert kernel.shape == conf.shape
    assert torch.equal(multiscale_maps(conf, PredictConfig(multiscale=False)), conf)
    uniform = torch.ones(1, 1, 7, 7)
    assert torch.allclose(multiscale_maps(uniform, PredictConfig(pool_stride="kernel")), uniform)


def test_prune_keeps_the_best_label_per_position_and_sums():
    maps = torch.tensor([[[[0.9, 0.1], [0.2, 0.5]],
                          [[0.05, 0.8], [0.7, 0.4]],
                          [[0.05, 0.1], [0.1, 0.1]]]])
    scores, winner = prune_and_sum(maps)
    assert winner.tolist() == [[[0, 1], [1, 0]]]
    assert torch.allclose(scores, torch.tensor([[0.9 + 0.5, 0.8 + 0.7, 0.0]]))


def test_keep_ratio_keeps_labels_close_to_the_best_one():
    maps = torch.tensor([[[[0.5, 0.9]],
                          [[0.4, 0.05]],
                          [[0.1, 0.05]]]])
    scores, winner = prune_and_sum(maps, keep_ratio=0.5)
    assert winner.tolist() == [[[0, 0]]]
    # first position: 0.4 >= 0.5 * 0.5 survives beside the best; 0.1 does not; second: only 0.9
    assert torch.allclose(scores, torch.tensor([[0.5 + 0.9, 0.4, 0.0]]))
    assert torch.equal(prune_and_sum(maps, keep_ratio=1.0)[0], prune_and_sum(maps)[0])
    logits = maps.log()  # raw outputs: the same ratio is a difference of logs
    raw_scores, _ = prune_and_sum(logits, keep_ratio=0.5, log_domain=True)
    assert torch.allclose(raw_scores, (logits * torch.tensor([[[[1, 1]], [[1, 0]], [[0, 0]]]])).sum(dim=(2, 3)))


def test_keep_ratio_is_validated_and_defaults_to_the_paper():
    assert PredictConfig.from_dict({}).keep_ratio == 1.0
    assert PredictConfig.from_dict({"keep_ratio": 0.5}).to_dict()["keep_ratio"] == 0.5
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError):
            PredictConfig.from_dict({"keep_ratio": bad})


@pytest.mark.parametrize("scores,keep_ratio,multiscale", [("softmax", 0.5, False), ("softmax", 0.25, True),
                                                         ("raw", 0.5, False)])
def test_soft_scores_follow_the_hard_pruning_and_are_differentiable(scores, keep_ratio, multiscale):
    torch.manual_seed(0)
    raw = (3 * torch.randn(2, 6, 5, 7)).requires_grad_(True)
    cfg = PredictConfig(scores=scores, keep_ratio=keep_ratio, multiscale=multiscale)
    hard = final_scores(raw.detach(), cfg)[0]
    soft = soft_final_scores(raw, cfg, sharpness=2000.0)
    assert torch.allclose(soft, hard, atol=0.05 * float(hard.abs().max()))
    soft.sum().backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0


def test_peaks_in_original_pixels():
    maps = np.zeros((1, 4, 8), np.float32)
    maps[0, 3, 6] = 1.0
    assert map_peaks(maps, (800, 400)) == [(650, 350)]
    assert map_peaks(maps, (800, 400), refine=False) == [(650, 350)]


def test_refined_peaks_fall_between_cells():
    maps = np.zeros((2, 4, 8), np.float32)
    maps[0, 1, 2] = maps[0, 1, 3] = 1.0        # an object straddling two cells
    maps[1, 2, 5], maps[1, 2, 6] = 3.0, 1.0   # mostly in one cell, a little in the next
    assert map_peaks(maps, (800, 400), refine=False) == [(250, 150), (550, 250)]
    assert map_peaks(maps, (800, 400)) == [(300, 150), (575, 250)]


def test_threshold_never_selects_pruned_labels_and_keeps_one():
    t = Threshold(kind="global", bias=-1.0)
    assert t.select(np.array([[0.0, 2.0, 0.0]])).tolist() == [[False, True, False]]
    t = Threshold(kind="global", bias=10.0, at_least_one=True)
    assert t.select(np.array([[0.0, 2.0, 3.0]])).tolist() == [[False, False, True]]
    t = Threshold(kind="linear", weights=[0.5, 0.0], bias=0.0)
    assert t.select(np.array([[4.0, 1.0], [1.0, 1.0]])).tolist() == [[True, False], [True, True]]


def test_best_image_threshold_guard_and_value():
    scores = np.array([5.0, 3.0, 1.0, 0.0])
    truth = np.array([True, True, False, False])
    t = best_image_threshold(scores, truth)
    assert 1.0 < t < 3.0
    assert best_image_threshold(scores, np.array([False, False, False, True])) is None


def test_linear_fit_learns_a_relative_threshold():
    rng = np.random.default_rng(0)
    scores, truth = [], []
    for _ in range(300):
        scale = rng.uniform(1, 50)
        s = np.zeros(6)
        k = rng.integers(1, 3)
        true = rng.choice(6, k, replace=False)
        s[true] = scale * rng.uniform(0.6, 1.0, k)
        noise = rng.choice([j for j in range(6) if j not in true], 2, replace=False)
        s[noise] = scale * rng.uniform(0.0, 0.2, 2)
        scores.append(s)
        truth.append(np.isin(np.arange(6), true))
    scores, truth = np.array(scores), np.array(truth)
    linear = fit_linear(scores, truth)
    acc_linear = set_metrics(linear.select(scores), truth)["accuracy"]
    acc_global = set_metrics(fit_global(scores, truth).select(scores), truth)["accuracy"]
    assert linear.kind == "linear" and acc_linear > 0.85 and acc_linear > acc_global + 0.05


def test_global_fit_judges_cuts_with_the_at_least_one_rule_it_will_be_used_with():
    # each image's true label is its best; a low cut also keeps image 0's false label, a high one
    # empties image 1 unless the best label is kept
    scores = np.array([[5.0, 3.0], [1.0, 2.0]])
    truth = np.array([[True, False], [False, True]])
    plain = fit_global(scores, truth)
    assert set_metrics(plain.select(scores), truth)["accuracy"] == 0.75
    kept = fit_global(scores, truth, at_least_one=True)
    assert kept.at_least_one and kept.bias >= 3.0
    assert set_metrics(kept.select(scores), truth)["accuracy"] == 1.0


def test_section_4_1_metrics_by_hand():
    truth = np.array([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool)
    m = set_metrics(pred, truth)
    assert m["precision"] == pytest.approx((1 / 2 + 1 + 0) / 3)       # empty prediction counts 0
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["accuracy"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert m["empty_predictions"] == 1


def test_average_precision_by_hand():
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0], bool)) == pytest.approx(
        (1 + 2 / 3) / 2)
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert mean_average_precision(scores, np.eye(2, dtype=bool)) == 1.0


def test_predictor_outputs_for_any_aspect_ratio():
    torch.manual_seed(0)
    model = new_model("tiny", labels=["a", "b", "c"])
    predictor = Predictor(model, device="cpu", bf16=False)
    rgb = np.random.default_rng(0).integers(0, 255, (120, 300, 3), dtype=np.uint8)
    p = predictor.predict_array(rgb)
    assert p.image_size == (300, 120)
    assert p.maps.shape[0] == 3 and p.winner.shape == p.maps.shape[1:]
    # softmax maps: a distribution over labels at each position, pooled
    assert np.allclose(p.maps.sum(axis=0), 1.0, atol=1e-4)
    assert set(p.confidences) == set(p.peaks) and set(p.labels) <= set(p.confidences)
    assert sum(p.confidences.values()) == pytest.approx(float(p.maps.max(axis=0).sum()), rel=1e-4)
    assert all(0 <= x < 300 and 0 <= y < 120 for x, y in p.peaks.values())
    row = p.to_json("x.jpg")
    assert set(row) == {"image", "labels", "confidences", "peaks"}
    # batching same-sized images gives the same result as one by one
    batch = predictor.predict_arrays([rgb, rgb[:, ::-1].copy(), rgb[:100]])
    assert batch[0].confidences == pytest.approx(p.confidences, rel=1e-4)
    assert batch[2].image_size == (300, 100)


def test_short_side_sets_the_single_pass_input_and_is_validated():
    assert PredictConfig.from_dict({}).short_side == 256  # cards written before the setting existed
    assert PredictConfig.from_dict({"short_side": 288}).to_dict()["short_side"] == 288
    for bad in (0, 63, 4096):
        with pytest.raises(ValueError):
            PredictConfig.from_dict({"short_side": bad})
    torch.manual_seed(0)
    model = new_model("tiny", labels=["a", "b", "c"])
    rgb = np.random.default_rng(1).integers(0, 255, (150, 300, 3), dtype=np.uint8)
    shapes = {}
    for short in (128, 256):
        model.card["prediction"] = PredictConfig(short_side=short).to_dict()
        predictor = Predictor(model, device="cpu", bf16=False)
        assert predictor.resize(rgb).shape == (short, 2 * short, 3)
        p = predictor.predict_array(rgb)
        shapes[short] = p.maps.shape[1:]
        assert p.image_size == (300, 150)  # peaks stay in the original image's pixels
        assert all(0 <= x < 300 and 0 <= y < 150 for x, y in p.peaks.values())
    assert shapes[256][0] > shapes[128][0] and shapes[256][1] > shapes[128][1]


def test_predictor_decodes_large_jpegs_big_enough_for_its_input_and_the_baseline(tmp_path):
    from PIL import Image

    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((2400, 3200, 3), 120, np.uint8)).save(path)
    model = new_model("tiny", labels=["a", "b"])
    for short, least in ((600, 600), (128, 256)):  # 256: the 10-crop baseline's resize
        model.card["prediction"] = PredictConfig(short_side=short).to_dict()
        predictor = Predictor(model, device="cpu", bf16=False)
        rgb = predictor.read(path)
        assert least <= min(rgb.shape[:2]) < 2400
        assert predictor.read_resized(path).shape == (short, round(short * 4 / 3), 3)


def test_raw_scores_reading():
    torch.manual_seed(0)
    model = new_model("tiny", labels=["a", "b"])
    model.card["prediction"] = PredictConfig(scores="raw").to_dict()
    p = Predictor(model, device="cpu", bf16=False).predict_array(np.full((64, 64, 3), 128, np.uint8))
    raw = Predictor(model, device="cpu", bf16=False).raw_maps(np.full((256, 256, 3), 128, np.uint8))[0]
    assert p.maps.max() == pytest.approx(float(raw.max()), rel=0.5)  # not a probability any more


def test_ten_crop_baseline_is_a_distribution():
    model = new_model("tiny", labels=["a", "b", "c"])
    predictor = Predictor(model, device="cpu", bf16=False)
    s = predictor.ten_crop_scores(np.zeros((300, 400, 3), np.uint8), np.random.default_rng(0))
    assert s.shape == (3,) and s.sum() == pytest.approx(1.0, rel=1e-5)


def test_peaks_of_a_big_jpeg_are_in_the_files_pixels(tmp_path):
    """A big JPEG is decoded at a reduced scale; its size and peaks are still the file's."""
    from PIL import Image

    from mlcnn_core.predict import Predictor

    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (60, 80, 3), np.uint8)
    small[10:30, 20:40] = (250, 20, 20)
    big = Image.fromarray(small).resize((1600, 1200), Image.Resampling.NEAREST)
    big.save(tmp_path / "big.jpg", quality=95)
    big.save(tmp_path / "big.png")
    torch.manual_seed(0)
    predictor = Predictor(new_model("tiny", labels=["a", "b", "c"]), device="cpu", bf16=False)
    jpeg, png = predictor.predict_file(tmp_path / "big.jpg"), predictor.predict_file(tmp_path / "big.png")
    assert jpeg.image_size == png.image_size == (1600, 1200)
    batched = dict(predictor.predict_files([tmp_path / "big.jpg"]))[tmp_path / "big.jpg"]
    assert batched.image_size == (1600, 1200)
    for label, (x, y) in jpeg.peaks.items():
        px, py = png.peaks[label]
        assert abs(x - px) <= 100 and abs(y - py) <= 100, (label, (x, y), (px, py))
