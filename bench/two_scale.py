"""A second, smaller pass: does reading each image at two sizes recover the large drawings that the
single pass misses, and at what cost?

    python bench/two_scale.py --model resources/models/starter.safetensors \
        --val data/emoji/noto-val --val data/emoji/openmoji-val \
        --test data/emoji/noto-test --test data/emoji/openmoji-test \
        --second 248 192 160 128 --md bench/results/two-scale.md \
        [--out resources/models/starter.safetensors]

Which emoji the single pass misses depends on the input size (a large drawing read at a smaller
size is nearer the sizes the network was trained on). Each row here fits rescore.py's logistic model on the
validation sets over the features of both passes side by side (a label is a candidate when it
survives pruning in either pass), then a global threshold (at least one label per image), and reads
the test sets with them. The first row is the card's single pass refitted the same way. Cost: forward
GFLOPs per test image of both passes (``torch.utils.flop_counter``) and the 10-crop baseline's over
it. Only validation data choose anything. ``--out`` writes the model with the best row on validation
(pooled accuracy; ties go to the cheaper reading) as its card's reading, and the card's reading before
it as ``single_pass`` (``mlcnn predict --single-pass``).
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
from rescore import measure  # bench/rescore.py
from run import load_truth, one_pass_predictor, raw_outputs, truth_matrix  # bench/run.py

from mlcnn_core.data import short_side_size
from mlcnn_core.evaluate import ForwardFlops
from mlcnn_core.modelfile import load_model, save_model
from mlcnn_core.predict import Predictor, candidate_features
from mlcnn_core.rescore import FEATURES, fit_rescore
from mlcnn_core.threshold import fit_threshold


def features_of(raws: list[torch.Tensor], cfg) -> tuple[np.ndarray, np.ndarray]:
    """candidate_features of images of different sizes, one image at a time: [N, l, len(FEATURES)]
    and [N, l]."""
    parts = [candidate_features(raw[None], cfg) for raw in raws]
    return np.concatenate([f for f, _ in parts]), np.concatenate([a for _, a in parts])


def fit_and_read(feats: dict, alive: dict, truths: dict, val: list[str]) -> tuple[dict, tuple, dict]:
    """Logistic model and global threshold fitted on ``val``; every set's scores and metrics."""
    weights = fit_rescore(np.concatenate([feats[n][alive[n]] for n in val]),
                          np.concatenate([truths[n][alive[n]] for n in val]))
    w, b = np.asarray(weights[:-1]), weights[-1]
    scores = {n: np.where(alive[n], 1.0 / (1.0 + np.exp(-(feats[n] @ w + b))), 0.0) for n in feats}
    th = fit_threshold(np.concatenate([scores[n] for n in val]), np.concatenate([truths[n] for n in val]),
                       kind="global", at_least_one=True)
    return {n: measure(scores[n], truths[n], th) for n in feats}, weights, th.to_dict()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--val", action="append", required=True, metavar="DIR")
    ap.add_argument("--test", action="append", default=[], metavar="DIR")
    ap.add_argument("--primary", type=int, help="the first pass's short side (default: the card's)")
    ap.add_argument("--second", type=int, nargs="+", required=True, metavar="PX", help="second-pass sizes to try")
    ap.add_argument("--md", help="markdown table of the results (and a .json beside it)")
    ap.add_argument("--out", help="write the model read as the best row on validation here")
    args = ap.parse_args()
    t0 = time.time()
    model = load_model(args.model)
    card = one_pass_predictor(model)
    base = dataclasses.replace(card.config, rescore=None)
    primary = args.primary or base.short_side
    if args.out and primary != base.short_side:
        ap.error("--out keeps the card's one-pass reading beside the new one: leave --primary at the card's size")
    sets = {Path(d).name: Path(d) for d in args.val + args.test}
    val, tests = [Path(d).name for d in args.val], [Path(d).name for d in args.test]
    rows = {n: load_truth(p) for n, p in sets.items()}
    truths = {n: truth_matrix(r, model.labels) for n, r in rows.items()}
    counter = ForwardFlops(card)
    ten_crop = counter.crops() / 1e9

    feats, alive, cost = {}, {}, {}
    for short in [primary, *args.second]:
        predictor = Predictor(model, config=dataclasses.replace(base, short_side=short))
        print(f"{short} px: test-form outputs of {sum(map(len, rows.values()))} images ...", flush=True)
        for n, r in rows.items():
            feats[short, n], alive[short, n] = features_of(raw_outputs(predictor, r), predictor.config)
        cost[short] = float(np.mean([counter.single_pass(*short_side_size(r["height"], r["width"], short))
                                     for n in tests or val for r in rows[n]])) / 1e9

    results = []
    for second in [None, *args.second]:
        passes = [primary] if second is None else [primary, second]
        f = {n: np.concatenate([feats[s, n] for s in passes], axis=-1) for n in sets}
        a = {n: np.logical_or.reduce([alive[s, n] for s in passes]) for n in sets}
        metrics, weights, th = fit_and_read(f, a, truths, val)
        pooled = sum(metrics[n]["accuracy"] * len(rows[n]) for n in val) / sum(len(rows[n]) for n in val)
        gflops = sum(cost[s] for s in passes)
        results.append({"passes": passes, "gflops": gflops, "ten_crop_ratio": ten_crop / gflops,
                        "pooled_val_accuracy": pooled, "weights": list(weights), "threshold": th,
                        "metrics": metrics})
        print(f"  {' + '.join(map(str, passes)):>10s} px  {gflops:.2f} GFLOPs  pooled val acc {100 * pooled:.2f}  "
              + "  ".join(f"{n} {_fmt(m)}" for n, m in metrics.items()), flush=True)
    best = max(results, key=lambda r: (r["pooled_val_accuracy"], -r["gflops"]))
    print(f"best on validation: {' + '.join(map(str, best['passes']))} px "
          f"(pooled accuracy {best['pooled_val_accuracy']:.4f})", flush=True)
    if args.out:
        write_reading(model, card, best, val, args.out)
    seconds = round(time.time() - t0, 1)
    if args.md:
        Path(args.md).write_text(render(results, best, ten_crop, args, seconds), encoding="utf-8")
        Path(args.md).with_suffix(".json").write_text(json.dumps(
            {"command": "python " + " ".join(sys.argv), "features": FEATURES, "ten_crop_gflops": ten_crop,
             "seconds": seconds, "results": results}, indent=1), encoding="utf-8")
    print(f"done in {seconds} s")
    return 0


