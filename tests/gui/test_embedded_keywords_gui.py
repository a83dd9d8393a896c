"""Keywords embedded in image files arrive after the folder is listed, without the GUI thread
reading any image (issue 31.7)."""

import sys
from pathlib import Path

from conftest import open_folder
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_embedded_keywords import tagged_jpeg  # noqa: E402


def test_embedded_keywords_are_shown_once_read(qtbot, window, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    tagged_jpeg(folder / "a.jpg", ["holiday", "sea"])
    Image.new("RGB", (32, 32)).save(folder / "b.png")
    open_folder(qtbot, window, folder)
    image_id = window.library.image_id("a.jpg")
    qtbot.waitUntil(lambda: image_id in window.gallery.proxy._tags, timeout=10_000)

    assert {t.tag: t.source for t in window.library.tags(image_id)} == {"holiday": "sidecar", "sea": "sidecar"}
    assert window.gallery.proxy._tags[image_id] == {"holiday", "sea"}
    assert "Keywords embedded in 1 image(s) were read" in window.statusBar().currentMessage()


def test_embedded_keywords_are_read_only_when_sidecars_are(qtbot, window, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    tagged_jpeg(folder / "a.jpg", ["holiday"])
    window.settings.import_sidecars = False
    open_folder(qtbot, window, folder)
    qtbot.wait(300)
    image_id = window.library.image_id("a.jpg")
    assert window.library.tags(image_id) == []

    window.settings.import_sidecars = True
    open_folder(qtbot, window, folder)
    qtbot.waitUntil(lambda: window.gallery.proxy._tags.get(image_id) == {"holiday"}, timeout=10_000)
