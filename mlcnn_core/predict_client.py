"""The app's end of the prediction process (``predict_server.py``): starts it, sends requests,
reads the frames back as plain values. Imports neither torch nor Qt.

Blocking calls, meant for one worker thread: waiting on the pipe releases the interpreter lock, so
the caller's GUI thread keeps running while the child imports torch, loads a model or predicts. A
child that dies is reported as :class:`ProcessCrashed`; the next request starts a new one and loads
the last model again, unless its file changed since, or the process stopped
:data:`MAX_CRASHES_IN_A_ROW` times without answering in between: then prediction stays stopped
until a model is loaded again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .frames import FrameError, read_frame, write_frame
from .openmp import wait_passively

STDERR_TAIL_LINES = 20
MAX_CRASHES_IN_A_ROW = 3
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class PredictionProcessError(RuntimeError):
    """Base of what the prediction process can report; ``str()`` is a sentence for a person."""


class RequestFailed(PredictionProcessError):
    """The process answered with an error (a model it cannot load, a batch that failed)."""


class ProcessCrashed(PredictionProcessError):
    """The process died or stopped speaking the protocol."""


@dataclass
class LoadedModel:
    name: str
    path: str
    labels: list[str]
    card: dict
    device: str
    model_id: str | None
    model_name: str | None
    hash: str | None
    rescored: bool
    warnings: list[str] = field(default_factory=list)  # about the model file (e.g. unknown card keys)


@dataclass
class ImagePrediction:
    key: int
    labels: list[str]
    confidences: dict[str, float]
    peaks: dict[str, tuple[int, int]]
    label_names: list[str]
    maps: np.ndarray  # float32 [L, h, w]
    winner: np.ndarray  # int32 [h, w]
    image_size: tuple[int, int]


@dataclass
class ImageFailure:
    key: int
    message: str


def server_command() -> list[str]:
    return [sys.executable, "-m", "mlcnn_core.predict_server"]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + path if path else "")
    wait_passively(env)
    return env


class PredictionProcess:
    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_reader: threading.Thread | None = None
        self._model_path: str | None = None
        self._model_hash: str | None = None
        self._crashes = 0  # in a row, with no answer to a prediction between them
        self._stopped_why: str | None = None  # why the process is not started again until a load
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def restarts(self) -> bool:
        """Whether the next prediction starts a new process if this one stopped."""
        return self._stopped_why is None

    def load(self, path: str) -> LoadedModel:
        model = self._load(path)
        self._model_path, self._model_hash = str(path), model.hash
        self._crashes, self._stopped_why = 0, None
        return model

    def _load(self, path: str) -> LoadedModel:
        self._start()
        header, _ = self._request({"op": "load", "path": str(path)})
        if header.get("event") != "loaded":
            raise RequestFailed(str(header.get("message", header)))
        model = header.get("model", {})
        return LoadedModel(
            header["name"], header["path"], list(header["labels"]), dict(header["card"]), header["device"],
            model.get("id"), model.get("name"), model.get("hash"), bool(header.get("rescored")),
            [str(w) for w in header.get("warnings", [])],
        )

    def predict(self, jobs: list[tuple[int, str]]) -> Iterator[ImagePrediction | ImageFailure]:
        """One result per job, in order; raises after the results already delivered when the batch fails."""
        if self._process is None:
            self._restart()
        self._send({"op": "predict", "jobs": [{"key": int(k), "path": str(p)} for k, p in jobs]})
        finished = False
        try:
            while True:
                header, arrays = self._receive()
                self._crashes = 0
                event = header.get("event")
                if event in ("done", "error"):
                    finished = True
                    if event == "error":
                        raise RequestFailed(str(header.get("message")))
                    return
                yield self._result(header, arrays)
        finally:
            if not finished and self._process is not None:
                self._drain()  # the caller stopped early: the rest of the answer must not meet the next request

    def _restart(self) -> None:
        if self._model_path is None:
            raise RequestFailed("no model is loaded")
        if self._stopped_why is not None:
            raise RequestFailed(self._stopped_why)
        try:
            if self._load(self._model_path).hash != self._model_hash:
                raise RequestFailed(f"{self._model_path} changed since it was loaded: open it again to use it")
        except RequestFailed as exc:
            self._stop()
            self._stopped_why = f"cannot load the model again after the prediction process stopped: {exc}"
            raise RequestFailed(self._stopped_why) from exc

    def _result(self, header: dict, arrays: list[np.ndarray]) -> ImagePrediction | ImageFailure:
        event = header.get("event")
        if event == "image_error":
            return ImageFailure(int(header["key"]), str(header["message"]))
        if event == "prediction" and len(arrays) == 2:
            return ImagePrediction(
                int(header["key"]),
                list(header["labels"]),
                {str(k): float(v) for k, v in header["confidences"].items()},
                {str(k): (int(v[0]), int(v[1])) for k, v in header["peaks"].items()},
                list(header["label_names"]),
                arrays[0],
                arrays[1],
                (int(header["image_size"][0]), int(header["image_size"][1])),
            )
        self._crashed(f"unexpected answer {event!r}")

    def _drain(self) -> None:
        try:
            while self._receive()[0].get("event") not in ("done", "error"):
                pass
        except ProcessCrashed:
            pass

    def unload(self) -> None:
        """Drop the model by ending the process: all of torch's memory goes with it."""
        self._model_path = None
        self._stop()

    def close(self) -> None:
        """End the process for good (callable from another thread: a waiting call then returns)."""
        self._closed = True
        self._stop()

    # ----

    def _start(self) -> None:
        if self._process is not None:
            return
        if self._closed:
            raise RequestFailed("the prediction process is closed")
        self._stderr_tail.clear()
        try:
            process = subprocess.Popen(
                server_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=_environment(),
            )
        except OSError as exc:
            raise ProcessCrashed(f"cannot start the prediction process: {exc}") from exc
        self._stderr_reader = threading.Thread(target=self._drain_stderr, args=(process.stderr,), daemon=True,
                                               name="prediction-stderr")
        self._stderr_reader.start()
        self._process = process
        if self._closed:  # close() ran while it started and did not see it
            self._stop()
            raise RequestFailed("the prediction process is closed")

    def _drain_stderr(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                try:
                    print(line, file=sys.stderr)
                except (OSError, ValueError):
                    pass  # the app's stderr is gone (a closed terminal): the pipe must still be emptied

    def _request(self, header: dict) -> tuple[dict, list[np.ndarray]]:
        self._send(header)
        return self._receive()

    def _send(self, header: dict) -> None:
        process = self._process
        if process is None:
            self._crashed("it is not running")
        try:
            write_frame(process.stdin, header)
        except (OSError, ValueError) as exc:
            self._crashed(str(exc))

    def _receive(self) -> tuple[dict, list[np.ndarray]]:
        process = self._process
        if process is None:
            self._crashed("it is not running")
        try:
            frame = read_frame(process.stdout)
        except (FrameError, OSError, ValueError) as exc:
            self._crashed(str(exc))
        if frame is None:
            self._crashed("it closed its output")
        return frame

    def _crashed(self, why: str):
        process, self._process = self._process, None
        code = None
        if process is not None:
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            self._stderr_reader.join(2)  # the lines it wrote last, which say why, may still be in the pipe
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}" if code is not None else why
        last = f": {self._stderr_tail[-1]}" if self._stderr_tail else ""
        self._crashes += 1
        if self._crashes >= MAX_CRASHES_IN_A_ROW:
            message = f"the prediction process stopped {self._crashes} times in a row (last: {how}){last}"
            self._stopped_why = f"{message}; load the model again to retry"
            raise ProcessCrashed(message)
        raise ProcessCrashed(f"the prediction process stopped ({how}){last}")

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()  # the process exits when its input ends
        except OSError:
            pass
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
