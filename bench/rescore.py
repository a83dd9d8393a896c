"""Fit rescore.py's logistic model (and a global threshold after it) for a model, on validation sets,
and measure the model before and after on test sets.

    python bench/rescore.py --model resources/models/starter.safetensors \
        --val data/emoji/noto-val --val data/emoji/openmoji-val \
        --test data/emoji/noto-test --test data/emoji/openmoji-test \
        --out resources/models/starter.safetensors --md bench/results/rescore-starter.md

Three rows per test set, all from the same test-form outputs: the card as it was; the card's reading
with its global threshold refitted on the validation sets given here (so that the comparison is not
a comparison of validation sets); and the rescored reading. Only validation data choose anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from run import load_truth, raw_outputs, rescore_candidates, truth_matrix  # bench/run.py

from mlcnn_core.metrics import mean_average_precision, set_metrics
from mlcnn_core.modelfile import load_model, save_model
from mlcnn_core.predict import PredictConfig, Predictor, final_scores
from mlcnn_core.rescore import FEATURES, fit_rescore
from mlcnn_core.threshold import Threshold, fit_threshold


def scores_of(raws: list[torch.Tensor], cfg: PredictConfig) -> np.ndarray:
    return np.stack([final_scores(raw[None], cfg)[0][0].numpy() for raw in raws])


def measure(scores: np.ndarray, truth: np.ndarray, threshold: Threshold) -> dict:
    m = set_metrics(threshold.select(scores), truth)
    m["mAP"] = mean_average_precision(scores, truth)
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--val", action="append", required=True, metavar="DIR", help="validation set (truth.jsonl)")
    ap.add_argument("--test", action="append", default=[], metavar="DIR", help="test set, measured only")
    ap.add_argument("--out", help="write the model with the rescored reading and its threshold here")
    ap.add_argument("--md", help="markdown table of the results")
    args = ap.parse_args()
    t0 = time.time()
    model = load_model(args.model)
    predictor = Predictor(model)
    base = dataclasses.replace(predictor.config, rescore=None)
    sets = {Path(d).name: Path(d) for d in args.val + args.test}
    rows = {name: load_truth(path) for name, path in sets.items()}
    truths = {name: truth_matrix(r, model.labels) for name, r in rows.items()}
    print(f"test-form outputs of {sum(map(len, rows.values()))} images ...", flush=True)
    raws = {name: raw_outputs(predictor, r) for name, r in rows.items()}
    val = [Path(d).name for d in args.val]

    examples = [rescore_candidates(raws[n], truths[n], base) for n in val]
    features = np.concatenate([f for f, _ in examples])
    labels = np.concatenate([y for _, y in examples])
    weights = fit_rescore(features, labels)
    print(f"rescore fitted on {len(labels)} candidate labels of {sum(len(rows[n]) for n in val)} validation images "
          f"({int(labels.sum())} true): " + ", ".join(f"{f} {w:+.3f}" for f, w in zip(FEATURES, weights, strict=False))
          + f", bias {weights[-1]:+.3f}", flush=True)
    rescored = dataclasses.replace(base, rescore=weights)

    variants = {"card as it was": (predictor.config, predictor.threshold)}
    for tag, cfg in (("summed, global threshold refitted", base), ("rescored (rescore.py)", rescored)):
        val_scores = np.concatenate([scores_of(raws[n], cfg) for n in val])
        val_truth = np.concatenate([truths[n] for n in val])
        variants[tag] = (cfg, fit_threshold(val_scores, val_truth, kind="global", at_least_one=True))
    results = {tag: {name: measure(scores_of(raws[name], cfg), truths[name], th) for name in sets}
               for tag, (cfg, th) in variants.items()}
    for tag, per_set in results.items():
        print(f"  {tag:36s} " + "  ".join(f"{n} P/R/acc {_fmt(m)}" for n, m in per_set.items()), flush=True)

    if args.out:
        cfg, th = variants["rescored (rescore.py)"]
        model.card["prediction"] = cfg.to_dict()
        model.card["summed_threshold"] = variants["summed, global threshold refitted"][1].to_dict()
        model.card["threshold"] = th.to_dict()
        before = model.card.get("prediction_source", "card")
        model.card["prediction_source"] = f"{before}; rescored by bench/rescore.py on {', '.join(args.val)}"
        model.card.setdefault("metrics", {})["validation_rescored"] = {
            n: results["rescored (rescore.py)"][n] for n in val}
        save_model(model, args.out)
        print(f"wrote {args.out}", flush=True)
    seconds = round(time.time() - t0, 1)
    if args.md:
        Path(args.md).write_text(render(results, args, weights, len(labels), seconds), encoding="utf-8")
        Path(args.md).with_suffix(".json").write_text(json.dumps(
            {"command": "python " + " ".join(sys.argv), "weights": weights, "results": results}, indent=1),
            encoding="utf-8")
    print(f"done in {seconds} s")
    return 0


def _fmt(m: dict) -> str:
    return " / ".join(f"{100 * m[k]:.1f}" for k in ("precision", "recall", "accuracy", "mAP"))


def render(results: dict, args, weights: tuple[float, ...], candidates: int, seconds: float) -> str:
    sets = list(next(iter(results.values())))
    lines = [f"## Rescoring the summed vector ({Path(args.model).name})", "",
             f"`python bench/rescore.py {' '.join(sys.argv[1:])}` ({seconds:.0f} s). The logistic model of "
             f"`mlcnn_core/rescore.py` was fitted on {candidates:,} candidate labels (every label with a non-zero "
             f"sum) of {', '.join(args.val)}, then a global threshold on its output; weights "
             + ", ".join(f"{f} {w:+.3f}" for f, w in zip(FEATURES, weights, strict=False))
             + f", bias {weights[-1]:+.3f}. Precision / recall / accuracy / mAP:", "",
             "| reading | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for tag, per_set in results.items():
        lines.append(f"| {tag} | " + " | ".join(_fmt(per_set[n]) for n in sets) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
