"""The folder tags panel and the status counts are counted on the library worker, not the GUI thread."""

import threading

from conftest import make_images, open_folder

from mlcnn_core.library import Library
from tagger_app.workers.library_worker import FolderTagCounts


def record_threads(monkeypatch) -> list[int]:
    """Patch the whole-library counts to note the thread each call runs on."""
    threads: list[int] = []
    for name in ("all_tags", "status_counts"):
        original = getattr(Library, name)

        def recorded(self, _original=original):
            threads.append(threading.get_ident())
            return _original(self)

        monkeypatch.setattr(Library, name, recorded)
    return threads


def test_folder_tags_are_counted_off_the_gui_thread_once_per_burst(qtbot, window, image_folder, monkeypatch):
    threads = record_threads(monkeypatch)
    open_folder(qtbot, window, image_folder)
    qtbot.waitUntil(lambda: window.counts_label.text() != "", timeout=10_000)
    window.library.set_tag(window.current_id, "smile", "added")
    del threads[:]
    for _ in range(5):
        window.refresh_folder_tags()
    qtbot.waitUntil(lambda: "smile" in window.folder_tags.model.tags(), timeout=10_000)
    qtbot.wait(300)
    assert threads and threading.get_ident() not in threads
    assert len(threads) <= 2 * 2  # one count, and one more for the requests made while it ran
    assert "smile" in window.tag_panel.completions.stringList()


def test_counts_for_a_replaced_library_are_ignored(qtbot, window, image_folder, tmp_path):
    open_folder(qtbot, window, image_folder)
    qtbot.waitUntil(lambda: window.counts_label.text() != "", timeout=10_000)
    old = window.library
    other = tmp_path / "other"
    make_images(other, 2)
    open_folder(qtbot, window, other)
    qtbot.waitUntil(lambda: window.counts_label.text().startswith("2 "), timeout=10_000)
    tags, label = window.folder_tags.model.tags(), window.counts_label.text()
    window._on_folder_tags_counted(FolderTagCounts(old, [("stale", 10)], {"untagged": 10}, counted=True))
    assert window.folder_tags.model.tags() == tags and window.counts_label.text() == label
