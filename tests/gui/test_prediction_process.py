"""Prediction in a child process: the app never imports torch, the child dies with the app, and a
child that crashes is reported and replaced."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load_model, make_images, open_folder

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

APP_SCRIPT = """
import json, os, sys, time
from PySide6.QtCore import QEventLoop
from PySide6.QtWidgets import QApplication
from tagger_app.main_window import MainWindow
from tagger_app.settings import AppSettings

app = QApplication([])
window = MainWindow(AppSettings(sys.argv[1]), load_default_model=False)
window.error_dialogs = False
window.show()
finished = []
window.batchFinished.connect(lambda *args: finished.append(args))

def wait_for(condition, what):
    deadline = time.monotonic() + 240
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)

window.open_folder(sys.argv[2])
wait_for(lambda: window.library is not None, "the folder")
window.load_model(sys.argv[3])
wait_for(lambda: window.model is not None, "the model")
window.tag_all()
wait_for(lambda: finished, "Tag all")
window.gallery.select_image(window.images.records()[1].id)
wait_for(lambda: window.viewer._maps is not None, "the maps")
window.ensure_training_panel()
window.show_model_card()
shown = window.viewer.show_label(window.model.labels[0]) and not window.viewer.view.overlay_item.pixmap().isNull()
print(json.dumps({"torch": "torch" in sys.modules, "heatmap": bool(shown), "tagged": list(finished[0]),
                  "child": window.predictor.worker.process_id()}), flush=True)
app.exec()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_the_app_tags_without_torch_and_its_prediction_process_dies_with_it(tmp_path, tiny_model_path):
    folder = tmp_path / "images"
    make_images(folder, 6)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO_ROOT))
    app = subprocess.Popen(
        [sys.executable, "-c", APP_SCRIPT, str(tmp_path / "s.ini"), str(folder), str(tiny_model_path)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = app.stdout.readline()
        assert line, f"the app exited with {app.wait()} before reporting"
        report = json.loads(line)
        assert report["tagged"] == [6, 6, False] and report["heatmap"]
        assert report["torch"] is False, "the app's own process imported torch"
        child = report["child"]
        assert child and _alive(child)
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait()
    deadline = time.monotonic() + 20
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the prediction process outlived the app"


def test_a_crashed_prediction_process_is_reported_and_restarted(qtbot, window, image_folder, tiny_model_path):
    open_folder(qtbot, window, image_folder)
    load_model(qtbot, window, tiny_model_path)
    first = window.predictor.worker.process_id()
    os.kill(first, signal.SIGKILL)
    failures: list[str] = []
    window.predictor.worker.imageFailed.connect(lambda _i, message: failures.append(message))
    with qtbot.waitSignal(window.batchFinished, timeout=240_000) as finished:
        window.tag_all()
    assert finished.args == [10, 10, False]
    assert "Prediction stopped" in window.last_error and "SIGKILL" in window.last_error
    assert "starts again with the next image" in window.last_error
    # the batch in flight is retried one image at a time in the new process: nothing is lost
    assert failures == []
    assert all(window.library.prediction(r.id) is not None for r in window.images.records())
    assert window.predictor.worker.process_id() not in (None, first)


def test_a_second_model_replaces_the_first_in_the_same_process(qtbot, window, image_folder, tiny_model_path, tmp_path):
    from conftest import LABELS

    from mlcnn_core.modelfile import new_model, save_model

    fine_tuned = tmp_path / "fine-tuned.safetensors"
    save_model(new_model("tiny", labels=[*LABELS, "sunset"], name="fine-tuned"), fine_tuned)
    open_folder(qtbot, window, image_folder)
    load_model(qtbot, window, tiny_model_path)
    first = window.predictor.worker.process_id()
    load_model(qtbot, window, fine_tuned)
    assert window.model.labels[-1] == "sunset" and window.predictor.worker.process_id() == first
    with qtbot.waitSignal(window.batchFinished, timeout=120_000):
        window.tag_all()
    assert {window.library.prediction(r.id).model_hash for r in window.images.records()} == {window.model.hash}



def test_images_of_a_cancelled_batch_do_not_count_in_the_next(qtbot, window, tmp_path, tiny_model_path):
    from PySide6.QtCore import Qt

    from tagger_app.workers.predictor_worker import PredictionJob

    folder = tmp_path / "images"
    make_images(folder, 12)
    open_folder(qtbot, window, folder)
    load_model(qtbot, window, tiny_model_path)
    worker = window.predictor.worker

    def batch():
        return [PredictionJob(r.id, window.library.abspath(r.path), batch=True) for r in window.images.records()]

    delivered: list[int] = []  # since the second batch started
    finished: list[tuple] = []

    def restart_after_the_first_image(done, total, _elapsed):
        # in the worker thread, while the other images of its request are still to come
        if not finished:
            worker.cancel_batch()
            delivered.clear()
            worker.enqueue(batch())

    direct = Qt.ConnectionType.DirectConnection
    worker.progress.connect(restart_after_the_first_image, direct)
    worker.predicted.connect(lambda result: delivered.append(result.image_id), direct)
    worker.batchFinished.connect(lambda *args: finished.append((args, len(set(delivered)))), direct)
    worker.enqueue(batch())
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=240_000)
    assert finished[0][0][2] is True  # the first, cancelled
    assert finished[1] == ((12, 12, False), 12)  # finished when each of its 12 images had come, not before


def test_a_warning_about_the_model_file_is_shown_in_the_window(qtbot, window, tiny_model_path, tmp_path,
                                                                monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from test_modelfile import rewrite_card

    path = rewrite_card(tiny_model_path, tmp_path / "newer.safetensors",
                        lambda card, _: card.update(colour_space="oklab"))
    load_model(qtbot, window, path)
    assert "colour_space" in window.statusBar().currentMessage()
    assert window.model.warnings and not window.last_error
