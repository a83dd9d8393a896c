"""The files shipped with the program: the starter model, the demo folder, the licences.

They live in ``resources/`` at the top of a source checkout, and an installed wheel carries the same
folder as the package ``mlcnn_core.resources`` (``pyproject.toml`` maps one to the other). A
checkout's own folder wins, so code run from a checkout (or an editable install) reads its files.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

PACKAGE = "mlcnn_core.resources"
_CHECKOUT = Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    """The folder holding ``models/``, ``demo/`` and ``LICENSES.md``; it may not exist in a
    broken install (callers say which file is missing)."""
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "resources").is_dir():
        return _CHECKOUT / "resources"
    try:
        return Path(str(importlib.resources.files(PACKAGE)))
    except ModuleNotFoundError:
        return _CHECKOUT / "resources"
