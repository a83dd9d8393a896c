"""Undoable edits of the library (QUndoStack commands). Each one restores exact tag rows on undo."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from PySide6.QtGui import QUndoCommand

from mlcnn_core.library import Library, LibraryError, TagRecord

Snapshot = tuple[list[TagRecord], bool]
# An edit that cannot be stored (e.g. the library's disk is full) is reported and dropped from the stack.
STORE_ERRORS = (sqlite3.Error, LibraryError, OSError)


def _ignore(_message: str) -> None:
    pass


class ImageTagsCommand(QUndoCommand):
    """An edit of one image's tags. ``apply`` performs it the first time; later redos restore the
    state it produced, undos the state before. ``changed(image_ids)`` is called after each."""

    def __init__(
        self,
        text: str,
        library: Library,
        image_id: int,
        apply: Callable[[Library], object],
        changed: Callable[[list[int]], None],
        failed: Callable[[str], None] = _ignore,
    ):
        super().__init__(text)
        self.library, self.image_id, self.apply, self.changed, self.failed = library, image_id, apply, changed, failed
        self.before: Snapshot | None = None
        self.after: Snapshot | None = None

    def redo(self) -> None:
        try:
            if self.after is None:
                self.before = self.library.snapshot_tags(self.image_id)
                self.apply(self.library)
                self.after = self.library.snapshot_tags(self.image_id)
            else:
                self.library.restore_snapshot(self.image_id, self.after)
        except STORE_ERRORS as exc:
            self.setObsolete(True)
            self.failed(f"{self.text()}: cannot store the edit ({exc})")
            return
        self.changed([self.image_id])

    def undo(self) -> None:
        assert self.before is not None
        try:
            self.library.restore_snapshot(self.image_id, self.before)
        except STORE_ERRORS as exc:
            self.failed(f"Undo {self.text()}: cannot store the edit ({exc})")
            return
        self.changed([self.image_id])


class FolderTagCommand(QUndoCommand):
    """Rename or delete a tag across the folder; undo restores every touched image exactly."""

    def __init__(
        self,
        text: str,
        library: Library,
        tag: str,
        apply: Callable[[Library], list[int]],
        changed: Callable[[list[int]], None],
        failed: Callable[[str], None] = _ignore,
    ):
        super().__init__(text)
        self.library, self.tag, self.apply, self.changed, self.failed = library, tag, apply, changed, failed
        self.before: dict[int, Snapshot] = {}
        self.after: dict[int, Snapshot] = {}

    def redo(self) -> None:
        try:
            self._redo()
        except STORE_ERRORS as exc:
            self.setObsolete(True)
            self.failed(f"{self.text()}: cannot store the edit ({exc})")
            return
        self.changed(list(self.after))

    def _redo(self) -> None:
        if not self.after:
            touched = [
                image_id
                for image_id, tags in self.library.tag_records_by_image().items()
                if any(t.tag == self.tag for t in tags)
            ]
            self.before = {i: self.library.snapshot_tags(i) for i in touched}
            self.apply(self.library)
            self.after = {i: self.library.snapshot_tags(i) for i in touched}
        else:
            for image_id, snapshot in self.after.items():
                self.library.restore_snapshot(image_id, snapshot)

    def undo(self) -> None:
        try:
            for image_id, snapshot in self.before.items():
                self.library.restore_snapshot(image_id, snapshot)
        except STORE_ERRORS as exc:
            self.failed(f"Undo {self.text()}: cannot store the edit ({exc})")
        self.changed(list(self.before))
