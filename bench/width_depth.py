#!/usr/bin/env python3
"""Width and depth of the network, by measurement: the same data, the same recipe, from scratch.

Each variant of the ``compact`` spec (``VARIANTS``) is trained from scratch with ``mlcnn train``'s
default recipe on the same training sets for the same number of epochs and seed, then read on the
validation sets (pooled accuracy decides; nothing else does) and on the unseen artists' test sets
(reported after the decision, never used to choose). Cost is the forward GFLOPs of one 288×288
image (``torch.utils.flop_counter``) and the training rate measured in the same run.

This is a short-budget comparison: on a 2-core CPU a variant sees the same few tens of thousands
of scenes, not the hours the shipped starter had, so it says which shape learns fastest per scene
and per second, not which would end best after a long run.

    python bench/width_depth.py --data data/artists/mix-train1 --data data/artists/mix-train2 --epochs 1 \
        --val data/artists/mix-val --val data/emoji/noto-val --test data/artists/twemoji-ood \
        --test data/artists/fxemoji-ood --work runs/width --md bench/results/width-depth.md
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from emoji_scenes import read_truth  # noqa: E402
from finetune_methods import samples_of  # noqa: E402

from mlcnn_core import spec as specs  # noqa: E402
from mlcnn_core.evaluate import evaluate  # noqa: E402
from mlcnn_core.modelfile import load_model  # noqa: E402
from mlcnn_core.recipes import TrainConfig  # noqa: E402


def scaled(spec: dict, factor: float) -> dict:
    """Every convolution and hidden FC layer ``factor`` times as wide (rounded to a multiple of 8)."""
    out = copy.deepcopy(spec)
    for layer in out["trunk"]:
        if layer[0] == "conv":
            layer[1] = max(8, int(round(layer[1] * factor / 8)) * 8)
    out["head"] = [max(8, int(round(w * factor / 8)) * 8) for w in out["head"]]
    return out


def deeper(spec: dict) -> dict:
    """One more 3×3 convolution at the end of each of the last two stages (where maps are small)."""
    out = copy.deepcopy(spec)
    trunk = out["trunk"]
    pool_at = [i for i, layer in enumerate(trunk) if layer[0] == "maxpool"][-1]
    stage4_last = trunk[-1]
    stage3_last = trunk[pool_at - 1]
    out["trunk"] = trunk[:pool_at] + [list(stage3_last)] + trunk[pool_at:] + [list(stage4_last)]
    return out


VARIANTS = {
    "compact": lambda base: base,
    "narrow-0.75": lambda base: scaled(base, 0.75),
    "deep+2": deeper,
    "wide-1.25": lambda base: scaled(base, 1.25),
}


def gflops(path: Path, side: int = 288) -> float:
    """Forward GFLOPs of one ``side``×``side`` image through the test form (ForwardFlops)."""
    from mlcnn_core.evaluate import ForwardFlops
    from mlcnn_core.predict import Predictor

    return ForwardFlops(Predictor(load_model(path), device="cpu")).single_pass(side, side) / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", required=True, type=Path)
    ap.add_argument("--val", action="append", required=True, type=Path)
    ap.add_argument("--test", action="append", default=[], type=Path)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=500, help="the first N images of each val/test set")
    ap.add_argument("--work", type=Path, required=True, help="folder for the trained variants (reused)")
    ap.add_argument("--md", type=Path, required=True)
    args = ap.parse_args(argv)
    from mlcnn_core.train import train

    args.work.mkdir(parents=True, exist_ok=True)
    base = specs.ARCHS["compact"]
    results = {}
    t_all = time.time()
    for name in args.variants:
        arch = f"bench-{name}"
        specs.ARCHS[arch] = VARIANTS[name](copy.deepcopy(base))
        out = args.work / f"{name}.safetensors"
        seconds = None
        if not out.exists():
            t0 = time.time()
            # held out during training: the first validation set only (the trainer's 10-crop baseline on
            # every held-out image costs more than the epochs' validation)
            train(TrainConfig(data=[str(d) for d in args.data], out=str(out), arch=arch, epochs=args.epochs,
                              val_data=[str(args.val[0])], seed=args.seed, patience=0,
                              events=str(out.with_suffix(".jsonl")), name=name))
            seconds = time.time() - t0
            (args.work / f"{name}.seconds").write_text(f"{seconds:.1f}\n")
        elif (args.work / f"{name}.seconds").exists():
            seconds = float((args.work / f"{name}.seconds").read_text())
        model = load_model(out)
        row = {"gflops_288": gflops(out), "train_seconds": seconds, "sets": {}}
        for folder in args.val + args.test:
            r = evaluate(model, samples_of(folder, read_truth(folder)[:args.limit]), baseline=False)["single_pass"]
            row["sets"][folder.name] = {k: r[k] for k in ("precision", "recall", "accuracy", "mAP")}
            print(f"{name:>12} {folder.name:>14} acc {100 * r['accuracy']:.1f}  P {100 * r['precision']:.1f}  "
                  f"mAP {100 * r['mAP']:.1f}", flush=True)
        row["pooled_val_accuracy"] = sum(row["sets"][v.name]["accuracy"] for v in args.val) / len(args.val)
        results[name] = row
    best = max(results, key=lambda n: results[n]["pooled_val_accuracy"])
    seconds = time.time() - t_all
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(render(results, best, args, seconds), encoding="utf-8")
    args.md.with_suffix(".json").write_text(json.dumps(
        {"command": "python " + " ".join(sys.argv), "best_on_validation": best, "results": results}, indent=1))
    print(f"best on validation: {best}; done in {seconds:.0f} s")
    return 0


def render(results: dict, best: str, args: argparse.Namespace, seconds: float) -> str:
    vals, tests = [v.name for v in args.val], [t.name for t in args.test]
    n_train = sum(len(read_truth(d)) for d in args.data)
    lines = [
        "## Width and depth, from scratch at equal data", "",
        f"Produced by `python {' '.join(sys.argv)}` in {seconds / 60:.0f} min: each variant trained from "
        f"scratch with the default recipe for {args.epochs} epoch(s) of {n_train:,} scenes "
        f"({', '.join(d.name for d in args.data)}), seed {args.seed}; read (one pass, as the card says) on the "
        f"first {args.limit} images of each set. Validation decides ({', '.join(vals)}, pooled accuracy); "
        f"the test sets ({', '.join(tests) or 'none'}) are reported after the decision. GFLOPs: one forward "
        "pass of a 288×288 image.", "",
        "| variant | GFLOPs | train min | pooled val acc | " + " | ".join(f"{s} acc / P" for s in vals + tests) + " |",
        "|---|---|---|---|" + "---|" * len(vals + tests),
    ]
    for name, r in results.items():
        mins = "" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f}"
        cells = " | ".join(f"{100 * r['sets'][s]['accuracy']:.1f} / {100 * r['sets'][s]['precision']:.1f}"
                           for s in vals + tests)
        mark = " (best)" if name == best else ""
        lines.append(f"| {name}{mark} | {r['gflops_288']:.2f} | {mins} | {100 * r['pooled_val_accuracy']:.1f} % "
                     f"| {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
