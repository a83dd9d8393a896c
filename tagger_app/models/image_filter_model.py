"""Filters the gallery by review status and by a tag expression (see mlcnn_core.library)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel

from mlcnn_core.library import compile_tag_expression
from tagger_app.models.image_list_model import ImageListModel


class ImageFilterModel(QSortFilterProxyModel):
    """Keeps the source order (the list model sorts); accepts rows by status and tag predicate.

    The tags of each image are held here (id -> tag names that apply) and updated as edits and
    predictions arrive, so filtering never touches the database.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self._statuses: set[str] | None = None
        self._predicate: Callable[[Iterable[str]], bool] | None = None
        self._expression = ""
        self._tags: dict[int, set[str]] = {}
        self.setDynamicSortFilter(True)

    def _refilter(self, change) -> None:
        self.beginFilterChange()
        change()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_tag_sets(self, tags: dict[int, set[str]]) -> None:
        if self._predicate is None:
            self._tags = tags  # nothing filters on tags now: no need to re-run the filter
        else:
            self._refilter(lambda: setattr(self, "_tags", tags))

    def update_tags(self, image_id: int, tags: set[str]) -> None:
        self._tags[image_id] = tags
        # the row's own dataChanged re-filters it (dynamic filtering)

    def images_with_tag(self, tag: str) -> list[int]:
        return [image_id for image_id, tags in self._tags.items() if tag in tags]

    def rename_tag(self, old: str, new: str | None) -> None:
        """``old`` renamed to ``new`` (``None``: deleted) on every image, as an edit shows it before it is stored."""

        def change():
            for tags in self._tags.values():
                if old in tags:
                    tags.discard(old)
                    if new:
                        tags.add(new)

        if self._predicate is None:
            change()
        else:
            self._refilter(change)

    def set_statuses(self, statuses: Iterable[str] | None) -> None:
        self._refilter(lambda: setattr(self, "_statuses", None if statuses is None else set(statuses)))

    def set_tag_expression(self, expression: str) -> None:
        """Raises TagExpressionError for a malformed expression (the filter is left as it was)."""
        expression = expression.strip()
        if expression == self._expression:
            return
        predicate = compile_tag_expression(expression) if expression else None

        def change():
            self._expression, self._predicate = expression, predicate

        self._refilter(change)

    @property
    def tag_expression(self) -> str:
        return self._expression

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        source: ImageListModel = self.sourceModel()  # type: ignore[assignment]
        record = source.record(source_row)
        if self._statuses is not None and record.status not in self._statuses:
            return False
        if self._predicate is not None and not self._predicate(self._tags.get(record.id, ())):
            return False
        return True
