from conftest import make_images

from tagger_app.workers.image_loader import MAX_QUEUED, ThumbnailLoader, decode_image


def test_scaled_decode_of_every_format(tmp_path):
    for path in make_images(tmp_path, 6, size=300):
        image = decode_image(path, 128)
        assert not image.isNull(), path
        assert max(image.width(), image.height()) <= 128


def test_unreadable_file_is_a_null_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert decode_image(bad, 128).isNull()


def test_fast_scroll_keeps_the_queue_bounded_and_serves_the_latest(qtbot, tmp_path):
    paths = make_images(tmp_path, 400, size=64)
    loader = ThumbnailLoader(threads=1)
    for key, path in enumerate(paths):  # what a fast scroll through the grid asks for
        assert loader.thumbnail(key, path) is None
        assert len(loader._pending) <= MAX_QUEUED
    latest = list(range(len(paths) - 10, len(paths)))
    qtbot.waitUntil(lambda: all(loader.thumbnail(k, paths[k]) is not None for k in latest), timeout=20_000)
    assert len(loader._cache) < len(paths)  # the skipped oldest requests were not all decoded
    loader.reset()
    loader.wait()
