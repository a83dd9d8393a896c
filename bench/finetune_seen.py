#!/usr/bin/env python3
"""What a fine-tune on k corrections learnt: the drawings it was shown against the ones it was not.

A style (OpenMoji, Twemoji: ``--style``) draws 1,337 emoji for the 67 labels; k corrected scenes
show only some of them (200 scenes hold about 270 emoji). ``finetune_curve.py`` scores all
held-out scenes, where most emoji are drawings the fine-tune never saw. This script splits the
held-out emoji by whether the same emoji (same code points) appears in the k corrections, and
reports for each fine-tuned model, next to its parent on the same emoji:

* found: the share of held-out emoji whose label is among the model's predicted labels for the
  scene (the recall of objects, with the model's own threshold);
* accuracy of the scenes all of whose emoji were seen, and of the others (section 4.1's accuracy).

It reads work folders written by ``finetune_curve.py`` (``<style>-k<K>.jsonl`` and
``k<K>.safetensors``), predicts the first ``--eval-images`` scenes of ``<style>-<split>`` in float32
(as ``finetune_curve.py`` evaluates), and caches each model's predicted labels in
``<work>/seen-<split>-k<K>.json``.

Usage::

    python bench/finetune_seen.py --parent runs/gpu2/best.safetensors --split val \\
        --run defaults=runs/ft-tune2/anc2500 --run 'anchor 0=runs/ft-tune3/anc0' [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from emoji_scenes import read_truth  # noqa: E402
from finetune_curve import fmt  # noqa: E402

from mlcnn_core.modelfile import load_model  # noqa: E402
from mlcnn_core.predict import Predictor  # noqa: E402


def truth_by_image(set_dir: Path) -> dict[str, dict]:
    return {r["image"]: r for r in read_truth(set_dir)}


def corrected_emoji(manifest: Path, train_truth: dict[str, dict]) -> set[str]:
    """Code points of every emoji in the corrected scenes of a k-manifest."""
    seen = set()
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = train_truth[Path(json.loads(line)["image"]).name]
        seen.update(o["codepoints"] for o in row["objects"])
    return seen


def predicted_labels(model_path: Path, scenes: list[dict], set_dir: Path, cache: Path) -> list[list[str]]:
    if cache.is_file() and cache.stat().st_mtime > model_path.stat().st_mtime:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached["images"] == [s["image"] for s in scenes]:
            return cached["labels"]
    predictor = Predictor(load_model(model_path), device="cpu", bf16=False)
    labels = [p.labels for _, p in predictor.predict_files(set_dir / s["image"] for s in scenes)]
    cache.write_text(json.dumps({"model": str(model_path), "images": [s["image"] for s in scenes],
                                 "labels": labels}), encoding="utf-8")
    return labels


def scene_accuracy(truth: list[str], pred: list[str]) -> float:
    t, p = set(truth), set(pred)
    return len(t & p) / len(t | p)


def split_scores(scenes: list[dict], predicted: list[list[str]], seen: set[str]) -> dict:
    """Found share of seen / unseen emoji; accuracy of all-seen / other scenes."""
    found = {True: [], False: []}
    accuracy = {True: [], False: []}
    for scene, pred in zip(scenes, predicted, strict=True):
        for obj in scene["objects"]:
            found[obj["codepoints"] in seen].append(obj["label"] in pred)
        all_seen = all(o["codepoints"] in seen for o in scene["objects"])
        accuracy[all_seen].append(scene_accuracy(scene["labels"], pred))

    def mean(values: list) -> float | None:
        return float(np.mean(values)) if values else None

    return {"seen_emoji": len(found[True]), "unseen_emoji": len(found[False]),
            "found_seen": mean(found[True]), "found_unseen": mean(found[False]),
            "seen_scenes": len(accuracy[True]), "other_scenes": len(accuracy[False]),
            "accuracy_seen": mean(accuracy[True]), "accuracy_other": mean(accuracy[False])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parent", required=True, help="the model the fine-tunes started from")
    parser.add_argument("--run", action="append", required=True, metavar="NAME=WORK",
                        help="a finetune_curve.py work folder, named as the report should call it")
    parser.add_argument("--data", default=str(REPO / "data/emoji"))
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--style", default="openmoji", choices=["openmoji", "twemoji"],
                        help="the new style the fine-tunes were corrected in (finetune_curve.py --new-style)")
    parser.add_argument("--eval-images", type=int, default=400)
    parser.add_argument("--out", help="write the table as a Markdown section here (for bench/run.py --include)")
    parser.add_argument("--title", default="Which drawings a fine-tune learns")
    parser.add_argument("--intro", default="", help="a paragraph above the table")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    data = Path(args.data)
    eval_dir = data / f"{args.style}-{args.split}"
    scenes = read_truth(eval_dir)[: args.eval_images]
    train_truth = truth_by_image(data / f"{args.style}-train")
    parent = Path(args.parent)
    parent_pred = predicted_labels(parent, scenes, eval_dir,
                                   Path(args.run[0].split("=", 1)[1]) / f"seen-{args.split}-parent.json")
    rows = []
    for spec in args.run:
        name, work = spec.split("=", 1)
        work = Path(work)
        found = (re.fullmatch(rf"{args.style}-k(\d+)\.jsonl", p.name) for p in work.glob(f"{args.style}-k*.jsonl"))
        ks = sorted(int(m.group(1)) for m in found if m and (work / f"k{m.group(1)}.safetensors").is_file())
        for k in ks:
            seen = corrected_emoji(work / f"{args.style}-k{k}.jsonl", train_truth)
            pred = predicted_labels(work / f"k{k}.safetensors", scenes, eval_dir, work / f"seen-{args.split}-k{k}.json")
            after, before = split_scores(scenes, pred, seen), split_scores(scenes, parent_pred, seen)
            rows.append({"setting": name, "k": k, "distinct_emoji": len(seen), "after": after, "before": before})
            print(f"{name} k={k}: {len(seen)} emoji corrected; found seen {fmt(before['found_seen'])} → "
                  f"{fmt(after['found_seen'])} ({after['seen_emoji']}), unseen {fmt(before['found_unseen'])} → "
                  f"{fmt(after['found_unseen'])} ({after['unseen_emoji']})", flush=True)
    seconds = time.perf_counter() - t0
    given = list(argv or sys.argv[1:])
    shown = ["'…'" if i > 0 and given[i - 1] == "--intro" else a for i, a in enumerate(given)]
    command = "python bench/finetune_seen.py " + " ".join(a if a == "'…'" else shlex.quote(a) for a in shown)
    lines = [
        "| setting | k | emoji in the corrections | held-out emoji seen / unseen | found: seen emoji | "
        "found: unseen emoji | all-seen scenes | their accuracy | other scenes' accuracy |",
        "|---|---:|---:|---|---|---|---:|---|---|",
    ]
    for r in rows:
        a, b = r["after"], r["before"]
        lines.append(
            f"| {r['setting']} | {r['k']} | {r['distinct_emoji']} | {a['seen_emoji']} / {a['unseen_emoji']} | "
            f"{fmt(b['found_seen'])} → **{fmt(a['found_seen'])}** | {fmt(b['found_unseen'])} → "
            f"**{fmt(a['found_unseen'])}** | {a['seen_scenes']} | {fmt(b['accuracy_seen'])} → "
            f"**{fmt(a['accuracy_seen'])}** | {fmt(b['accuracy_other'])} → **{fmt(a['accuracy_other'])}** |")
    table = "\n".join(lines)
    print(table)
    print(f"{command}  ({seconds:.0f} s)")
    if args.out:
        out = Path(args.out)
        intro = f"{args.intro}\n\n" if args.intro else ""
        out.write_text(f"### {args.title}\n\n{intro}{table}\n\nProduced by `{command}` in {seconds:.0f} s.\n",
                       encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps({"command": command, "seconds": round(seconds, 1),
                                                        "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
