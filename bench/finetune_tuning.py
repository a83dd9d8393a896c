#!/usr/bin/env python3
"""One table from several ``bench/finetune_curve.py --split val`` runs: how each fine-tune setting
traded the new style against what the model knew, on the validation sets.

    python bench/finetune_tuning.py runs/ft-tune2/default/default.json runs/ft-tune2/lr5e-5/lr5e-5.json ... \\
        --out bench/results/finetune-tuning.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from finetune_curve import STYLE_NAMES  # bench/finetune_curve.py


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="JSON files written by bench/finetune_curve.py")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--intro", default="")
    ap.add_argument("--title", default="Choosing the fine-tune defaults (validation sets)")
    args = ap.parse_args(argv)
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in args.results]
    base = runs[0]
    lines = [f"### {args.title}", ""]
    if args.intro:
        lines += [args.intro, ""]
    new = base.get("new_style", "openmoji")
    if any(r.get("new_style", "openmoji") != new for r in runs):
        raise SystemExit("the runs fine-tune on different styles")
    New = STYLE_NAMES[new]
    start = next(r for r in base["curve"] if r["k"] == 0)
    lines += [f"Start: `{base['base_model']}`, {New} accuracy {start[new]['accuracy']:.3f} / mAP "
              f"{start[new]['mAP']:.3f}, Noto accuracy {start['noto']['accuracy']:.3f} / mAP "
              f"{start['noto']['mAP']:.3f} on the first {base['eval_images']} images of {new}-val and noto-val. "
              f"Each cell: {New} accuracy / Noto accuracy (Noto mAP) after fine-tuning on k {New} scenes.", "",
              "| setting (extra `mlcnn train` flags) | " + " | ".join(f"k = {k}" for k in base["ks"]) + " |",
              "|---|" + "---|" * len(base["ks"])]
    for run in runs:
        by_k = {r["k"]: r for r in run["curve"]}
        setting = f"`{' '.join(run.get('train_flags') or []) or 'defaults'}`"
        if run.get("replay"):
            setting += f" + {run['replay']} Noto scenes (`--replay {run['replay']}`)"
        cells = []
        for k in base["ks"]:
            r = by_k.get(k)
            cells.append(f"{r[new]['accuracy']:.3f} / {r['noto']['accuracy']:.3f} ({r['noto']['mAP']:.3f})"
                         if r else "")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    lines += ["", "Commands: " + "; ".join(f"`{r['command']}`" for r in runs), ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
