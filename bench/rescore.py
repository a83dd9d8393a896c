"""Fit rescore.py's logistic model (and a global threshold after it) for a model, on validation sets,
at one or more input sizes, and measure the model before and after on test sets.

    python bench/rescore.py --model resources/models/starter.safetensors \
        --val data/emoji/noto-val --val data/emoji/openmoji-val \
        --test data/emoji/noto-test --test data/emoji/openmoji-test --short-side 240 256 288 320 \
        --out resources/models/starter.safetensors --md bench/results/rescore-starter.md

Rows, all from test-form outputs: the card as it was; then for each input size (``--short-side``,
the image resized so that its shorter side has that many pixels; default the card's) the card's
reading with its global threshold refitted on the validation sets given here (so that the comparison
is not a comparison of validation sets), and the rescored reading fitted there. Each size's cost is
the single pass's forward FLOPs per image (``torch.utils.flop_counter``), beside the 10-crop
baseline's. ``--baseline`` adds the 10-crop baseline (section 4.2) as a row, its threshold refitted
on the same validation sets with the same rule, and writes that threshold to ``--out``'s card
(``baseline_threshold``). ``--out`` takes the rescored reading at the size with the best validation accuracy (all
validation images pooled). Only validation data choose anything.
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
from run import (  # bench/run.py
    load_truth,
    one_pass_predictor,
    raw_outputs,
    rescore_candidates,
    ten_crop_scores,
    truth_matrix,
)

from mlcnn_core.data import short_side_size
from mlcnn_core.evaluate import ForwardFlops
from mlcnn_core.metrics import mean_average_precision, set_metrics
from mlcnn_core.modelfile import load_model, save_model
from mlcnn_core.predict import PredictConfig, Predictor, final_scores
from mlcnn_core.rescore import FEATURES, fit_rescore
from mlcnn_core.threshold import Threshold, fit_threshold

BASELINE = "10-crop baseline, threshold refitted"
CARD_BASELINE = "10-crop baseline, the card's threshold"


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
    ap.add_argument("--short-side", type=int, nargs="+", metavar="PX",
                    help="input sizes to fit and measure (default: the card's)")
    ap.add_argument("--baseline", action="store_true",
                    help="also measure the 10-crop baseline, its threshold refitted on the validation sets")
    ap.add_argument("--out", help="write the model with the best rescored reading and its threshold here")
    ap.add_argument("--md", help="markdown table of the results")
    args = ap.parse_args()
    t0 = time.time()
    model = load_model(args.model)
    try:
        card_predictor = one_pass_predictor(model)  # a card's second pass: bench/two_scale.py
        card_row = True
    except ValueError:  # a fine-tune of a two-pass card keeps no one-pass reading: start from its first pass
        first = dataclasses.replace(PredictConfig.from_dict(model.card["prediction"]), rescore=None,
                                    second_short_side=None)
        card_predictor, card_row = Predictor(model, config=first), False
    card_cfg = card_predictor.config
    sets = {Path(d).name: Path(d) for d in args.val + args.test}
    rows = {name: load_truth(path) for name, path in sets.items()}
    truths = {name: truth_matrix(r, model.labels) for name, r in rows.items()}
    val, tests = [Path(d).name for d in args.val], [Path(d).name for d in args.test]
    val_truth = np.concatenate([truths[n] for n in val])
    counter = ForwardFlops(card_predictor)
    ten_crop_gflops = counter.crops() / 1e9

    variants, results, costs, fitted = {}, {}, {}, {}
    for short in args.short_side or [card_cfg.short_side]:
        predictor = Predictor(model, config=dataclasses.replace(card_cfg, short_side=short))
        print(f"short side {short}: test-form outputs of {sum(map(len, rows.values()))} images ...", flush=True)
        raws = {name: raw_outputs(predictor, r) for name, r in rows.items()}
        costs[short] = float(np.mean([counter.single_pass(*short_side_size(r["height"], r["width"], short))
                                      for n in tests or val for r in rows[n]])) / 1e9
        base = dataclasses.replace(predictor.config, rescore=None)
        if short == card_cfg.short_side and card_row:
            variants["card as it was"] = (short, card_cfg, card_predictor.threshold)
        examples = [rescore_candidates(raws[n], truths[n], base) for n in val]
        weights = fit_rescore(np.concatenate([f for f, _ in examples]), np.concatenate([y for _, y in examples]))
        fitted[short] = weights
        print(f"  rescore fitted on {sum(len(y) for _, y in examples)} candidate labels of {len(val_truth)} "
              "validation images: " + ", ".join(f"{f} {w:+.3f}" for f, w in zip(FEATURES, weights, strict=False))
              + f", bias {weights[-1]:+.3f}", flush=True)
        for tag, cfg in ((f"summed, global threshold refitted, {short} px", base),
                         (f"rescored (rescore.py), {short} px", dataclasses.replace(base, rescore=weights))):
            val_scores = np.concatenate([scores_of(raws[n], cfg) for n in val])
            variants[tag] = (short, cfg, fit_threshold(val_scores, val_truth, kind="global", at_least_one=True))
        for tag, (size, cfg, th) in variants.items():
            if size == short and tag not in results:
                results[tag] = {name: measure(scores_of(raws[name], cfg), truths[name], th) for name in sets}
                print(f"  {tag:44s} " + "  ".join(f"{n} {_fmt(m)}" for n, m in results[tag].items()), flush=True)

    if args.baseline:
        kind = model.card.get("baseline_threshold", {}).get("kind", "global")
        print(f"10-crop baseline of {sum(map(len, rows.values()))} images ...", flush=True)
        crops = {name: ten_crop_scores(card_predictor, r) for name, r in rows.items()}
        th = fit_threshold(np.concatenate([crops[n] for n in val]), val_truth, kind=kind, at_least_one=True)
        variants[BASELINE] = (None, None, th)
        if "baseline_threshold" in model.card:
            variants[CARD_BASELINE] = (None, None, Threshold.from_dict(model.card["baseline_threshold"],
                                                                       len(model.labels)))
        for tag in (CARD_BASELINE, BASELINE):
            if tag in variants:
                results[tag] = {name: measure(crops[name], truths[name], variants[tag][2]) for name in sets}
                print(f"  {tag:44s} " + "  ".join(f"{n} {_fmt(m)}" for n, m in results[tag].items()), flush=True)

    def val_accuracy(tag: str) -> float:
        return sum(results[tag][n]["accuracy"] * len(rows[n]) for n in val) / len(val_truth)

    best = max((t for t in results if t.startswith("rescored")), key=lambda t: (val_accuracy(t), -variants[t][0]))
    short, cfg, th = variants[best]
    print(f"best on validation: {best} (pooled accuracy {val_accuracy(best):.4f})", flush=True)
    if args.out:
        model.card["prediction"] = cfg.to_dict()
        model.card.pop("single_pass", None)
        model.card["summed_threshold"] = variants[f"summed, global threshold refitted, {short} px"][2].to_dict()
        model.card["threshold"] = th.to_dict()
        if args.baseline:
            model.card["baseline_threshold"] = variants[BASELINE][2].to_dict()
        before = model.card.get("prediction_source", "card").split("; rescored by bench/rescore.py")[0]
        model.card["prediction_source"] = (f"{before}; rescored by bench/rescore.py on {', '.join(args.val)}, "
                                           f"input short side {short} px chosen there")
        model.card.setdefault("metrics", {})["validation_rescored"] = {n: results[best][n] for n in val}
        save_model(model, args.out)
        print(f"wrote {args.out}", flush=True)
    seconds = round(time.time() - t0, 1)
    if args.md:
        Path(args.md).write_text(render(results, variants, costs, ten_crop_gflops, best, args, fitted, seconds),
                                 encoding="utf-8")
        Path(args.md).with_suffix(".json").write_text(json.dumps(
            {"command": "python " + " ".join(sys.argv), "weights": {str(k): w for k, w in fitted.items()},
             "best": best, "gflops_per_image": {str(k): v for k, v in costs.items()},
             "ten_crop_gflops_per_image": ten_crop_gflops, "results": results}, indent=1), encoding="utf-8")
    print(f"done in {seconds} s")
    return 0


def _fmt(m: dict) -> str:
    return " / ".join(f"{100 * m[k]:.1f}" for k in ("precision", "recall", "accuracy", "mAP"))


def render(results: dict, variants: dict, costs: dict, ten_crop: float, best: str, args,
           fitted: dict, seconds: float) -> str:
    sets = list(next(iter(results.values())))
    short = variants[best][0]
    title = "the 10-crop baseline" if BASELINE in results else "the input size"
    lines = [f"## Rescoring the summed vector, and {title} ({Path(args.model).name})", "",
             f"`python bench/rescore.py {' '.join(sys.argv[1:])}` ({seconds:.0f} s). The logistic model of "
             f"`mlcnn_core/rescore.py` was fitted on every label with a non-zero sum in {', '.join(args.val)}, "
             "then a global threshold on its output, at each input size (the image resized so that its shorter "
             f"side has that many pixels). Chosen on validation (pooled accuracy): **{best}**; its weights "
             + ", ".join(f"{f} {w:+.3f}" for f, w in zip(FEATURES, fitted[short], strict=False))
             + f", bias {fitted[short][-1]:+.3f}. Precision / recall / accuracy / mAP; cost: forward GFLOPs per "
             f"image of the single pass (mean over the test images) and how many times that the 10-crop "
             f"baseline costs ({ten_crop:.2f} GFLOPs: ten 224×224 crops, whatever the input size):", "",
             "| reading | GFLOPs/img | 10-crop / this | " + " | ".join(sets) + " |",
             "|---|---|---|" + "---|" * len(sets)]
    for tag, per_set in results.items():
        cost = ten_crop if variants[tag][0] is None else costs[variants[tag][0]]
        name = f"**{tag}**" if tag == best else tag
        lines.append(f"| {name} | {cost:.2f} | {ten_crop / cost:.2f}× | "
                     + " | ".join(_fmt(per_set[n]) for n in sets) + " |")
    if BASELINE in results:
        lines += ["", "The 10-crop rows score the same images with section 4.2's baseline (ten random 224×224 crops "
                  "of the image at 256 px, their softmax distributions averaged), thresholded with the card's "
                  "`baseline_threshold` and with one refitted on the validation sets above by the same rule as the "
                  "single pass's (a global cut, at least one label per image)"
                  + ("; `--out` keeps the refitted one." if args.out else ".")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
