"""Shape buckets (buckets.py) and decoding ahead (readahead.py): mixed sizes in a few batched shapes,
with the maps each image gets on its own."""

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from shapes import noise_images

from mlcnn_core.buckets import BucketQueues, bucket_shape, masked_trunk
from mlcnn_core.data import ImageError
from mlcnn_core.model import fold_batchnorm
from mlcnn_core.modelfile import new_model
from mlcnn_core.predict import PredictConfig, Predictor
from mlcnn_core.readahead import decode_ahead
from mlcnn_core.runtime import autocast, cpu_supports_bf16

LABELS = ["a", "b", "c", "d"]


def _views(rng, shapes):
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in shapes]


def test_bucket_keeps_the_short_side_and_rounds_the_long_one():
    assert bucket_shape(288, 433, 64) == (288, 448)
    assert bucket_shape(500, 248, 64) == (512, 248)
    assert bucket_shape(288, 448, 64) == (288, 448)
    assert bucket_shape(300, 300, 64) == (300, 300)


@pytest.mark.parametrize("arch", ["tiny", "compact", "nin"])
def test_padded_batch_gives_each_image_its_own_maps(arch):
    torch.manual_seed(0)
    predictor = Predictor(new_model(arch, labels=LABELS), device="cpu", bf16=False)
    shapes = [(96, 131), (96, 190), (96, 96), (150, 96), (96, 160)]
    views = _views(np.random.default_rng(0), shapes)
    batched = predictor.bucketed_raw_maps(views)
    for view, got in zip(views, batched, strict=True):
        alone = predictor.raw_maps(view)[0]
        assert got.shape == alone.shape
        torch.testing.assert_close(got, alone, atol=1e-4, rtol=1e-4)


def test_masked_trunk_reports_each_images_extent():
    trunk = fold_batchnorm(new_model("tiny", labels=LABELS).net.trunk).eval()
    x = torch.randn(2, 3, 96, 192)
    with torch.inference_mode():
        out, sizes = masked_trunk(trunk, x.clone(), [(96, 192), (70, 100)])
        assert sizes[0] == tuple(out.shape[-2:])
        assert sizes[1] == tuple(trunk(x[1:, :, :70, :100]).shape[-2:])


def test_mixed_sizes_predict_as_they_do_one_at_a_time_in_few_shapes(tmp_path):
    torch.manual_seed(0)
    model = new_model("tiny", labels=LABELS)
    model.card["prediction"] = PredictConfig(short_side=96).to_dict()
    paths = noise_images(tmp_path, 24, seed=1, sides=(60, 300))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    paths.insert(5, broken)

    exact = Predictor(model, device="cpu", bf16=False, bucket_step=1)
    alone = {p: exact.predict_file(p) for p in paths if p != broken}
    bucketed = Predictor(model, device="cpu", bf16=False)
    seen: list[tuple] = []
    bucketed.trunk[0].register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    out = list(bucketed.predict_files(paths, batch_size=4))

    assert [p for p, _ in out] == paths
    assert isinstance(out[5][1], ImageError)
    for path, got in out:
        if path == broken:
            continue
        want = alone[path]
        assert got.labels == want.labels and got.peaks == want.peaks
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
    exact_shapes = {tuple(v.shape) for p in alone for v in exact.resize_passes(exact.read(p))}
    assert len({s[2:] for s in seen}) <= len(exact_shapes) / 2
    assert len(seen) < len(alone)  # images shared batches


@pytest.mark.skipif(not cpu_supports_bf16(), reason="no native bf16 on this CPU")
def test_weights_cast_once_read_as_autocast_did():
    torch.manual_seed(0)
    model = new_model("tiny", labels=LABELS)
    predictor = Predictor(model, device="cpu", bf16=True)
    assert all(p.dtype == torch.bfloat16 for p in predictor.trunk.parameters())
    assert all(p.dtype == torch.float32 for p in model.net.parameters())  # the model is left as it was
    view = np.random.default_rng(0).integers(0, 255, (96, 140, 3), dtype=np.uint8)
    from mlcnn_core.data import to_tensor

    trunk = fold_batchnorm(model.net.trunk).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(torch.device("cpu"), True):
        want = model.net.head.forward_map(trunk(to_tensor(view[None], model.mean))).float()
    assert torch.equal(predictor.raw_maps(view), want)


