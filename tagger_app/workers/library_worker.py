"""Folder opening (scan, sidecar import), then reading the keywords embedded in image files in
batches, the shown image's tags, sidecar writing in batches, and watching the folder for sidecars that other
programs change, in a worker thread with its own connection.

The worker closes its connection to a library once another folder replaces it, and as its thread
ends: a connection is closed by the thread that uses it, never while it runs a query."""

from __future__ import annotations

import posixpath
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QFileSystemWatcher, QObject, Qt, QThread, QTimer, Signal, Slot

from mlcnn_core import sidecars
from mlcnn_core.library import ImageRecord, Library, LibraryError, TagRecord
from mlcnn_core.tag_rules import NO_RULES, TagRules

if TYPE_CHECKING:
    from tagger_app.edit_commands import EditJob
    from tagger_app.training_data import LabelCounts, TrainingSource


@dataclass
class OpenRequest:
    folder: str
    import_sidecars: bool = True
    import_as_confirmed: bool = False


@dataclass
class OpenedFolder:
    library: Library
    records: list[ImageRecord]
    tags: dict[int, list[TagRecord]]
    import_errors: list[str]
    fallback_reason: str | None  # Library.notice: a fallback library, a damaged one rebuilt, edits merged back
    seconds: float
    failed_sidecars: dict[int, str] = field(default_factory=dict)  # writes that failed (or never ran) before


@dataclass
class SidecarRequest:
    image_ids: list[int] | None  # None: the images whose last write failed, each with the content it holds
    formats: list[str]
    naming: str
    policy: str
    content: str = "human"  # "human": a person's tags; "machine": a batch of predictions as they stand
    rules: TagRules = NO_RULES  # excluded tags, caption prefix, word separator


