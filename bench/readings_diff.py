"""Whether two versions of the code read the same folders the same way.

    PYTHONPATH=CHECKOUT_A python bench/readings_diff.py dump a.json FOLDER...
    PYTHONPATH=CHECKOUT_B python bench/readings_diff.py dump b.json FOLDER...
    python bench/readings_diff.py compare a.json b.json

``dump`` writes every image's labels, scores and peaks as `Predictor.predict_files` gives them with
the shipped starter (or ``--model``); ``compare`` prints, per folder, on how many images the labels
or peaks differ and how far apart the scores are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def dump(out: str, folders: list[str], model_path: str | None) -> None:
    from mlcnn_core.data import find_images
    from mlcnn_core.modelfile import load_model, starter_model_path
    from mlcnn_core.predict import Predictor

    predictor = Predictor(load_model(model_path or starter_model_path()))
    readings = {}
    for folder in folders:
        for path, result in predictor.predict_files(find_images(folder)):
            key = f"{Path(folder).name}/{path.name}"
            readings[key] = None if isinstance(result, Exception) else (
                result.labels, result.scores.tolist(), {k: list(v) for k, v in result.peaks.items()})
    Path(out).write_text(json.dumps(readings))


def compare(a_path: str, b_path: str) -> None:
    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    for folder in sorted({k.split("/")[0] for k in a}):
        keys = [k for k in a if k.startswith(folder + "/") and a[k] is not None and b.get(k) is not None]
        labels = [k for k in keys if a[k][0] != b[k][0]]
        peaks = [k for k in keys if a[k][2] != b[k][2]]
        diff = np.array([np.abs(np.array(a[k][1]) - np.array(b[k][1])).max() for k in keys])
        print(f"{folder}: {len(keys)} images; labels differ on {len(labels)}, peaks on {len(peaks)}; "
              f"largest score difference {diff.max():.2e}; images with a score off by more than 1e-3: "
              f"{int((diff > 1e-3).sum())}")
        for k in labels[:5]:
            print(f"  {k}: {a[k][0]} against {b[k][0]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out")
    d.add_argument("folders", nargs="+")
    d.add_argument("--model")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args()
    if args.command == "dump":
        dump(args.out, args.folders, args.model)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
