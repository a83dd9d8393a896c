"""The gallery's orders: by name, newest first, least certain first (unpredicted last)."""

import os
import time

from mlcnn_core.library import Library
from tagger_app.models.image_list_model import ImageListModel


def test_gallery_sorts_by_uncertainty_and_by_date(tmp_path):
    now = time.time()
    for n, name in enumerate(["sub/deep/d.JPEG", "b.png", "a.jpg", "sub/c.webp"]):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really an image")
        os.utime(path, (now + n, now + n))
    lib = Library.open(tmp_path)
    lib.scan()
    lib.store_prediction(lib.image_id("a.jpg"), ["x"], {"x": 0.9, "y": 0.1})  # certain
    lib.store_prediction(lib.image_id("b.png"), ["x"], {"x": 0.5, "y": 0.45})  # unsure

    def order(key):
        return [r.path for r in ImageListModel.sorted_records(lib.images(), key)]

    assert order("uncertainty")[:2] == ["b.png", "a.jpg"]
    assert order("name") == ["a.jpg", "b.png", "sub/c.webp", "sub/deep/d.JPEG"]
    assert order("mtime") == ["sub/c.webp", "a.jpg", "b.png", "sub/deep/d.JPEG"]
    lib.close()