@dataclass
class SidecarReport:
    """One batch of a sidecar request: what it wrote, and how far the request has come."""

    written: dict[int, list[Path]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    notes: dict[int, list[str]] = field(default_factory=dict)  # e.g. a file another program changed
    library: Library | None = None
    noted_records: list[ImageRecord] = field(default_factory=list)  # the noted images, as stored after the write
    noted_tags: dict[int, list[TagRecord]] = field(default_factory=dict)  # and their tags
    error: str = ""  # the library could not be read: nothing (more) was written
    done: int = 0  # the request's images handled so far, this batch's included
    total: int = 0  # the request's images
    files_written: int = 0  # the request's sidecar files written so far
    failures: int = 0  # the request's images whose write failed so far
    first_failure: str = ""  # the request's first failure's error
    last: bool = True  # the request's last report


@dataclass
class _SidecarJob:
    """A sidecar request being written, a batch at a time."""

    request: SidecarRequest
    library: Library
    contents: list[tuple[int, str]] | None = None  # None: not listed yet (a retry lists the failures when it starts)
    done: int = 0
    files_written: int = 0
    failures: int = 0
    first_failure: str = ""

    def unwritten(self) -> list[int]:
        return [image_id for image_id, _content in (self.contents or [])[self.done :]]


@dataclass
class ExternalChanges:
    """Sidecars another program changed in the open folder, read again; or (``embedded``) keywords
    embedded in image files, read after the folder opened."""

    library: Library
    records: list[ImageRecord]  # the images whose tags changed
    tags: dict[int, list[TagRecord]]  # their tags now
    messages: list[str]  # sidecars (or embedded metadata) that could not be read
    embedded: bool = False


@dataclass
class ImageTagsRequest:
    """The shown image's record, tags and stored scores, for the tag panel."""

    library: Library
    image_id: int
    token: int = 0  # the window's count of requests: it shows only its latest


@dataclass
class ImageTags:
    request: ImageTagsRequest
    record: ImageRecord | None = None  # None: not read (the folder was replaced, or the read failed)
    tags: list[TagRecord] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass
class FolderTagCounts:
    """The open folder's tags with their image counts, and its images per status."""

    library: Library
    tags: list[tuple[str, int]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    counted: bool = False  # False: the library was replaced before it could be counted, or the count failed
    error: str = ""


@dataclass
class TrainingDataRequest:
    """What the training panel would train on: the open library's confirmed images and those of
    the ``other_folders`` ticked beside it, split by ``val_fraction``; with ``run_dir``, a run starts
    on them and their manifests are written there (when there is anything to train on)."""

    library: Library | None
    other_folders: list[str]
    val_fraction: float
    token: int = 0  # the panel's count of requests: it shows only its latest
    run_dir: Path | None = None


@dataclass
class TrainingData:
    request: TrainingDataRequest
    sources: list[TrainingSource] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # ticked folders without a library
    counts: LabelCounts | None = None  # None: not read
    manifests: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class EditResult:
    """What a person's edit (one redo or undo) changed, as stored: the images' records and positive
    tags, and the tags and scores of the image shown when it was asked, where the edit touched it."""

    job: EditJob
    changed: list[int] = field(default_factory=list)
    records: list[ImageRecord] = field(default_factory=list)
    tags: dict[int, set[str]] = field(default_factory=dict)
    current_tags: list[TagRecord] | None = None
    current_scores: dict[str, float] = field(default_factory=dict)
    error: str = ""



def _tags_and_scores(library: Library, image_id: int) -> tuple[list[TagRecord], dict[str, float]]:
    """An image's tags and the scores of its stored prediction (none without one), for the tag panel."""
    prediction = library.prediction(image_id)
    return library.tags(image_id), prediction.scores if prediction else {}

class LibraryWorker(QObject):
    opened = Signal(object)  # OpenedFolder
    openFailed = Signal(str, str)  # folder, message
    sidecarsDone = Signal(object)  # SidecarReport
    externalChanges = Signal(object)  # ExternalChanges
    folderTagsCounted = Signal(object)  # FolderTagCounts
    trainingDataRead = Signal(object)  # TrainingData
    edited = Signal(object)  # EditResult
    imageTagsRead = Signal(object)  # ImageTags
    _nextEmbeddedBatch = Signal()  # queued: other requests run between two batches
    _nextSidecarBatch = Signal()  # likewise

    WATCH_SETTLE_MS = 300  # a burst of changes (a tool rewriting many files) is read once
    EMBEDDED_BATCH = 200  # image files whose embedded keywords are read between two other requests
    SIDECAR_BATCH_SECONDS = 0.05  # sidecars are written for this long (at least one image) between two other requests
    MAX_WATCHED_FOLDERS = 1000  # inotify watches are a per-user resource

    def __init__(self):
        super().__init__()
        self._library: Library | None = None
        self._txt_plans: dict[str, dict[Path, Path | None]] = {}
        self._watcher: QFileSystemWatcher | None = None
        self._settle: QTimer | None = None
        self._import_as_confirmed = False
        self._reported: set[str] = set()
        self._read_embedded = False  # the open folder's embedded keywords are to be read
        self._embedded_queue: list[int] | None = None  # None: not listed yet
        self._sidecar_jobs: deque[_SidecarJob] = deque()  # the first is being written
        self._nextEmbeddedBatch.connect(self._import_embedded_batch, Qt.ConnectionType.QueuedConnection)
        self._nextSidecarBatch.connect(self._write_sidecar_batch, Qt.ConnectionType.QueuedConnection)

    @Slot(object)
    def open_folder(self, request: OpenRequest) -> None:
        start = time.perf_counter()
        library = None
        try:
            library = Library.open(request.folder)
            library.scan()
            errors = (
                library.import_sidecars(as_confirmed=request.import_as_confirmed) if request.import_sidecars else []
            )
            records = library.images()
            tags = library.tag_records_by_image()
            failed_sidecars = dict(library.failed_sidecars())
        except Exception as exc:  # noqa: BLE001 - LibraryError, OSError, sqlite3 errors: report, never crash
            if library is not None:
                library.close_connection()
            message = str(exc) if isinstance(exc, (LibraryError, OSError)) else f"{type(exc).__name__}: {exc}"
            self.openFailed.emit(request.folder, message)
            return
        self._abandon_sidecar_jobs("not written: another folder was opened first")
        old, self._library = self._library, library
        if old is not None:
            old.close_connection()  # requests still queued for it are dropped: it is no longer self._library
        self._txt_plans.clear()
        self._watch(library, records, request)
        self._read_embedded = request.import_sidecars
        self._embedded_queue = []
        self.opened.emit(
            OpenedFolder(
                library,
                records,
                tags,
                errors,
                library.notice,
                time.perf_counter() - start,
                failed_sidecars,
            )
        )

    @Slot(object)
    def write_sidecars(self, request: SidecarRequest) -> None:
        """Queue a sidecar request for the open library; requests are written one after another, in
        the order asked, a batch at a time, so other requests (the shown image's tags, a person's
        edits, training data) run between two batches. Each batch reads its images' tags when it
        is written: an edit stored meanwhile is in the sidecars written after it, and a write asked
        for after an edit is written after the requests before it."""
        if self._library is None:
            self.sidecarsDone.emit(SidecarReport())
            return
        self._sidecar_jobs.append(_SidecarJob(request, self._library))
        if len(self._sidecar_jobs) == 1:
            self._nextSidecarBatch.emit()

    @Slot()
    def _write_sidecar_batch(self) -> None:
        if not self._sidecar_jobs:  # abandoned meanwhile (another folder was opened)
            return
        job = self._sidecar_jobs[0]
        report = self._write_batch(job)
        if report.last:
            self._sidecar_jobs.popleft()
        self.sidecarsDone.emit(report)
        if self._sidecar_jobs:
            self._nextSidecarBatch.emit()

    def _write_batch(self, job: _SidecarJob) -> SidecarReport:
        library, request = job.library, job.request
        report = SidecarReport(library=library)
        try:
            if job.contents is None:
                job.contents = self._contents(library, request)
            plan = self._txt_plan(library, request.naming) if "txt" in request.formats else {}
        except Exception as exc:  # noqa: BLE001 - sqlite3 errors etc.: report, never crash the thread
            report.error = f"{type(exc).__name__}: {exc}"
            return report
        deadline = time.perf_counter() + self.SIDECAR_BATCH_SECONDS
        while job.done < len(job.contents):
            image_id, content = job.contents[job.done]
            job.done += 1
            try:
                record = library.image(image_id)
                txt_path = plan.get(Path(record.path))
                written, notes = library.write_sidecars(
                    image_id,
                    formats=request.formats,
                    txt_path=txt_path and library.abspath(txt_path.as_posix()),
                    policy=request.policy,
                    content=content,
                    rules=request.rules,
                )
                report.written[image_id] = written
                job.files_written += len(written)
                if notes:
                    report.notes[image_id] = notes
            except Exception as exc:  # noqa: BLE001 - SidecarError, sqlite3 errors, ...: report per image
                report.failed[image_id] = str(exc)
                job.failures += 1
                job.first_failure = job.first_failure or str(exc)
            if time.perf_counter() >= deadline:
                break
        try:  # their tags were read again: the GUI shows them as they are now
            if report.notes:
                report.noted_records = library.records(report.notes)
                report.noted_tags = {r.id: library.tags(r.id) for r in report.noted_records}
        except Exception:  # noqa: BLE001 - the notes are still reported; the tags show at the next read
            report.noted_records, report.noted_tags = [], {}
        report.done, report.total = job.done, len(job.contents)
        report.files_written, report.failures, report.first_failure = job.files_written, job.failures, job.first_failure
        report.last = job.done >= len(job.contents)
        return report

    @staticmethod
    def _contents(library: Library, request: SidecarRequest) -> list[tuple[int, str]]:
        """What to write for each image asked: a retry writes a confirmed image's human tags, another's
        machine tags (a batch of predictions written as they stand)."""
        if request.image_ids is not None:
            return list(dict.fromkeys(request.image_ids, request.content).items())
        failed = [image_id for image_id, _error in library.failed_sidecars()]
        return [(r.id, "human" if r.status == "confirmed" else "machine") for r in library.records(failed)]

    def _abandon_sidecar_jobs(self, reason: str) -> None:
        """Record the images of the sidecar requests not yet written as failed writes, ``reason`` as
        their error, so that a retry (now or after the folder is opened again) writes them."""
        for job in self._sidecar_jobs:
            try:
                job.library.mark_sidecars_failed(job.unwritten(), reason)
            except Exception:  # noqa: BLE001 - a library that cannot be written keeps its edits' pending flags
                pass
        self._sidecar_jobs.clear()

    @Slot(object)
    def count_folder_tags(self, library: Library) -> None:
        """Count ``library``'s tags and statuses, unless another folder was opened since it was asked."""
        counts = FolderTagCounts(library)
        if library is self._library:
            try:
                counts.tags = library.all_tags()
                counts.statuses = library.status_counts()
                counts.counted = True
            except Exception as exc:  # noqa: BLE001 - sqlite3 errors etc.: report, never crash the thread
                counts.error = f"{type(exc).__name__}: {exc}"
        self.folderTagsCounted.emit(counts)

    @Slot(object)
    def apply_edit(self, job: EditJob) -> None:
        """Store a person's edit (or its undo), then read back the images it changed, and the ones
        the GUI already shows as edited, so that a failed edit is shown as it really is."""
        result = EditResult(job)
        library = job.library
        if self._replaced(library):  # its rows are gone
            self.edited.emit(result)
            return
        try:
            result.changed = job.run(library)
        except Exception as exc:  # noqa: BLE001 - a full disk, a locked library...: report, never crash the thread
            result.error = f"{job.text}: cannot store the edit ({exc})"
        ids = sorted(set(result.changed) | set(job.shown))
        try:
            result.records = library.records(ids)
            result.tags = library.positive_tag_sets(ids)
            if job.current_id in ids:
                result.current_tags, result.current_scores = _tags_and_scores(library, job.current_id)
        except Exception as exc:  # noqa: BLE001
            result.error = result.error or f"{job.text}: cannot read the edit back ({type(exc).__name__}: {exc})"
        self.edited.emit(result)

    @Slot(object)
    def read_training_data(self, request: TrainingDataRequest) -> None:
        """Read (and for a run, write as manifests) the confirmed images a training run would use.
        Queued behind the edits and folder openings asked for before it, so it sees them."""
        from tagger_app.training_data import count_labels, read_sources, write_manifests  # cv2: not at launch

        data = TrainingData(request)
        if request.library is not None and self._replaced(request.library):
            data.error = "another folder was opened"
            self.trainingDataRead.emit(data)
            return
        try:
            data.sources, data.missing = read_sources(request.library, request.other_folders)
            data.counts = count_labels(data.sources, request.val_fraction)
            if request.run_dir is not None and data.counts.n_train > 0:
                data.manifests = write_manifests(request.run_dir, data.sources)
        except Exception as exc:  # noqa: BLE001 - sqlite3 errors, a full disk...: report, never crash the thread
            data.error = f"{type(exc).__name__}: {exc}"
        self.trainingDataRead.emit(data)

    @Slot(object)
    def read_image_tags(self, request: ImageTagsRequest) -> None:
        """The shown image's record, tags and stored scores (queued behind the edits asked before it)."""
        result = ImageTags(request)
        library = request.library
        if self._replaced(library):
            result.error = "another folder was opened"
        else:
            try:
                result.record = library.image(request.image_id)
                result.tags, result.scores = _tags_and_scores(library, request.image_id)
            except Exception as exc:  # noqa: BLE001 - a locked library, an image gone: report, never crash
                result.record = None
                result.error = f"{type(exc).__name__}: {exc}"
        self.imageTagsRead.emit(result)

    def _replaced(self, library: Library) -> bool:
        """Whether another folder was opened since ``library``: the worker has closed its connection."""
        return self._library is not None and library is not self._library

    def _watch(self, library: Library, records: list[ImageRecord], request: OpenRequest) -> None:
        """Watch the folders holding the images, so sidecars other programs change are read again."""
        if self._watcher is None:
            self._watcher = QFileSystemWatcher(self)
            self._settle = QTimer(self)
            self._settle.setSingleShot(True)
            self._settle.setInterval(self.WATCH_SETTLE_MS)
            self._watcher.directoryChanged.connect(self._settle.start)
            self._settle.timeout.connect(self._read_changed_sidecars)
        watched = self._watcher.directories()
        if watched:
            self._watcher.removePaths(watched)
        self._import_as_confirmed = request.import_as_confirmed
        self._reported = set()
        if request.import_sidecars:
            folders = sorted({str(library.abspath(posixpath.dirname(r.path))) for r in records})
            if folders:
                self._watcher.addPaths(folders[: self.MAX_WATCHED_FOLDERS])

    @Slot()
    def end_in_thread(self) -> None:
        """Run in the worker's thread as it ends (``LibraryThread`` connects it to ``finished``): a
        timer can only be stopped by its own thread, and a write just before the end can have
        started the settle timer (or, without inotify, the watcher's polling one); the worker
        itself is destroyed later, from the GUI thread. The connection is closed here, after its
        last use."""
        if self._watcher is not None:
            self._settle.stop()
            if watched := self._watcher.directories():
                self._watcher.removePaths(watched)
        self._abandon_sidecar_jobs("not written: the app was closed first")
        if self._library is not None:
            self._library.close_connection()

    @Slot()
    def _read_changed_sidecars(self) -> None:
        library = self._library
        if library is None:
            return
        try:
            before = library.tag_records_by_image()
            messages = library.import_sidecars(as_confirmed=self._import_as_confirmed)
            after = library.tag_records_by_image()
            changed = sorted(i for i in before.keys() | after.keys() if before.get(i) != after.get(i))
            records = [library.image(i) for i in changed]
        except Exception as exc:  # noqa: BLE001 - sqlite3 errors etc.: report, never crash the thread
            changed, records, after, messages = [], [], {}, [f"{type(exc).__name__}: {exc}"]
        new_messages = [m for m in messages if m not in self._reported]
        self._reported.update(new_messages)
        if changed or new_messages:
            self.externalChanges.emit(
                ExternalChanges(library, records, {i: after.get(i, []) for i in changed}, new_messages)
            )

    @Slot()
    def read_embedded_keywords(self) -> None:
        """Read the keywords embedded in the open folder's new and changed image files (once the
        GUI has listed the folder: reading sooner would slow the listing down), a batch at a time,
        so other requests (a sidecar write, another folder) are not kept waiting."""
        if self._read_embedded and self._library is not None:
            self._read_embedded = False
            self._embedded_queue = None
            self._nextEmbeddedBatch.emit()

    @Slot()
    def _import_embedded_batch(self) -> None:
        library = self._library
        if library is None or self._embedded_queue == []:  # another folder was opened meanwhile
            return
        try:
            if self._embedded_queue is None:
                self._embedded_queue = library.pending_embedded_keywords()
            batch = self._embedded_queue[: self.EMBEDDED_BATCH]
            del self._embedded_queue[: self.EMBEDDED_BATCH]
            result = library.import_embedded_keywords(batch, as_confirmed=self._import_as_confirmed)
            changed, messages = result.changed, result.messages
            records = [library.image(i) for i in changed]
            tags = {i: library.tags(i) for i in changed}
        except Exception as exc:  # noqa: BLE001 - sqlite3 errors etc.: report, never crash the thread
            self._embedded_queue = []
            records, tags, messages = [], {}, [f"{type(exc).__name__}: {exc}"]
        if records or messages:
            self.externalChanges.emit(ExternalChanges(library, records, tags, messages, embedded=True))
        if self._embedded_queue:
            self._nextEmbeddedBatch.emit()

    @Slot()
    def finish(self) -> None:
        """Queued behind every request made before: end the thread's event loop (the batches of sidecar
        requests still to write are recorded as failed writes as it ends)."""
        QThread.currentThread().quit()

    def _txt_plan(self, library: Library, naming: str) -> dict[Path, Path | None]:
        if naming not in self._txt_plans:
            self._txt_plans[naming] = sidecars.plan_txt_paths((Path(r.path) for r in library.images()), naming)
        return self._txt_plans[naming]


class LibraryThread(QObject):
    """Owns the library worker's QThread."""

    openRequested = Signal(object)
    sidecarsRequested = Signal(object)
    embeddedKeywordsRequested = Signal()
    folderTagsRequested = Signal(object)  # Library
    trainingDataRequested = Signal(object)  # TrainingDataRequest
    editRequested = Signal(object)  # EditJob
    imageTagsRequested = Signal(object)  # ImageTagsRequest
    stopRequested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("library")
        self.worker = LibraryWorker()
        self.worker.moveToThread(self.thread)
        self.openRequested.connect(self.worker.open_folder)
        self.sidecarsRequested.connect(self.worker.write_sidecars)
        self.embeddedKeywordsRequested.connect(self.worker.read_embedded_keywords)
        self.folderTagsRequested.connect(self.worker.count_folder_tags)
        self.trainingDataRequested.connect(self.worker.read_training_data)
        self.editRequested.connect(self.worker.apply_edit)
        self.imageTagsRequested.connect(self.worker.read_image_tags)
        self.stopRequested.connect(self.worker.finish)
        # finished is emitted by the ending thread itself: the slot runs there, before it is gone
        self.thread.finished.connect(self.worker.end_in_thread, Qt.ConnectionType.DirectConnection)
        self.thread.start()

    def stop(self) -> None:
        """Stop the thread once it has done what was asked before (a person's last edits are stored)."""
        self.stopRequested.emit()
        self.thread.wait(10_000)