def write_reading(model, one_pass: Predictor, best: dict, val: list[str], out: str) -> None:
    """Save ``model`` read as ``best``; for two passes, the card's one-pass reading is kept as
    ``single_pass``."""
    card = model.card
    prediction = dataclasses.replace(one_pass.config, rescore=tuple(best["weights"]),
                                     second_short_side=best["passes"][1] if len(best["passes"]) > 1 else None)
    card.pop("single_pass", None)
    if prediction.second_short_side is not None:
        rescored = None if one_pass.config.rescore is None else list(one_pass.config.rescore)
        card["single_pass"] = {"rescore": rescored, "threshold": one_pass.threshold.to_dict()}
    card["prediction"] = prediction.to_dict()
    card["threshold"] = best["threshold"]
    before = card.get("prediction_source", "card").split("; second pass by bench/two_scale.py")[0]
    card["prediction_source"] = (f"{before}; second pass by bench/two_scale.py on {', '.join(val)}: "
                                 f"{' + '.join(map(str, best['passes']))} px chosen there")
    card.setdefault("metrics", {})["validation_two_pass"] = {n: best["metrics"][n] for n in val}
    save_model(model, out)
    print(f"wrote {out}", flush=True)


def _fmt(m: dict) -> str:
    return " / ".join(f"{100 * m[k]:.1f}" for k in ("precision", "recall", "accuracy", "mAP"))


def render(results: list[dict], best: dict, ten_crop: float, args, seconds: float) -> str:
    sets = list(results[0]["metrics"])
    lines = [f"## A second, smaller pass ({Path(args.model).name})", "",
             f"`python bench/two_scale.py {' '.join(sys.argv[1:])}` ({seconds:.0f} s). Each row fits rescore.py's "
             f"logistic model on {', '.join(args.val)} over the features of every pass side by side, then a global "
             "threshold (at least one label per image); the first row is the single pass refitted the same way. "
             f"Cost: forward GFLOPs per test image of all passes, and the 10-crop baseline's ({ten_crop:.2f}) over "
             "it. Precision / recall / accuracy / mAP; best on validation (pooled accuracy) in bold.", "",
             "| passes | GFLOPs/img | 10-crop / this | pooled val acc | " + " | ".join(sets) + " |",
             "|---|---|---|---|" + "---|" * len(sets)]
    for r in results:
        name = " + ".join(f"{s} px" for s in r["passes"])
        name = f"**{name}**" if r is best else name
        cells = " | ".join(_fmt(r["metrics"][n]) for n in sets)
        lines.append(f"| {name} | {r['gflops']:.2f} | {ten_crop / r['gflops']:.2f}× | "
                     f"{100 * r['pooled_val_accuracy']:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
