"""The review loop with the keyboard alone: C and X decide the selected proposal and move on to the
next undecided one, T + text + Enter adds a tag and gives the keys back, N goes to the next image.
Rows stay where they are while an image is reviewed; the viewer shows the selected tag's map."""

import numpy as np
from conftest import LABELS, load_model, make_images, open_folder, stored, tags_read
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QApplication

from mlcnn_core import sidecars
from mlcnn_core.library import TagRecord
from tagger_app.widgets.viewer import OVERLAY_TAG, OVERLAY_WINNER, confidence_overlay, map_range

# none of them is in a label or in " note"
FIRST_LETTERS = "acfhjkmqvwxyz0123456789"


def press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    """A key as a person types it: to whichever widget has the keyboard focus."""
    qtbot.keyClick(QApplication.focusWidget() or window, key, modifier)


def type_text(qtbot, window, text):
    qtbot.keyClicks(QApplication.focusWidget() or window, text)


def panel_tags(window) -> list[str]:
    return [r.tag for r in window.tag_panel.model.records()]


def wait_for_proposals(qtbot, window):
    qtbot.waitUntil(
        lambda: window.current_id >= 0
        and any(r.source == "machine" for r in window.library.tags(window.current_id))
        and any(r.source == "machine" for r in window.tag_panel.model.records())
        and window.viewer._maps is not None,
        timeout=30_000,
    )


def test_twenty_images_reviewed_with_the_keyboard_alone(qtbot, window, tmp_path, tiny_model_path):
    folder = tmp_path / "twenty"
    make_images(folder, 20)
    open_folder(qtbot, window, folder)
    load_model(qtbot, window, tiny_model_path)
    window.activateWindow()
    window.gallery.view.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is not None, timeout=5_000)

    expected: dict[int, set[str]] = {}
    for i in range(20):
        if i:
            press(qtbot, window, Qt.Key.Key_N)
        wait_for_proposals(qtbot, window)
        image_id = window.current_id
        assert image_id not in expected, "N went to an image already reviewed"
        order = panel_tags(window)
        proposals = [r.tag for r in window.tag_panel.model.records() if r.source == "machine"]
        # the selected tag's map is shown at once, without asking
        assert window.viewer.overlay_mode() == OVERLAY_TAG
        assert window.viewer.shown_label() == window.tag_panel.selected_tag() == proposals[0]

        keep, drop = {proposals[0]}, set()
        press(qtbot, window, Qt.Key.Key_C)
        if len(proposals) > 1:
            assert window.tag_panel.selected_tag() == proposals[1], "C moves on to the next proposal"
            press(qtbot, window, Qt.Key.Key_X)
            drop.add(proposals[1])
        for tag in proposals[2:]:
            assert window.tag_panel.selected_tag() == tag
            press(qtbot, window, Qt.Key.Key_C)
            keep.add(tag)
        assert panel_tags(window) == order, "rows stay where they are while the image is reviewed"

        press(qtbot, window, Qt.Key.Key_T)
        assert QApplication.focusWidget() is window.tag_panel.add_field
        # a first letter no other tag contains, so the completion popup stays closed: the offscreen
        # platform lets a popup keep the activation after it closes, which no window manager does
        note = f"{FIRST_LETTERS[i]} note"
        type_text(qtbot, window, note)
        assert QApplication.activePopupWidget() is None
        press(qtbot, window, Qt.Key.Key_Return)
        keep.add(note)
        assert QApplication.focusWidget() is not window.tag_panel.add_field
        assert window.tag_panel.add_field.text() == ""
        assert panel_tags(window)[: len(order)] == order

        stored(qtbot, window)
        records = {r.tag: r for r in window.library.tags(image_id)}
        assert {t for t, r in records.items() if r.state in ("confirmed", "added")} == keep
        assert {t for t, r in records.items() if r.state == "rejected"} == drop
        assert window.library.image(image_id).status == "confirmed"
        expected[image_id] = keep

    qtbot.waitUntil(lambda: not window.library.pending_sidecars(), timeout=30_000)
    assert len(expected) == 20
    for image_id, keep in expected.items():
        image = window.library.abspath(window.library.image(image_id).path)
        assert set(sidecars.read_txt(sidecars.stem_txt_path(image))) == keep, image.name


