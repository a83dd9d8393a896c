"""A person's edits are shown at once and stored by the library worker, never on the GUI thread;
an edit that cannot be stored is reported, dropped from the undo stack, and shown as it really is."""

import sqlite3
import time

from conftest import on_this_thread, open_folder, record_calls, stored

from mlcnn_core.library import Library


def test_edits_undos_and_redos_never_touch_the_library_on_the_gui_thread(qtbot, window, image_folder, monkeypatch):
    open_folder(qtbot, window, image_folder)
    window.gallery.select_row(0)
    qtbot.waitUntil(lambda: window.current_id >= 0, timeout=10_000)
    image_id = window.current_id
    stored(qtbot, window)
    calls = record_calls(monkeypatch, Library)

    assert window.add_tag("sky")
    assert window.add_tag("sea")
    assert window.confirm_tag("sky")
    assert window.reject_tag("sea")
    assert window.add_tag("cloud")
    assert window.remove_tag("cloud")
    assert window.confirm_all()
    assert [(r.tag, r.state) for r in window.tag_panel.model.records()] == [("sky", "confirmed"), ("sea", "rejected")]
    assert window.rename_tag("sky", "blue sky")
    assert sorted(r.tag for r in window.tag_panel.model.records()) == ["blue sky", "sea"]  # shown at once
    window.gallery.set_tag_filter("blue sky")
    assert window.gallery.visible_image_ids() == [image_id]
    window.gallery.set_tag_filter("")
    assert window.add_tag_to_selection("wave")
    window.undo_stack.undo()
    window.undo_stack.undo()
    window.undo_stack.redo()
    stored(qtbot, window)

    assert on_this_thread(calls) == [], "the GUI thread used the library"
    assert {"set_tag", "remove_tag", "confirm_all", "rename_tag", "restore_snapshots"} <= {n for n, _ in calls}
    assert {t.tag: t.state for t in window.library.tags(image_id)} == {"blue sky": "confirmed", "sea": "rejected"}
    assert window.images.record_by_id(image_id).status == "confirmed"
    assert sorted(r.tag for r in window.tag_panel.model.records()) == ["blue sky", "sea"]


def test_a_rename_the_library_cannot_store_is_reported_and_dropped(qtbot, window, image_folder, monkeypatch):
    open_folder(qtbot, window, image_folder)
    window.gallery.select_row(0)
    qtbot.waitUntil(lambda: window.current_id >= 0, timeout=10_000)
    assert window.add_tag("sky")
    stored(qtbot, window)

    def locked(*_args, **_kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(window.library, "rename_tag", locked)
    with qtbot.waitSignal(window.editStored, timeout=10_000) as done:
        assert window.rename_tag("sky", "blue sky")
    assert "database is locked" in done.args[0].error and "database is locked" in window.last_error
    assert window.undo_stack.count() == 1 and window.undo_stack.text(0) == "Add “sky”"
    assert window.tag_panel.model.row_of("sky") is not None
    window.undo_stack.undo()  # the rename is gone: the undo is the add's
    stored(qtbot, window)
    assert window.library.tag_record(window.current_id, "sky") is None


def test_edits_made_just_before_the_window_closes_are_stored(qtbot, window, image_folder, monkeypatch):
    open_folder(qtbot, window, image_folder)
    window.gallery.select_row(0)
    qtbot.waitUntil(lambda: window.current_id >= 0, timeout=10_000)
    image_id = window.current_id
    set_tag = Library.set_tag

    def slow_set_tag(self, *args, **kwargs):
        time.sleep(0.2)  # a busy disk: the edits are still queued when the window closes
        return set_tag(self, *args, **kwargs)

    monkeypatch.setattr(Library, "set_tag", slow_set_tag)
    for tag in ("sky", "sea", "cloud"):
        assert window.add_tag(tag)
    window.shutdown()
    library = Library.open(image_folder)
    try:
        assert {"sky", "sea", "cloud"} <= {t.tag for t in library.tags(image_id)}
    finally:
        library.close()
