#!/usr/bin/env python3
"""The pointing game (BENCHMARKS.md, section 3) of models on benchmark sets at several input
sizes, for choosing a reading on validation sets: for each (image, true label), is the label's
peak (``mlcnn predict``'s refined raw-map peak) inside one of that label's boxes?

    python bench/pointing.py --model starter=resources/models/starter.safetensors \\
        --model control=runs/scale/control.safetensors \\
        --set data/emoji/noto-val --set data/emoji/openmoji-val --short-side 256 288 \\
        --md bench/results/pointing-scale.md --title "..." --intro "..."
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from run import load_truth, one_pass_predictor, pointing_game, raw_outputs  # bench/run.py

from mlcnn_core.modelfile import load_model


def render(results: list[dict], sets: list[str], args: argparse.Namespace, seconds: float) -> str:
    command = "python bench/pointing.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [f"## {args.title}", ""] + ([args.intro, ""] if args.intro else [])
    lines += [f"Produced by `{command}` in {seconds:.0f} s. Each cell: true labels whose peak (the refined "
              "raw-map peak that `mlcnn predict` reports) falls inside one of their emoji's boxes.", "",
              "| model | input size | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    rows: dict[tuple[str, int], dict[str, dict]] = {}
    for r in results:
        rows.setdefault((r["model"], r["short_side"]), {})[r["set"]] = r
    for (name, size), cells in rows.items():
        lines.append(f"| {name} | {size} px | " + " | ".join(
            f"{100 * cells[s]['rate']:.1f} % ({cells[s]['hits']} / {cells[s]['pairs']})" for s in sets) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--set", action="append", required=True, metavar="DIR", help="a set with truth.jsonl")
    ap.add_argument("--short-side", type=int, nargs="+", metavar="PX", help="input sizes (default: each card's)")
    ap.add_argument("--md", help="write a markdown section here (and its numbers beside it as .json)")
    ap.add_argument("--title", default="Pointing game by input size")
    ap.add_argument("--intro", default="", help="paragraph under the title")
    args = ap.parse_args()
    t0 = time.time()
    results = []
    truths = {Path(folder).name: load_truth(Path(folder)) for folder in args.set}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"--model {item!r}: expected NAME=PATH of a model file")
        model = load_model(path)
        predictor = one_pass_predictor(model)
        card_cfg = predictor.config
        for size in args.short_side or [card_cfg.short_side]:
            predictor.config = dataclasses.replace(card_cfg, short_side=size)
            for set_name, rows in truths.items():
                game = pointing_game(raw_outputs(predictor, rows), rows, model.labels, predictor.config)
                results.append({"model": name, "path": path, "short_side": size, "set": set_name,
                                "hits": game["hits"], "pairs": game["pairs"], "rate": game["rate"]})
                print(f"{name} at {size} px, {set_name}: {game['hits']} / {game['pairs']} = "
                      f"{100 * game['rate']:.1f} % of true labels' peaks inside one of their boxes", flush=True)
    seconds = time.time() - t0
    print(f"done in {seconds:.0f} s")
    if args.md:
        Path(args.md).write_text(render(results, list(truths), args, seconds), encoding="utf-8")
        Path(args.md).with_suffix(".json").write_text(
            json.dumps({"command": sys.argv, "results": results}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
