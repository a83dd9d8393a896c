"""The image viewer: zoom and pan, a label's confidence map or the winner map over the image, hover readout."""

from __future__ import annotations

import colorsys

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap, QTransform, QWheelEvent
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSlider,
    QVBoxLayout,
    QWidget,
)

# An "inferno"-like colour ramp, interpolated from five anchors: dark = low confidence, yellow = high.
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)
CONFIDENCE_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], axis=1
).astype(np.uint8)

OVERLAY_TAG = "Selected tag's map"
OVERLAY_WINNER = "Winner map"
OVERLAY_NONE = "No overlay"
OVERLAY_MODES = (OVERLAY_TAG, OVERLAY_WINNER, OVERLAY_NONE)


def label_color(index: int) -> QColor:
    """A distinct colour per label index (golden-ratio hue steps)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return QColor(int(r * 255), int(g * 255), int(b * 255))


def map_range(maps: np.ndarray) -> tuple[float, float]:
    """One colour scale for every label of an image: from 0 (or the lowest raw output) to the highest
    confidence of any label, so a label that is not in the image stays dark instead of glowing."""
    values = np.nan_to_num(maps)
    if not values.size:
        return 0.0, 1.0
    return min(0.0, float(values.min())), float(values.max())


def confidence_overlay(values: np.ndarray, low: float, high: float) -> QImage:
    """A coarse [h, w] confidence map as an RGBA image on the scale low..high: colour ramp, more
    opaque where confident."""
    v = np.nan_to_num(values).astype(np.float32)
    v = np.clip((v - low) / (high - low), 0.0, 1.0) if high - low > 1e-9 else np.zeros_like(v)
    rgba = np.empty((*v.shape, 4), np.uint8)
    rgba[..., :3] = CONFIDENCE_LUT[(v * 255).astype(np.uint8)]
    rgba[..., 3] = (40 + 215 * v).astype(np.uint8)
    return _to_qimage(rgba)


def winner_overlay(winner: np.ndarray, num_labels: int) -> QImage:
    palette = np.array([label_color(i).getRgb() for i in range(max(1, num_labels))], np.uint8)
    palette[:, 3] = 190
    return _to_qimage(palette[np.clip(winner, 0, len(palette) - 1)])


def _to_qimage(rgba: np.ndarray) -> QImage:
    rgba = np.ascontiguousarray(rgba)
    h, w = rgba.shape[:2]
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


class ImageView(QGraphicsView):
    """Zoom with the wheel (around the cursor), pan by dragging; ``hovered`` gives image coordinates."""

    hovered = Signal(float, float)  # x, y in image pixels (negative: outside)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.SmoothPixmapTransform | QPainter.RenderHint.Antialiasing)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setMouseTracking(True)
        self.setBackgroundBrush(QColor(40, 40, 40))
        self.image_item = QGraphicsPixmapItem()
        self.image_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.overlay_item = QGraphicsPixmapItem()
        self.overlay_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.overlay_item.setZValue(1)
        self.scene().addItem(self.image_item)
        self.scene().addItem(self.overlay_item)
        self._auto_fit = True

    def set_image(self, image: QImage | None) -> None:
        pixmap = QPixmap.fromImage(image) if image is not None and not image.isNull() else QPixmap()
        self.image_item.setPixmap(pixmap)
        self.scene().setSceneRect(QRectF(pixmap.rect()))
        self._auto_fit = True
        self.fit()

    def image_size(self) -> tuple[int, int]:
        pixmap = self.image_item.pixmap()
        return pixmap.width(), pixmap.height()

    def set_overlay(self, overlay: QImage | None) -> None:
        if overlay is None or overlay.isNull():
            self.overlay_item.setPixmap(QPixmap())
            return
        self.overlay_item.setPixmap(QPixmap.fromImage(overlay))
        width, height = self.image_size()
        if width and height:
            # the coarse map covers the whole image; smooth scaling upsamples it bilinearly
            self.overlay_item.setTransform(QTransform.fromScale(width / overlay.width(), height / overlay.height()))

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay_item.setOpacity(opacity)

    def fit(self) -> None:
        if not self.image_item.pixmap().isNull():
            self.fitInView(self.image_item, Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self, factor: float) -> None:
        self._auto_fit = False
        self.scale(factor, factor)

    def wheelEvent(self, event: QWheelEvent) -> None:
        self.zoom(1.25 if event.angleDelta().y() > 0 else 0.8)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._auto_fit:
            self.fit()

    def mouseMoveEvent(self, event) -> None:
        super().mouseMoveEvent(event)
        point: QPointF = self.mapToScene(event.position().toPoint())
        width, height = self.image_size()
        if 0 <= point.x() < width and 0 <= point.y() < height:
            self.hovered.emit(point.x(), point.y())
        else:
            self.hovered.emit(-1.0, -1.0)


class ViewerPanel(QWidget):
    """The image view with its overlay controls, hover readout and winner-map legend.

    The overlay is, by default, the map of the tag selected in the tag panel (``set_selected_tag``);
    the winner map, none, or any one label's map (for the image shown, until the selection or the
    image changes) can be chosen instead."""

    overlayChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.view = ImageView()
        self.overlay_choice = QComboBox()
        self.overlay_choice.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.overlay_choice.setToolTip(
            "What is drawn over the image: the selected tag's confidence map, the winning label at each "
            "position, nothing, or any one label's map"
        )
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setMaximumWidth(140)
        self.opacity.setToolTip("Overlay opacity")
        self.caption = QLabel(" ")
        self.caption.setToolTip("The map shown and its colour scale (one scale for every label of the image)")
        self.hover_label = QLabel(" ")
        self.hover_label.setMinimumWidth(220)
        self.legend = QListWidget()
        self.legend.setMaximumWidth(190)
        self.legend.setVisible(False)
        self.legend.setToolTip("Share of the positions each label wins; the image's tags first, in bold")

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(QLabel("Overlay:"))
        bar.addWidget(self.overlay_choice)
        bar.addWidget(QLabel("Opacity:"))
        bar.addWidget(self.opacity)
        bar.addWidget(self.caption, 1)
        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.view, 1)
        body.addWidget(self.legend)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addLayout(body, 1)
        layout.addWidget(self.hover_label)

        self._label_names: list[str] = []
        self._maps: np.ndarray | None = None
        self._winner: np.ndarray | None = None
        self._range = (0.0, 1.0)
        self._original_size: tuple[int, int] | None = None
        self._image_id = -1
        self._selected_tag: str | None = None
        self._image_tags: list[str] = []
        self._hover: tuple[float, float] | None = None
        self._fill_choices()
        self.overlay_choice.currentTextChanged.connect(self._on_choice)
        self.opacity.valueChanged.connect(lambda v: self.view.set_overlay_opacity(v / 100))
        self.view.set_overlay_opacity(self.opacity.value() / 100)
        self.view.hovered.connect(self._on_hover)

    # ---- content

    def set_image(self, image: QImage | None) -> None:
        self.view.set_image(image)
        self._render_overlay()

    def set_labels(self, label_names: list[str]) -> None:
        """The model's labels, offered as single-label choices after the modes."""
        if label_names == self._label_names:
            return
        self._label_names = list(label_names)
        self._fill_choices()

    def _fill_choices(self) -> None:
        current = self.overlay_choice.currentText() or OVERLAY_TAG
        self.overlay_choice.blockSignals(True)
        self.overlay_choice.clear()
        self.overlay_choice.addItems(list(OVERLAY_MODES))
        if self._label_names:
            self.overlay_choice.insertSeparator(len(OVERLAY_MODES))
            self.overlay_choice.addItems(sorted(self._label_names, key=str.casefold))
        index = self.overlay_choice.findText(current)
        self.overlay_choice.setCurrentIndex(index if index >= 0 else 0)
        self.overlay_choice.blockSignals(False)

    def set_maps(
        self,
        maps: np.ndarray | None,
        winner: np.ndarray | None,
        label_names: list[str] | None = None,
        image_size: tuple[int, int] | None = None,
        image_id: int = -1,
    ) -> None:
        """``image_size``: the original (width, height), for the hover readout's pixel coordinates.
        Another ``image_id`` than before drops a single label chosen for the previous image."""
        if label_names is not None:
            self.set_labels(label_names)
        if image_id != self._image_id:
            self._image_id = image_id
            self._hover = None
            if self.pinned_label() is not None:
                self.show_tag_map()
        self._maps, self._winner, self._original_size = maps, winner, image_size
        self._range = map_range(maps) if maps is not None else (0.0, 1.0)
        self._render_overlay()

    def set_selected_tag(self, tag: str | None) -> None:
        """The tag selected in the tag panel: its map is the one shown (another tag than before also
        ends a single label's map chosen from the list)."""
        tag = tag or None
        if tag != self._selected_tag and self.pinned_label() is not None:
            self.overlay_choice.setCurrentText(OVERLAY_TAG)
        self._selected_tag = tag
        self._render_overlay()

    def set_image_tags(self, tags: list[str]) -> None:
        """The shown image's tags (not rejected): the winner map's legend lists them first."""
        if tags != self._image_tags:
            self._image_tags = list(tags)
            if self.overlay_mode() == OVERLAY_WINNER:
                self._render_overlay()

    def clear(self) -> None:
        self._maps = self._winner = None
        self._image_id = -1
        self._hover = None
        self.view.set_image(None)
        self.view.set_overlay(None)
        self.legend.clear()
        self.caption.setText(" ")
        self.hover_label.setText(" ")

    def show_tag_map(self) -> None:
        self.overlay_choice.setCurrentText(OVERLAY_TAG)
        self._render_overlay()

    def show_label(self, label: str) -> bool:
        """Show one label's map: the selected tag's (which then follows the selection) or any other."""
        if label == self._selected_tag:
            self.show_tag_map()
            return label in self._label_names
        index = self.overlay_choice.findText(label)
        if index < len(OVERLAY_MODES):
            return False
        self.overlay_choice.setCurrentIndex(index)
        return True

    def show_winner_map(self) -> None:
        self.overlay_choice.setCurrentText(OVERLAY_WINNER)

    def hide_overlay(self) -> None:
        self.overlay_choice.setCurrentText(OVERLAY_NONE)

    def overlay_mode(self) -> str:
        return self.overlay_choice.currentText()

    def pinned_label(self) -> str | None:
        """The single label chosen from the list, if that is what is shown."""
        choice = self.overlay_choice.currentText()
        return choice if choice not in OVERLAY_MODES and choice in self._label_names else None

    def shown_label(self) -> str | None:
        """The label whose confidence map is drawn, or None (winner map, no overlay, a tag without map)."""
        label = self._selected_tag if self.overlay_mode() == OVERLAY_TAG else self.pinned_label()
        return label if label in self._label_names and self._maps is not None else None

    # ---- rendering

    def _on_choice(self, text: str) -> None:
        self._render_overlay()
        self.overlayChanged.emit(text)

    def _render_overlay(self) -> None:
        choice = self.overlay_choice.currentText()
        winner = choice == OVERLAY_WINNER and self._winner is not None and self._maps is not None
        self.legend.setVisible(winner)
        label = self.shown_label()
        if winner:
            self.view.set_overlay(winner_overlay(self._winner, len(self._label_names)))
            self._fill_legend()
            self.caption.setText("Winner map: the best label at each position")
        elif label is not None:
            low, high = self._range
            self.view.set_overlay(confidence_overlay(self._maps[self._label_names.index(label)], low, high))
            self.caption.setText(f"Map of <b>{label}</b> · dark {low:.3g} … yellow {high:.3g}")
        else:
            self.view.set_overlay(None)
            self.caption.setText(self._no_map_reason(choice))
        self._refresh_hover()

    def _no_map_reason(self, choice: str) -> str:
        if choice == OVERLAY_NONE:
            return " "
        if choice == OVERLAY_TAG and not self._selected_tag:
            return "No tag selected"
        if choice == OVERLAY_TAG and self._label_names and self._selected_tag not in self._label_names:
            return f"No map: “{self._selected_tag}” is not a label of this model"
        if self._maps is None:
            return "No maps yet: the model has not read this image"
        return " "

    def _fill_legend(self) -> None:
        self.legend.clear()
        present, counts = np.unique(self._winner, return_counts=True)
        tags = set(self._image_tags)
        entries = [
            (self._label_names[index], index, count)
            for index, count in zip(present.tolist(), counts.tolist(), strict=True)
            if 0 <= index < len(self._label_names)
        ]
        entries.sort(key=lambda e: (e[0] not in tags, -e[2]))
        for name, index, count in entries:
            item = QListWidgetItem(f"{name}  {100.0 * count / self._winner.size:.0f}%")
            swatch = QPixmap(14, 14)
            swatch.fill(label_color(index))
            item.setIcon(swatch)
            if name in tags:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            self.legend.addItem(item)

    def hover_text(self, x: float, y: float) -> str:
        """What the readout says for image pixel (x, y): the label and its confidence there."""
        width, height = self.view.image_size()
        if self._maps is None or x < 0 or not width or not height:
            return " "
        _, h, w = self._maps.shape
        row = min(h - 1, int(y * h / height))
        col = min(w - 1, int(x * w / width))
        label = self.shown_label()
        if label is not None:
            index = self._label_names.index(label)
        else:
            index = int(self._winner[row, col]) if self._winner is not None else int(self._maps[:, row, col].argmax())
        if not 0 <= index < len(self._label_names):
            return " "
        if self._original_size:  # the viewer may show a shrunk decode of a very large image
            x, y = x * self._original_size[0] / width, y * self._original_size[1] / height
        return f"({int(x)}, {int(y)})  {self._label_names[index]}: {self._maps[index, row, col]:.3g}"

    def _on_hover(self, x: float, y: float) -> None:
        self._hover = (x, y) if x >= 0 else None
        self._refresh_hover()

    def _refresh_hover(self) -> None:
        """The readout follows what is shown: a change of image, map or overlay redoes it."""
        self.hover_label.setText(self.hover_text(*self._hover) if self._hover else " ")
