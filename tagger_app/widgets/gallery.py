"""The thumbnail grid with its filter bar (status, tag expression, sort order)."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from mlcnn_core.library import TagExpressionError
from tagger_app.models.image_filter_model import ImageFilterModel
from tagger_app.models.image_list_model import (
    STATUS_COLORS,
    IdRole,
    ImageListModel,
    StatusRole,
    ThumbnailFailedRole,
)

CELL = QSize(150, 168)
STATUS_FILTERS = {
    "All images": None,
    "Untagged": ["untagged"],
    "Predicted (to review)": ["predicted"],
    "Confirmed": ["confirmed"],
    "Not confirmed": ["untagged", "predicted"],
}
SORT_KEYS = {"Name": "name", "Date (newest first)": "mtime", "Uncertainty (least certain first)": "uncertainty"}


class ThumbnailDelegate(QStyledItemDelegate):
    """Thumbnail, file name and a status badge (grey untagged, orange predicted, green confirmed)."""

    def sizeHint(self, option, index) -> QSize:
        return CELL

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        painter.save()
        rect = option.rect.adjusted(3, 3, -3, -3)
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(rect, option.palette.highlight())
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        image_rect = QRect(rect.left() + 4, rect.top() + 4, rect.width() - 8, rect.height() - 30)
        if pixmap is not None and not pixmap.isNull():
            size = pixmap.size().scaled(image_rect.size(), Qt.AspectRatioMode.KeepAspectRatio)
            x = image_rect.left() + (image_rect.width() - size.width()) // 2
            y = image_rect.top() + (image_rect.height() - size.height()) // 2
            painter.drawPixmap(QRect(x, y, size.width(), size.height()), pixmap)
        else:
            painter.fillRect(image_rect, QColor(60, 60, 60, 40))
            if index.data(ThumbnailFailedRole):
                painter.drawText(image_rect, Qt.AlignmentFlag.AlignCenter, "unreadable")
        status = index.data(StatusRole)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor(255, 255, 255), 1.5))
        painter.setBrush(STATUS_COLORS.get(status, QColor(0, 0, 0)))
        painter.drawEllipse(QRect(image_rect.right() - 16, image_rect.top() + 2, 14, 14))
        text_rect = QRect(rect.left() + 2, rect.bottom() - 22, rect.width() - 4, 20)
        name = option.fontMetrics.elidedText(
            index.data(Qt.ItemDataRole.DisplayRole) or "", Qt.TextElideMode.ElideMiddle, text_rect.width()
        )
        painter.setPen(
            option.palette.highlightedText().color()
            if option.state & QStyle.StateFlag.State_Selected
            else option.palette.text().color()
        )
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignCenter, name)
        painter.restore()


class GalleryView(QListView):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setUniformItemSizes(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(500)
        self.setGridSize(CELL)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setItemDelegate(ThumbnailDelegate(self))
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(40)
        self.placeholder = ""  # said in the middle of the empty grid

    def set_placeholder(self, text: str) -> None:
        self.placeholder = text
        self.viewport().update()

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        if self.placeholder and self.model() is not None and self.model().rowCount() == 0:
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(
                self.viewport().rect().adjusted(20, 20, -20, -20),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                self.placeholder,
            )
            painter.end()


class GalleryPanel(QWidget):
    """Filter bar above the grid. ``currentImageChanged`` carries the image id (or -1)."""

    currentImageChanged = Signal(int)
    selectionChanged = Signal()

    def __init__(self, images: ImageListModel, parent=None):
        super().__init__(parent)
        self.images = images
        self.proxy = ImageFilterModel(self)
        self.proxy.setSourceModel(images)

        self.status_filter = QComboBox()
        self.status_filter.addItems(list(STATUS_FILTERS))
        self.status_filter.setToolTip("Show images by review status")
        self.tag_filter = QLineEdit()
        self.tag_filter.setPlaceholderText("Filter by tags: cat AND (dog OR bird*) AND NOT sky")
        self.tag_filter.setClearButtonEnabled(True)
        self.tag_filter.setToolTip(
            "Tag filter: AND / OR / NOT (or & | !), parentheses, wildcards * and ?; "
            'words in a row form one tag; "quotes" for exact tags'
        )
        self.sort_order = QComboBox()
        self.sort_order.addItems(list(SORT_KEYS))
        self.count_label = QLabel()

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.status_filter, 1)
        bar.addWidget(self.sort_order, 1)
        self.view = GalleryView()
        self.view.setModel(self.proxy)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.tag_filter)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.count_label)

        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(250)
        self._filter_timer.timeout.connect(self.apply_tag_filter)
        self.tag_filter.textChanged.connect(self._filter_timer.start)
        self.tag_filter.returnPressed.connect(self.apply_tag_filter)
        self.status_filter.currentTextChanged.connect(self._apply_status_filter)
        self.sort_order.currentTextChanged.connect(self.apply_sort)
        self.view.selectionModel().currentChanged.connect(self._on_current_changed)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self.selectionChanged.emit())
        for signal in (
            self.proxy.rowsInserted,
            self.proxy.rowsRemoved,
            self.proxy.modelReset,
            self.proxy.layoutChanged,
        ):
            signal.connect(self._update_count)

    # ---- filter and sort

    def apply_tag_filter(self) -> bool:
        self._filter_timer.stop()
        try:
            self.proxy.set_tag_expression(self.tag_filter.text())
        except TagExpressionError as exc:
            self.tag_filter.setStyleSheet("QLineEdit { background: #fbe3e3; }")
            self.tag_filter.setToolTip(str(exc))
            return False
        self.tag_filter.setStyleSheet("")
        self.tag_filter.setToolTip("")
        self._update_count()
        return True

    def set_tag_filter(self, expression: str) -> None:
        self.tag_filter.setText(expression)
        self.apply_tag_filter()

    def set_status_filter(self, label: str) -> None:
        self.status_filter.setCurrentText(label)

    def _apply_status_filter(self, label: str) -> None:
        self.proxy.set_statuses(STATUS_FILTERS.get(label))
        self._update_count()

    def sort_key(self) -> str:
        return SORT_KEYS[self.sort_order.currentText()]

    def set_sort(self, key: str) -> None:
        for label, value in SORT_KEYS.items():
            if value == key:
                self.sort_order.setCurrentText(label)
        self.apply_sort()

    def apply_sort(self, *_args) -> None:
        current = self.current_image_id()
        self.images.sort_by(self.sort_key())
        if current >= 0:
            self.select_image(current)

    def _update_count(self, *_args) -> None:
        total = self.images.rowCount()
        shown = self.proxy.rowCount()
        self.count_label.setText(f"{shown} of {total} images" if shown != total else f"{total} images")

    # ---- selection

    def current_image_id(self) -> int:
        index = self.view.currentIndex()
        return index.data(IdRole) if index.isValid() else -1

    def selected_image_ids(self) -> list[int]:
        return [i.data(IdRole) for i in self.view.selectionModel().selectedIndexes()]

    def visible_image_ids(self) -> list[int]:
        return [self.proxy.index(r, 0).data(IdRole) for r in range(self.proxy.rowCount())]

    def select_image(self, image_id: int) -> bool:
        row = self.images.row_of(image_id)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.images.index(row))
        if not index.isValid():
            return False
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)
        return True

    def select_row(self, row: int) -> bool:
        if not 0 <= row < self.proxy.rowCount():
            return False
        index = self.proxy.index(row, 0)
        self.view.setCurrentIndex(index)
        self.view.scrollTo(index)
        return True

    def step(self, delta: int) -> bool:
        current = self.view.currentIndex()
        row = current.row() + delta if current.isValid() else 0
        return self.select_row(row)

    def next_unreviewed(self) -> bool:
        """Select the next image (after the current one, wrapping) that is not confirmed."""
        count = self.proxy.rowCount()
        start = self.view.currentIndex().row() if self.view.currentIndex().isValid() else -1
        for offset in range(1, count + 1):
            row = (start + offset) % count
            if self.proxy.index(row, 0).data(StatusRole) != "confirmed":
                return self.select_row(row)
        return False

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.currentImageChanged.emit(current.data(IdRole) if current.isValid() else -1)
