"""The GUI thread never reads the library: the shown image's tags, a retry of failed sidecar writes
and the tags of sidecars another program changed come from the library worker. A replaced library's
connections are closed by the threads that used them, and its late results are not shown."""

import errno
import functools
import os
import sqlite3
import threading
import time

from conftest import load_model, make_images, on_this_thread, open_folder, record_calls, stored, tags_read

from mlcnn_core import sidecars
from mlcnn_core.library import Library
from tagger_app.workers.library_worker import LibraryWorker


def test_showing_predicting_and_writing_sidecars_never_read_the_library_on_the_gui_thread(
    qtbot, window, image_folder, tiny_model_path, monkeypatch
):
    monkeypatch.setattr(LibraryWorker, "WATCH_SETTLE_MS", 60_000)  # the write, not the watcher, finds the change
    window.settings.sidecar_formats = ["txt"]
    window.settings.write_on_confirm = False
    (image_folder / "img0000.txt").write_text("sky\n", encoding="utf-8")
    with qtbot.waitSignal(window.folderOpened, timeout=20_000):
        window.open_folder(image_folder, import_as_confirmed=True)
    ids = {r.path: r.id for r in window.images.records()}
    confirmed, untagged = ids["img0000.png"], ids["img0001.jpg"]
    tags_read(qtbot, window)
    calls = record_calls(monkeypatch, Library)

    # images shown: their tags come from the worker
    for image_id in (untagged, confirmed):
        window.gallery.select_image(image_id)
        assert window.tag_panel.image_id == image_id  # no other image's tags meanwhile
        tags_read(qtbot, window)
    assert [r.tag for r in window.tag_panel.model.records()] == ["sky"]
    assert window.tag_panel.title.text().startswith("<b>img0000.png</b>")
    assert on_this_thread(calls) == [], "the GUI thread read the library to show an image"

    # a prediction of a confirmed image is not stored: its scores come with the tags read again
    with qtbot.waitSignal(window.predictionShown, timeout=60_000, check_params_cb=lambda i: i == confirmed):
        load_model(qtbot, window, tiny_model_path)
    tags_read(qtbot, window)
    assert [r.tag for r in window.tag_panel.model.records()] == ["sky"]
    assert window.tag_panel.model.scores() == window._maps[confirmed].confidences != {}
    assert on_this_thread(calls) == [], "the GUI thread read the library when a prediction arrived"

    # a failed write, retried: the worker finds it and writes the person's tags
    real_replace = sidecars.os.replace

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sidecars.os, "replace", disk_full)
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000) as done:
        assert window.write_current_sidecar()
    assert confirmed in done.args[0].failed and window.retry_action.isEnabled()
    monkeypatch.setattr(sidecars.os, "replace", real_replace)
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000) as done:
        assert window.retry_failed_sidecars()
    assert list(done.args[0].written) == [confirmed] and not window.retry_action.isEnabled()
    assert on_this_thread(calls) == [], "the GUI thread read the library to retry failed writes"

    # another program changed the sidecar before the next write: its tags are read again and shown
    txt = image_folder / "img0000.txt"
    txt.write_text("sky, sea\n", encoding="utf-8")
    later = time.time() + 2
    os.utime(txt, (later, later))
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000) as done:
        assert window.write_current_sidecar()
    assert done.args[0].notes and [r.id for r in done.args[0].noted_records] == [confirmed]
    assert window.gallery.proxy._tags[confirmed] == {"sky", "sea"}
    qtbot.waitUntil(lambda: {r.tag for r in window.tag_panel.model.records()} == {"sky", "sea"}, timeout=10_000)

    assert on_this_thread(calls) == [], "the GUI thread read the library when notes arrived"
    assert {"image", "tags", "prediction", "failed_sidecars", "write_sidecars"} <= {n for n, _ in calls}


def test_an_edit_made_while_the_tags_are_read_is_not_shown_undone(qtbot, window, image_folder):
    open_folder(qtbot, window, image_folder)
    tags_read(qtbot, window)
    shown = []
    window.tag_panel.model.modelReset.connect(lambda: shown.append([r.tag for r in window.tag_panel.model.records()]))
    window.gallery.select_row(1)
    assert window.tag_read_pending
    assert window.add_tag("sky")  # before the tags of the image came back
    stored(qtbot, window)
    tags_read(qtbot, window)
    assert shown[-1] == ["sky"]
    assert [] not in shown[shown.index(["sky"]):], "the tags read before the edit were shown after it"


class _TracedConnection(sqlite3.Connection):
    """Notes the thread that opened it and the one that closed it."""

    log: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path, self.opened_by, self.closed_by = str(args[0]), threading.get_ident(), None
        self.log.append(self)

    def close(self):
        self.closed_by = threading.get_ident()
        super().close()


def test_replacing_the_library_while_reads_are_queued(qtbot, window, image_folder, tmp_path, tiny_model_path,
                                                      monkeypatch):
    other = tmp_path / "other"
    for path in make_images(other, 4, seed=1):
        path.rename(path.with_name("other-" + path.name))
    monkeypatch.setattr(_TracedConnection, "log", [])
    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=_TracedConnection))
    open_folder(qtbot, window, image_folder)
    first = window.library
    with qtbot.waitSignal(window.predictionShown, timeout=60_000):  # stored by the predictor's connection
        load_model(qtbot, window, tiny_model_path)
    tags_read(qtbot, window)
    tags = Library.tags

    def slow_tags(self, image_id):
        time.sleep(0.02)  # a busy disk: reads of the first folder are still queued when the second opens
        return tags(self, image_id)

    monkeypatch.setattr(Library, "tags", slow_tags)
    titles = []
    window.tag_panel.model.modelReset.connect(lambda: titles.append(window.tag_panel.title.text()))
    for row in range(8):
        window.gallery.select_row(row)
    window.add_tag("queued")  # an edit queued behind the reads
    with qtbot.waitSignal(window.folderOpened, timeout=20_000):
        window.open_folder(other)
    opened_at = len(titles)
    tags_read(qtbot, window)
    stored(qtbot, window)
    qtbot.wait(200)  # anything of the first folder still on its way arrives

    assert window.library is not first
    assert "other-img0000" in window.tag_panel.title.text()
    assert all("other-" in t for t in titles[opened_at:] if t != "No image"), "a replaced folder's tags were shown"
    def closed():
        return [(c.opened_by, c.closed_by) for c in _TracedConnection.log
                if c.path == str(first.db_path) and c.closed_by is not None]

    # the library worker and the predictor close their own connections
    qtbot.waitUntil(lambda: len({opener for opener, _ in closed()}) >= 2, timeout=10_000)
    assert all(opener == closer for opener, closer in closed()), "a connection was closed by another thread"