def test_x_then_c_never_flips_the_rejected_tag_back(qtbot, window, image_folder, tiny_model_path):
    open_folder(qtbot, window, image_folder)
    load_model(qtbot, window, tiny_model_path)
    wait_for_proposals(qtbot, window)
    image_id = window.current_id
    window.add_tag("extra")  # a second row to move on to even if the model proposed one label
    window.tag_panel.select_tag(window.tag_panel.model.record(0).tag)
    rejected = window.tag_panel.selected_tag()
    window.tag_panel.reject_selected()
    stored(qtbot, window)
    assert window.library.tag_record(image_id, rejected).state == "rejected"
    assert window.tag_panel.selected_tag() != rejected
    window.tag_panel.confirm_selected()
    stored(qtbot, window)
    assert window.library.tag_record(image_id, rejected).state == "rejected"


def test_rows_keep_their_place_after_a_decision_and_a_new_image_starts_afresh(qtbot):
    from tagger_app.widgets.tag_panel import TagPanel

    panel = TagPanel()
    qtbot.addWidget(panel)
    proposals = [TagRecord("cat", "machine", "predicted", 0.9), TagRecord("dog", "machine", "predicted", 0.5)]
    panel.set_image(1, "a.png", "predicted", proposals)
    assert [r.tag for r in panel.model.records()] == ["cat", "dog"]
    panel.select_tag("dog")
    # the library lists a person's tags first: "dog", rejected, would jump above "cat"
    panel.set_image(1, "a.png", "predicted", [TagRecord("dog", "human", "rejected", 0.5), proposals[0]])
    assert [r.tag for r in panel.model.records()] == ["cat", "dog"]
    assert panel.selected_tag() == "dog"
    panel.set_image(2, "b.png", "predicted", [TagRecord("dog", "human", "rejected", 0.5), proposals[0]])
    assert [r.tag for r in panel.model.records()] == ["dog", "cat"]
    assert panel.selected_tag() == "cat", "a new image starts at its first undecided tag"


