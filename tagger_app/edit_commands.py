"""Undoable edits of the library (QUndoStack commands). Each one restores exact tag rows on undo."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

from PySide6.QtGui import QUndoCommand

from mlcnn_core.library import Library, LibraryError, Snapshot

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


class ImagesTagsCommand(QUndoCommand):
    """An edit of several images' tags (a selection, or every image with a tag), one transaction;
    undo restores each image it changed exactly. ``apply`` returns those images: none makes the
    command obsolete, so an edit that changed nothing does not sit on the stack."""

    def __init__(
        self,
        text: str,
        library: Library,
        image_ids: Callable[[Library], Iterable[int]],
        apply: Callable[[Library], list[int]],
        changed: Callable[[list[int]], None],
        failed: Callable[[str], None] = _ignore,
    ):
        super().__init__(text)
        self.library, self.image_ids, self.apply, self.changed, self.failed = library, image_ids, apply, changed, failed
        self.before: dict[int, Snapshot] = {}
        self.after: dict[int, Snapshot] = {}

    def redo(self) -> None:
        try:
            if not self.after:
                before = self.library.snapshot_images(self.image_ids(self.library))
                touched = self.apply(self.library)
                if not touched:
                    self.setObsolete(True)
                    return
                self.before = {i: before[i] for i in touched}
                self.after = self.library.snapshot_images(touched)
            else:
                self.library.restore_snapshots(self.after)
        except STORE_ERRORS as exc:
            self.setObsolete(True)
            self.failed(f"{self.text()}: cannot store the edit ({exc})")
            return
        self.changed(list(self.after))

    def undo(self) -> None:
        try:
            self.library.restore_snapshots(self.before)
        except STORE_ERRORS as exc:
            self.failed(f"Undo {self.text()}: cannot store the edit ({exc})")
        self.changed(list(self.before))


def images_with_tag(library: Library, tag: str) -> list[int]:
    """Every image with a row for ``tag`` (rejected ones included)."""
    return [image_id for image_id, tags in library.tag_records_by_image().items() if any(t.tag == tag for t in tags)]


class FolderTagCommand(ImagesTagsCommand):
    """Rename or delete a tag across the folder."""

    def __init__(
        self,
        text: str,
        library: Library,
        tag: str,
        apply: Callable[[Library], list[int]],
        changed: Callable[[list[int]], None],
        failed: Callable[[str], None] = _ignore,
    ):
        super().__init__(text, library, lambda lib: images_with_tag(lib, tag), apply, changed, failed)
        self.tag = tag
