"""Screenshots for docs/, taken of a copy of the demo folder with a throwaway user data folder (the
models, training runs and settings of the person running it are not touched). Run under a real X
server (Xvfb):

    xvfb-run -a -s "-screen 0 1400x900x24" python docs/take_screenshot.py docs/screenshot-main-window.png
    xvfb-run -a -s "-screen 0 1400x900x24" python docs/take_screenshot.py --training-panel \\
        --new-tag food:food- docs/screenshot-training-panel.png --activated docs/screenshot-new-model.png

``docs/make_screenshots.sh`` runs both and shrinks the PNGs (pngquant, optipng): one command after a model change.

The main window: the folder tagged by the starter model, one image's confidence map shown.
``--training-panel``: the demo's sidecars taken as confirmed tags, the starter model fine-tuned on
them from the Training panel (``mlcnn train`` as the panel's subprocess, 6 epochs, batch 8, 30 %
held out), the panel floated and grabbed once the comparison on the held-out images is in (or
the panel has said there are none to compare on);
``--new-tag TAG:PREFIX`` first adds a tag the model does not know to every sidecar with a label
starting with PREFIX, as a person adding their own tag would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtWidgets import QApplication

from mlcnn_core.modelfile import starter_model_path
from mlcnn_core.shipped import resources_dir
from mlcnn_core.sidecars import read_txt, write_txt
from tagger_app.main_window import MainWindow
from tagger_app.settings import AppSettings

TRAINING_TIMEOUT = 3 * 3600  # seconds; the trainer and the comparison run on the CPU, maybe a busy one


def wait(app: QApplication, condition, timeout: float = 300, progress=None) -> None:
    """Run the event loop until ``condition()``; print ``progress()`` each time its text changes."""
    end = time.time() + timeout
    shown = None
    while not condition():
        if time.time() > end:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        if progress is not None and progress() != shown:
            shown = progress()
            print(f"  {time.strftime('%H:%M:%S')} {shown}", flush=True)
        time.sleep(0.02)


def settle(app: QApplication, seconds: float = 1.0) -> None:
    for _ in range(int(seconds / 0.02)):
        app.processEvents()
        time.sleep(0.02)


def add_tag(folder: Path, tag: str, prefix: str) -> int:
    """Add ``tag`` to every sidecar of ``folder`` with a label starting with ``prefix``; how many."""
    tagged = 0
    for sidecar in sorted(folder.glob("*.txt")):
        labels = read_txt(sidecar)
        if any(lab.startswith(prefix) for lab in labels) and tag not in labels:
            write_txt(sidecar, [tag], policy="merge")
            tagged += 1
    return tagged


def open_demo(app: QApplication, tmp: Path, new_tag: str | None = None) -> MainWindow:
    """The window with a copy of the demo folder open (its sidecars as confirmed tags) and the starter model."""
    model = starter_model_path()
    if model is None:
        raise SystemExit(f"no starter model in {resources_dir() / 'models'}")
    folder = tmp / "demo"
    shutil.copytree(resources_dir() / "demo", folder)
    if new_tag:
        tag, _, prefix = new_tag.partition(":")
        print(f"{add_tag(folder, tag, prefix or tag)} sidecars given the new tag {tag!r}")
    window = MainWindow(AppSettings(tmp / "settings.ini"), load_default_model=False)
    window.error_dialogs = False
    window.resize(1400, 900)
    window.show()
    opened = []
    window.folderOpened.connect(lambda *_: opened.append(True))
    window.open_folder(folder, import_as_confirmed=True)
    wait(app, lambda: opened)
    window.load_model(model)
    wait(app, lambda: window.model is not None)
    return window


def show_map(app: QApplication, window: MainWindow, label: str) -> None:
    """Select ``label`` in the tag panel: the viewer shows the selected tag's map by default (a label
    that is not one of the image's tags is picked from the overlay list instead)."""
    if not window.tag_panel.select_tag(label):
        window.viewer.show_label(label)
    wait(app, lambda: window.viewer.shown_label() == label)


