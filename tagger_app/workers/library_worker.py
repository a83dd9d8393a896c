"""Folder opening (scan, sidecar import) and sidecar writing, in a worker thread with its own connection."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal, Slot

from mlcnn_core import sidecars
from mlcnn_core.library import ImageRecord, Library, LibraryError, TagRecord


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
    scan_seconds: float
    import_errors: list[str]
    fallback_reason: str | None  # Library.notice: a fallback library, a damaged one rebuilt, edits merged back
    seconds: float


@dataclass
class SidecarRequest:
    image_ids: list[int]
    formats: list[str]
    naming: str
    policy: str
    content: str = "human"  # "human": a person's tags; "machine": a batch of predictions as they stand


@dataclass
class SidecarReport:
    written: dict[int, list[Path]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    notes: dict[int, list[str]] = field(default_factory=dict)  # e.g. a file another program changed
    library: Library | None = None


class LibraryWorker(QObject):
    opened = Signal(object)  # OpenedFolder
    openFailed = Signal(str, str)  # folder, message
    sidecarsDone = Signal(object)  # SidecarReport

    def __init__(self):
        super().__init__()
        self._library: Library | None = None
        self._txt_plans: dict[str, dict[Path, Path | None]] = {}

    @Slot(object)
    def open_folder(self, request: OpenRequest) -> None:
        start = time.perf_counter()
        try:
            library = Library.open(request.folder)
            scan = library.scan()
            errors = (
                library.import_sidecars(as_confirmed=request.import_as_confirmed) if request.import_sidecars else []
            )
            records = library.images()
            tags = library.tag_records_by_image()
        except (LibraryError, OSError) as exc:
            self.openFailed.emit(request.folder, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - sqlite3 errors etc.: report, never crash the thread
            self.openFailed.emit(request.folder, f"{type(exc).__name__}: {exc}")
            return
        self._library = library
        self._txt_plans.clear()
        self.opened.emit(
            OpenedFolder(
                library,
                records,
                tags,
                scan.seconds,
                errors,
                library.notice,
                time.perf_counter() - start,
            )
        )

    @Slot(object)
    def write_sidecars(self, request: SidecarRequest) -> None:
        library = self._library
        report = SidecarReport(library=library)
        if library is None:
            self.sidecarsDone.emit(report)
            return
        plan = self._txt_plan(library, request.naming) if "txt" in request.formats else {}
        for image_id in request.image_ids:
            try:
                record = library.image(image_id)
                txt_path = plan.get(Path(record.path))
                written, notes = library.write_sidecars(
                    image_id,
                    formats=request.formats,
                    txt_path=txt_path and library.abspath(txt_path.as_posix()),
                    policy=request.policy,
                    content=request.content,
                )
                report.written[image_id] = written
                if notes:
                    report.notes[image_id] = notes
            except Exception as exc:  # noqa: BLE001 - SidecarError, sqlite3 errors, ...: report per image
                report.failed[image_id] = str(exc)
        self.sidecarsDone.emit(report)

    def _txt_plan(self, library: Library, naming: str) -> dict[Path, Path | None]:
        if naming not in self._txt_plans:
            self._txt_plans[naming] = sidecars.plan_txt_paths((Path(r.path) for r in library.images()), naming)
        return self._txt_plans[naming]


class LibraryThread(QObject):
    """Owns the library worker's QThread."""

    openRequested = Signal(object)
    sidecarsRequested = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("library")
        self.worker = LibraryWorker()
        self.worker.moveToThread(self.thread)
        self.openRequested.connect(self.worker.open_folder)
        self.sidecarsRequested.connect(self.worker.write_sidecars)
        self.thread.start()

    def stop(self) -> None:
        self.thread.quit()
        self.thread.wait(10_000)
