#!/usr/bin/env python3
"""The realistic fine-tune: a person's folder of openclipart drawings, tagged with labels the starter lacks.

**The person's drawings.** Openclipart topic drawings (``openclipart.TOPICS``) by creators the
starter never trained on: not the creator of any training-clutter drawing (the clutter of
``CLUTTER_FOLDERS`` by training creators, the only openclipart the starter saw), and not unnamed.
A file found in two topic folders is one drawing with both labels. The person's tags are the topic
labels with at least ``MIN_DRAWINGS`` such drawings; a drawing keeps only those of its labels.

**Confirmed pool and held-out pool, by drawing.** Within each label (a drawing goes with its first
label, in TOPICS order), drawings ordered by the SHA-1 of their path: the 2nd and 4th of every 5
are held out, the rest are the person's confirmed pool; no drawing is in both. With ``--split val``
the confirmed pool is split again the same way (every 3rd held out) and the test pool is not read:
that is the split for choosing a change.

**The folder.** What an illustrator's clip-art folder looks like: each image is one drawing (60 %),
or two (30 %) or three (10 %) side by side, each in its own cell at 60–95 % of the cell, mirrored
half the time, on white (50 %), a light flat colour (30 %) or a light vertical gradient (20 %);
384×384, 448×320 or 320×448 pixels, JPEG quality 90, a ``.txt`` sidecar with the drawings' labels.
Drawings are dealt from a shuffled deck (refilled when empty), so each is used about equally.

**The run.** For each seed, the person confirms the first k of a seeded permutation of the
confirmed images; the starter is fine-tuned on those k by ``mlcnn train --init STARTER --data
FOLDER --seed SEED`` (the command line itself, in process, all other flags at their defaults: a
tenth held out, the head learning with L2-SP and the starter's replay set, the new labels as
``--new-labels auto`` chooses: with the head, since these images carry no old label) and tags the
held-out images as the app does (its card's reading and threshold). The **linear probe**: one
logistic regression per tag (scikit-learn, features standardised) on the starter trunk's
global-average-pooled output at the first pass's short side, fitted on the same k images (all k);
its C (0.01, 0.1 or 1) is the one with the best mean AP on 5-fold out-of-fold probabilities of the
k images, its cut one probability for all tags, the one with the best mean accuracy (section 4.1) on
those probabilities, and, as the app does, an image with no tag over it
gets its best one. The old labels are scored before and after on the first N scenes of
``mix-ood`` (data/artists) and ``noto-test`` (data/emoji), on the 67 old labels' columns.

    OMP_NUM_THREADS=1 python bench/finetune_openclipart.py --out bench/results/finetune-openclipart
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from emoji_scenes import read_truth  # noqa: E402
from finetune_curve import machine, nested_subsets  # noqa: E402
from finetune_methods import Evaluator, samples_of  # noqa: E402
from openclipart import OPENCLIPART_DIR, TOPICS, load_drawings, split_by_creator, topic_drawings  # noqa: E402

from mlcnn_core import cli  # noqa: E402
from mlcnn_core.metrics import average_precision, mean_average_precision, set_metrics  # noqa: E402
from mlcnn_core.modelfile import load_model  # noqa: E402
from mlcnn_core.runtime import configure_cpu  # noqa: E402
from mlcnn_core.threshold import Threshold  # noqa: E402

MIN_DRAWINGS = 15          # drawings by unseen creators a topic needs to be one of the person's tags
DRAWINGS_PER_IMAGE = ((1, 0.6), (2, 0.3), (3, 0.1))
CANVASES = ((384, 384), (448, 320), (320, 448))
JPEG_QUALITY = 90
BUILD_SEED = 0             # the folder is built once; the seeds vary what the person confirms first
PROBE_FOLDS = 5
PROBE_CS = (0.01, 0.1, 1.0)


@dataclass
class PersonDrawing:
    path: str
    creator: str
    labels: tuple[str, ...]
    rgba: np.ndarray


def trained_creators(artists_cache: Path) -> set[str]:
    """Creators of the openclipart the starter trained on (training clutter), and the unnamed."""
    train, _ = split_by_creator(load_drawings(artists_cache, verbose=False))
    return {d.creator for d in train} | {""}


def person_drawings(cache: Path, trained: set[str]) -> tuple[list[str], list[PersonDrawing], dict]:
    """(the person's labels, their drawings, counts) by the rule of the module docstring."""
    merged: dict[str, PersonDrawing] = {}
    for d in topic_drawings(cache):
        if d.creator in trained:
            continue
        content = hashlib.sha1((OPENCLIPART_DIR / d.path).read_bytes()).hexdigest()
        if content in merged:
            merged[content].labels += (d.label,)
        else:
            merged[content] = PersonDrawing(d.path, d.creator, (d.label,), d.rgba)
    per_label = {lab: sum(lab in d.labels for d in merged.values()) for lab in TOPICS}
    labels = [lab for lab in TOPICS if per_label[lab] >= MIN_DRAWINGS]
    drawings = []
    for d in merged.values():
        kept = tuple(lab for lab in d.labels if lab in labels)
        if kept:
            drawings.append(PersonDrawing(d.path, d.creator, kept, d.rgba))
    counts = {"unseen_by_topic": per_label, "labels": {lab: per_label[lab] for lab in labels},
              "drawings": len(drawings), "creators": len({d.creator for d in drawings})}
    return labels, drawings, counts


def split_drawings(drawings: list[PersonDrawing], held: tuple[int, ...], every: int
                   ) -> tuple[list[PersonDrawing], list[PersonDrawing]]:
    """(kept, held out): within each first label, by SHA-1 of the path, positions ``held`` of every ``every``."""
    kept, out = [], []
    for lab in TOPICS:
        group = sorted((d for d in drawings if d.labels[0] == lab),
                       key=lambda d: hashlib.sha1(d.path.encode()).hexdigest())
        for i, d in enumerate(group):
            (out if i % every in held else kept).append(d)
    return kept, out


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    kind = rng.choice(3, p=[0.5, 0.3, 0.2])
    if kind == 0:
        return np.full((h, w, 3), 255.0)
    if kind == 1:
        return np.broadcast_to(rng.uniform(200, 255, 3), (h, w, 3)).copy()
    top, bottom = rng.uniform(190, 255, 3), rng.uniform(190, 255, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).copy()


def _paste(canvas: np.ndarray, rgba: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    x0, y0, cw, ch = box
    h, w = rgba.shape[:2]
    scale = min(cw / w, ch / h) * rng.uniform(0.6, 0.95)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a = np.asarray(im, dtype=np.float64)
    x = x0 + int(rng.integers(0, cw - size[0] + 1))
    y = y0 + int(rng.integers(0, ch - size[1] + 1))
    alpha = a[..., 3:] / 255.0
    region = canvas[y:y + size[1], x:x + size[0]]
    region[:] = region * (1 - alpha) + a[..., :3] * alpha


def build_folder(drawings: list[PersonDrawing], count: int, out_dir: Path, seed: int = BUILD_SEED) -> list[dict]:
    """``count`` images of the person's folder (module docstring) in ``out_dir``, with sidecars and a
    ``truth.jsonl``; an existing complete folder is reused."""
    truth_file = out_dir / "truth.jsonl"
    if truth_file.is_file():
        rows = read_truth(out_dir)
        if len(rows) == count:
            return rows
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    deck: list[int] = []
    rows = []
    for i in range(count):
        n = int(rng.choice([c for c, _ in DRAWINGS_PER_IMAGE], p=[p for _, p in DRAWINGS_PER_IMAGE]))
        picks: list[int] = []
        while len(picks) < n:
            if not deck:
                deck = list(rng.permutation(len(drawings)))
            j = deck.pop()
            if j not in picks:
                picks.append(j)
        w, h = CANVASES[int(rng.integers(len(CANVASES)))]
        canvas = _background(rng, w, h)
        for c, j in enumerate(picks):
            box = (c * w // n, 0, w // n, h) if w >= h else (0, c * h // n, w, h // n)
            _paste(canvas, drawings[j].rgba, box, rng)
        name = f"{i:05d}.jpg"
        Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8)).save(out_dir / name, quality=JPEG_QUALITY)
        labels = sorted({lab for j in picks for lab in drawings[j].labels})
        (out_dir / f"{name}.txt").write_text(", ".join(labels) + "\n", encoding="utf-8")
        rows.append({"image": name, "labels": labels, "drawings": [drawings[j].path for j in picks]})
    truth_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def confirmed_folder(pool_dir: Path, rows: list[dict], out_dir: Path) -> Path:
    """A folder of the confirmed images (hard links to the pool's images and sidecars)."""
    if out_dir.exists():
        for p in out_dir.iterdir():
            p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in rows:
        for name in (r["image"], r["image"] + ".txt"):
            os.link(pool_dir / name, out_dir / name)
    return out_dir


def pooled(evaluator: Evaluator) -> np.ndarray:
    """Each image's trunk output at the first pass, averaged over positions: [n, channels]."""
    return np.stack([m.mean(dim=(1, 2)).numpy() for m in evaluator.maps[0]])


def tag_metrics(scores: np.ndarray, chosen: np.ndarray, truth: np.ndarray, labels: list[str]) -> dict:
    """Section 4.1's precision, recall, accuracy and mAP over ``labels`` (a label never scored: AP 0)."""
    m = set_metrics(chosen, truth)
    aps = {lab: average_precision(scores[:, j], truth[:, j]) if np.isfinite(scores[:, j]).all() else 0.0
           for j, lab in enumerate(labels) if truth[:, j].any()}
    m["mAP"] = float(np.mean(list(aps.values())))
    m["AP"] = {lab: round(v, 4) for lab, v in aps.items()}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def with_best(probs: np.ndarray, cut: float) -> np.ndarray:
    chosen = probs >= cut
    chosen[np.arange(len(probs)), probs.argmax(1)] = True
    return chosen


class LinearProbe:
    """One logistic regression per tag on standardised pooled features; a tag without both positive
    and negative training images scores its training frequency."""

    def __init__(self, x: np.ndarray, y: np.ndarray, seed: int, c: float):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler().fit(x)
        xs = self.scaler.transform(x)
        self.models = []
        for j in range(y.shape[1]):
            if 0 < y[:, j].sum() < len(y):
                self.models.append(LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(xs, y[:, j]))
            else:
                self.models.append(float(y[:, j].mean()))

    def probs(self, x: np.ndarray) -> np.ndarray:
        xs = self.scaler.transform(x)
        return np.stack([m.predict_proba(xs)[:, 1] if not isinstance(m, float) else np.full(len(x), m)
                         for m in self.models], axis=1)


def probe_choice(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    """(C, cut) chosen on the k images alone: the C of PROBE_CS with the best mean AP of 5-fold
    out-of-fold probabilities, then the probability cut with the best mean accuracy on them."""
    from sklearn.model_selection import KFold

    best = None
    for c in PROBE_CS:
        oof = np.zeros(y.shape)
        for train, test in KFold(PROBE_FOLDS, shuffle=True, random_state=seed).split(x):
            oof[test] = LinearProbe(x[train], y[train], seed, c).probs(x[test])
        score = mean_average_precision(oof, y > 0)
        if best is None or score > best[0]:
            best = (score, c, oof)
    _, c, oof = best
    cuts = np.linspace(0.05, 0.95, 19)
    accuracy = [set_metrics(with_best(oof, cut), y > 0)["accuracy"] for cut in cuts]
    return c, float(cuts[int(np.argmax(accuracy))])


def with_suffix(out: Path, suffix: str) -> Path:
    """``out`` with ``suffix`` appended: ``--out`` names results without a suffix, and may hold dots
    (``val-distill0.5``)."""
    return out.with_name(out.name + suffix)


def fine_tune(model: Path, folder: Path, out: Path, seed: int, extra: list[str]) -> tuple[object, float, dict]:
    """``mlcnn train --init MODEL --data FOLDER`` in process; (the model it wrote, wall seconds, :func:`phases`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    events = out.with_suffix(".events.jsonl")
    argv = ["train", "--init", str(model), "--data", str(folder), "--out", str(out), "--seed", str(seed),
            "--events", str(events), *extra]
    t0 = time.perf_counter()
    code = cli.main(argv)
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"mlcnn {shlex.join(argv)} failed ({code})")
    return load_model(out), seconds, phases(events)


def phases(events: Path) -> dict:
    """Seconds of each part of the fine-tune, from its events: the new labels' fit before training,
    the front's maps, the steps, the fit after, the rest (held-out scoring, thresholds, the file)."""
    times = {}
    for line in events.read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        name = f"fit_{e['when'].split()[0]}" if e["event"] == "new_labels_fitted" else e["event"]
        times.setdefault(name, []).append(e["time"])
    marks = [("fit_before", "fit_before"), ("features", "frozen_features"), ("steps", "step"),
             ("fit_after", "fit_after"), ("finish", "done")]
    out, last = {}, min(t for ts in times.values() for t in ts)
    for name, event in marks:
        if event in times:
            out[name] = round(max(times[event]) - last, 1)
            last = max(times[event])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "resources/models/starter.safetensors")
    ap.add_argument("--artists", type=Path, default=REPO / "data/artists", help="holds mix-ood and the clutter cache")
    ap.add_argument("--emoji", type=Path, default=REPO / "data/emoji", help="holds noto-test")
    ap.add_argument("--work", type=Path, default=REPO / "runs/finetune-openclipart",
                    help="the person's folders, the drawings' cache, the fine-tuned models, the maps (reused)")
    ap.add_argument("--split", choices=("val", "test"), default="test")
    ap.add_argument("--ks", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--pool-images", type=int, help="images of the confirmed pool (default: the largest k)")
    ap.add_argument("--eval-images", type=int, default=400, help="images of the held-out pool")
    ap.add_argument("--old-images", type=int, default=300)
    ap.add_argument("--train-flags", default="", help="extra mlcnn train flags (a change to measure; --split val)")
    ap.add_argument("--name", default="default", help="names this run's folders and models under --work")
    ap.add_argument("--out", type=Path, required=True, help="results without suffix (.json and .md written)")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                    help="instead: one table (--out) from the JSON files of runs (other seeds or ks) on the same pools")
    args = ap.parse_args(argv)
    if args.merge:
        runs = [json.loads(p.read_text(encoding="utf-8")) for p in args.merge]
        for r in runs[1:]:
            if (r["split"], r["counts"], r["images"], r["train_flags"]) != (
                    runs[0]["split"], runs[0]["counts"], runs[0]["images"], runs[0]["train_flags"]):
                raise SystemExit("the runs were measured on different pools or with different flags")
        merged = dict(runs[0], seeds=sorted({s for r in runs for s in r["seeds"]}),
                      ks=sorted({k for r in runs for k in r["ks"]}),
                      rows=[row for r in runs for row in r["rows"]], commands=[r["command"] for r in runs],
                      seconds=None)
        with_suffix(args.out, ".json").write_text(json.dumps(merged, indent=1), encoding="utf-8")
        write_markdown(merged, with_suffix(args.out, ".md"))
        return 0
    configure_cpu()
    device = torch.device("cpu")
    work = args.work
    t_start = time.perf_counter()

    labels, drawings, counts = person_drawings(work, trained_creators(args.artists))
    confirmed, held_out = split_drawings(drawings, held=(1, 3), every=5)
    if args.split == "val":
        confirmed, held_out = split_drawings(confirmed, held=(2,), every=3)
    counts.update(confirmed_drawings=len(confirmed), held_out_drawings=len(held_out))
    print(f"person: {len(labels)} tags, {counts['drawings']} drawings by {counts['creators']} creators; "
          f"{len(confirmed)} confirmed-pool drawings, {len(held_out)} held out", flush=True)
    pool_dir = work / f"{args.split}-pool"
    eval_dir = work / f"{args.split}-held-out"
    pool_images = args.pool_images or max(args.ks)
    if pool_images < max(args.ks):
        raise SystemExit(f"--pool-images {pool_images} is fewer than the largest k")
    pool_rows = build_folder(confirmed, pool_images, pool_dir)
    eval_rows = build_folder(held_out, args.eval_images, eval_dir, seed=BUILD_SEED + 1)

    parent = load_model(args.model)
    start = len(parent.net.trunk)  # the default fine-tune moves the head only: the trunk's maps serve all
    maps = work / "maps"
    ev_pool = Evaluator(parent, start, samples_of(pool_dir, pool_rows), device, maps / f"{args.split}-pool.pt")
    ev_test = Evaluator(parent, start, samples_of(eval_dir, eval_rows), device, maps / f"{args.split}-held-out.pt")
    old_sets = {"mix-ood": args.artists / "mix-ood", "noto-test": args.emoji / "noto-test"}
    ev_old = {name: Evaluator(parent, start, samples_of(d, read_truth(d)[: args.old_images]), device,
                              maps / f"{args.model.stem}-{name}-{args.old_images}.pt")
              for name, d in old_sets.items()}
    print(f"maps ready in {time.perf_counter() - t_start:.0f} s", flush=True)
    truth_test = ev_test.truth(labels)
    parent_threshold = Threshold.from_dict(parent.card["threshold"], len(parent.labels))

    def old_metrics(net, model_labels: list[str], threshold: Threshold) -> dict:
        out = {}
        for name, ev in ev_old.items():
            scores = ev.scores(net)
            chosen = threshold.select(scores)
            cols = [model_labels.index(lab) for lab in parent.labels]
            m = set_metrics(chosen[:, cols], ev.truth(parent.labels))
            new_cols = [j for j, lab in enumerate(model_labels) if lab not in parent.labels]
            m["new_tags_per_image"] = float(chosen[:, new_cols].sum(1).mean()) if new_cols else 0.0
            out[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
        return out

    results = {"command": "python bench/finetune_openclipart.py " + shlex.join(argv or sys.argv[1:]),
               "model": str(args.model), "split": args.split, "ks": args.ks, "seeds": args.seeds,
               "machine": machine(), "labels": labels, "counts": counts,
               "images": {"confirmed_pool": len(pool_rows), "held_out": len(eval_rows),
                          "drawings_per_image_held_out": round(float(np.mean([len(r["drawings"])
                                                                               for r in eval_rows])), 2)},
               "train_flags": args.train_flags, "old_images": args.old_images,
               "chance_mAP": round(float(truth_test.mean(0).mean()), 4),  # about a random ranking's
               "before": old_metrics(parent.net, parent.labels, parent_threshold), "rows": []}
    print("before", results["before"], flush=True)
    x_pool, x_test = pooled(ev_pool), pooled(ev_test)
    y_pool = ev_pool.truth(labels).astype(int)

    for seed in args.seeds:
        order = nested_subsets(pool_rows, args.ks, seed)
        for k in args.ks:
            rows = order[k]
            index = [pool_rows.index(r) for r in rows]
            run = f"{args.split}-{args.name}-s{seed}-k{k}"
            folder = confirmed_folder(pool_dir, rows, work / "confirmed" / run)
            model, seconds, parts = fine_tune(args.model, folder, work / "models" / f"{run}.safetensors", seed,
                                              shlex.split(args.train_flags))
            for a, b in zip(parent.net.trunk.state_dict().values(), model.net.trunk.state_dict().values(),
                            strict=True):
                if not torch.equal(a, b):
                    raise SystemExit("the fine-tune moved the trunk: the cached maps no longer hold (use --learn head)")
            threshold = Threshold.from_dict(model.card["threshold"], len(model.labels))
            scores_all = ev_test.scores(model.net)
            chosen_all = threshold.select(scores_all)
            cols = [model.labels.index(lab) if lab in model.labels else None for lab in labels]
            scores = np.stack([scores_all[:, j] if j is not None else np.full(len(scores_all), -np.inf)
                               for j in cols], axis=1)
            chosen = np.stack([chosen_all[:, j] if j is not None else np.zeros(len(scores_all), bool)
                               for j in cols], axis=1)
            finetuned = tag_metrics(scores, chosen, truth_test, labels)
            finetuned["old_tags_per_image"] = round(float(chosen_all[:, [model.labels.index(lab)
                                                                         for lab in parent.labels]].sum(1).mean()), 3)
            finetuned["labels_learnt"] = sum(j is not None for j in cols)
            t_probe = time.perf_counter()
            c, cut = probe_choice(x_pool[index], y_pool[index], seed)
            probs = LinearProbe(x_pool[index], y_pool[index], seed, c).probs(x_test)
            probe = tag_metrics(probs, with_best(probs, cut), truth_test, labels)
            probe.update(C=c, cut=round(cut, 2))
            probe_s = time.perf_counter() - t_probe
            row = {"seed": seed, "k": k, "finetune": finetuned, "probe": probe,
                   "after": old_metrics(model.net, model.labels, threshold),
                   "finetune_s": round(seconds, 1), "finetune_parts": parts, "probe_s": round(probe_s, 1),
                   "threshold": model.card["provenance"]["threshold"]}
            results["rows"].append(row)
            print(f"seed {seed} k={k}: fine-tune mAP {finetuned['mAP']:.3f} P {finetuned['precision']:.3f} "
                  f"R {finetuned['recall']:.3f} acc {finetuned['accuracy']:.3f} ({seconds:.0f} s) | probe mAP "
                  f"{probe['mAP']:.3f} P {probe['precision']:.3f} R {probe['recall']:.3f} acc "
                  f"{probe['accuracy']:.3f} (cut {cut:.2f}) | old acc "
                  + " ".join(f"{n} {m['accuracy']:.3f}" for n, m in row["after"].items()), flush=True)
            results["seconds"] = round(time.perf_counter() - t_start, 1)
            with_suffix(args.out, ".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    with_suffix(args.out, ".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    write_markdown(results, with_suffix(args.out, ".md"))
    return 0


def _fit_seconds(row: dict) -> float:
    parts = row.get("finetune_parts", {})
    return parts.get("fit_before", 0.0) + parts.get("fit_after", 0.0)


def _mean(rows: list[dict], *keys: str) -> tuple[float, float, float]:
    values = []
    for r in rows:
        v = r
        for key in keys:
            v = v[key]
        values.append(v)
    return float(np.mean(values)), float(np.min(values)), float(np.max(values))


def _cell(rows: list[dict], *keys: str) -> str:
    mean, lo, hi = _mean(rows, *keys)
    return f"{mean:.3f}" if len(rows) == 1 else f"{mean:.3f} ({lo:.3f}–{hi:.3f})"


def write_markdown(results: dict, path: Path) -> None:
    c, before = results["counts"], results["before"]
    seeds = results["seeds"]
    lines = [f"## Fine-tuning on a person's openclipart folder ({results['split']} pools)", "",
             f"Machine: {results['machine']}. Produced by "
             + "; ".join(f"`{c}`" for c in results.get("commands", [results["command"]]))
              + (f" in {results['seconds']:.0f} s in all." if results.get("seconds") else "."), "",
             f"The person's tags ({len(results['labels'])}): "
             + ", ".join(f"`{lab}` {n}" for lab, n in c["labels"].items())
             + f" drawings by creators the starter never trained on ({c['drawings']} drawings by {c['creators']} "
             f"creators; {c['confirmed_drawings']} in the confirmed pool, {c['held_out_drawings']} held out). "
             f"{results['images']['confirmed_pool']} confirmed-pool images, {results['images']['held_out']} held-out "
             f"images ({results['images']['drawings_per_image_held_out']} drawings each on average). "
             + (f"Mean over seeds {', '.join(map(str, seeds))} (min–max). " if len(seeds) > 1 else f"Seed {seeds[0]}. ")
             + (f"Extra train flags: `{results['train_flags']}`. " if results["train_flags"] else ""), "",
             "New tags on the held-out images: mAP / precision / recall / accuracy (section 4.1)"
             + (f"; a random ranking's mAP is about {results['chance_mAP']:.2f}." if "chance_mAP" in results else "."),
             "",
             "| k | fine-tune mAP | P | R | acc | linear probe mAP | P | R | acc | fine-tune s | new-label fits s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in results["ks"]:
        rows = [r for r in results["rows"] if r["k"] == k]
        if not rows:
            continue
        lines.append(f"| {k} | " + " | ".join(_cell(rows, "finetune", m) for m in ("mAP", "precision", "recall",
                                                                                 "accuracy"))
                     + " | " + " | ".join(_cell(rows, "probe", m) for m in ("mAP", "precision", "recall", "accuracy"))
                     + f" | {_mean(rows, 'finetune_s')[0]:.0f} | {np.mean([_fit_seconds(r) for r in rows]):.0f} |")
    names = list(before)
    lines += ["", f"Old labels (the 67 columns) on the first {results['old_images']} scenes of "
              + " / ".join(f"`{n}`" for n in names) + ": accuracy, and the new tags the fine-tune puts on each "
              "emoji scene.", "",
              "| k | " + " | ".join(f"{n} accuracy" for n in names) + " | " + " | ".join(
                  f"{n} new tags / image" for n in names) + " |",
              "|---|" + "---:|" * (2 * len(names)),
              "| starter | " + " | ".join(f"{before[n]['accuracy']:.3f}" for n in names) + " | "
              + " | ".join("0" for _ in names) + " |"]
    for k in results["ks"]:
        rows = [r for r in results["rows"] if r["k"] == k]
        if rows:
            lines.append(f"| {k} | " + " | ".join(_cell(rows, "after", n, "accuracy") for n in names) + " | "
                         + " | ".join(_cell(rows, "after", n, "new_tags_per_image") for n in names) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
