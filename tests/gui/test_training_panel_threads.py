"""The training panel reads the libraries, writes a run's manifests and keeps the new model off the
GUI thread; the run starts on the confirmed images as they are at the click."""

import json
import shutil
from pathlib import Path

from conftest import make_images, on_this_thread, open_folder, record_calls
from PySide6.QtCore import Qt

from mlcnn_core.library import Library
from mlcnn_core.recipes import TrainConfig
from tagger_app.models.model_registry import ModelRegistry
from tagger_app.widgets.training_panel import TrainingPanel


def confirm_current(window, tags: list[str]) -> None:
    for tag in tags:
        assert window.add_tag(tag)
    assert window.confirm_all()


def select(qtbot, window, image_id: int) -> None:
    assert window.gallery.select_image(image_id)
    qtbot.waitUntil(lambda: window.current_id == image_id, timeout=10_000)


def test_the_click_reads_the_libraries_off_the_gui_thread_and_trains_on_the_last_confirmation(
    qtbot, window, image_folder, monkeypatch, tmp_path
):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-data"))
    other = tmp_path / "other"
    make_images(other, 3, seed=1)
    there = Library.open(other)
    there.scan()
    for record in there.images():
        there.set_tag(record.id, "elsewhere", "added")
        there.confirm_all(record.id)
    there.close()
    window.settings.add_recent_folder(other)
    open_folder(qtbot, window, image_folder)  # no model: its predictions would read the library on the GUI thread
    records = window.images.records()
    for record in records[:-1]:
        select(qtbot, window, record.id)
        confirm_current(window, ["red"])
    calls = record_calls(monkeypatch, Library)

    window._show_training()
    panel = window.training_panel
    qtbot.waitUntil(lambda: panel.n_train + panel.n_held_out == len(records) - 1, timeout=30_000)
    panel.options.scratch_radio.setChecked(True)
    panel.other_list.item(0).setCheckState(Qt.CheckState.Checked)
    qtbot.waitUntil(lambda: panel.n_train + panel.n_held_out == len(records) + 2, timeout=30_000)
    panel.refresh_button.click()
    assert on_this_thread(calls) == [], "the panel read a library on the GUI thread"

    started: list[TrainConfig] = []
    monkeypatch.setattr(panel.trainer, "start", started.append)
    select(qtbot, window, records[-1].id)
    confirm_current(window, ["sunset"])  # just before the click
    del calls[:]
    assert panel.start_training()
    assert not panel.start_button.isEnabled() and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: bool(started), timeout=30_000)
    assert on_this_thread(calls) == [], "the click read a library on the GUI thread"
    assert {"confirmed_images", "open"} <= {name for name, _ in calls}
    manifests = [[json.loads(line) for line in Path(m).read_text().splitlines()] for m in started[0].data]
    assert [len(m) for m in manifests] == [len(records), 3]
    assert any("sunset" in row["labels"] for row in manifests[0])
    assert panel.n_train + panel.n_held_out == len(records) + 3
    assert any(r[0] == "sunset" for r in panel.label_counts.rows)


def test_a_start_cancelled_while_its_data_is_read_never_runs(qtbot, tmp_path, monkeypatch):
    folder = tmp_path / "images"
    make_images(folder, 4)
    library = Library.open(folder)
    library.scan()
    for record in library.images():
        library.set_tag(record.id, "red", "added")
        library.confirm_all(record.id)
    panel = TrainingPanel(registry=ModelRegistry(tmp_path / "models"), runs_dir=tmp_path / "runs")
    qtbot.addWidget(panel)
    try:
        panel.options.scratch_radio.setChecked(True)
        with qtbot.waitSignal(panel.dataShown, timeout=30_000):
            panel.set_library(library)
        started: list[TrainConfig] = []
        monkeypatch.setattr(panel.trainer, "start", started.append)
        with qtbot.waitSignal(panel.trainingEnded, timeout=10_000) as ended:
            assert panel.start_training()
            panel.cancel_button.click()
        assert ended.args == ["cancelled"] and panel.start_button.isEnabled()
        with qtbot.waitSignal(panel.dataShown, timeout=30_000):  # the worker has answered the cancelled start too
            panel.refresh_data()
        assert started == []
    finally:
        panel.shutdown()
        library.close()


def test_the_new_model_is_kept_and_listed_off_the_gui_thread(qtbot, tmp_path, tiny_model_path, monkeypatch):
    registry_calls = record_calls(monkeypatch, ModelRegistry)
    panel = TrainingPanel(registry=ModelRegistry(tmp_path / "models"), runs_dir=tmp_path / "runs")
    qtbot.addWidget(panel)
    try:
        panel.show()
        run = tmp_path / "runs" / "20261206-120000-000000"
        run.mkdir(parents=True)
        trained = run / "fine-tuned-20261206-120000.safetensors"
        shutil.copy(tiny_model_path, trained)
        checkpoint = run / (trained.name + ".ckpt")
        checkpoint.mkdir()
        (checkpoint / "last.safetensors").write_bytes(b"")
        panel._train_config = TrainConfig(data=[], out=str(trained), init=str(tiny_model_path))
        panel._promised_labels = ["sunset"]
        with qtbot.waitSignal(panel.trainingEnded, timeout=10_000) as ended:
            panel._on_done({"model": str(trained), "seconds": 3, "checkpoint": str(checkpoint / "last.safetensors")})
        assert ended.args == ["done"]
        assert Path(panel.new_model) == tmp_path / "models" / trained.name and Path(panel.new_model).is_file()
        assert not trained.exists() and not checkpoint.exists()
        assert panel.missing_labels == ["sunset"] and "sunset" in panel.label_warning.text()
        qtbot.waitUntil(lambda: panel.kept_models.rowCount() == 1, timeout=10_000)
        assert panel.kept_models.model_at(0).path == Path(panel.new_model)
        assert {"keep", "models"} <= {name for name, _ in registry_calls}
        assert on_this_thread(registry_calls) == [], "the registry's disk work ran on the GUI thread"
    finally:
        panel.shutdown()
