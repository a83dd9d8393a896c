"""A workaround for a bug of the installed PySide6, applied when tagger_app is imported.

PySide6 6.12.0 on Python 3.11 (found on this project's machines) returns ``None`` / ``True`` /
``False`` from bound methods without taking a reference: every ``emit()`` drops a reference to
``True``, every call of a ``void`` method (``QPainter.setBrush``, ``QModelIndex.data`` returning
nothing, ...) one to ``None`` — about 75 per repaint of the gallery. After enough calls the
interpreter aborts ("Fatal Python error: none_dealloc" / "bool_dealloc"), within a minute of
scrolling. Python 3.12+ hides the bug because these objects are immortal there; PySide6 6.11.x
does not have it.

The workaround does what Python 3.12 does: when a probe shows references being lost, it gives
``None``, ``True`` and ``False`` so many references (2**40) that they can never reach zero.
Extra references to these singletons are harmless: they are never freed anyway.
"""

from __future__ import annotations

import ctypes
import sys

_SINGLETONS = (None, True, False)
_EXTRA_REFERENCES = 1 << 40
_applied: list[str] = []


def _lost_references(obj, call, calls: int = 20) -> int:
    before = sys.getrefcount(obj)
    for _ in range(calls):
        call()
    return before - sys.getrefcount(obj)


def leaking_singletons() -> list[str]:
    """Which of None / True / False this PySide6 loses references to (a quick probe)."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        probe = Signal()

    probe = _Probe()
    leaks = []
    if _lost_references(True, probe.probe.emit) > 0:
        leaks.append("True")
    if _lost_references(None, lambda: probe.setObjectName("probe")) > 0:
        leaks.append("None")
    return leaks


def apply() -> list[str]:
    """Make None, True and False immortal when this PySide6 leaks them; returns what was found."""
    if _applied:
        return list(_applied)
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return []
    leaks = leaking_singletons()
    if leaks:
        for obj in _SINGLETONS:
            # ob_refcnt is the first field of every CPython object (3.11 and earlier, release builds)
            ctypes.c_ssize_t.from_address(id(obj)).value += _EXTRA_REFERENCES
        _applied.extend(leaks)
    return list(_applied)


def applied() -> list[str]:
    """The singletons found leaking (and made immortal); empty when PySide6 is sound."""
    return list(_applied)
