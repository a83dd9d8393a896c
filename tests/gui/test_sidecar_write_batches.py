"""A long sidecar write is written in batches on the library worker: the shown image's tags and a
person's edits are read and stored between two batches, the window shows the write's progress, and
the images a write did not reach (another folder opened, the app closed) are kept for a retry."""

import time

import pytest
from conftest import make_images, open_folder, tags_read

from mlcnn_core.library import Library

SLOW_WRITE_S = 0.03  # a slow disk: 40 images take 1.2 s, many batches of 50 ms


@pytest.fixture
def slow_writes(monkeypatch):
    write = Library.write_sidecars

    def slow_write(self, *args, **kwargs):
        time.sleep(SLOW_WRITE_S)
        return write(self, *args, **kwargs)

    monkeypatch.setattr(Library, "write_sidecars", slow_write)


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "many"
    make_images(folder, 40, size=16)
    return folder


def ask_for_a_long_write(qtbot, window, folder) -> list[int]:
    window.settings.sidecar_formats = ["txt"]
    window.settings.write_on_confirm = False
    open_folder(qtbot, window, folder)
    tags_read(qtbot, window)
    ids = [r.id for r in window.images.records()]
    assert window.write_sidecars(ids, "human")
    return ids


def test_tag_reads_and_edits_run_between_the_batches_of_a_long_sidecar_write(qtbot, window, folder, slow_writes):
    worker = window.library_thread.worker
    events = []  # in the worker's order: its signals' slots run in its thread
    worker.sidecarsDone.connect(lambda report: events.append(("write", report.done, report.last)))
    worker.imageTagsRead.connect(lambda read: events.append(("read", read.request.image_id, False)))
    worker.edited.connect(lambda result: events.append(("edit", result.job.current_id, False)))
    messages = []
    window.statusBar().messageChanged.connect(messages.append)

    ids = ask_for_a_long_write(qtbot, window, folder)
    last = ids[-1]
    window.gallery.select_image(last)  # shown while the write runs: its tags are read
    assert window.add_tag("sky")  # and an edit is stored meanwhile
    with qtbot.waitSignal(window.sidecarsWritten, timeout=30_000, check_params_cb=lambda r: r.last):
        pass

    last_write = max(i for i, event in enumerate(events) if event[0] == "write")
    assert events.index(("read", last, False)) < last_write, events
    assert events.index(("edit", last, False)) < last_write, events
    writes = [(done, is_last) for kind, done, is_last in events if kind == "write"]
    assert len(writes) > 2 and [is_last for _done, is_last in writes] == [False] * (len(writes) - 1) + [True]
    assert [done for done, _ in writes] == sorted(done for done, _ in writes) and writes[-1][0] == len(ids)
    assert any(m.startswith("Writing sidecars: ") and m.endswith(f" of {len(ids)}") for m in messages), messages
    assert any(m.startswith(f"Wrote {len(ids)} sidecar file(s)") for m in messages), messages
    # each batch reads its images' tags when it writes them: the last image's came after the edit
    txt = window.library.abspath(window.library.image(last).path).with_suffix(".txt")
    assert txt.read_text(encoding="utf-8").strip() == "sky"


def test_a_write_the_app_closes_before_it_ends_is_kept_for_a_retry(qtbot, window, folder, slow_writes):
    ids = ask_for_a_long_write(qtbot, window, folder)
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000):
        pass  # the first batch
    window.shutdown()
    library = Library.open(folder)
    try:
        failed = dict(library.failed_sidecars())
        written = [i for i in ids if library.sidecar_content(i) == "human"]
    finally:
        library.close()
    assert failed and written and sorted(failed.keys() | set(written)) == sorted(ids)
    assert set(failed.values()) == {"not written: the app was closed first"}


def test_opening_another_folder_stops_a_write_and_keeps_the_rest_for_a_retry(
    qtbot, window, folder, image_folder, slow_writes
):
    ids = ask_for_a_long_write(qtbot, window, folder)
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000):
        pass
    open_folder(qtbot, window, image_folder)
    assert not window.retry_action.isEnabled()  # the other folder's failures are not this one's
    assert not list(image_folder.rglob("*.txt"))
    reports = []
    window.library_thread.worker.sidecarsDone.connect(reports.append)
    qtbot.wait(300)
    assert reports == [], "a batch was written for the replaced folder"

    open_folder(qtbot, window, folder)  # opened again: its unwritten sidecars can be retried
    assert window.retry_action.isEnabled()
    failed = set(window.failed_sidecars)
    assert failed and failed < set(ids)
    assert set(window.failed_sidecars.values()) == {"not written: another folder was opened first"}
    with qtbot.waitSignal(window.sidecarsWritten, timeout=30_000, check_params_cb=lambda r: r.last) as done:
        assert window.retry_failed_sidecars()
    assert done.args[0].failures == 0 and not window.retry_action.isEnabled()
    assert done.args[0].done == len(failed)
