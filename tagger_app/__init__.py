"""MLCNN Tagger desktop application (PySide6): shows and edits; the method lives in mlcnn_core."""

__version__ = "0.1.0"
