"""The prediction worker: a QObject living in its own QThread that talks to the prediction process.

The model lives in a child process (``mlcnn_core/predict_server.py``, reached through
``mlcnn_core/predict_client.py``): the app never imports torch. This thread sends requests and waits
on the pipe, which holds no interpreter lock, so the GUI thread runs while the child imports torch,
loads a model or predicts. Jobs sit in a queue shared with the GUI thread under a lock: the selected
image jumps the queue, batches append, cancel empties it. Every result is stored in the library by
the worker (its own SQLite connection, which the worker closes itself once the library is replaced)
the moment it arrives, then handed to the GUI by signal. A child that dies is reported
(``processCrashed``); the next request starts a new one with the same model, unless it keeps
stopping (``predict_client.MAX_CRASHES_IN_A_ROW``).

Scores: the core's per-label scores are sums of pruned confidences over the map's positions (each
position keeps only its best label). The worker divides them by their total, giving each label's
share of the image's evidence in [0, 1] (the shares sum to 1; a model read with raw outputs can
sum to negative values, which count as no evidence). A rescored model (rescore.py) already gives
each label a score in (0, 1), which is kept as it is. That is what the library stores and
the tag panel draws as a confidence bar; the order and the thresholded labels are the core's.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from mlcnn_core.library import ImageRecord, Library, ModelInfo, TagRecord
from mlcnn_core.predict_client import (
    ImageFailure,
    ImagePrediction,
    LoadedModel,
    PredictionProcess,
    PredictionProcessError,
    ProcessCrashed,
)
from mlcnn_core.tag_rules import NO_RULES, TagRules, display_confidences

# Jobs of a batch (Tag all) taken at once: they share the network's batches and one image decodes
# while the others run; more would delay an image a person selects meanwhile.
BATCH_JOBS = 4


@dataclass
class ModelSummary:
    name: str
    path: str
    labels: list[str]
    card: dict
    device: str
    hash: str
    warnings: list[str] = field(default_factory=list)  # about the model file, for the person to read


@dataclass
class PredictionJob:
    image_id: int
    path: Path
    store: bool = True  # False: only the maps are wanted (e.g. viewing an already reviewed image)
    batch: bool = False
    batch_id: int = 0  # which batch it counts in (set by the worker)


@dataclass
class PredictionResult:
    image_id: int
    labels: list[str]
    confidences: dict[str, float]  # in [0, 1]: see display_confidences
    label_names: list[str]
    maps: np.ndarray  # float32 [L, h, w]
    winner: np.ndarray  # int32 [h, w]
    image_size: tuple[int, int]
    seconds: float
    record: ImageRecord | None = None  # the image after the result was stored
    tags: list[TagRecord] = field(default_factory=list)
    library: Library | None = None  # whose image ids these are (a folder opened since makes it stale)


class PredictorWorker(QObject):
    modelLoaded = Signal(object)  # ModelSummary
    modelFailed = Signal(str)
    modelUnloaded = Signal()
    predicted = Signal(object)  # PredictionResult
    imageFailed = Signal(int, str)
    progress = Signal(int, int, float)  # done, total, seconds since the batch started
    batchFinished = Signal(int, int, bool)  # done, total, cancelled
    processCrashed = Signal(str, bool)  # message, whether the next prediction starts a new process

    _wake = Signal()
    _libraryReplaced = Signal(object)  # Library: queued, so it runs after the prediction storing in it

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self._queue: deque[PredictionJob] = deque()
        self._library: Library | None = None
        self._rules: TagRules = NO_RULES
        self._process = PredictionProcess()
        self._model: LoadedModel | None = None
        self._model_info = ModelInfo()
        self._batch_total = 0
        self._batch_done = 0
        self._batch_start = 0.0
        self._batch_id = 0  # a new one for each batch: a cancelled batch's images in flight count in none
        self._scheduled = False
        self._wake.connect(self._schedule)
        self._libraryReplaced.connect(self._close_connection)

    # ---- called from the GUI thread (thread-safe)

    def set_library(self, library: Library | None) -> None:
        with self._lock:
            old, self._library = self._library, library
            self._queue.clear()
            self._batch_total = self._batch_done = 0
            self._batch_id += 1
        if old is not None and old is not library:
            self._libraryReplaced.emit(old)

    def set_rules(self, rules: TagRules) -> None:
        """The person's proposal rules (threshold, excluded tags, maximum count) for what comes next."""
        with self._lock:
            self._rules = rules

    def enqueue(self, jobs: list[PredictionJob], first: bool = False) -> None:
        with self._lock:
            if any(j.batch for j in jobs) and self._batch_total == self._batch_done:
                self._batch_total = self._batch_done = 0
                self._batch_start = time.perf_counter()
                self._batch_id += 1
            jobs = [replace(j, batch_id=self._batch_id) if j.batch else j for j in jobs]
            if first:
                known = {j.image_id for j in jobs}
                self._queue = deque(j for j in self._queue if j.image_id not in known or j.batch)
                self._queue.extendleft(reversed(jobs))
            else:
                self._queue.extend(jobs)
            self._batch_total += sum(j.batch for j in jobs)
        self._wake.emit()

    def cancel_batch(self) -> None:
        with self._lock:
            self._queue = deque(j for j in self._queue if not j.batch)
            done, total = self._batch_done, self._batch_total
            self._batch_total = self._batch_done = 0
            self._batch_id += 1
        if total:
            self.batchFinished.emit(done, total, True)

    def close_process(self) -> None:
        """End the prediction process; a request the worker is waiting on returns at once."""
        self._process.close()

    def process_id(self) -> int | None:
        return self._process.pid

    # ---- slots run in the worker thread

    @Slot(str)
    def load_model(self, path: str) -> None:
        try:
            model = self._process.load(path)
        except PredictionProcessError as exc:
            if not self._process.closed:
                self.modelFailed.emit(str(exc))
            return
        self._model = model
        self._model_info = ModelInfo(model.model_id, model.model_name, model.hash)
        self.modelLoaded.emit(ModelSummary(model.name, str(path), model.labels, model.card, model.device, model.hash,
                                           model.warnings))
        self._schedule()

    @Slot()
    def unload_model(self) -> None:
        self._model = None
        self._process.unload()
        self.cancel_batch()
        with self._lock:
            self._queue.clear()
        self.modelUnloaded.emit()

    @Slot(object)
    def _close_connection(self, library: Library) -> None:
        """In the worker's thread, after its last use of ``library`` (no job of it is left)."""
        library.close_connection()

    @Slot()
    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            QTimer.singleShot(0, self._process_one)

    @Slot()
    def _process_one(self) -> None:
        # One job (or a few of a batch) per event-loop turn, so load/unload/cancel requests are seen
        # between them.
        self._scheduled = False
        if self._model is None:
            return
        with self._lock:
            if not self._queue:
                return
            jobs = [self._queue.popleft()]
            while jobs[0].batch and len(jobs) < BATCH_JOBS and self._queue and self._queue[0].batch:
                jobs.append(self._queue.popleft())
            library, rules = self._library, self._rules
        self._run(jobs, library, rules)
        with self._lock:
            more = bool(self._queue)
        if more:
            self._schedule()

    def _run(self, jobs: list[PredictionJob], library: Library | None, rules: TagRules) -> None:
        start = time.perf_counter()
        left = list(jobs)
        try:
            for result in self._process.predict([(i, str(job.path)) for i, job in enumerate(jobs)]):
                job = jobs[result.key]
                left.remove(job)
                if isinstance(result, ImageFailure):
                    self.imageFailed.emit(job.image_id, result.message)
                    self._count(job)
                else:
                    self._deliver(job, result, (time.perf_counter() - start) / len(jobs), library, rules)
        except PredictionProcessError as exc:  # e.g. out of GPU memory, a crash: report it, keep the queue going
            if self._process.closed:
                return
            if isinstance(exc, ProcessCrashed):
                self.processCrashed.emit(str(exc), self._process.restarts)
            if len(left) > 1:  # which image it was, and the others' predictions, come one at a time
                for job in left:
                    self._run([job], library, rules)
                return
            message = str(exc)
            if "out of memory" in message.lower():
                message = f"out of GPU memory while predicting {left[0].path.name} ({exc})"
            self._fail(left, message)

    def _fail(self, jobs: list[PredictionJob], message: str) -> None:
        for job in jobs:
            self.imageFailed.emit(job.image_id, message)
            self._count(job)

    def _deliver(
        self, job: PredictionJob, prediction: ImagePrediction, seconds: float, library: Library | None,
        rules: TagRules,
    ) -> None:
        confidences = display_confidences(prediction.confidences, self._model.rescored)
        result = PredictionResult(
            job.image_id,
            rules.choose(prediction.labels, confidences),
            confidences,
            list(prediction.label_names),
            prediction.maps,
            prediction.winner,
            tuple(prediction.image_size),
            seconds,
            library=library,
        )
        if job.store and library is not None:
            try:
                library.store_prediction(job.image_id, result.labels, confidences, self._model_info)
                result.record = library.image(job.image_id)
                result.tags = library.tags(job.image_id)
            except Exception as exc:  # noqa: BLE001 - a closed or failing library must not kill the worker
                self.imageFailed.emit(job.image_id, f"cannot store the prediction: {exc}")
        self.predicted.emit(result)
        self._count(job)

    def _count(self, job: PredictionJob) -> None:
        if not job.batch:
            return
        with self._lock:
            if not self._batch_total or job.batch_id != self._batch_id:
                return
            self._batch_done += 1
            done, total, elapsed = (
                self._batch_done,
                self._batch_total,
                time.perf_counter() - self._batch_start,
            )
            finished = done >= total
            if finished:
                self._batch_total = self._batch_done = 0
        self.progress.emit(done, total, elapsed)
        if finished:
            self.batchFinished.emit(done, total, False)


class PredictorThread(QObject):
    """Owns the worker's QThread; the GUI talks to the worker through this object's signals."""

    loadRequested = Signal(str)
    unloadRequested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("predictor")
        self.worker = PredictorWorker()
        self.worker.moveToThread(self.thread)
        self.loadRequested.connect(self.worker.load_model)
        self.unloadRequested.connect(self.worker.unload_model)
        self.thread.start()

    def stop(self) -> None:
        self.worker.cancel_batch()
        self.worker.set_library(None)
        self.worker.close_process()
        self.thread.quit()
        self.thread.wait(10_000)
