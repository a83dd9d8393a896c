"""The training panel with the real trainer subprocess: a tiny model fine-tuned for a few steps on a
dozen 64 px images, curves, comparison on the held-out part, a new label, cancel, a crashing trainer,
switching between kept models."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS, make_images, model_summary, stored
from PySide6.QtCore import Qt
from safetensors.numpy import load_file

from mlcnn_core.data import Sample, is_held_out, split_samples
from mlcnn_core.library import Library
from mlcnn_core.modelfile import read_card
from tagger_app.models.model_registry import ModelRegistry
from tagger_app.models.training_tables import ComparisonModel, accuracy_verdict
from tagger_app.widgets.training_panel import TrainingPanel

VAL_FRACTION = 0.3
TIMEOUT = 180_000  # the trainer imports torch in a subprocess; slow on a busy 2-core box


def confirmed_library(folder: Path, count: int = 12, new_tag: str | None = "sunset") -> Library:
    """A folder whose images a person has confirmed: a colour and a pattern each, a new tag on some."""
    make_images(folder, count)
    library = Library.open(folder)
    library.scan()
    for n, record in enumerate(sorted(library.images(), key=lambda r: r.path)):
        tags = [LABELS[n % 3], "stripes" if n % 2 else "dots"]
        if new_tag and n % 3 == 0:
            tags.append(new_tag)
        for tag in tags:
            library.set_tag(record.id, tag, "added")
        library.confirm_all(record.id)
    return library


def held_out_count(library: Library, fraction: float = VAL_FRACTION) -> int:
    return len(split_samples([Sample(str(p), tuple(t)) for p, t in library.confirmed_images()], fraction)[1])


@pytest.fixture
def panel(qtbot, tmp_path, tiny_model_path):
    registry = ModelRegistry(tmp_path / "models")
    widget = TrainingPanel(registry=registry, runs_dir=tmp_path / "runs")
    qtbot.addWidget(widget)
    widget.resize(1300, 500)
    widget.show()
    yield widget
    widget.shutdown()


def shown(qtbot, panel: TrainingPanel, change) -> None:
    """Make a change the panel reads the libraries again for (on the library worker), and wait until it shows it."""
    with qtbot.waitSignal(panel.dataShown, timeout=30_000):
        change()


def set_quick_options(panel: TrainingPanel, epochs: int = 2) -> None:
    panel.options.epochs_spin.setValue(epochs)
    panel.options.batch_spin.setValue(4)
    panel.options.val_spin.setValue(VAL_FRACTION)
    panel.options.device_combo.setCurrentText("cpu")


def test_panel_does_not_import_torch():
    import subprocess

    code = (
        "import os, sys; os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
        "from PySide6.QtWidgets import QApplication; app = QApplication([])\n"
        "from tagger_app.widgets.training_panel import TrainingPanel\n"
        "from tagger_app.models.model_registry import ModelRegistry\n"
        "import tempfile; d = tempfile.mkdtemp()\n"
        "p = TrainingPanel(registry=ModelRegistry(d), runs_dir=d); p.show(); app.processEvents()\n"
        "from PySide6.QtTest import QTest; QTest.qWait(500); p.shutdown()\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_new_labels_are_those_the_loaded_model_lacks(qtbot, panel, tmp_path):
    """The panel takes the labels from the model the predictor loaded; it does not read the file again."""
    library = confirmed_library(tmp_path / "images")
    gone = tmp_path / "moved-away.safetensors"
    panel.set_current_model(model_summary(gone, labels=[*LABELS, "sunset"]))
    shown(qtbot, panel, lambda: panel.set_library(library))
    rows = {r[0]: r for r in panel.label_counts.rows}
    assert not any("new" in r[3] for r in rows.values()) and "New labels" not in panel.data_summary.text()
    assert panel.current_model == str(gone) and panel.log.toPlainText() == ""
    library.close()


def test_shows_what_training_would_use(qtbot, panel, tmp_path, tiny_model_path):
    library = confirmed_library(tmp_path / "images")
    panel.set_current_model(model_summary(tiny_model_path))
    shown(qtbot, panel, lambda: panel.set_library(library))
    panel.options.val_spin.setValue(VAL_FRACTION)
    rows = {r[0]: r for r in panel.label_counts.rows}
    assert set(rows) == {"red", "green", "blue", "stripes", "dots", "sunset"}
    assert "new" in rows["sunset"][3]
    assert "new" not in rows["red"][3]
    assert panel.n_train + panel.n_held_out == 12
    assert panel.n_held_out == held_out_count(library)
    assert sum(r[2] for r in panel.label_counts.rows if r[0] in ("stripes", "dots")) == panel.n_held_out
    assert "too few" in rows["sunset"][3]  # 4 images, fewer than 5
    assert "sunset" in panel.data_summary.text()
    # the panel's options are the CLI's flags
    set_quick_options(panel)
    command = panel.request().command_line()
    assert command.startswith("mlcnn train --data ")
    assert f"--init {tiny_model_path}" in command and "--epochs 2" in command and "--val-fraction 0.3" in command
    assert "--lr" not in command and "--time-budget" not in command  # "auto" / "none": the recipe decides
    panel.options.time_spin.setValue(5)
    assert "--time-budget 5" in panel.request().command_line()
    panel.options.time_spin.setValue(0)
    # the recipe's defaults for this many images come from the core (a subprocess)
    qtbot.waitUntil(lambda: panel.options.epochs_spin.specialValueText().startswith("auto ("), timeout=60_000)
    options = panel.options
    # the default fine-tune learns the head on the frozen trunk, and the panel says so
    assert "learning the head on the frozen trunk" in options.defaults_note.text()
    # a fine-tune's rate at or past the anchor's cap would leave the old weights where they are: said so
    assert options.rate_warning.isHidden()
    options.lr_spin.setValue(1e-2)  # × the head's anchor, 100: a full return after every step
    assert not options.rate_warning.isHidden() and "only new labels will learn" in options.rate_warning.text()
    options.lr_spin.setValue(1e-3)
    assert options.rate_warning.isHidden()
    options.lr_spin.setValue(1e-2)
    # "keep what it knows: strongly" leaves --learn and --anchor to the recipe
    assert "--anchor" not in panel.request().command_line() and options.keep_note.isHidden()
    assert "--learn" not in panel.request().command_line()
    options.keep_combo.setCurrentIndex(1)
    assert "--anchor 30 " in panel.request().command_line() + " " and not options.keep_note.isHidden()
    assert options.rate_warning.isHidden()  # 1e-2 × 30 still lets the weights move
    # "no" is every weight at --anchor 0: no pull back, so no warning about it; the person is told
    # that the old style is kept only by training on images of it too
    options.keep_combo.setCurrentIndex(2)
    assert "--anchor 0 --learn all " in panel.request().command_line() + " "
    assert options.rate_warning.isHidden() and not options.keep_note.isHidden()
    assert "learning every weight" in options.defaults_note.text()
    options.keep_combo.setCurrentIndex(0)
    assert not options.rate_warning.isHidden()
    assert "learning the head on the frozen trunk" in options.defaults_note.text()
    options.scratch_radio.setChecked(True)  # no anchor from scratch
    assert options.rate_warning.isHidden() and not options.keep_combo.isEnabled()
    options.keep_combo.setCurrentIndex(2)
    assert "--anchor" not in panel.request().command_line() and options.keep_note.isHidden()
    assert "--learn" not in panel.request().command_line()
    options.keep_combo.setCurrentIndex(0)
    # "teach only the new labels" is a fine-tune of zero epochs, offered when there are new labels
    assert not panel.options.new_only_check.isEnabled()
    panel.options.finetune_radio.setChecked(True)
    assert panel.options.new_only_check.isEnabled()
    panel.options.new_only_check.setChecked(True)
    command = panel.request().command_line()
    assert "--epochs 0" in command and "--init" in command
    assert not panel.options.epochs_spin.isEnabled() and not panel.options.lr_spin.isEnabled()
    assert panel.options.rate_warning.isHidden()
    panel.options.scratch_radio.setChecked(True)
    assert not panel.options.new_only_check.isEnabled() and "--epochs 0" not in panel.request().command_line()
    assert panel.options.epochs_spin.isEnabled()
    library.close()


def test_teach_only_new_labels(qtbot, panel, tmp_path, tiny_model_path):
    library = confirmed_library(tmp_path / "images")
    (tmp_path / "images" / "zz-junk.png").write_bytes(b"not an image")  # the only image of a new tag
    library.scan()
    junk = next(r for r in library.images() if r.path.endswith("zz-junk.png"))
    library.set_tag(junk.id, "unreadable-only", "added")
    library.confirm_all(junk.id)
    panel.set_current_model(model_summary(tiny_model_path))
    shown(qtbot, panel, lambda: panel.set_library(library))
    panel.options.val_spin.setValue(VAL_FRACTION)
    panel.options.device_combo.setCurrentText("cpu")
    panel.options.new_only_check.setChecked(True)
    with qtbot.waitSignal(panel.comparisonReady, timeout=TIMEOUT):
        assert panel.start_training()
    assert panel.last_error == "", panel.last_stderr
    card = read_card(panel.new_model)
    assert card["labels"][-2:] == ["sunset", "unreadable-only"] and card["provenance"]["epochs_run"] == 0
    log = panel.log.toPlainText()
    assert "New labels fitted before training" in log
    assert "New labels fitted to how prediction reads them: " in log, log   # why, as auto chose
    assert "Warning: no readable training image has unreadable-only" in log, log
    assert panel.curves.loss == [] and panel.activate_button.isEnabled()
    before, after = load_file(str(tiny_model_path)), load_file(panel.new_model)
    assert set(before) == set(after)
    grown = [k for k in before if before[k].shape != after[k].shape]
    assert grown and all(after[k].shape[0] == before[k].shape[0] + 2 for k in grown)  # two new output rows
    for key in before:  # everything else is the current model's, bit for bit
        old = before[key]
        new = after[key][: old.shape[0]] if key in grown else after[key]
        assert np.array_equal(old, new), key
    library.close()


def test_a_new_tag_whose_only_image_would_be_held_out_is_learnt(qtbot, panel, tmp_path, tiny_model_path):
    library = confirmed_library(tmp_path / "images", new_tag=None)
    held = next(r for r in library.images() if is_held_out(r.path, VAL_FRACTION))
    library.set_tag(held.id, "lotus", "added")
    panel.set_current_model(model_summary(tiny_model_path))
    shown(qtbot, panel, lambda: panel.set_library(library))
    panel.options.val_spin.setValue(VAL_FRACTION)
    panel.options.device_combo.setCurrentText("cpu")
    rows = {r[0]: r for r in panel.label_counts.rows}
    assert rows["lotus"][1:3] == (1, 0) and "new" in rows["lotus"][3]  # trained on, not held out
    panel.options.new_only_check.setChecked(True)
    with qtbot.waitSignal(panel.comparisonReady, timeout=TIMEOUT):
        assert panel.start_training()
    assert panel.last_error == "", panel.last_stderr
    assert "lotus" in read_card(panel.new_model)["labels"]
    assert panel.missing_labels == [] and panel.label_warning.isHidden()
    # a promised label the new model lacks is named
    panel._promised_labels = ["lotus", "sunset"]
    panel._check_promised_labels(set(read_card(tiny_model_path)["labels"]))
    assert panel.missing_labels == ["lotus", "sunset"]
    assert not panel.label_warning.isHidden() and "lotus, sunset" in panel.label_warning.text()
    library.close()


def test_fine_tune_compare_activate_switch_back(qtbot, panel, tmp_path, tiny_model_path):
    library = confirmed_library(tmp_path / "images")
    panel.set_current_model(model_summary(tiny_model_path))
    shown(qtbot, panel, lambda: panel.set_library(library))
    set_quick_options(panel, epochs=3)
    activated = []
    panel.activateModelRequested.connect(activated.append)
    epochs, steps, compared = [], [], []
    panel.evaluator.progress.connect(lambda *args: compared.append(args))
    panel.trainer.epochEnded.connect(epochs.append)
    panel.trainer.progress.connect(steps.append)

    with qtbot.waitSignal(panel.comparisonReady, timeout=TIMEOUT):
        assert panel.start_training()
        assert not panel.start_button.isEnabled() and panel.cancel_button.isEnabled()
    assert panel.last_error == "", panel.last_stderr
    manifest = [json.loads(line) for line in (panel._run_dir / "confirmed-0.jsonl").read_text().splitlines()]
    assert len(manifest) == 12 and all(Path(r["image"]).is_absolute() for r in manifest)
    # progress and curves
    assert len(epochs) == 3 and steps
    assert len(panel.curves.loss) == len(steps)
    assert len(panel.curves.accuracy) == 3  # held-out accuracy per epoch
    assert panel.progress_bar.value() == panel.progress_bar.maximum()
    # the new model is kept, with a card, and has the new label
    assert panel.new_model and Path(panel.new_model).parent == tmp_path / "models"
    assert not list(panel._run_dir.glob("*.ckpt"))  # a finished run needs no checkpoint
    card = read_card(panel.new_model)
    assert card["labels"][: len(LABELS)] == LABELS and card["labels"][-1] == "sunset"
    assert card["name"] == Path(panel.new_model).stem == "fine-tuned-" + panel._run_dir.name[:15]
    log = panel.log.toPlainText()
    assert "New labels fitted before training" in log and "New labels fitted after training" in log, log
    assert card["provenance"]["init"] == str(tiny_model_path)
    # compared on the held-out images: both models, per label, "sunset" new
    n_held = held_out_count(library)
    assert n_held > 0
    assert f"On {n_held} held-out images" in panel.result_summary.text()
    assert [r["metric"] for r in panel.comparison.overall] == ["precision", "recall", "accuracy", "mAP"]
    assert all(r["current"] is not None and r["new"] is not None for r in panel.comparison.overall)
    rows = {r["label"]: r for r in panel.comparison.rows}
    assert sum(r["support"] for lab, r in rows.items() if lab in ("stripes", "dots")) == n_held
    if "sunset" in rows:
        assert rows["sunset"]["is_new"] and rows["sunset"]["f1_old"] is None
    assert panel.comparison_view.model().rowCount() == len(panel.comparison.rows)
    # the comparison said which model it was reading, one after the other
    assert [(done, total) for done, total, _ in compared] == [(0, 2), (1, 2)]
    assert [model for _, _, model in compared] == [str(tiny_model_path), panel.new_model]
    assert panel.verdict is not None and panel.verdict.text in panel.result_summary.text()
    # make it active; the main window would load it and tell the panel
    assert panel.activate_button.isEnabled()
    panel.activate_button.click()
    assert activated == [panel.new_model]
    assert not panel.activate_button.isEnabled()
    panel.set_current_model(model_summary(panel.new_model))
    assert not panel.activate_button.isEnabled() and "in use" in panel.activate_button.text()
    qtbot.waitUntil(lambda: panel.kept_models.rowCount() == 1)
    assert panel.kept_models.data(panel.kept_models.index(0, 0)).startswith("●")
    # switch back to an earlier model from the kept list
    older = ModelRegistry(tmp_path / "models").new_model_path("older")
    older.write_bytes(Path(tiny_model_path).read_bytes())
    with qtbot.waitSignal(panel.keeper.listed):
        panel.keeper.list_models()
    row = next(i for i in range(panel.kept_models.rowCount()) if panel.kept_models.model_at(i).path == older)
    panel.kept_view.selectRow(row)
    panel.use_kept_button.click()
    assert activated[-1] == str(older)
    library.close()


def test_accuracy_verdict_says_which_model_is_better_and_how_sure():
    few = accuracy_verdict(0.9, 0.7, 5)
    assert few.worse and "0.200 worse" in few.text and "neither is clearly better" in few.text
    many = accuracy_verdict(0.9, 0.7, 400)
    assert many.worse and many.text.startswith("The new model is worse")
    better = accuracy_verdict(0.6, 0.8, 400)
    assert not better.worse and better.text.startswith("The new model is better")
    assert accuracy_verdict(None, 0.8, 10) is None


def fake_results(precision: float, accuracy: float, images: int = 5) -> dict:
    per_label = {label: {"support": 2, "precision": precision, "recall": 0.5, "f1": 0.5} for label in LABELS}
    return {"images": images, "single_pass": {"precision": precision, "recall": 0.5, "accuracy": accuracy,
                                              "mAP": 0.5, "per_label": per_label}}


def test_a_worse_new_model_is_not_offered_like_a_better_one(qtbot, panel, tmp_path, tiny_model_path):
    panel.set_current_model(model_summary(tiny_model_path))
    new = tmp_path / "models" / "new.safetensors"
    new.parent.mkdir(exist_ok=True)
    new.write_bytes(Path(tiny_model_path).read_bytes())
    panel.new_model, panel._compared_current = str(new), str(tiny_model_path)
    panel._on_compared({str(tiny_model_path): fake_results(0.9, 0.9), str(new): fake_results(0.7, 0.7)})
    assert "worse" in panel.result_summary.text() and "neither is clearly better" in panel.result_summary.text()
    assert panel.activate_button.isEnabled() and panel.activate_button.text() == "Use the new model anyway"
    panel._on_compared({str(tiny_model_path): fake_results(0.7, 0.7, 500), str(new): fake_results(0.9, 0.9, 500)})
    assert "The new model is better" in panel.result_summary.text()
    assert panel.activate_button.text() == "Use the new model"
    # every column, F1 and its change included, is in view in the panel's result column
    view = panel.comparison_view
    last = ComparisonModel.DELTA_COLUMN
    assert view.columnViewportPosition(last) + view.columnWidth(last) <= view.viewport().width()


def test_cancel_keeps_checkpoint(qtbot, panel, tmp_path, tiny_model_path):
    library = confirmed_library(tmp_path / "images", new_tag=None)
    panel.set_current_model(model_summary(tiny_model_path))
    shown(qtbot, panel, lambda: panel.set_library(library))
    set_quick_options(panel, epochs=200)
    ended = []
    panel.trainingEnded.connect(ended.append)
    assert panel.start_training()
    qtbot.waitUntil(lambda: len(panel.curves.accuracy) >= 1, timeout=TIMEOUT)
    with qtbot.waitSignal(panel.trainingEnded, timeout=TIMEOUT):
        panel.cancel_button.click()
    assert ended == ["cancelled"]
    assert "Cancelled" in panel.result_summary.text()
    run_dir = panel._run_dir
    model_file = run_dir / panel.model_file_name(run_dir)
    assert (model_file.parent / (model_file.name + ".ckpt") / "last.safetensors").is_file()
    assert model_file.is_file()
    assert panel.start_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert panel.new_model is None and not panel.activate_button.isEnabled()
    library.close()


def test_crashing_trainer_is_reported(qtbot, panel, tmp_path, tiny_model_path):
    library = confirmed_library(tmp_path / "images", new_tag=None)
    broken = tmp_path / "broken.safetensors"
    data = bytearray(Path(tiny_model_path).read_bytes())
    broken.write_bytes(bytes(data[: len(data) // 2]))  # a truncated model: the card reads, the weights don't
    panel.set_current_model(model_summary(broken))
    shown(qtbot, panel, lambda: panel.set_library(library))
    set_quick_options(panel)
    with qtbot.waitSignal(panel.trainingEnded, timeout=TIMEOUT) as ended:
        assert panel.start_training()
    assert ended.args == ["failed"]
    assert "truncated" in panel.last_error or "broken.safetensors" in panel.last_error
    assert "Training failed" in panel.result_summary.text()
    assert panel.start_button.isEnabled()
    library.close()


def test_trainer_process_reports_a_crash_with_its_stderr(qtbot, tmp_path, monkeypatch):
    """A trainer that dies without an "error" event (here: refusing a flag) reports stderr's tail."""
    from mlcnn_core.recipes import TrainConfig
    from tagger_app.workers.trainer_process import TrainerProcess

    trainer = TrainerProcess()
    config = TrainConfig(data=[str(tmp_path / "nothing-here")], out=str(tmp_path / "m.safetensors"), events="-")
    argv = config.to_argv()
    monkeypatch.setattr(TrainConfig, "to_argv", lambda _self: [*argv, "--bogus-flag"])
    with qtbot.waitSignal(trainer.failed, timeout=60_000) as failed:
        trainer.start(config)
    message, tail = failed.args
    assert "bogus-flag" in tail and "exit code 2" in message
    assert not trainer.is_running()


