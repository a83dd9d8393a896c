"""The thumbnail cache on disk (freedesktop layout): written once, read back while fresh, remade when stale."""

import hashlib
import os
import stat

from conftest import make_images
from PySide6.QtGui import QImage

from tagger_app.workers import image_loader
from tagger_app.workers.image_loader import ThumbnailLoader
from tagger_app.workers.thumbnail_cache import ThumbnailDiskCache


def test_thumbnails_are_kept_in_the_freedesktop_layout_until_the_file_changes(tmp_path):
    (path,) = make_images(tmp_path / "images", 1, size=300)
    cache = ThumbnailDiskCache(tmp_path / "thumbnails")
    assert cache.read(path) is None
    cache.write(path, image_loader.decode_image(path, 128))
    uri = path.absolute().as_uri()
    entry = tmp_path / "thumbnails" / "normal" / (hashlib.md5(uri.encode()).hexdigest() + ".png")
    assert entry.is_file() and stat.S_IMODE(entry.stat().st_mode) == 0o600
    stored = QImage(str(entry))
    assert stored.text("Thumb::URI") == uri and stored.text("Thumb::MTime") == str(int(path.stat().st_mtime))
    again = cache.read(path)
    assert again is not None and max(again.width(), again.height()) == 128
    later = path.stat().st_mtime + 10
    os.utime(path, (later, later))  # the image was edited: its thumbnail is stale
    assert cache.read(path) is None


def test_large_images_and_unwritable_caches_are_not_kept(tmp_path):
    (path,) = make_images(tmp_path / "images", 1, size=300)
    cache = ThumbnailDiskCache(tmp_path / "thumbnails")
    cache.write(path, image_loader.decode_image(path, 256))  # larger than a "normal" thumbnail
    assert cache.read(path) is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    ThumbnailDiskCache(blocked).write(path, image_loader.decode_image(path, 128))  # no error


def test_a_second_loader_reads_thumbnails_from_disk_without_decoding(qtbot, tmp_path, monkeypatch):
    paths = make_images(tmp_path / "images", 6, size=300)
    disk = ThumbnailDiskCache(tmp_path / "thumbnails")
    first = ThumbnailLoader(threads=1, disk=disk)
    for key, path in enumerate(paths):
        first.thumbnail(key, path)
    qtbot.waitUntil(lambda: all(first.thumbnail(k, p) is not None for k, p in enumerate(paths)), timeout=20_000)
    first.wait()

    decoded = []
    real = image_loader.decode_image
    monkeypatch.setattr(image_loader, "decode_image", lambda p, side: decoded.append(p) or real(p, side))
    second = ThumbnailLoader(threads=1, disk=disk)
    for key, path in enumerate(paths):
        second.thumbnail(key, path)
    qtbot.waitUntil(lambda: all(second.thumbnail(k, p) is not None for k, p in enumerate(paths)), timeout=20_000)
    second.wait()
    assert decoded == []
    assert second.thumbnail(0, paths[0]).width() == first.thumbnail(0, paths[0]).width()
