"""Before Qt starts on Linux: can its X11 (xcb) platform plugin load? Without a few system libraries
(libxcb-cursor0 and friends, absent from a bare or server install) Qt aborts the process with a
message about plugins; this names the missing libraries and the packages that hold them instead."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def uses_xcb(environ=None, platform: str | None = None) -> bool:
    """Whether Qt will pick its xcb plugin: Linux, no other platform asked for, no Wayland session."""
    environ = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return False
    asked = environ.get("QT_QPA_PLATFORM", "")
    return asked == "xcb" or (not asked and not environ.get("WAYLAND_DISPLAY"))


def xcb_plugin() -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(next(iter(spec.submodule_search_locations))) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def not_found(ldd_output: str) -> list[str]:
    """The libraries ``ldd`` could not find, in order, once each."""
    return list(dict.fromkeys(re.findall(r"^\s*(\S+) => not found", ldd_output, flags=re.MULTILINE)))


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package of a library (policy 8.1: ``libfoo.so.N`` → ``libfooN``,
    ``libfoo-1.so.N`` → ``libfoo-1-N``), e.g. libxcb-cursor.so.0 → libxcb-cursor0."""
    name, _, version = soname.partition(".so.")
    name = name.lower()
    return f"{name}-{version}" if name[-1:].isdigit() else f"{name}{version}"


def missing_xcb_libraries() -> list[str]:
    """System libraries that Qt's xcb plugin needs and this machine lacks ([] when unsure)."""
    plugin, ldd = xcb_plugin(), shutil.which("ldd")
    if plugin is None or ldd is None:
        return []
    try:
        output = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return not_found(output)


def xcb_problem() -> str | None:
    """What to tell a person whose system cannot show Qt windows through X11, or None."""
    if not uses_xcb():
        return None
    missing = missing_xcb_libraries()
    if not missing:
        return None
    packages = " ".join(debian_package(lib) for lib in missing)
    return (f"Qt's X11 platform plugin cannot load: the system lacks {', '.join(missing)}.\n"
            f"On Debian or Ubuntu: sudo apt install {packages}\n"
            "(other distributions name the packages after the same libraries; see README.md, Set-up)")