def test_other_libraries_add_training_data(qtbot, panel, tmp_path, tiny_model_path):
    here = confirmed_library(tmp_path / "here", count=6, new_tag=None)
    there = confirmed_library(tmp_path / "there", count=6, new_tag="extra")
    there.close()
    never_opened = tmp_path / "never"
    never_opened.mkdir()
    panel.set_current_model(model_summary(tiny_model_path))
    shown(qtbot, panel, lambda: panel.set_library(here, [str(here.root), str(tmp_path / "there"), str(never_opened)]))
    assert panel.other_list.count() == 2
    assert panel.n_train + panel.n_held_out == 6
    panel.options.keep_combo.setCurrentIndex(2)  # learn a new style: replaying another library is suggested...
    assert not panel.options.keep_note.isHidden()
    shown(qtbot, panel, lambda: panel.other_list.item(0).setCheckState(Qt.CheckState.Checked))
    assert panel.n_train + panel.n_held_out == 12
    assert panel.options.keep_note.isHidden()  # ...until one is ticked
    assert panel.request().command_line().count("--data ") == 2
    assert "extra" in {r[0] for r in panel.label_counts.rows}
    shown(qtbot, panel, lambda: panel.other_list.item(1).setCheckState(Qt.CheckState.Checked))
    assert not (never_opened / ".mlcnn-tagger").exists()  # the panel never creates a library
    here.close()


