"""Tag models: the current image's tags (with origin and confidence) and the folder's tags with counts."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import QAbstractListModel, QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFont

from mlcnn_core.library import TagRecord

Index = QModelIndex | QPersistentModelIndex
NO_PARENT = QModelIndex()
TagRole = Qt.ItemDataRole.UserRole + 1
ConfidenceRole = Qt.ItemDataRole.UserRole + 2
TagRecordRole = Qt.ItemDataRole.UserRole + 3

# How a tag's origin looks: a person's tags are bold and solid, the machine's italic and blue.
ORIGIN_STYLE = {
    ("machine", "predicted"): ("proposed", QColor(40, 100, 200), False, True),
    ("human", "confirmed"): ("confirmed", QColor(20, 130, 60), True, False),
    ("human", "added"): ("added", QColor(20, 130, 60), True, False),
    ("human", "rejected"): ("rejected", QColor(190, 50, 50), False, False),
    ("sidecar", "imported"): ("from sidecar", QColor(120, 90, 160), False, False),
}


def is_undecided(record: TagRecord) -> bool:
    """A proposal or an imported tag that no person has confirmed or rejected."""
    return record.source != "human"


def with_decision(records: list[TagRecord], tag: str, state: str | None) -> list[TagRecord]:
    """An image's tags after a person's decision on ``tag`` (``confirmed``, ``added``, ``rejected``;
    ``None``: removed), as the library will store it."""
    if state is None:
        return [r for r in records if r.tag != tag]
    old = next((r for r in records if r.tag == tag), None)
    if old is None:
        return [*records, TagRecord(tag, "human", state, None)]
    return [replace(r, source="human", state=state) if r.tag == tag else r for r in records]


def with_all_confirmed(records: list[TagRecord]) -> list[TagRecord]:
    """An image's tags after "confirm all": every proposal and imported tag is the person's."""
    return [replace(r, source="human", state="confirmed") if is_undecided(r) else r for r in records]


def with_renamed(records: list[TagRecord], old: str, new: str | None) -> list[TagRecord]:
    """An image's tags after ``old`` is renamed to ``new`` (``None``: deleted) across the folder; on a
    clash a person's row wins over another, as the library decides."""
    row = next((r for r in records if r.tag == old), None)
    if row is None:
        return records
    rest = [r for r in records if r.tag != old]
    clash = next((r for r in rest if r.tag == new), None)
    if new is None or (clash is not None and (clash.source == "human" or row.source != "human")):
        return rest
    return [replace(r, tag=new) if r.tag == old else r for r in records if r.tag != new]


class ImageTagModel(QAbstractTableModel):
    """Columns: tag, confidence (drawn as a bar), origin."""

    COLUMNS = ("Tag", "Confidence", "Origin")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._records: list[TagRecord] = []
        self._scores: dict[str, float] = {}

    def set_tags(
        self, records: list[TagRecord], scores: dict[str, float] | None = None, keep_order: bool = False
    ) -> None:
        """``keep_order``: the same image again (after an edit or a new prediction), so the rows keep
        their places and new tags come last: a row never moves under the person's cursor, unless the
        person moved its tag to the front (tags with a rank lead, as they lead the captions)."""
        records = list(records)
        if keep_order:
            place = {record.tag: row for row, record in enumerate(self._records)}
            # stable: new tags keep their order
            records.sort(key=lambda r: (r.rank is None, r.rank or 0, place.get(r.tag, len(place))))
        self.beginResetModel()
        self._records = records
        self._scores = dict(scores or {})
        self.endResetModel()

    def records(self) -> list[TagRecord]:
        return self._records

    def scores(self) -> dict[str, float]:
        return self._scores

    def record(self, row: int) -> TagRecord:
        return self._records[row]

    def row_of(self, tag: str) -> int | None:
        for row, record in enumerate(self._records):
            if record.tag == tag:
                return row
        return None

    def next_undecided_row(self, after: int) -> int | None:
        """The first row after ``after`` (wrapping round) whose tag nobody has decided on yet."""
        count = len(self._records)
        for offset in range(1, count + 1):
            row = (after + offset) % count
            if is_undecided(self._records[row]):
                return row
        return None

    def positive_tags(self) -> list[str]:
        return [record.tag for record in self._records if record.is_positive]

    def confidence(self, record: TagRecord) -> float | None:
        if record.confidence is not None:
            return record.confidence
        return self._scores.get(record.tag)

    def rowCount(self, parent: Index = NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self._records)

    def columnCount(self, parent: Index = NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole and section == 1:
            return ("How sure the model is of the label: its rescored score, or (models without rescoring) its share "
                    "of the image's evidence, its summed confidence map over all labels' sums")
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        record = self._records[index.row()]
        label, color, bold, italic = ORIGIN_STYLE.get(
            (record.source, record.state), (record.state, QColor(80, 80, 80), False, False)
        )
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 0:
                return record.tag
            if column == 1:
                value = self.confidence(record)
                return "" if value is None else f"{value:.2f}"
            return label
        if role == Qt.ItemDataRole.ForegroundRole and column != 1:
            return QBrush(color)
        if role == Qt.ItemDataRole.FontRole and column == 0:
            font = QFont()
            font.setBold(bold)
            font.setItalic(italic)
            font.setStrikeOut(record.state == "rejected")
            return font
        if role == TagRole:
            return record.tag
        if role == ConfidenceRole:
            return self.confidence(record)
        if role == TagRecordRole:
            return record
        if role == Qt.ItemDataRole.ToolTipRole and column == 1 and self.confidence(record) is None:
            return "No score: the model has no such label, or has not read this image yet"
        if role == Qt.ItemDataRole.ToolTipRole:
            who = "a person" if record.source == "human" else record.source
            return f"{record.tag}: {label} (by {who})"
        return None


class FolderTagModel(QAbstractListModel):
    """Every tag in the folder with the number of images it applies to."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[tuple[str, int]] = []

    def set_counts(self, rows: list[tuple[str, int]]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def tags(self) -> list[str]:
        return [t for t, _ in self._rows]

    def rowCount(self, parent: Index = NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        tag, count = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{tag}  ({count})"
        if role == TagRole:
            return tag
        return None
