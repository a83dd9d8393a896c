"""The training panel's live views of a run: the loss and held-out accuracy curves, and the log."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QPlainTextEdit, QWidget


class LogView(QPlainTextEdit):
    """A read-only log that keeps its last line in view, also when its lines rewrap after a resize,
    until the person scrolls up to read; scrolling back to the end follows it again."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.following = True
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._scrolled)
        bar.rangeChanged.connect(self._range_changed)

    def _scrolled(self, value: int) -> None:
        self.following = value >= self.verticalScrollBar().maximum()

    def _range_changed(self, _low: int, high: int) -> None:
        if self.following:
            self.verticalScrollBar().setValue(high)


class TrainingCurves(QWidget):
    """Training loss (left axis) and held-out accuracy (right axis, 0–1) against epochs."""

    LOSS = QColor(40, 90, 190)
    ACCURACY = QColor(220, 110, 20)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.loss: list[tuple[float, float]] = []
        self.accuracy: list[tuple[float, float]] = []
        self.epochs = 1
        self.setMinimumSize(260, 160)

    def sizeHint(self) -> QSize:
        return QSize(480, 220)

    def clear(self, epochs: int = 1) -> None:
        self.loss, self.accuracy, self.epochs = [], [], max(1, epochs)
        self.update()

    def add_step(self, event: dict) -> None:
        x = event["epoch"] - 1 + event["step_in_epoch"] / max(1, event["steps_per_epoch"])
        loss = float(event.get("loss", float("nan")))
        if math.isfinite(loss):
            self.loss.append((x, loss))
            self.update()

    def add_epoch(self, event: dict) -> None:
        val = event.get("val") or {}
        if "accuracy" in val and math.isfinite(float(val["accuracy"])):
            self.accuracy.append((float(event["epoch"]), float(val["accuracy"])))
            self.update()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), self.palette().base())
        metrics = painter.fontMetrics()
        left, right, top, bottom = (
            metrics.horizontalAdvance("0.000") + 10,
            metrics.horizontalAdvance("1.00") + 12,
            metrics.height() + 6,
            metrics.height() + 8,
        )
        plot = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        text_pen = QPen(self.palette().text().color())
        painter.setPen(QPen(QColor(180, 180, 180)))
        painter.drawRect(plot)

        x_max = max([self.epochs] + [x for x, _ in self.loss] + [x for x, _ in self.accuracy])
        losses = [y for _, y in self.loss]
        y_max = max(losses) * 1.05 if losses else 1.0
        y_min = min(0.0, min(losses)) if losses else 0.0
        y_span = max(1e-9, y_max - y_min)

        def point(x: float, y: float, lo: float, span: float) -> QPointF:
            return QPointF(
                plot.left() + plot.width() * x / max(1e-9, x_max), plot.bottom() - plot.height() * (y - lo) / span
            )

        painter.setPen(text_pen)
        for i in range(5):
            frac = i / 4
            y = plot.bottom() - plot.height() * frac
            painter.setPen(QPen(QColor(225, 225, 225)))
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            painter.setPen(text_pen)
            align_right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            align_left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
            painter.drawText(QRectF(0, y - 8, left - 4, 16), align_right, f"{y_min + frac * y_span:.3g}")
            painter.drawText(QRectF(plot.right() + 4, y - 8, right, 16), align_left, f"{frac:.2f}")
        ticks = max(1, min(int(math.ceil(x_max)), 10))
        for i in range(ticks + 1):
            epoch = x_max * i / ticks
            x = plot.left() + plot.width() * i / ticks
            painter.drawText(
                QRectF(x - 30, plot.bottom() + 2, 60, bottom),
                Qt.AlignmentFlag.AlignHCenter,
                f"{epoch:.0f}" if abs(epoch - round(epoch)) < 1e-6 else f"{epoch:.1f}",
            )

        series = ((self.loss, self.LOSS, y_min, y_span), (self.accuracy, self.ACCURACY, 0.0, 1.0))
        for points, color, lo, span in series:
            if not points:
                continue
            painter.setPen(QPen(color, 2))
            path = QPainterPath(point(*points[0], lo, span))
            for p in points[1:]:
                path.lineTo(point(*p, lo, span))
            painter.drawPath(path)
            if color == self.ACCURACY:
                painter.setBrush(color)
                for p in points:
                    painter.drawEllipse(point(*p, lo, span), 3, 3)
                painter.setBrush(Qt.BrushStyle.NoBrush)

        painter.setPen(QPen(self.LOSS))
        painter.drawText(
            QRectF(plot.left(), 0, plot.width() / 2, top),
            Qt.AlignmentFlag.AlignLeft,
            "— training loss" + (f" {self.loss[-1][1]:.3f}" if self.loss else ""),
        )
        painter.setPen(QPen(self.ACCURACY))
        painter.drawText(
            QRectF(plot.center().x(), 0, plot.width() / 2, top),
            Qt.AlignmentFlag.AlignRight,
            "● held-out accuracy" + (f" {self.accuracy[-1][1]:.3f}" if self.accuracy else ""),
        )
        painter.setPen(text_pen)
        painter.drawText(
            QRectF(plot.left(), self.height() - bottom + 2 + metrics.height() * 0, plot.width(), bottom),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
            "epoch",
        )
        painter.end()