def test_the_map_follows_the_selection_and_the_image(qtbot, window, image_folder, tiny_model_path):
    open_folder(qtbot, window, image_folder)
    load_model(qtbot, window, tiny_model_path)
    wait_for_proposals(qtbot, window)
    first = window.current_id
    first_tag = window.tag_panel.selected_tag()
    assert window.viewer.shown_label() == first_tag
    assert not window.viewer.view.overlay_item.pixmap().isNull()

    # the winner map, then a click on the tag that is already selected shows that tag's map
    window.viewer.show_winner_map()
    assert window.viewer.shown_label() is None
    row = window.tag_panel.model.row_of(first_tag)
    rect = window.tag_panel.table.visualRect(window.tag_panel.model.index(row, 0))
    qtbot.mouseClick(window.tag_panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.viewer.overlay_mode() == OVERLAY_TAG
    assert window.viewer.shown_label() == first_tag

    # one label picked from the list lasts for this image only
    other = next(label for label in LABELS if label != first_tag)
    assert window.viewer.show_label(other)
    assert window.viewer.shown_label() == other
    window.gallery.step(1)
    wait_for_proposals(qtbot, window)
    assert window.current_id != first
    assert window.viewer.shown_label() == window.tag_panel.selected_tag()
    assert window.viewer.shown_label() in {r.tag for r in window.library.tags(window.current_id)}


def test_l_cycles_the_image_tags_not_every_label(qtbot, window, image_folder, tiny_model_path):
    open_folder(qtbot, window, image_folder)
    load_model(qtbot, window, tiny_model_path)
    wait_for_proposals(qtbot, window)
    window.add_tag(LABELS[0] if LABELS[0] not in panel_tags(window) else LABELS[1])
    window.add_tag("not-a-model-label")
    tags = panel_tags(window)
    window.viewer.hide_overlay()
    window.activateWindow()
    window.gallery.view.setFocus()
    seen = []
    for _ in range(len(tags)):
        press(qtbot, window, Qt.Key.Key_L)
        seen.append(window.tag_panel.selected_tag())
    assert sorted(seen) == sorted(tags)
    assert window.viewer.overlay_mode() == OVERLAY_TAG
    window.tag_panel.select_tag("not-a-model-label")
    assert window.viewer.shown_label() is None
    assert "not a label of this model" in window.viewer.caption.text()
    press(qtbot, window, Qt.Key.Key_L, Qt.KeyboardModifier.ShiftModifier)
    assert window.tag_panel.selected_tag() == tags[(tags.index("not-a-model-label") - 1) % len(tags)]


def test_an_absent_label_does_not_glow():
    present = np.zeros((6, 6), np.float32)
    present[2:4, 2:4] = 0.9
    absent = np.full((6, 6), 0.001, np.float32)
    absent[0, 0] = 0.004
    low, high = map_range(np.stack([present, absent]))
    assert alpha(confidence_overlay(absent, low, high)).max() < 45  # the ramp starts at 40; stretched, 255
    assert alpha(confidence_overlay(present, low, high)).max() == 255


def alpha(image):
    return np.array(image.constBits(), np.uint8).reshape(image.height(), image.width(), 4)[..., 3]


def test_winner_legend_lists_the_image_tags_first(qtbot):
    from tagger_app.widgets.viewer import ViewerPanel

    viewer = ViewerPanel()
    qtbot.addWidget(viewer)
    winner = np.zeros((4, 4), np.int32)
    winner[3, 3] = 1  # "cat" wins one position of sixteen, the background label the rest
    maps = np.zeros((2, 4, 4), np.float32)
    viewer.set_maps(maps, winner, ["household", "cat"], (64, 64), image_id=1)
    viewer.set_image_tags(["cat"])
    viewer.show_winner_map()
    assert viewer.overlay_mode() == OVERLAY_WINNER
    assert [viewer.legend.item(i).text().split()[0] for i in range(viewer.legend.count())] == ["cat", "household"]


def test_hover_readout_follows_the_overlay(qtbot):
    from PySide6.QtGui import QImage

    from tagger_app.widgets.viewer import ViewerPanel

    viewer = ViewerPanel()
    qtbot.addWidget(viewer)
    image = QImage(64, 64, QImage.Format.Format_RGB32)
    image.fill(0)
    viewer.set_image(image)
    maps = np.stack([np.full((4, 4), 0.0012, np.float32), np.full((4, 4), 0.7, np.float32)])
    viewer.set_maps(maps, np.ones((4, 4), np.int32), ["faint", "strong"], (64, 64), image_id=1)
    viewer.set_selected_tag("faint")
    viewer._on_hover(10, 10)
    assert "faint: 0.0012" in viewer.hover_label.text()  # two decimals printed 0.00
    viewer.set_selected_tag("strong")
    assert "strong: 0.7" in viewer.hover_label.text()
    viewer.set_maps(None, None, image_id=2)
    assert viewer.hover_label.text().strip() == ""


def test_paging_through_the_grid_predicts_only_where_it_stops(qtbot, window, image_folder, tiny_model_path):
    open_folder(qtbot, window, image_folder)
    load_model(qtbot, window, tiny_model_path)
    wait_for_proposals(qtbot, window)
    first = window.current_id
    for _ in range(8):  # Page Down held: each image replaced before PREDICT_AFTER_MS has passed
        window.gallery.step(1)
    last = window.current_id
    qtbot.waitUntil(lambda: window.library.image(last).status == "predicted", timeout=30_000)
    qtbot.wait(500)
    predicted = {r.id for r in window.library.images() if r.status == "predicted"}
    assert predicted == {first, last}


def test_small_things(qtbot, window, image_folder):
    # the empty window says what to do
    assert "Open a folder" in window.gallery.view.placeholder
    # the progress gives the rate
    window._on_progress(10, 100, 2.0)
    assert "5.0 images/s" in window.eta_label.text()
    # shortcuts a common keyboard has, not "Ctrl+Z, F14, Undo"
    names = dict(window.show_shortcuts().rows)
    assert names["Undo"].startswith("Ctrl+Z") and "Undo" not in names["Undo"]
    from tagger_app.widgets.info_dialogs import on_a_common_keyboard

    assert not on_a_common_keyboard(QKeySequence("F14")) and on_a_common_keyboard(QKeySequence("Delete"))
    # the training panel opens as its own window, leaving the grid and the tags their room
    central = window.centralWidget().height()
    window._show_training()
    assert window.training_dock.isFloating() and window.centralWidget().height() == central
    # a tag from a sidecar that the model cannot score says so instead of drawing an empty bar
    (image_folder / "img0000.txt").write_text("from elsewhere")
    open_folder(qtbot, window, image_folder)
    window.gallery.select_image(window.library.image_id("img0000.png"))
    tags_read(qtbot, window)
    model = window.tag_panel.model
    index = model.index(model.row_of("from elsewhere"), 1)
    assert "No score" in model.data(index, Qt.ItemDataRole.ToolTipRole)
