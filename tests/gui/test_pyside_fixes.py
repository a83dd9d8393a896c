import sys

from PySide6.QtCore import QObject, Signal

import tagger_app  # noqa: F401  (applies the workarounds)


class Emitter(QObject):
    fired = Signal(int)


def test_emit_keeps_references_to_its_result():
    emitter = Emitter()
    emitter.fired.connect(lambda _n: None)
    before = sys.getrefcount(True)
    for n in range(5000):
        emitter.fired.emit(n)
    assert sys.getrefcount(True) >= before - 5
