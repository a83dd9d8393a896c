"""The tag rules (threshold, excluded tags, maximum count, caption prefix, word separator) saved and
applied by the app, and edits of a selection of images, each undoable."""

from conftest import LABELS, load_model, open_folder, stored
from PySide6.QtCore import QItemSelection, QItemSelectionModel

from mlcnn_core.tag_rules import TagRules
from tagger_app.settings import AppSettings


def _select(window, rows):
    view = window.gallery.view
    selection = QItemSelection()
    for row in rows:
        index = window.gallery.proxy.index(row, 0)
        selection.select(index, index)
    view.setCurrentIndex(window.gallery.proxy.index(rows[0], 0))
    view.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
    return window.gallery.selected_image_ids()


def test_rules_set_in_the_dialog_are_saved_and_applied_to_proposals(qtbot, window, image_folder, tiny_model_path,
                                                                      tmp_path):
    dialog = window.edit_tag_rules()
    dialog.use_threshold.setChecked(True)
    dialog.threshold.setValue(0.0)
    dialog.max_tags.setValue(2)
    dialog.exclude.setText("RED, gr*")
    dialog.prefix.setText("ohwx")
    dialog.separator.setCurrentIndex(dialog.separator.findData("space"))
    dialog.accept()
    saved = AppSettings(tmp_path / "settings.ini").tag_rules  # what the next start reads
    assert saved == TagRules(min_confidence=0.0, exclude=("RED", "gr*"), max_tags=2, prefix=("ohwx",),
                             word_separator="space")

    open_folder(qtbot, window, image_folder)
    load_model(qtbot, window, tiny_model_path)
    results = []
    window.predictor.worker.predicted.connect(results.append)
    with qtbot.waitSignal(window.batchFinished, timeout=60_000):
        window.tag_all()
    assert {r.image_id for r in results} == {r.id for r in window.images.records()}
    for result in results:
        allowed = [t for t in LABELS if t not in ("red", "green") and result.confidences.get(t, 0) > 0]
        expected = sorted(allowed, key=lambda t: -result.confidences[t])[:2]
        assert result.labels == expected
        assert {t.tag for t in window.library.tags(result.image_id)} == set(expected)


def test_written_captions_follow_the_saved_rules(qtbot, window, image_folder):
    window.settings.tag_rules = TagRules(exclude=["watermark"], prefix=["ohwx"], word_separator="space")
    open_folder(qtbot, window, image_folder)
    image_id = window.current_id
    for tag in ("long_hair", "watermark"):
        assert window.add_tag(tag)
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000) as done:
        assert window.confirm_all()
    (txt,) = done.args[0].written[image_id]
    assert txt.read_text(encoding="utf-8") == "ohwx, long hair\n"


def test_a_tag_added_to_a_selection_removed_and_undone(qtbot, window, image_folder):
    open_folder(qtbot, window, image_folder)
    ids = _select(window, [0, 1, 2])
    assert len(ids) == 3
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000):  # the edit confirms them: they are written
        assert window.add_tag_to_selection("ohwx")
    stored(qtbot, window)
    assert all(window.library.tag_record(i, "ohwx").state == "added" for i in ids)
    assert window.gallery.proxy.rowCount() == 10
    window.gallery.set_tag_filter("ohwx")  # the grid's tag sets follow the edit
    assert window.gallery.proxy.rowCount() == 3
    window.gallery.set_tag_filter("")
    assert window.add_tag_to_selection("ohwx")
    stored(qtbot, window)
    assert window.undo_stack.count() == 1, "an edit that changes nothing does not stay on the stack"
    assert "no image changed" in window.statusBar().currentMessage()
    window.undo_stack.undo()
    stored(qtbot, window)
    assert all(window.library.tag_record(i, "ohwx") is None for i in ids)
    window.undo_stack.redo()
    assert window.remove_tag_from_selection("ohwx")
    stored(qtbot, window)
    assert all(window.library.tag_record(i, "ohwx") is None for i in ids)
    window.undo_stack.undo()
    stored(qtbot, window)
    assert all(window.library.tag_record(i, "ohwx") is not None for i in ids)


def test_find_and_replace_and_move_to_front_write_the_selection_captions(qtbot, window, image_folder):
    open_folder(qtbot, window, image_folder)
    ids = _select(window, [0, 1])
    for image_id in ids:
        for tag in ("smile", "long_hair", "character_x"):
            window.library.set_tag(image_id, tag, "added")
        window.library.confirm_all(image_id)
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000):
        assert window.replace_in_selection("_", " ")
    assert all(sorted(window.library.positive_tags(i)) == ["character x", "long hair", "smile"] for i in ids)
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000) as done:
        assert window.move_tag_to_front("smile")
    for image_id in ids:
        (txt,) = done.args[0].written[image_id]
        assert txt.read_text(encoding="utf-8") == "smile, character x, long hair\n"
    assert window.tag_panel.model.record(0).tag == "smile"  # the panel shows the order
    count = window.undo_stack.count()
    assert window.move_tag_to_front("smile")
    stored(qtbot, window)
    assert window.undo_stack.count() == count, "already first: nothing changed"
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000):
        window.undo_stack.undo()
    with qtbot.waitSignal(window.sidecarsWritten, timeout=20_000):
        window.undo_stack.undo()
    stored(qtbot, window)
    assert all(sorted(window.library.positive_tags(i)) == ["character_x", "long_hair", "smile"] for i in ids)


def test_a_tag_list_completes_after_the_folder_tags_and_is_remembered(qtbot, window, image_folder, tmp_path):
    tag_list = tmp_path / "danbooru.csv"
    tag_list.write_text('long_hair,0,2800000,"longhair"\nsmile,0,2000000,\n', encoding="utf-8")
    open_folder(qtbot, window, image_folder)
    window.library.set_tag(window.current_id, "smile", "added")
    window.refresh_folder_tags()
    qtbot.waitUntil(lambda: "smile" in window.folder_tags.model.tags(), timeout=10_000)
    with qtbot.waitSignal(window.tag_list_loader.loaded, timeout=10_000):
        window.use_tag_list(str(tag_list))
    assert window.tag_panel.completions.stringList() == ["smile", "long_hair"]
    assert AppSettings(tmp_path / "settings.ini").tag_list_path == str(tag_list)
    with qtbot.waitSignal(window.tag_list_loader.failed, timeout=10_000):
        window.use_tag_list(str(tmp_path / "gone.csv"))
    assert "gone.csv" in window.last_error and window.settings.tag_list_path == ""