def test_in_the_main_window_confirm_train_activate_predict(
    qtbot, window, image_folder, tiny_model_path, monkeypatch, tmp_path
):
    from conftest import load_model, open_folder

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-data"))
    open_folder(qtbot, window, image_folder)
    load_model(qtbot, window, tiny_model_path)
    with qtbot.waitSignal(window.batchFinished, timeout=60_000):
        window.tag_all()
    # a person confirms every image, adding a tag the model does not know to some
    for n, record in enumerate(window.images.records()):
        assert window.gallery.select_image(record.id)
        qtbot.waitUntil(lambda rid=record.id: window.current_id == rid, timeout=10_000)
        if n % 2 == 0:
            assert window.add_tag("sunset")
        assert window.confirm_all()
    stored(qtbot, window)
    assert window.library.status_counts()["confirmed"] == 10

    window._show_training()
    panel = window.training_panel
    assert panel is not None and panel.isVisible()
    qtbot.waitUntil(lambda: panel.n_train + panel.n_held_out == 10, timeout=30_000)
    assert panel.current_model == str(tiny_model_path)
    assert any(r[0] == "sunset" and r[3].startswith("new") for r in panel.label_counts.rows)
    set_quick_options(panel, epochs=2)
    with qtbot.waitSignal(panel.comparisonReady, timeout=TIMEOUT):
        assert panel.start_training()
    assert panel.last_error == "", panel.last_stderr
    assert panel.curves.loss and Path(panel.new_model).parent == tmp_path / "user-data" / "mlcnn-tagger" / "models"

    with qtbot.waitSignal(window.modelReady, timeout=60_000):
        panel.activate_button.click()
    assert window.model.path == panel.new_model
    assert "sunset" in window.model.labels
    assert panel.kept_models.data(panel.kept_models.index(0, 0)).startswith("●")
    # the new model's predictions reach the library
    with qtbot.waitSignal(window.batchFinished, timeout=60_000):
        window.tag_all()
    record = window.images.records()[0]
    assert window.library.prediction(record.id).model_hash == window.model.hash


def test_log_keeps_its_last_line_in_view_until_scrolled_up(qtbot):
    from tagger_app.widgets.training_curves import LogView

    log = LogView()
    qtbot.addWidget(log)
    log.resize(300, 120)
    log.show()
    bar = log.verticalScrollBar()
    for i in range(60):
        log.appendPlainText(f"line {i}: " + "words that wrap " * 4)
    qtbot.waitUntil(lambda: bar.maximum() > 0)
    assert bar.value() == bar.maximum()
    log.resize(160, 120)  # the lines rewrap: more of them, the end still in view
    qtbot.waitUntil(lambda: bar.value() == bar.maximum())
    bar.setValue(bar.maximum() // 2)  # the person scrolls up to read
    log.appendPlainText("another line")
    assert 0 < bar.value() < bar.maximum() and not log.following
    bar.setValue(bar.maximum())  # back to the end: follows again
    log.appendPlainText("and one more")
    assert bar.value() == bar.maximum()
