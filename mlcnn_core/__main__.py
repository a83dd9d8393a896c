"""``python -m mlcnn_core``: the `mlcnn` command line."""

import sys

from mlcnn_core.cli import main

sys.exit(main())
