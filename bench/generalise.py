#!/usr/bin/env python3
"""Do models read drawings they never saw? Each model, read as its card says (``mlcnn predict``'s
defaults), on each set: precision, recall and accuracy as defined in section 4.1 of the paper, mAP,
and the pointing game (is a true label's reported peak inside one of that label's boxes?).

    python bench/generalise.py --model starter=resources/models/starter.safetensors \\
        --model new=runs/artists/model.safetensors \\
        --set data/artists/twemoji-ood --set data/artists/fxemoji-ood --set data/artists/mix-ood \\
        --set data/artists/mix-small --md bench/results/generalise.md

Sets are folders with ``truth.jsonl`` (bench/emoji_scenes.py). A set's labels that a model does not
know are counted as missed; fxemoji covers 53 of the 67 labels, so its scenes only show those.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from run import load_truth, pointing_game, raw_outputs  # bench/run.py

from mlcnn_core.data import Sample
from mlcnn_core.evaluate import evaluate
from mlcnn_core.modelfile import load_model
from mlcnn_core.predict import PredictConfig, Predictor

METRICS = ("precision", "recall", "accuracy", "mAP")


def measure(model, rows: list[dict], limit_pointing: int, only_labels: list[str] | None = None) -> dict:
    samples = [Sample(r["path"], tuple(r["labels"])) for r in rows]
    result = evaluate(model, samples, baseline=False, only_labels=only_labels)["single_pass"]
    # the pointing game looks at the first pass's maps, as the app shows them
    card_cfg = PredictConfig.from_dict(model.card["prediction"])
    maps_only = dataclasses.replace(card_cfg, rescore=None, second_short_side=None)
    first_pass = Predictor(model, config=maps_only)
    subset = rows[:limit_pointing]
    result["pointing"] = pointing_game(raw_outputs(first_pass, subset), subset, model.labels, maps_only)
    return result


def render(results: dict, models: list[str], sets: list[str], command: str, seconds: float, title: str,
           intro: str) -> str:
    lines = [f"## {title}", ""] + ([intro, ""] if intro else [])
    lines += [f"Produced by `{command}` in {seconds:.0f} s (each model read as its card says, the "
              "paper's section 4.1 definitions; pointing game on the first images of each set).", "",
              "| set | model | precision | recall | accuracy | mAP | pointing game |", "|---|---|---|---|---|---|---|"]
    for s in sets:
        for m in models:
            r = results[m][s]
            p = r["pointing"]
            lines.append(f"| {s} | {m} | " + " | ".join(f"{100 * r[k]:.1f} %" for k in METRICS)
                         + f" | {100 * p['rate']:.1f} % ({p['hits']} / {p['pairs']}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--set", action="append", required=True, metavar="DIR", help="a set with truth.jsonl")
    ap.add_argument("--limit", type=int, help="the first N images of each set")
    ap.add_argument("--pointing-images", type=int, default=500, help="images per set for the pointing game")
    ap.add_argument("--md", help="write a markdown section here (and its numbers beside it as .json)")
    ap.add_argument("--title", default="Drawings the models never saw")
    ap.add_argument("--intro", default="")
    ap.add_argument("--labels", type=Path, metavar="LABELS_JSON",
                    help="score only these labels (a labels.json of emoji_scenes.py): for a model that learnt more")
    args = ap.parse_args(argv)
    only = json.loads(args.labels.read_text(encoding="utf-8"))["labels"] if args.labels else None
    t0 = time.time()
    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"--model {item!r}: expected NAME=PATH of a model file")
        models[name] = path
    truths = {Path(folder).name: load_truth(Path(folder))[:args.limit] for folder in args.set}
    results: dict[str, dict] = {}
    for name, path in models.items():
        model = load_model(path)
        results[name] = {}
        for set_name, rows in truths.items():
            r = measure(model, rows, args.pointing_images, only)
            results[name][set_name] = r
            print(f"{name:12s} {set_name:16s} " + " ".join(f"{k} {100 * r[k]:5.1f}" for k in METRICS)
                  + f" pointing {100 * r['pointing']['rate']:5.1f} ({len(rows)} images)", flush=True)
    command = "python bench/generalise.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = render(results, list(models), list(truths), command, time.time() - t0, args.title, args.intro)
    print(text)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text, encoding="utf-8")
        Path(args.md).with_suffix(".json").write_text(json.dumps(
            {"command": command, "models": models, "results": results}, indent=1, default=float) + "\n",
            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
