"""Files shipped with MLCNN Tagger (installed as the package ``mlcnn_core.resources``; see
``mlcnn_core/shipped.py``): the starter model, the demo folder, the licences, the desktop entry."""
