"""Checks of, and workarounds for, bugs in the installed PySide6; applied when tagger_app is imported.

PySide6 6.12.0 on Python 3.11 (found on this project's machines) returns ``None`` / ``True`` from
bound methods without taking a reference: every ``emit()`` drops a reference to ``True`` and every
call of a ``void`` method (``QPainter.setBrush``, ``QModelIndex.data`` returning nothing, ...) drops
one to ``None``. After enough calls the interpreter aborts ("Fatal Python error: bool_dealloc" /
"none_dealloc"). Python 3.12+ makes these objects immortal, which hides the bug; PySide6 6.11.x is
not affected.

``emit`` is the one call made in bulk from worker threads, so it is wrapped to give the reference
back; the ``None`` leak cannot be patched from Python, so :func:`problems` reports it and the
application says so at start-up (install ``PySide6-Essentials<6.12`` on Python 3.11).
"""

from __future__ import annotations

import ctypes
import sys

_emit_wrapped = False
_problems: list[str] = []


def _incref(obj, times: int = 1) -> None:
    for _ in range(times):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _references_lost(obj, call, calls: int = 20) -> int:
    before = sys.getrefcount(obj)
    for _ in range(calls):
        call()
    lost = before - sys.getrefcount(obj)
    if lost > 0:
        _incref(obj, lost)  # undo the probe's own damage
    return max(0, lost)


def apply() -> list[str]:
    """Install the workarounds this PySide6 needs; returns the problems that remain."""
    global _emit_wrapped
    if _emit_wrapped or _problems:
        return list(_problems)
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import QObject, Signal, SignalInstance

    class _Probe(QObject):
        probe = Signal()

    probe = _Probe()
    if _references_lost(True, probe.probe.emit) > 0:
        original_emit = SignalInstance.emit

        def emit(self, *args):
            result = original_emit(self, *args)
            _incref(result)
            return result

        SignalInstance.emit = emit
        _emit_wrapped = True
    if _references_lost(None, lambda: probe.setObjectName("probe")) > 0:
        _problems.append(
            f"PySide6 {pyside_version} on Python {sys.version.split()[0]} loses a reference to None on every "
            "call of a void method; the application will crash after a while. "
            "Install PySide6-Essentials<6.12 (or use Python 3.12+)."
        )
    return list(_problems)


def problems() -> list[str]:
    return list(_problems)
