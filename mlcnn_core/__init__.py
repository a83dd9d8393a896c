"""mlcnn_core: the multi-label CNN of Vallet & Sakamoto (2015), GUI-free.

The method (model, loss, optimiser, prediction, threshold, metrics), its I/O (images, model
files, sidecars, the per-folder library) and the `mlcnn` command line. Never imports Qt.
"""

__version__ = "0.1.0"
