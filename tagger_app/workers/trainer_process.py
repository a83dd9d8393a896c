"""The trainer and the evaluator as subprocesses (``mlcnn train`` / ``mlcnn evaluate``), wrapped in QProcess.

The GUI never trains in its own process and never waits on these: QProcess reports by signal. The
trainer's ``--events -`` JSON lines become Qt signals; stderr is kept as a tail for error reports.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from mlcnn_core.recipes import TrainConfig

STDERR_TAIL_LINES = 40
KILL_AFTER_CANCEL_MS = 60_000
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def cli_command(*args: str) -> tuple[str, list[str]]:
    """(program, arguments) running the ``mlcnn`` CLI with this interpreter."""
    return sys.executable, ["-m", "mlcnn_core.cli", *args]


def _environment() -> QProcessEnvironment:
    env = QProcessEnvironment.systemEnvironment()
    path = env.value("PYTHONPATH", "")
    env.insert("PYTHONPATH", str(REPO_ROOT) + (os.pathsep + path if path else ""))
    env.insert("PYTHONUNBUFFERED", "1")
    return env


class TrainerProcess(QObject):
    """Runs one ``mlcnn train`` at a time and turns its events into signals.

    Exactly one of ``finished``, ``cancelled`` or ``failed`` follows every ``start()``."""

    started = Signal(dict)  # the "start" event: train/val images, epochs, recipe, device...
    progress = Signal(dict)  # "step" events: epoch, step, total_steps, loss, images_per_s, eta_s
    preparing = Signal(dict)  # "frozen_features" events: images_done, images, eta_s (before a frozen fine-tune's steps)
    epochEnded = Signal(dict)  # "epoch" events: train_loss, val{precision, recall, accuracy, mAP}
    logLine = Signal(str)
    finished = Signal(dict)  # "done": model, metrics, seconds, checkpoint
    cancelled = Signal(dict)  # "cancelled": the model and checkpoint are still written
    failed = Signal(str, str)  # message, stderr tail

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.process: QProcess | None = None
        self.config: TrainConfig | None = None
        self._stdout_buffer = b""
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._final: dict | None = None
        self._error_event: str | None = None
        self._cancel_requested = False
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

    def is_running(self) -> bool:
        return self.process is not None

    def start(self, config: TrainConfig) -> None:
        """Run ``mlcnn train`` with ``config``'s flags; its events must go to stdout (``events="-"``)."""
        if self.process is not None:
            raise RuntimeError("a training run is already in progress")
        if config.events != "-":
            raise ValueError("the trainer reports its progress on stdout: give events='-'")
        self.config = config
        self._stdout_buffer = b""
        self._stderr_tail.clear()
        self._final = None
        self._error_event = None
        self._cancel_requested = False
        process = QProcess(self)
        process.setProcessEnvironment(_environment())
        process.setWorkingDirectory(str(Path(config.out).parent))
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self.process = process
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        self.logLine.emit("$ " + config.command_line())
        program, args = cli_command("train", *config.to_argv())
        process.start(program, args)

    def cancel(self) -> None:
        """SIGTERM: the trainer stops after the current step and still writes the model and checkpoint."""
        if self.process is None or self._cancel_requested:
            return
        self._cancel_requested = True
        self.logLine.emit("Cancelling after the current step…")
        self.process.terminate()
        self._kill_timer.start(KILL_AFTER_CANCEL_MS)

    def _kill(self) -> None:
        if self.process is not None:
            self.logLine.emit("The trainer did not stop in time; killing it.")
            self.process.kill()

    def _read_stdout(self) -> None:
        if self.process is None:
            return
        self._stdout_buffer += bytes(self.process.readAllStandardOutput())
        *lines, self._stdout_buffer = self._stdout_buffer.split(b"\n")
        for raw in lines:
            self._handle_line(raw.decode("utf-8", "replace").strip())

    def _read_stderr(self) -> None:
        if self.process is None:
            return
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self._stderr_tail.append(line)
                self.logLine.emit(line)

    def _handle_line(self, line: str) -> None:
        if not line:
            return
        try:
            event = json.loads(line)
            kind = event["event"]
        except (ValueError, KeyError, TypeError):
            self.logLine.emit(line)
            return
        if kind == "step":
            self.progress.emit(event)
        elif kind == "epoch":
            self.epochEnded.emit(event)
            self.logLine.emit(_describe_epoch(event))
        elif kind == "start":
            self.started.emit(event)
            self.logLine.emit(
                f"Training on {event.get('train_images')} images ({event.get('val_images')} held out), "
                f"{event.get('epochs')} epochs, device {event.get('device')}"
            )
        elif kind == "frozen_features":
            self.preparing.emit(event)
            if event.get("images_done") == event.get("images"):
                self.logLine.emit(f"Read {event.get('images')} images through the frozen part of the network "
                                  f"({event.get('views')} views) in {event.get('seconds', 0):.0f} s")
        elif kind == "labels_added":
            self.logLine.emit("New labels added to the model: " + ", ".join(event.get("labels", [])))
        elif kind == "new_labels_fitted":
            self.logLine.emit(_describe_fit(event))
        elif kind == "new_labels_mode":
            how = {"fit": "fitted to how prediction reads them", "train": "learnt with the head",
                   "cut": "learnt with the head, each with a cut of its own"}.get(event.get("mode"), event.get("mode"))
            self.logLine.emit(f"New labels {how}: {event.get('why', '')}")
        elif kind == "new_labels_cut":
            scales = event.get("scales", {})
            self.logLine.emit("New labels' own cuts (score × factor): "
                              + ", ".join(f"{lab} × {v:g}" for lab, v in scales.items()))
        elif kind == "replay":
            self.logLine.emit(f"Replaying {event.get('crops')} crops of the model's training scenes beside the "
                              "confirmed images, so that it keeps the labels it knew")
        elif kind == "time_budget":
            self.logLine.emit(f"Time limit: {event.get('epochs')} epochs fit, the schedule is fitted to them")
        elif kind in ("done", "cancelled"):
            self._final = event
        elif kind == "warning":
            self.logLine.emit("Warning: " + str(event.get("message", "")))
        elif kind == "error":
            self._error_event = str(event.get("message", "unknown error"))
            self.logLine.emit("Error: " + self._error_event)
        else:
            self.logLine.emit(f"[{kind}] " + json.dumps({k: v for k, v in event.items() if k != "event"}))

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.process is not None:
            message = f"The trainer could not start: {self.process.errorString()}"
            self._cleanup()
            self.failed.emit(message, "")

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        if self.process is None:
            return
        self._read_stdout()
        self._read_stderr()
        if self._stdout_buffer.strip():
            self._handle_line(self._stdout_buffer.decode("utf-8", "replace").strip())
        final, error, tail = self._final, self._error_event, "\n".join(self._stderr_tail)
        self._cleanup()
        if final is not None and final.get("event") == "done" and exit_code == 0:
            self.finished.emit(final)
        elif final is not None and final.get("event") == "cancelled":
            self.cancelled.emit(final)
        elif self._cancel_requested:
            self.cancelled.emit({"model": None, "checkpoint": None, "killed": True})
        else:
            if error is None:
                crashed = exit_status == QProcess.ExitStatus.CrashExit
                error = f"The trainer {'crashed' if crashed else 'stopped'} with exit code {exit_code}" + (
                    f": {self._stderr_tail_last(tail)}" if tail else ""
                )
            self.failed.emit(error, tail)

    @staticmethod
    def _stderr_tail_last(tail: str) -> str:
        return tail.strip().splitlines()[-1] if tail.strip() else ""

    def _cleanup(self) -> None:
        self._kill_timer.stop()
        if self.process is not None:
            self.process.deleteLater()
        self.process = None


