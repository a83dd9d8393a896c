"""The current image's tags: proposals with confidence bars, confirm / reject / add, and the folder's tags."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QModelIndex, QRect, QStringListModel, Qt, Signal
from PySide6.QtGui import QAction, QColor, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCompleter,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QPushButton,
    QStyledItemDelegate,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from mlcnn_core.library import TagRecord
from tagger_app.models.image_list_model import STATUS_COLORS
from tagger_app.models.tag_models import (
    ConfidenceRole,
    FolderTagModel,
    ImageTagModel,
    TagRecordRole,
    TagRole,
    is_undecided,
)


class ConfidenceBarDelegate(QStyledItemDelegate):
    def paint(self, painter: QPainter, option, index: QModelIndex) -> None:
        value = index.data(ConfidenceRole)
        if value is None:  # no score to draw: said in grey, not drawn as an empty bar
            super().paint(painter, option, index)
            painter.save()
            painter.setPen(option.palette.placeholderText().color())
            painter.drawText(option.rect, Qt.AlignmentFlag.AlignCenter, "no score")
            painter.restore()
            return
        painter.save()
        rect = option.rect.adjusted(3, 4, -3, -4)
        painter.fillRect(rect, QColor(220, 220, 220))
        record = index.data(TagRecordRole)
        color = QColor(40, 100, 200) if record is not None and record.source == "machine" else QColor(40, 160, 80)
        painter.fillRect(
            QRect(rect.left(), rect.top(), int(rect.width() * max(0.0, min(1.0, value))), rect.height()), color
        )
        painter.setPen(QColor(20, 20, 20))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, f"{value:.2f}")
        painter.restore()


class TagPanel(QWidget):
    """Signals carry tag names; the main window turns them into undoable edits."""

    confirmRequested = Signal(str)
    rejectRequested = Signal(str)
    removeRequested = Signal(str)
    confirmAllRequested = Signal()
    addRequested = Signal(str)
    tagSelected = Signal(str)  # the selected row's tag, "" for none (the viewer follows it)
    tagClicked = Signal(str)  # a row clicked, also the one already selected (the viewer shows its map)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = ImageTagModel(self)
        self.title = QLabel("No image")
        self.title.setWordWrap(True)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setItemDelegateForColumn(1, ConfidenceBarDelegate(self.table))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setColumnWidth(1, 110)

        self.confirm_button = QPushButton("Confirm")
        self.reject_button = QPushButton("Reject")
        self.confirm_all_button = QPushButton("Confirm all")
        self.confirm_button.setToolTip("Confirm the selected tag (C)")
        self.reject_button.setToolTip("Reject the selected proposal, or remove a tag a person added (X)")
        self.confirm_all_button.setToolTip("Confirm every proposal; the image becomes confirmed (Ctrl+Return)")
        buttons = QHBoxLayout()
        for button in (self.confirm_button, self.reject_button, self.confirm_all_button):
            buttons.addWidget(button)

        self.add_field = QLineEdit()
        self.add_field.setPlaceholderText("Add a tag (T)…")
        self.completions = QStringListModel(self)
        completer = QCompleter(self.completions, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.add_field.setCompleter(completer)
        add_button = QPushButton("Add")
        add_row = QHBoxLayout()
        add_row.addWidget(self.add_field, 1)
        add_row.addWidget(add_button)

        legend = QLabel(
            '<span style="color:#2864c8"><i>proposed</i></span> · '
            '<span style="color:#14823c"><b>confirmed / added</b></span> · '
            '<span style="color:#be3232"><s>rejected</s></span> · '
            '<span style="color:#785aa0">from sidecar</span>'
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.table, 1)
        layout.addWidget(legend)
        layout.addLayout(buttons)
        layout.addLayout(add_row)

        self.confirm_button.clicked.connect(self.confirm_selected)
        self.reject_button.clicked.connect(self.reject_selected)
        self.confirm_all_button.clicked.connect(self.confirmAllRequested)
        add_button.clicked.connect(self._add)
        self.add_field.returnPressed.connect(self._add)
        self.table.selectionModel().currentRowChanged.connect(self._on_row)
        self.table.clicked.connect(self._on_clicked)
        self._image_id = -1
        self._title = ""
        self._status: str | None = None

    @property
    def image_id(self) -> int:
        """The image whose tags are shown (-1: none)."""
        return self._image_id

    def set_image(self, image_id: int, title: str, status: str | None, records, scores=None) -> None:
        """Show an image's tags. The same image again keeps its rows in place and the selected tag
        selected; a new image selects its first undecided tag (else its first)."""
        same_image = image_id == self._image_id and image_id >= 0
        keep = self.selected_tag() if same_image else None
        self._image_id, self._title, self._status = image_id, title, status
        self.model.set_tags(records, scores, keep_order=same_image)
        color = STATUS_COLORS.get(status or "", QColor(0, 0, 0)).name()
        self.title.setText(f"<b>{title}</b> — <span style='color:{color}'>{status or ''}</span>" if title else title)
        row = self.model.row_of(keep) if keep else None
        if row is None and self.model.rowCount():
            row = self.model.next_undecided_row(-1)
            row = 0 if row is None else row
        self._select_row(row)

    def clear(self) -> None:
        self.set_image(-1, "No image", None, [])

    def show_edit(self, records: list[TagRecord]) -> None:
        """The shown image's tags as a person's edit leaves them, before the library has stored it."""
        self.set_image(self._image_id, self._title, self._status, records, self.model.scores())

    def set_completions(self, tags: list[str], tag_list: Sequence[str] = ()) -> None:
        """The add field completes ``tags`` (the model's labels, the folder's tags) alphabetically, then
        the rest of an autocomplete ``tag_list`` in its own order (most used first)."""
        own = sorted(set(tags), key=str.casefold)
        seen = set(own)
        self.completions.setStringList(own + [t for t in tag_list if t not in seen])

    def selected_tag(self) -> str | None:
        index = self.table.currentIndex()
        return index.siblingAtColumn(0).data(TagRole) if index.isValid() else None

    def select_tag(self, tag: str) -> bool:
        row = self.model.row_of(tag)
        if row is None:
            return False
        self._select_row(row)
        return True

    def select_relative(self, step: int) -> str | None:
        """Select the tag ``step`` rows away (wrapping round); returns it."""
        count = self.model.rowCount()
        if not count:
            return None
        current = self.table.currentIndex()
        start = current.row() if current.isValid() else (-1 if step > 0 else 0)
        self._select_row((start + step) % count)
        return self.selected_tag()

    def focus_add_field(self) -> None:
        self.add_field.setFocus()
        self.add_field.selectAll()

    def focus_tags(self) -> None:
        self.table.setFocus()

    def confirm_selected(self) -> None:
        tag = self.selected_tag()
        if tag:
            self.confirmRequested.emit(tag)
            self._advance_past(tag)

    def reject_selected(self) -> None:
        tag = self.selected_tag()
        if not tag:
            return
        record = self.model.record(self.model.row_of(tag))
        if record.source == "human" and record.state == "added":
            self.removeRequested.emit(tag)
        else:
            self.rejectRequested.emit(tag)
        self._advance_past(tag)

    def _advance_past(self, tag: str) -> None:
        """After a decision on ``tag`` (the edit has been applied by then), select the next undecided
        tag; an edit that failed leaves the selection where it was."""
        row = self.model.row_of(tag)
        if row is not None and is_undecided(self.model.record(row)):
            return
        after = row if row is not None else max(0, self.table.currentIndex().row())
        following = self.model.next_undecided_row(after)
        if following is not None:
            self._select_row(following)

    def _select_row(self, row: int | None) -> None:
        if row is None:
            self.table.clearSelection()
            self.table.setCurrentIndex(QModelIndex())
            self.tagSelected.emit("")
            return
        self.table.selectRow(row)
        self.table.scrollTo(self.model.index(row, 0))

    def _add(self) -> None:
        tag = " ".join(self.add_field.text().split())
        if tag:
            self.add_field.clear()
            self.addRequested.emit(tag)
        self.focus_tags()  # the next key (C, X, N…) is a command again, not text

    def _on_row(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.tagSelected.emit(current.siblingAtColumn(0).data(TagRole) if current.isValid() else "")

    def _on_clicked(self, index: QModelIndex) -> None:
        if index.isValid():
            self.tagClicked.emit(index.siblingAtColumn(0).data(TagRole))


class FolderTagsPanel(QWidget):
    """All tags in the folder with counts; double-click filters, the context menu renames or deletes."""

    filterRequested = Signal(str)
    renameRequested = Signal(str)
    deleteRequested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = FolderTagModel(self)
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._menu)
        self.view.doubleClicked.connect(lambda index: self.filterRequested.emit(index.data(TagRole)))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(QLabel("Double-click to filter; right-click to rename or delete"))
        layout.addWidget(self.view, 1)

    def selected_tag(self) -> str | None:
        index = self.view.currentIndex()
        return index.data(TagRole) if index.isValid() else None

    def _menu(self, pos) -> None:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        tag = index.data(TagRole)
        menu = QMenu(self)
        for text, signal in (
            (f"Show images tagged “{tag}”", self.filterRequested),
            ("Rename across the folder…", self.renameRequested),
            ("Delete from every image…", self.deleteRequested),
        ):
            action = QAction(text, menu)
            action.triggered.connect(lambda _=False, s=signal: s.emit(tag))
            menu.addAction(action)
        menu.exec(self.view.viewport().mapToGlobal(pos))
