"""Undoable edits of the library (QUndoStack commands). Each one restores exact tag rows on undo.

The library is written on the library worker, never on the GUI thread: a command's redo and undo
hand an :class:`EditJob` to ``submit`` (the main window sends it to the worker's queue, where jobs run
in the order asked, behind anything asked before them). The snapshots an undo restores are taken
there too, and kept in the command's :class:`TagEdit`, which only the worker touches.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from PySide6.QtGui import QUndoCommand

from mlcnn_core.library import Library, LibraryError, Snapshot

# An edit that cannot be stored (e.g. the library's disk is full) is reported and dropped from the stack.
STORE_ERRORS = (sqlite3.Error, LibraryError, OSError)


class TagEdit:
    """The library side of one undoable edit of some images' tags: ``apply`` performs it the first
    time and returns the images it changed; later redos restore the state it produced, undos the
    state before. Runs on the library worker only, one call after the other."""

    def __init__(self, image_ids: Callable[[Library], Iterable[int]], apply: Callable[[Library], list[int]]):
        self.image_ids, self.apply = image_ids, apply
        self.before: dict[int, Snapshot] = {}
        self.after: dict[int, Snapshot] = {}

    def redo(self, library: Library) -> list[int]:
        if self.after:
            library.restore_snapshots(self.after)
        else:
            before = library.snapshot_images(self.image_ids(library))
            touched = self.apply(library)
            if not touched:
                return []
            self.before = {i: before[i] for i in touched}
            self.after = library.snapshot_images(touched)
        return list(self.after)

    def undo(self, library: Library) -> list[int]:
        if not self.before:  # its first redo failed or changed nothing: there is nothing to restore
            return []
        library.restore_snapshots(self.before)
        return list(self.before)


@dataclass
class EditJob:
    """One redo or undo of a command, to run on the library worker."""

    library: Library
    text: str  # what failed, for the message: "Confirm “sky”", "Undo Confirm “sky”"
    run: Callable[[Library], list[int]]  # returns the images it changed
    command: TagEditCommand
    first: bool = False  # the command's first redo: changing nothing (or failing) drops the command
    current_id: int = -1  # the image shown when it was asked: its tags and scores come back too
    shown: list[int] = field(default_factory=list)  # images already shown as edited: read back even if it fails


class TagEditCommand(QUndoCommand):
    """An undoable edit of the tags of some images (one image, a selection, or every image with a
    tag), performed on the library worker through ``submit``."""

    def __init__(
        self,
        text: str,
        library: Library,
        image_ids: Callable[[Library], Iterable[int]],
        apply: Callable[[Library], list[int]],
        submit: Callable[[EditJob], None],
        shown: Iterable[int] = (),
    ):
        super().__init__(text)
        self.library, self.submit, self.label = library, submit, text
        self.edit = TagEdit(image_ids, apply)
        self.shown = list(shown)
        self._pushed = False

    def redo(self) -> None:
        first, self._pushed = not self._pushed, True
        self.submit(EditJob(self.library, self.label, self.edit.redo, self, first, shown=self.shown if first else []))

    def undo(self) -> None:
        self.submit(EditJob(self.library, f"Undo {self.label}", self.edit.undo, self))


def image_edit(
    text: str, library: Library, image_id: int, apply: Callable[[Library], object], submit: Callable[[EditJob], None]
) -> TagEditCommand:
    """An edit of one image's tags (``apply`` returns anything); its change is shown before it is stored."""

    def applied(lib: Library) -> list[int]:
        apply(lib)
        return [image_id]

    return TagEditCommand(text, library, lambda _lib: [image_id], applied, submit, shown=[image_id])


def images_with_tag(library: Library, tag: str) -> list[int]:
    """Every image with a row for ``tag`` (rejected ones included)."""
    return [image_id for image_id, tags in library.tag_records_by_image().items() if any(t.tag == tag for t in tags)]


def folder_tag_edit(
    text: str,
    library: Library,
    tag: str,
    apply: Callable[[Library], list[int]],
    submit: Callable[[EditJob], None],
    shown: Iterable[int] = (),
) -> TagEditCommand:
    """Rename or delete a tag across the folder (``shown``: the images already shown with the change)."""
    return TagEditCommand(text, library, lambda lib: images_with_tag(lib, tag), apply, submit, shown)