def main_window_shot(app: QApplication, window: MainWindow, out: str, image: str) -> None:
    done = []
    window.batchFinished.connect(lambda *a: done.append(a))
    window.tag_all()
    wait(app, lambda: done)
    record = next(r for r in window.images.records() if r.path == image)
    window.gallery.select_image(record.id)
    wait(app, lambda: window.viewer._maps is not None and window.viewer.view.image_size()[0] > 0)
    prediction = window.library.prediction(record.id)
    best = max(prediction.scores, key=prediction.scores.get)
    show_map(app, window, best)
    settle(app)
    window.grab().save(out)
    print(f"saved {out}: {image}, map of {best!r}; proposed "
          + ", ".join(f"{label} ({prediction.scores[label]:.2f})" for label in prediction.labels))


def training_panel_shot(app: QApplication, window: MainWindow, out: str, epochs: int = 6, batch: int = 8) -> None:
    window._show_training()
    panel = window.training_panel
    dock = window.training_dock
    dock.setFloating(True)
    dock.resize(1400, 640)
    settle(app)
    panel.options.finetune_radio.setChecked(True)
    panel.options.epochs_spin.setValue(epochs)
    panel.options.batch_spin.setValue(batch)
    panel.options.val_spin.setValue(0.3)
    settle(app)
    print(f"{panel.n_train + panel.n_held_out} confirmed images, {panel.n_held_out} held out")
    ended, compared = [], []
    panel.trainingEnded.connect(ended.append)
    panel.comparisonReady.connect(lambda: compared.append(True))
    if not panel.start_button.isEnabled():
        raise SystemExit(f"the panel cannot start training: {panel.result_summary.text() or panel.status_label.text()}")
    panel.start_button.click()
    wait(app, lambda: compared or (ended and ended[-1] != "done"), timeout=TRAINING_TIMEOUT,
         progress=panel.status_label.text)
    if panel.last_error:
        raise SystemExit(f"training or comparison failed: {panel.last_error}\n{panel.last_stderr}")
    panel.tabs_left.setCurrentIndex(0)  # Data
    panel.tabs_right.setCurrentIndex(0)  # Comparison
    settle(app)
    dock.grab().save(out)
    print(f"saved {out}: {panel.status_label.text()}; {panel.result_summary.text()}")


def activated_shot(app: QApplication, window: MainWindow, out: str, tag: str | None) -> None:
    """After the training panel's run: "Use the new model", Tag all, and the new model's map of ``tag``
    (else of its best label) on the first image where it predicts it."""
    panel = window.training_panel
    ready = []
    window.modelReady.connect(ready.append)
    panel.activate_button.click()
    wait(app, lambda: ready)
    window.training_dock.hide()
    done = []
    window.batchFinished.connect(lambda *a: done.append(a))
    window.tag_all()
    wait(app, lambda: done, timeout=TRAINING_TIMEOUT)
    records = window.images.records()
    shown = next((r for r in records if tag in getattr(window.library.prediction(r.id), "labels", [])), records[0])
    window.gallery.select_image(shown.id)
    wait(app, lambda: window.viewer._maps is not None and window.viewer.view.image_size()[0] > 0)
    prediction = window.library.prediction(shown.id)
    label = tag if tag in prediction.labels else max(prediction.scores, key=prediction.scores.get)
    show_map(app, window, label)
    settle(app)
    window.grab().save(out)
    print(f"saved {out}: {window.model.name}, {Path(shown.path).name}, map of {label!r}; proposed "
          + ", ".join(f"{lab} ({prediction.scores[lab]:.2f})" for lab in prediction.labels))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("image", nargs="?", default="noto-003.jpg", help="main window: the image whose map is shown")
    parser.add_argument("--training-panel", action="store_true", help="the Training panel after a fine-tune")
    parser.add_argument("--new-tag", metavar="TAG:PREFIX", help="first add TAG to the sidecars with a PREFIX… label")
    parser.add_argument("--activated", metavar="PNG",
                        help="with --training-panel: then use the new model, Tag all, and grab the main window here")
    args = parser.parse_args(argv)
    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="shot-") as tmp:
        tmp = Path(tmp)
        os.environ["XDG_DATA_HOME"] = str(tmp / "user-data")  # platformdirs: kept models, training runs
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
        window = open_demo(app, tmp, args.new_tag)
        try:
            if args.training_panel:
                training_panel_shot(app, window, args.out)
                if args.activated:
                    activated_shot(app, window, args.activated, (args.new_tag or "").partition(":")[0] or None)
            else:
                main_window_shot(app, window, args.out, args.image)
        finally:
            window.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
