"""What each change the Fine-tune click makes to the training panel costs the GUI thread.

The main window offscreen (1400x900, no folder, no model), the training dock shown; each change is
made, then the events it posts (layout, paint) are processed, and the GUI thread's CPU time for both
is taken (median and worst of 5 rounds, the window left to settle between changes). To compare two
versions, run it from each checkout:

    cd CHECKOUT && PYTHONPATH=$PWD python bench/training_panel_layout.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="panel-layout-cache-")

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

RUN = "/home/me/.local/share/mlcnn-tagger/runs/20261206-213455-123456"
COMMAND = (f"mlcnn train --data {RUN}/confirmed-0.jsonl --out {RUN}/model.safetensors --init "
           "/home/me/.local/share/mlcnn-tagger/models/starter.safetensors --val-fraction 0.1 "
           f"--events {RUN}/events.jsonl --time-budget 5")
SUMMARY = "When a run ends, the new model is compared with the current one here, on the held-out confirmed images."


def settle(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main() -> None:
    app = QApplication([])
    from tagger_app.main_window import MainWindow
    from tagger_app.settings import AppSettings

    window = MainWindow(AppSettings(Path(tempfile.mkdtemp()) / "settings.ini"), load_default_model=False)
    window.resize(1400, 900)
    window.show()
    window._show_training()
    panel = window.training_panel
    settle(1000)
    changes = {
        "status line": lambda: panel.status_label.setText(f"Starting the trainer… {time.time()}"),
        "command line (long)": lambda: panel.command_label.setText(f"{COMMAND} --seed {time.time_ns()}"),
        "command line (short)": lambda: panel.command_label.setText("mlcnn train"),
        "result summary": lambda: panel.result_summary.setText(f"Training… {time.time()}"),
        "result summary (long)": lambda: panel.result_summary.setText(f"{SUMMARY} {SUMMARY} {time.time()}"),
        "log cleared": lambda: panel.log.clear(),
        "log line added": lambda: panel.log.appendPlainText("step 1: loss 0.5"),
        "progress bar busy": lambda: panel.progress_bar.setRange(0, 0),
        "progress bar idle": lambda: panel.progress_bar.setRange(0, 1),
        "running (buttons, options)": lambda: panel._set_running(True),
        "not running": lambda: panel._set_running(False),
        "curves cleared": lambda: panel.curves.clear(3),
        "warning shown": lambda: (panel.label_warning.setText("warning"), panel.label_warning.show()),
        "warning hidden": lambda: panel.label_warning.hide(),
        "nothing (control)": lambda: None,
    }
    costs: dict[str, list[float]] = {name: [] for name in changes}
    for _ in range(5):
        for name, change in changes.items():
            cpu = time.thread_time()
            change()
            app.processEvents()
            app.processEvents()
            costs[name].append(1000 * (time.thread_time() - cpu))
            settle(60)
    print("| change | GUI-thread CPU ms, median | worst |\n|---|---|---|")
    for name, values in costs.items():
        print(f"| {name} | {statistics.median(values):.1f} | {max(values):.1f} |")
    window.shutdown()


if __name__ == "__main__":
    main()
