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

OVERLAY_NONE = "No overlay"
OVERLAY_WINNER = "Winner map (best label per position)"


def label_color(index: int) -> QColor:
    """A distinct colour per label index (golden-ratio hue steps)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return QColor(int(r * 255), int(g * 255), int(b * 255))


def confidence_overlay(values: np.ndarray) -> QImage:
    """A coarse [h, w] confidence map as an RGBA image: colour ramp, more opaque where confident.

    The ramp spans the map's minimum .. maximum, so it shows *where* the label is; per-position
    confidences of one label among many are small numbers, and the hover readout gives them."""
    v = np.nan_to_num(values).astype(np.float32)
    low, high = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    v = (v - low) / (high - low) if high - low > 1e-6 else np.full_like(v, 0.5)
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
    """The image view with its overlay controls, hover readout and winner-map legend."""

    overlayChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.view = ImageView()
        self.overlay_choice = QComboBox()
        self.overlay_choice.setMinimumContentsLength(18)
        self.overlay_choice.setToolTip("Show a label's confidence map, or the winning label at each position")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setMaximumWidth(140)
        self.opacity.setToolTip("Overlay opacity")
        self.hover_label = QLabel(" ")
        self.hover_label.setMinimumWidth(200)
        self.legend = QListWidget()
        self.legend.setMaximumWidth(190)
        self.legend.setVisible(False)

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(QLabel("Overlay:"))
        bar.addWidget(self.overlay_choice, 1)
        bar.addWidget(QLabel("Opacity:"))
        bar.addWidget(self.opacity)
        bar.addWidget(self.hover_label, 1)
        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.view, 1)
        body.addWidget(self.legend)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addLayout(body, 1)

        self._label_names: list[str] = []
        self._maps: np.ndarray | None = None
        self._winner: np.ndarray | None = None
        self._original_size: tuple[int, int] | None = None
        self.overlay_choice.addItem(OVERLAY_NONE)
        self.overlay_choice.addItem(OVERLAY_WINNER)
        self.overlay_choice.currentTextChanged.connect(self._on_choice)
        self.opacity.valueChanged.connect(lambda v: self.view.set_overlay_opacity(v / 100))
        self.view.set_overlay_opacity(self.opacity.value() / 100)
        self.view.hovered.connect(self._on_hover)

    # ---- content

    def set_image(self, image: QImage | None) -> None:
        self.view.set_image(image)
        self._render_overlay()

    def set_labels(self, label_names: list[str]) -> None:
        """The model's labels, offered as overlay choices (keeps the current choice when it still exists)."""
        if label_names == self._label_names:
            return
        current = self.overlay_choice.currentText()
        self._label_names = list(label_names)
        self.overlay_choice.blockSignals(True)
        self.overlay_choice.clear()
        self.overlay_choice.addItem(OVERLAY_NONE)
        self.overlay_choice.addItem(OVERLAY_WINNER)
        self.overlay_choice.addItems(self._label_names)
        index = self.overlay_choice.findText(current)
        self.overlay_choice.setCurrentIndex(max(0, index))
        self.overlay_choice.blockSignals(False)

    def set_maps(
        self,
        maps: np.ndarray | None,
        winner: np.ndarray | None,
        label_names: list[str] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        """``image_size``: the original (width, height), for the hover readout's pixel coordinates."""
        if label_names is not None:
            self.set_labels(label_names)
        self._maps, self._winner, self._original_size = maps, winner, image_size
        self._render_overlay()

    def clear(self) -> None:
        self._maps = self._winner = None
        self.view.set_image(None)
        self.view.set_overlay(None)
        self.legend.clear()
        self.hover_label.setText(" ")

    def show_label(self, label: str) -> bool:
        index = self.overlay_choice.findText(label)
        if index < 0:
            return False
        self.overlay_choice.setCurrentIndex(index)
        return True

    def show_winner_map(self) -> None:
        self.overlay_choice.setCurrentText(OVERLAY_WINNER)

    def hide_overlay(self) -> None:
        self.overlay_choice.setCurrentText(OVERLAY_NONE)

    def cycle_label(self, step: int = 1) -> None:
        count = self.overlay_choice.count()
        if count:
            self.overlay_choice.setCurrentIndex((self.overlay_choice.currentIndex() + step) % count)

    def overlay_mode(self) -> str:
        return self.overlay_choice.currentText()

    # ---- rendering

    def _on_choice(self, text: str) -> None:
        self._render_overlay()
        self.overlayChanged.emit(text)

    def _render_overlay(self) -> None:
        choice = self.overlay_choice.currentText()
        self.legend.setVisible(choice == OVERLAY_WINNER and self._winner is not None)
        if self._maps is None or choice == OVERLAY_NONE:
            self.view.set_overlay(None)
            return
        if choice == OVERLAY_WINNER:
            self.view.set_overlay(winner_overlay(self._winner, len(self._label_names)))
            self._fill_legend()
            return
        if choice in self._label_names:
            values = self._maps[self._label_names.index(choice)]
            self.view.set_overlay(confidence_overlay(values))
            self.overlay_choice.setToolTip(
                f"{choice}: colours span {float(values.min()):.3f} (dark) to {float(values.max()):.3f} (yellow)"
            )

    def _fill_legend(self) -> None:
        self.legend.clear()
        present, counts = np.unique(self._winner, return_counts=True)
        for index, count in sorted(zip(present.tolist(), counts.tolist(), strict=True), key=lambda p: -p[1]):
            if 0 <= index < len(self._label_names):
                share = 100.0 * count / self._winner.size
                item = QListWidgetItem(f"{self._label_names[index]}  {share:.0f}%")
                swatch = QPixmap(14, 14)
                swatch.fill(label_color(index))
                item.setIcon(swatch)
                self.legend.addItem(item)

    def hover_text(self, x: float, y: float) -> str:
        """What the readout says for image pixel (x, y): the label and its confidence there."""
        width, height = self.view.image_size()
        if self._maps is None or x < 0 or not width or not height:
            return " "
        _, h, w = self._maps.shape
        row = min(h - 1, int(y * h / height))
        col = min(w - 1, int(x * w / width))
        choice = self.overlay_choice.currentText()
        if choice in self._label_names:
            index = self._label_names.index(choice)
        else:
            index = int(self._winner[row, col]) if self._winner is not None else int(self._maps[:, row, col].argmax())
        if not 0 <= index < len(self._label_names):
            return " "
        if self._original_size:  # the viewer may show a shrunk decode of a very large image
            x, y = x * self._original_size[0] / width, y * self._original_size[1] / height
        return f"({int(x)}, {int(y)})  {self._label_names[index]}: {self._maps[index, row, col]:.2f}"

    def _on_hover(self, x: float, y: float) -> None:
        self.hover_label.setText(self.hover_text(x, y))
