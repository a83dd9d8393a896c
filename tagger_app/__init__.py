"""MLCNN Tagger desktop application (PySide6): shows and edits; the method lives in mlcnn_core."""

from tagger_app import pyside_fixes

__version__ = "0.1.0"

pyside_fixes.apply()
