import numpy as np
import pytest
from PIL import Image

from mlcnn_core import data
from mlcnn_core.data import (
    DatasetError,
    ImageError,
    PixelTable,
    Sample,
    ScaledBatches,
    TrainingSet,
    is_held_out,
    load_samples,
    random_crop_flip,
    read_image,
    resize_short_side,
    split_samples,
    to_tensor,
)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((40, 100, 3), np.uint8)
    pixels[:, :10] = 255  # white band on the left
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    rgb = read_image(path)
    assert rgb.shape == (100, 40, 3)
    assert rgb[:10].mean() > 200 and rgb[-10:].mean() < 50  # the band is now at the top


def test_large_jpeg_is_decoded_reduced_but_large_enough(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((2400, 3200, 3), 120, np.uint8)).save(path)
    rgb = read_image(path)
    assert min(rgb.shape[:2]) >= 256 and min(rgb.shape[:2]) < 1200
    assert read_image(path, min_side=None).shape == (2400, 3200, 3)


def test_unreadable_and_huge_images(tmp_path, monkeypatch):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError, match="bad.png"):
        read_image(bad)
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(ok)
    monkeypatch.setattr(data, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="pixels"):
        read_image(ok)


def test_gif_first_frame_and_grey_png(tmp_path):
    frames = [Image.new("P", (30, 20), i) for i in (3, 9)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert read_image(tmp_path / "a.gif").shape == (20, 30, 3)
    Image.new("L", (10, 12), 7).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (12, 10, 3)


def test_resize_short_side_and_crop():
    rgb = np.zeros((300, 600, 3), np.uint8)
    assert resize_short_side(rgb).shape == (256, 512, 3)
    assert resize_short_side(np.zeros((100, 50, 3), np.uint8)).shape == (512, 256, 3)
    crop = random_crop_flip(resize_short_side(rgb), np.random.default_rng(0))
    assert crop.shape == (256, 256, 3) and crop.flags["C_CONTIGUOUS"]


def test_folder_and_manifest_samples(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    (tmp_path / "a.jpg.txt").write_text("x, y")
    (tmp_path / "a.png.txt").write_text("z")
    (tmp_path / "b.txt").write_text("y")
    samples = {s.image.rsplit("/", 1)[1]: s.labels for s in load_samples([tmp_path])}
    assert samples == {"a.jpg": ("x", "y"), "a.png": ("z",), "b.png": ("y",)}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "a.jpg", "labels": ["q"]}\n\n')
    (s,) = load_samples([manifest])
    assert s.image == str(tmp_path / "a.jpg") and s.labels == ("q",)
    manifest.write_text('{"image": 3}\n')
    with pytest.raises(DatasetError, match="m.jsonl:1"):
        load_samples([manifest])
    with pytest.raises(DatasetError, match="no such"):
        load_samples([tmp_path / "nope"])


def test_held_out_split_is_deterministic_and_by_file_name():
    samples = [Sample(f"/x/{i}.jpg", ("a",)) for i in range(1000)]
    train, val = split_samples(samples, 0.2)
    assert 150 < len(val) < 250 and len(train) + len(val) == 1000
    assert is_held_out("/elsewhere/7.jpg", 0.2) == is_held_out("/x/7.jpg", 0.2)
    assert split_samples(samples, 0.2)[1] == val


def test_a_label_whose_images_are_all_held_out_is_trained_on():
    names = [f"/x/{i}.jpg" for i in range(200)]
    held = [n for n in names if is_held_out(n, 0.1)]
    kept = [n for n in names if not is_held_out(n, 0.1)]
    samples = [Sample(n, ("a",)) for n in names]
    samples[names.index(held[0])] = Sample(held[0], ("a", "lotus"))  # the new tag's only image
    samples[names.index(held[1])] = Sample(held[1], ("b",))  # "b": two images, both held out
    samples[names.index(held[2])] = Sample(held[2], ("b",))
    samples[names.index(held[3])] = Sample(held[3], ("c",))  # "c" has a trained image too
    samples[names.index(kept[0])] = Sample(kept[0], ("c",))
    train, val = split_samples(samples, 0.1)
    trained = {s.image for s in train}
    assert {held[0], held[1], held[2]} <= trained
    assert held[3] not in trained and len(val) == len(held) - 3
    assert {label for s in train for label in s.labels} == {"a", "b", "c", "lotus"}


def test_training_set_skips_unreadable(tmp_path):
    Image.fromarray(np.full((64, 80, 3), 200, np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    ds = TrainingSet([Sample(str(tmp_path / "bad.png"), ("a",)), Sample(str(tmp_path / "ok.png"), ("b",))],
                     ["a", "b"])
    with pytest.warns(UserWarning):
        for i in range(2):
            image, target = ds[i]
            assert image.shape == (256, 256, 3)


def test_training_crops_change_with_the_epoch(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 400, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    ds = TrainingSet([Sample(str(tmp_path / "a.png"), ("a",))], ["a"])
    crops = set()
    for epoch in range(6):
        ds.epoch = epoch
        crops.add(ds[0][0].tobytes())
    assert len(crops) > 1


def test_scaled_batches_share_one_short_side_per_batch(tmp_path):
    # a 32-pixel grid: a crop of a bigger resize shows fewer grid lines, a smaller one the whole grid smaller
    image = np.zeros((256, 256, 3), np.uint8)
    image[::32] = 255
    Image.fromarray(image).save(tmp_path / "grid.png")
    ds = TrainingSet([Sample(str(tmp_path / "grid.png"), ("a",))], ["a"])

    def grid_lines(crop):
        bright = crop[:, :, 0].mean(axis=1) > 100
        return int(bright[0]) + int((bright[1:] & ~bright[:-1]).sum())

    assert ds[0][0].shape == ds[0, 256][0].shape == (256, 256, 3)
    assert grid_lines(ds[0][0]) == grid_lines(ds[0, 128][0]) == 8
    assert ds[0, 128][0].shape == (128, 128, 3)
    assert ds[0, 512][0].shape == (256, 256, 3) and grid_lines(ds[0, 512][0]) == 4

    batches = ScaledBatches(range(100), 8, (128, 400), seed=3)
    keys = list(batches)
    assert len(keys) == len(batches) == 12 and all(len(b) == 8 for b in keys)
    assert sorted(i for b in keys for i, _ in b) == list(range(96))
    sides = [{s for _, s in b} for b in keys]
    assert all(len(s) == 1 for s in sides)
    sides = {s.pop() for s in sides}
    assert len(sides) > 3 and min(sides) >= 128 and max(sides) <= 400
    assert [b[0][1] for b in ScaledBatches(range(100), 8, (128, 400), seed=3)] == [b[0][1] for b in keys]
    batches.set_epoch(1)
    assert [b[0][1] for b in batches] != [b[0][1] for b in keys]
    assert len(ScaledBatches(range(100), 8, (200, 200), drop_last=False)) == 13
    for bad in [(32, 256), (300, 200)]:
        with pytest.raises(ValueError, match="short sides"):
            ScaledBatches(range(10), 4, bad)


def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(fifo)


def test_a_very_long_strip_is_refused_before_decoding(tmp_path):
    Image.new("RGB", (1, 5000), (200, 10, 10)).save(tmp_path / "strip.png")
    with pytest.raises(ImageError, match="more than 32 times"):
        read_image(tmp_path / "strip.png")
    Image.new("RGB", (10, 10 * data.MAX_ASPECT), (200, 10, 10)).save(tmp_path / "tall.png")
    assert read_image(tmp_path / "tall.png").shape == (10 * data.MAX_ASPECT, 10, 3)


def test_sixteen_bit_grayscale_reads_like_eight_bit(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray((ramp // 257).astype(np.uint8)).save(tmp_path / "g8.png")
    wide, narrow = read_image(tmp_path / "g16.png"), read_image(tmp_path / "g8.png")
    assert wide.shape == narrow.shape == (32, 64, 3)
    assert np.abs(wide.astype(int) - narrow.astype(int)).max() <= 1


def test_a_written_manifest_reads_back(tmp_path):
    images = [(tmp_path / "a b.png", ["cat", "blue sky"]), (tmp_path / "ü.jpg", [])]
    manifest = tmp_path / "runs" / "confirmed-0.jsonl"
    data.write_manifest(manifest, images)
    assert data.samples_from_manifest(manifest) == [Sample(str(p), tuple(tags)) for p, tags in images]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_pixel_table_gives_what_to_tensor_gives_to_the_bit(dtype):
    import torch

    dtype = getattr(torch, dtype)
    mean = [0.481, 0.4578, 0.408]
    batch = np.zeros((2, 16, 17, 3), np.uint8)
    batch[0].reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]  # every value in every channel
    batch[1] = np.random.default_rng(0).integers(0, 256, (16, 17, 3), dtype=np.uint8)
    got, want = PixelTable(mean, dtype)(batch), to_tensor(batch, mean).to(dtype)
    assert got.dtype == dtype and got.shape == want.shape == (2, 3, 16, 17)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                       want.view(torch.int16 if dtype == torch.bfloat16 else torch.int32))