def _describe_epoch(event: dict) -> str:
    text = f"Epoch {event.get('epoch')}: loss {event.get('train_loss', float('nan')):.4f}"
    val = event.get("val")
    if val:
        text += (
            f", held-out precision {val.get('precision', 0):.3f} recall {val.get('recall', 0):.3f} "
            f"accuracy {val.get('accuracy', 0):.3f}"
        )
    return text + f" ({event.get('seconds', 0):.1f} s)"


def _describe_fit(event: dict) -> str:
    parts = [f"{label} ({r.get('images')} images: precision {r.get('precision', 0):.2f}, "
             f"recall {r.get('recall', 0):.2f})" for label, r in event.get("labels", {}).items()]
    return (f"New labels fitted {event.get('when', '')} on the training images, "
            f"{event.get('seconds', 0):.0f} s: " + "; ".join(parts))


class EvaluationProcess(QObject):
    """Evaluates several models, one after another, on the held-out part of the same data with
    ``mlcnn evaluate --split val --per-label --no-baseline --json``; reports all results at once."""

    finished = Signal(dict)  # {model path: evaluate JSON}
    failed = Signal(str, str)  # message, stderr tail
    progress = Signal(int, int, str)  # models done, models in all, the model being read now

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.process: QProcess | None = None
        self._queue: list[tuple[str, str]] = []
        self._results: dict[str, dict] = {}
        self._data: list[str] = []
        self._val_fraction = 0.1
        self._device = "auto"
        self._stderr = b""
        self._total = 0

    def is_running(self) -> bool:
        return self.process is not None

    def start(
        self, models: list[str], data: list[str], val_fraction: float, work_dir: str | Path, device: str = "auto"
    ) -> None:
        if self.process is not None:
            raise RuntimeError("an evaluation is already in progress")
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        self._queue = [(m, str(work_dir / f"evaluation-{i}.json")) for i, m in enumerate(models)]
        self._total = len(models)
        self._results = {}
        self._data = list(data)
        self._val_fraction = val_fraction
        self._device = device
        self._next()

    def cancel(self) -> None:
        self._queue = []
        if self.process is not None:
            self.process.kill()

    def _next(self) -> None:
        if not self._queue:
            self.process = None
            self.finished.emit(self._results)
            return
        model, json_path = self._queue[0]
        self.progress.emit(self._total - len(self._queue), self._total, model)
        args = [
            "evaluate",
            "--model",
            model,
            "--split",
            "val",
            "--val-fraction",
            str(self._val_fraction),
            "--per-label",
            "--no-baseline",
            "--json",
            json_path,
            "--device",
            self._device,
        ]
        for path in self._data:
            args += ["--data", path]
        process = QProcess(self)
        process.setProcessEnvironment(_environment())
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self._stderr = b""
        process.readyReadStandardError.connect(lambda: self._collect_stderr(process))
        self.process = process
        program, arguments = cli_command(*args)
        process.start(program, arguments)

    def _collect_stderr(self, process: QProcess) -> None:
        self._stderr = (self._stderr + bytes(process.readAllStandardError()))[-8000:]

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.process is not None:
            message = self.process.errorString()
            self.process.deleteLater()
            self.process = None
            self._queue = []
            self.failed.emit(f"The evaluation could not start: {message}", "")

    def _on_finished(self, exit_code: int, _status: QProcess.ExitStatus) -> None:
        if self.process is None:
            return
        self._collect_stderr(self.process)
        self.process.deleteLater()
        self.process = None
        if not self._queue:
            return  # cancelled
        model, json_path = self._queue.pop(0)
        tail = self._stderr.decode("utf-8", "replace").strip()
        try:
            if exit_code != 0:
                raise ValueError(tail.splitlines()[-1] if tail else f"exit code {exit_code}")
            self._results[model] = json.loads(Path(json_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            self._queue = []
            self.failed.emit(f"Evaluating {Path(model).name} failed: {e}", tail)
            return
        self._next()
