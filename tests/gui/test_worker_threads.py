"""Objects of the app's worker threads are stopped by the thread that owns them."""

import shiboken6
from conftest import make_images

from tagger_app.workers.library_worker import LibraryThread, OpenRequest


def test_the_library_workers_settle_timer_is_stopped_by_its_own_thread(qtbot, qtlog, tmp_path):
    folder = tmp_path / "images"
    make_images(folder, 2)
    library_thread = LibraryThread()
    worker = library_thread.worker
    worker.WATCH_SETTLE_MS = 60_000  # a change the window is closed on, before the folder is read again
    opened = []
    worker.opened.connect(opened.append)  # not waitSignal: it would stop its timer from the worker's thread
    library_thread.openRequested.emit(OpenRequest(str(folder)))
    qtbot.waitUntil(lambda: bool(opened), timeout=20_000)
    (folder / "img0000.txt").write_text("cat\n", encoding="utf-8")  # what another program writes
    qtbot.waitUntil(lambda: worker._settle.isActive(), timeout=10_000)
    library_thread.stop()
    assert not library_thread.thread.isRunning()
    shiboken6.delete(worker)  # as the GUI thread's garbage collection does, at any later time
    warnings = [r.message for r in qtlog.records if "Timers cannot be stopped from another thread" in r.message]
    assert warnings == []