def test_queues_run_full_buckets_and_name_the_oldest():
    queues = BucketQueues(64)
    a = queues.add(0, 0, np.zeros((96, 130, 3), np.uint8))
    b = queues.add(0, 1, np.zeros((96, 300, 3), np.uint8))
    assert queues.add(0, 2, np.zeros((96, 180, 3), np.uint8)) == a != b
    assert queues.oldest() == a and len(queues.members(a)) == 2
    assert [seq for seq, _ in queues.take(a, 8)] == [0, 2]
    assert queues.oldest() == b and queues.bytes == 96 * 300 * 3
    queues.take(b, 8)
    assert not queues and queues.bytes == 0


def test_decoding_ahead_is_bounded_by_bytes_and_keeps_order():
    started, lock = [], threading.Lock()

    def read(path):
        with lock:
            started.append(path)
        if path == 3:
            raise ImageError("bad")
        return [np.zeros(1 << 20, np.uint8)], (1, 1)

    most_ahead = 0
    out = []
    for n, (path, views, _) in enumerate(decode_ahead(list(range(40)), read, workers=2, ahead_bytes=4 << 20)):
        time.sleep(0.005)
        most_ahead = max(most_ahead, len(started) - n - 1)
        out.append((path, views))
    assert [p for p, _ in out] == list(range(40))
    assert isinstance(out[3][1], ImageError)
    assert most_ahead <= 5  # 4 MB of 1 MB images, plus the one being handed over


def test_free_heap_memory_is_given_back_as_images_are_read(monkeypatch):
    from mlcnn_core import predict

    calls = []
    monkeypatch.setattr(predict, "release_free_memory", lambda: calls.append(True))
    predictor = Predictor(new_model("tiny", labels=LABELS), device="cpu", bf16=False)
    images = _views(np.random.default_rng(0), [(64, 64 + i % 5) for i in range(predict.TRIM_EVERY + 5)])
    predictor.predict_arrays(images[:predict.TRIM_EVERY - 1])
    assert not calls
    predictor.predict_arrays(images[predict.TRIM_EVERY - 1:])  # counted across calls, as the app makes them
    assert len(calls) == 1


@pytest.mark.skipif(not cpu_supports_bf16(), reason="no native bf16 on this CPU")
def test_flops_are_counted_for_a_predictor_with_bf16_weights():
    from mlcnn_core.evaluate import ForwardFlops

    model = new_model("tiny", labels=LABELS)
    counted = ForwardFlops(Predictor(model, device="cpu", bf16=True))
    assert counted.single_pass(96, 128) == ForwardFlops(Predictor(model, device="cpu", bf16=False)).single_pass(96, 128)
    assert counted.crops() > 0


def test_an_image_that_runs_out_of_memory_costs_only_its_own_result(tmp_path):
    model = new_model("tiny", labels=LABELS)
    model.card["prediction"] = PredictConfig(short_side=96).to_dict()
    rng = np.random.default_rng(2)
    paths = []
    for i, (h, w) in enumerate([(120, 160), (130, 150), (125, 900), (128, 140)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    predictor = Predictor(model, device="cpu", bf16=False)
    real = predictor.bucketed_raw_maps

    def short_of_memory(views):  # the long image's batch cannot be allocated, as a huge scan's
        if max(v.shape[1] for v in views) > 600:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 99 GB")
        return real(views)

    predictor.bucketed_raw_maps = short_of_memory
    out = dict(predictor.predict_files(paths, batch_size=4))
    assert isinstance(out[paths[2]], ImageError) and "memory" in str(out[paths[2]])
    for path in (paths[0], paths[1], paths[3]):
        assert not isinstance(out[path], ImageError)
        np.testing.assert_allclose(out[path].scores, predictor.predict_file(path).scores, atol=1e-5)

    predictor.bucketed_raw_maps = lambda views: (_ for _ in ()).throw(RuntimeError("a real bug"))
    with pytest.raises(RuntimeError, match="a real bug"):
        list(predictor.predict_files(paths[:1]))


def test_an_image_too_big_to_decode_is_an_error_of_its_own():
    def read(n):
        if n == 1:
            raise MemoryError
        return [np.zeros((4, 4, 3), np.uint8)], (4, 4)

    out = list(decode_ahead([0, 1, 2], read, workers=2))
    assert [p for p, _, _ in out] == [0, 1, 2]
    assert isinstance(out[1][1], ImageError) and "memory" in str(out[1][1])
    assert not isinstance(out[0][1], ImageError) and not isinstance(out[2][1], ImageError)
