#!/usr/bin/env python3
"""How right the ETA of a fine-tune is, the number the training panel shows while it runs.

Each run is what the panel runs (``mlcnn train --init MODEL --data MANIFEST --events FILE``, the
defaults) on the first k scenes of the seeded permutation of ``<style>-train`` that
``bench/finetune_curve.py`` uses (or on any folders given with ``--data``). Every event that carries
an ETA (``frozen_features`` while the frozen trunk reads the images, ``step`` after that) is
compared with the time that was really left until the ``done`` event: the report gives the error
at 10, 25, 50, 75 and 90 % of the run and the largest one after the first 10 % (also in seconds),
with where the time went (the new labels' first fit before the ETA exists, the trunk's maps, the
steps with their epoch ends, and the work after the last step).

Usage::

    python bench/finetune_eta.py --model resources/models/starter.safetensors --style twemoji --ks 100
        [--data FOLDER ...] --work runs/eta --out bench/results/finetune-eta.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from emoji_scenes import read_truth  # noqa: E402
from finetune_curve import mlcnn, nested_subsets, run, shown, write_manifest  # noqa: E402

FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9)


def eta_errors(events: list[dict]) -> dict:
    """The ETA's relative error against the time really left, along the run (from the ``start`` event)."""
    start = next(e["time"] for e in events if e["event"] == "start")
    done = next(e["time"] for e in events if e["event"] in ("done", "cancelled"))
    run_s = done - start
    points = [(e["time"] - start, e["eta_s"], done - e["time"]) for e in events
              if "eta_s" in e and e["event"] in ("step", "frozen_features") and done - e["time"] > 0]
    errors = [(t, (eta - left) / left) for t, eta, left in points]

    def at(fraction: float) -> float | None:
        after = [err for t, err in errors if t >= fraction * run_s]
        return round(after[0], 3) if after else None

    later = [abs(err) for t, err in errors if t >= 0.1 * run_s]
    later_s = [abs(eta - left) for t, eta, left in points if t >= 0.1 * run_s]
    phases = {"first fit of new labels": 0.0, "trunk maps": 0.0, "steps and epoch ends": 0.0, "after the steps": 0.0}
    fits = [e for e in events if e["event"] == "new_labels_fitted"]
    if fits and fits[0].get("when") == "before training":
        phases["first fit of new labels"] = fits[0]["seconds"]
    reads = [e for e in events if e["event"] == "frozen_features"]
    steps = [e for e in events if e["event"] in ("step", "epoch")]
    if reads:
        phases["trunk maps"] = reads[-1]["time"] - start
    if steps:
        first = reads[-1]["time"] if reads else start
        phases["steps and epoch ends"] = steps[-1]["time"] - first
        phases["after the steps"] = done - steps[-1]["time"]
    return {"run_s": round(run_s, 1), "at": {f: at(f) for f in FRACTIONS},
            "max_after_10": round(max(later), 3) if later else None,
            "max_after_10_s": round(max(later_s), 1) if later_s else None, "events": len(errors),
            "phases": {k: round(v, 1) for k, v in phases.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "resources/models/starter.safetensors"))
    ap.add_argument("--emoji", type=Path, default=REPO / "data/emoji")
    ap.add_argument("--style", default="twemoji")
    ap.add_argument("--ks", type=int, nargs="*", default=[100])
    ap.add_argument("--data", action="append", default=[], help="a folder or manifest to fine-tune on as well")
    ap.add_argument("--flag", action="append", default=[], help="an extra mlcnn train flag, e.g. --flag=--learn=all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=REPO / "runs/eta")
    ap.add_argument("--out", type=Path, default=HERE / "results/finetune-eta.md")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    flags = [f for flag in args.flag for f in flag.split("=", 1)]
    train_dir = args.emoji / f"{args.style}-train"
    runs = {}
    if args.ks:
        subsets = nested_subsets(read_truth(train_dir), args.ks, args.seed)
        runs.update({f"{args.style} k={k}": write_manifest(args.work / f"{args.style}-k{k}.jsonl", train_dir,
                                                           subsets[k]) for k in args.ks})
    runs.update({Path(d).name: Path(d) for d in args.data})
    rows = []
    for name, data in runs.items():
        stem = name.replace(" ", "-").replace("=", "")
        out, events = args.work / f"{stem}.safetensors", args.work / f"{stem}.events.jsonl"
        cmd = mlcnn("train", "--init", args.model, "--data", str(data), "--out", str(out), *flags,
                    "--events", str(events))
        run(cmd, args.work / f"{stem}.log")
        result = eta_errors([json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()])
        rows.append({"name": name, "command": shown(cmd), **result})
        print(name, json.dumps(result), flush=True)
    lines = ["| run | run time | ETA error at " + ", ".join(f"{f:.0%}" for f in FRACTIONS)
             + " | largest after 10 % | first new-label fit | trunk maps | steps + epoch ends | after the steps |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        p = r["phases"]
        lines.append(f"| {r['name']} | {r['run_s']:.0f} s | "
                     + " / ".join("—" if v is None else f"{v:+.0%}" for v in r["at"].values())
                     + f" | {r['max_after_10']:.0%} ({r['max_after_10_s']:.1f} s)"
                     + f" | {p['first fit of new labels']:.0f} s | {p['trunk maps']:.0f} s | "
                     f"{p['steps and epoch ends']:.0f} s | {p['after the steps']:.0f} s |")
    lines += ["", "Commands (run times from the `start` event to `done`; the first new-label fit comes before it):", ""]
    lines += [f"- `{r['command']}`" for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
