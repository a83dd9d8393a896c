"""The prediction process: ``python -m mlcnn_core.predict_server`` owns torch and one model, and
answers requests read from stdin with frames on stdout (``frames.py``). ``predict_client.py`` is the
other end; the app runs prediction here so that importing torch, loading a model and the forward
pass never hold the app's interpreter lock.

Requests and the frames that answer them:

- ``{"op": "load", "path": P}`` → ``loaded`` (name, labels, card, device, model id/name/hash,
  ``rescored``) or ``error``. A later load replaces the model.
- ``{"op": "predict", "jobs": [{"key": K, "path": P}, ...]}`` → one ``prediction`` (labels,
  confidences, peaks, label_names, image_size; arrays: maps float32 [L, h, w], winner int32 [h, w])
  or ``image_error`` per job, in order, then ``done``; or ``error`` when the batch itself failed
  (e.g. out of memory), after the results already sent.
- ``{"op": "unload"}`` → ``unloaded``.

The process exits as soon as stdin closes, even in the middle of a batch: it cannot outlive the app.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import warnings
from typing import BinaryIO

from .frames import FrameError, read_frame, write_frame


def describe_error(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: {exc}"


class PredictionServer:
    def __init__(self, out: BinaryIO):
        self.out = out
        self.predictor = None

    def handle(self, request: dict) -> None:
        op = request.get("op")
        try:
            if op == "load":
                self._load(str(request["path"]))
            elif op == "predict":
                self._predict([(int(j["key"]), str(j["path"])) for j in request["jobs"]])
            elif op == "unload":
                self.predictor = None
                write_frame(self.out, {"event": "unloaded"})
            else:
                write_frame(self.out, {"event": "error", "message": f"unknown request {op!r}"})
        except (KeyError, TypeError, ValueError) as exc:
            write_frame(self.out, {"event": "error", "message": f"bad {op!r} request: {exc}"})

    def _load(self, path: str) -> None:
        from .library import ModelInfo
        from .modelfile import CardWarning, load_model
        from .predict import Predictor

        try:
            with warnings.catch_warnings(record=True) as caught:  # for the app to show, not for stderr
                warnings.simplefilter("always", CardWarning)
                model = load_model(path)
            predictor = Predictor(model)
            info = ModelInfo.for_model(model)
        except (OSError, ValueError, RuntimeError) as exc:
            write_frame(self.out, {"event": "error", "message": str(exc)})
            return
        self.predictor = predictor
        write_frame(self.out, {
            "event": "loaded",
            "name": model.name,
            "path": path,
            "labels": list(model.labels),
            "card": model.card,
            "device": str(predictor.device) + (" (bf16)" if predictor.bf16 else ""),
            "model": {"id": info.id, "name": info.name, "hash": info.hash},
            "rescored": predictor.config.rescore is not None,
            "warnings": [str(w.message) for w in caught if issubclass(w.category, CardWarning)],
        })

    def _predict(self, jobs: list[tuple[int, str]]) -> None:
        from .data import ImageError

        if self.predictor is None:
            write_frame(self.out, {"event": "error", "message": "no model is loaded"})
            return
        try:
            results = self.predictor.predict_files([p for _, p in jobs], batch_size=len(jobs), workers=1)
            for (key, _), (_, prediction) in zip(jobs, results, strict=True):
                if isinstance(prediction, ImageError):
                    write_frame(self.out, {"event": "image_error", "key": key, "message": str(prediction)})
                else:
                    write_frame(self.out, {
                        "event": "prediction",
                        "key": key,
                        "labels": list(prediction.labels),
                        "confidences": {k: float(v) for k, v in prediction.confidences.items()},
                        "peaks": {k: [int(x), int(y)] for k, (x, y) in prediction.peaks.items()},
                        "label_names": list(prediction.label_names),
                        "image_size": [int(n) for n in prediction.image_size],
                    }, [prediction.maps.astype("float32", copy=False), prediction.winner.astype("int32", copy=False)])
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: the app decides what to retry
            write_frame(self.out, {"event": "error", "message": describe_error(exc)})
            return
        write_frame(self.out, {"event": "done"})


def _read_requests(stream: BinaryIO, requests: queue.Queue) -> None:
    try:
        while (frame := read_frame(stream)) is not None:
            requests.put(frame[0])
    except (FrameError, OSError):
        pass
    os._exit(0)  # stdin closed: the app is gone, whatever the main thread is doing


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the app's: this process ends with its input
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the frames
    requests: queue.Queue = queue.Queue()
    threading.Thread(target=_read_requests, args=(sys.stdin.buffer, requests), daemon=True, name="requests").start()

    import torch

    # leave a core to the app's GUI thread: a stalled window costs more than a slower batch
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    server = PredictionServer(out)
    while True:
        server.handle(requests.get())


if __name__ == "__main__":
    main()
