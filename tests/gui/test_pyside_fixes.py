import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor, QImage, QPainter

import tagger_app  # noqa: F401  (applies the workaround)
from tagger_app import pyside_fixes


class Emitter(QObject):
    fired = Signal(int)


def test_emits_and_void_calls_cannot_free_the_singletons():
    emitter = Emitter()
    emitter.fired.connect(lambda _n: None)
    image = QImage(8, 8, QImage.Format.Format_RGB32)
    painter = QPainter(image)
    start = {name: sys.getrefcount(obj) for name, obj in (("None", None), ("True", True))}
    for n in range(50_000):  # far more than the 3.11 + PySide6 6.12.0 refcounts would survive
        emitter.fired.emit(n)
        painter.setBrush(QColor(1, 2, 3))
    painter.end()
    if pyside_fixes.applied():
        assert sys.getrefcount(None) > 1 << 39 and sys.getrefcount(True) > 1 << 39
    else:
        assert sys.getrefcount(None) >= start["None"] - 100
