#!/usr/bin/env python3
"""Several models on the same sets, side by side: ``mlcnn evaluate --no-baseline`` for each
(model, set), each model read as its card says (prediction settings and threshold), written as a
markdown section with the command behind every number.

    python bench/compare_models.py --model plain=runs/gpu1/plain.safetensors \\
        --model restyled=runs/gpu1/styled.safetensors --sets noto-val openmoji-val noto-test openmoji-test \\
        --work runs/compare --out bench/results/restyle.md --title "..." --intro "..."

Validation sets are for choosing, test sets for reporting; the table shows both.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_curve import run, shown  # noqa: E402 - the bench scripts' one way of running mlcnn


def evaluate(model: Path, data: Path, out: Path) -> tuple[dict, str, bool]:
    """Metrics of single-pass prediction, the command behind them, and whether an earlier run's
    result (``out`` exists) was reused."""
    cmd = [sys.executable, "-m", "mlcnn_core.cli", "evaluate", "--model", str(model), "--data", str(data),
           "--no-baseline", "--json", str(out)]
    reused = out.exists()
    if not reused:
        run(cmd, out.with_suffix(".log"))
    return json.loads(out.read_text(encoding="utf-8"))["single_pass"], shown(cmd), reused


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--data", default="data/emoji", help="folder holding the sets")
    ap.add_argument("--sets", nargs="+", default=["noto-val", "openmoji-val", "noto-test", "openmoji-test"])
    ap.add_argument("--work", default="runs/compare", help="where the evaluations' JSON files go")
    ap.add_argument("--out", required=True, help="markdown file to write")
    ap.add_argument("--title", default="Models compared")
    ap.add_argument("--intro", default="", help="paragraph under the title")
    args = ap.parse_args(argv)
    models = []
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"--model {item!r}: expected NAME=PATH of an existing model file")
        models.append((name, Path(path)))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    table, commands, reused = {}, [], 0
    for name, path in models:
        for set_name in args.sets:
            metrics, shown, was_reused = evaluate(path, Path(args.data) / set_name, work / f"{name}-{set_name}.json")
            table[name, set_name] = metrics
            commands.append(shown)
            reused += was_reused
            print(f"{name} {set_name}: accuracy {metrics['accuracy']:.3f} precision {metrics['precision']:.3f} "
                  f"mAP {metrics['mAP']:.3f}", flush=True)
    lines = [f"## {args.title}", ""]
    if args.intro:
        lines += [args.intro, ""]
    argv = list(sys.argv)
    if "--intro" in argv[:-1]:
        argv[argv.index("--intro") + 1] = "…"
    lines += ["Precision / recall / accuracy / mAP (%), single pass, each model read as its card says. Produced by "
              f"`python {' '.join(shlex.quote(a) for a in argv)}` in {time.time() - t0:.0f} s"
              + (f" ({reused} of {len(commands)} evaluations reused from an earlier run in {args.work})." if reused
                 else "."), "",
              "| model | " + " | ".join(args.sets) + " |", "|---|" + "---|" * len(args.sets)]
    for name, path in models:
        cells = [" / ".join(f"{100 * table[name, s][k]:.1f}" for k in ("precision", "recall", "accuracy", "mAP"))
                 for s in args.sets]
        lines.append(f"| {name} (`{path}`) | " + " | ".join(cells) + " |")
    lines += ["", "Commands:", "", *[f"- `{c}`" for c in commands], ""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
