"""The folder's images as a flat list model for the gallery; thumbnails come from the ThumbnailLoader."""

from __future__ import annotations

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QPixmap

from mlcnn_core.library import ImageRecord
from tagger_app.workers.image_loader import ThumbnailLoader

STATUS_COLORS = {
    "untagged": QColor(140, 140, 140),
    "predicted": QColor(230, 160, 30),
    "confirmed": QColor(40, 170, 80),
}

IdRole = Qt.ItemDataRole.UserRole + 1
StatusRole = Qt.ItemDataRole.UserRole + 2
RecordRole = Qt.ItemDataRole.UserRole + 3
ThumbnailFailedRole = Qt.ItemDataRole.UserRole + 4

Index = QModelIndex | QPersistentModelIndex
NO_PARENT = QModelIndex()


class ImageListModel(QAbstractListModel):
    """One row per image record, in the order set by :meth:`sort_by`."""

    def __init__(self, thumbnails: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.thumbnails = thumbnails
        self.root = None
        self._records: list[ImageRecord] = []
        self._row_of: dict[int, int] = {}
        self._placeholder = QPixmap()
        thumbnails.ready.connect(self._on_thumbnail)
        thumbnails.failed.connect(self._on_thumbnail)

    # ---- content

    def set_records(self, root, records: list[ImageRecord], sort_key: str | None = None) -> None:
        if sort_key is not None:
            records = self.sorted_records(records, sort_key)
        self.beginResetModel()
        self.root = root
        self._records = list(records)
        self._reindex()
        self.endResetModel()

    def clear(self) -> None:
        self.set_records(None, [])

    def records(self) -> list[ImageRecord]:
        return self._records

    def record(self, row: int) -> ImageRecord:
        return self._records[row]

    def record_by_id(self, image_id: int) -> ImageRecord | None:
        row = self._row_of.get(image_id)
        return None if row is None else self._records[row]

    def row_of(self, image_id: int) -> int | None:
        return self._row_of.get(image_id)

    def update_record(self, record: ImageRecord) -> None:
        row = self._row_of.get(record.id)
        if row is None:
            return
        self._records[row] = record
        index = self.index(row)
        self.dataChanged.emit(index, index, [StatusRole, RecordRole, Qt.ItemDataRole.ToolTipRole])

    @staticmethod
    def sorted_records(records: list[ImageRecord], key: str) -> list[ImageRecord]:
        """``name``, ``mtime`` (newest first) or ``uncertainty`` (least certain first, unpredicted last)."""
        if key == "mtime":
            return sorted(records, key=lambda r: -r.mtime)
        if key == "uncertainty":
            return sorted(records, key=lambda r: (r.uncertainty is None, -(r.uncertainty or 0.0), r.path))
        return sorted(records, key=lambda r: r.path.casefold())

    def sort_by(self, key: str) -> None:
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        ids = [self._records[i.row()].id if i.isValid() else None for i in persistent]
        self._records = self.sorted_records(self._records, key)
        self._reindex()
        moved = [self.index(self._row_of[i]) if i is not None else old for i, old in zip(ids, persistent, strict=True)]
        self.changePersistentIndexList(persistent, moved)
        self.layoutChanged.emit()

    def _reindex(self) -> None:
        self._row_of = {r.id: i for i, r in enumerate(self._records)}

    # ---- Qt model interface

    def rowCount(self, parent: Index = NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self._records)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self._records):
            return None
        record = self._records[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return record.path.rsplit("/", 1)[-1]
        if role == Qt.ItemDataRole.DecorationRole:
            return self.thumbnails.thumbnail(record.id, self.root / record.path) or self._placeholder
        if role == IdRole:
            return record.id
        if role == StatusRole:
            return record.status
        if role == RecordRole:
            return record
        if role == ThumbnailFailedRole:
            return self.thumbnails.has_failed(record.id)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{record.path}\n{record.status}"
        return None

    def _on_thumbnail(self, image_id) -> None:
        row = self._row_of.get(image_id)
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])
