#!/usr/bin/env python3
"""Fine-tuning methods side by side: which part learns, what holds the old knowledge, at k corrections.

The starter (which never saw Twemoji) is fine-tuned on the first k of one seeded permutation of
``twemoji-train`` (the permutation of bench/finetune_curve.py) by each candidate of
``mlcnn_core/finetune.py`` (the part before the trainable one frozen and its maps computed once) and
read the way the model card says (both passes, rescored, the parent's threshold: a fine-tune on
≤ 200 images has too few held-out images to refit it) on the first N scenes of ``twemoji-<split>``
(the new artist) and ``noto-<split>`` (what it knew). ``--split val`` is for choosing; ``--split
test`` for reporting the chosen ones. Every candidate is trained on all k images (the CLI holds a
tenth out).

    python bench/finetune_methods.py --split val --ks 25 50 100 200 --out bench/results/finetune-methods-val
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from emoji_scenes import read_truth  # noqa: E402
from finetune_curve import machine, nested_subsets, with_cat_tag  # noqa: E402

from mlcnn_core.data import Sample, split_samples  # noqa: E402
from mlcnn_core.finetune import FrozenMethod, HeldOutMaps, fit_frozen, trainable_start, training_views  # noqa: E402
from mlcnn_core.metrics import average_precision, mean_average_precision, set_metrics  # noqa: E402
from mlcnn_core.modelfile import add_labels, load_model  # noqa: E402
from mlcnn_core.newlabels import fit_rows  # noqa: E402
from mlcnn_core.predict import PredictConfig  # noqa: E402
from mlcnn_core.replay import load_replay  # noqa: E402
from mlcnn_core.runtime import configure_cpu  # noqa: E402
from mlcnn_core.threshold import Threshold  # noqa: E402

# name: (FrozenMethod fields, description)
CANDIDATES: dict[str, tuple[dict, str]] = {
    "last": ({"part": "last", "lr": 3e-3}, "last layer only (linear probe on the frozen hidden layer)"),
    "head": ({"part": "head", "lr": 1e-3}, "head (both 1×1 layers) on the frozen trunk"),
    "head-sp": ({"part": "head", "lr": 1e-3, "anchor": 100}, "head, L2-SP 100"),
    "head-lwf": ({"part": "head", "lr": 1e-3, "distill": 1.0}, "head, LwF 1"),
    "rows": ({"part": "rows", "lr": 0.01, "anchor": 1.0},
             "last layer fitted to the test form (every label; newlabels.fit_rows), L2-SP 1"),
    "block": ({"part": "block", "lr": 1e-3}, "head + last block, batch-norm statistics frozen"),
    "block-bn": ({"part": "block", "lr": 1e-3, "norm_stats": "update"},
                 "head + last block, batch-norm statistics re-estimated"),
    "block-sp": ({"part": "block", "lr": 1e-3, "anchor": 100}, "head + last block, L2-SP 100"),
    "block-lwf": ({"part": "block", "lr": 1e-3, "distill": 1.0}, "head + last block, LwF 1"),
}


def samples_of(set_dir: Path, rows: list[dict]) -> list[Sample]:
    return [Sample(str(set_dir / r["image"]), tuple(r["labels"])) for r in rows]


class Evaluator(HeldOutMaps):
    """Scenes of one set with the model's frozen front computed once (each pass of the reading)."""

    def __init__(self, model, start: int, samples: list[Sample], device: torch.device, cache: Path | None = None):
        if cache is not None and cache.is_file():
            self.start, self.samples = start, samples
            self.config = PredictConfig.from_dict(model.card.get("prediction"))
            self.maps = torch.load(cache)
        else:
            super().__init__(model.net, start, model.mean, PredictConfig.from_dict(model.card.get("prediction")),
                             samples, device)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                torch.save(self.maps, cache)
        self.labels_truth = self.truth(model.labels)

    def metrics(self, net, threshold: Threshold, labels: list[str] | None = None, label: str | None = None) -> dict:
        """Precision, recall, accuracy, mAP as predicted; with ``label``, also its own precision and
        recall and on what fraction of the images without it it is predicted."""
        truth = self.labels_truth if labels is None else self.truth(labels)
        scores = self.scores(net)
        chosen = threshold.select(scores)
        m = set_metrics(chosen, truth)
        m["mAP"] = mean_average_precision(scores, truth)
        if label is not None:
            j = labels.index(label)
            hit = chosen[:, j] & truth[:, j]
            m.update({f"{label}_precision": hit.sum() / max(1, chosen[:, j].sum()),
                      f"{label}_recall": hit.sum() / max(1, truth[:, j].sum()),
                      f"{label}_fires_without": (chosen[:, j] & ~truth[:, j]).sum() / max(1, (~truth[:, j]).sum()),
                      f"{label}_AP": average_precision(scores[:, j], truth[:, j])})
        return {k: round(float(v), 4) for k, v in m.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "resources/models/starter.safetensors")
    ap.add_argument("--data", type=Path, default=REPO / "data/emoji")
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--ks", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--eval-images", type=int, default=400)
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--set", action="append", default=[], metavar="NAME:FIELD=VALUE,...",
                    help="an extra candidate, e.g. head-lr3:part=head,lr=3e-3")
    ap.add_argument("--replay", type=Path, help="a replay file (mlcnn replay) for candidates with replay_weight > 0")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="folder for the evaluation sets' frozen maps (reused)")
    ap.add_argument("--out", type=Path, required=True, help="results without suffix (.json and .md written)")
    ap.add_argument("--cat-models", type=Path, nargs="+",
                    help="instead: measure these fine-tunes of --model that learnt `cat` (bench/finetune_curve.py's "
                         "cat scenes, in --cat-data) on cat-<split> and on noto-<split> tagged with cat")
    ap.add_argument("--cat-fit", nargs="+", metavar="NAME:FIELD=VALUE,...",
                    help="instead: fit `cat`'s row alone (newlabels.fit_rows, nothing else trained) on cat-train's "
                         "training part with these settings, e.g. m25:margin_below=0.25,negatives=2, and measure it")
    ap.add_argument("--cat-data", type=Path, default=REPO / "data/emoji-cat")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                    help="instead: one table (--out) from the JSON files of earlier runs on the same split")
    args = ap.parse_args(argv)
    if args.merge:
        runs = [json.loads(p.read_text(encoding="utf-8")) for p in args.merge]
        merged = dict(runs[0], candidates={}, rows=[], ks=sorted({k for r in runs for k in r["ks"]}))
        for r in runs:
            if r["split"] != merged["split"] or r["eval_images"] != merged["eval_images"]:
                raise SystemExit("the runs were measured on different scenes")
            merged["candidates"].update(r["candidates"])
            merged["rows"] += r["rows"]
        merged["commands"] = [r.get("command", "") for r in runs]
        write_markdown(merged, args.out.with_suffix(".md"))
        return 0
    configure_cpu()
    if args.cat_models or args.cat_fit:
        return measure_cat(args)
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    candidates = {name: CANDIDATES[name] for name in args.candidates}
    for spec in args.set:
        name, fields = spec.split(":", 1)
        parsed = {}
        for kv in fields.split(","):
            key, value = kv.split("=")
            parsed[key] = value if key in ("part", "norm_stats") else float(value)
        parsed.setdefault("lr", 1e-3)
        candidates[name] = (parsed, fields)

    parent = load_model(args.model)
    replay = None
    if args.replay:
        replayed = load_replay(args.replay, parent.net)
        replay = (replayed.features, replayed.targets_for(parent.labels))
    threshold = Threshold.from_dict(parent.card["threshold"], len(parent.labels))
    index = {lab: i for i, lab in enumerate(parent.labels)}
    block_start = trainable_start(parent.net, "block")
    t0 = time.perf_counter()
    evals = {style: Evaluator(parent, block_start, samples_of(args.data / f"{style}-{args.split}",
                                                              read_truth(args.data / f"{style}-{args.split}")
                                                              [: args.eval_images]), device,
                                       args.cache / f"{args.model.stem}-{style}-{args.split}-{args.eval_images}.pt"
                                       if args.cache else None)
             for style in ("twemoji", "noto")}
    print(f"evaluation maps in {time.perf_counter() - t0:.0f} s", flush=True)
    train_dir = args.data / "twemoji-train"
    subsets = nested_subsets(read_truth(train_dir), args.ks, args.seed)
    results = {"command": "python bench/finetune_methods.py " + shlex.join(argv or sys.argv[1:]),
               "model": str(args.model), "split": args.split, "eval_images": args.eval_images, "ks": args.ks,
               "steps": args.steps, "machine": machine(), "candidates": {}, "rows": []}
    results["start"] = {style: e.metrics(parent.net, threshold) for style, e in evals.items()}
    print("start", results["start"], flush=True)

    def record(k: int, name: str, net, t_views: float, t_fit: float) -> None:
        # the evaluators hold block-start maps; a head-only net runs its (unchanged) block on them
        row = {"k": k, "candidate": name, "views_s": round(t_views, 1), "fit_s": round(t_fit, 1),
               **{style: e.metrics(net, threshold) for style, e in evals.items()}}
        results["rows"].append(row)
        print(f"k={k} {name:12s} twemoji acc {row['twemoji']['accuracy']:.3f} mAP {row['twemoji']['mAP']:.3f}"
              f" | noto acc {row['noto']['accuracy']:.3f} mAP {row['noto']['mAP']:.3f}"
              f" | views {t_views:.0f} s fit {t_fit:.0f} s", flush=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")

    for k in args.ks:
        samples = samples_of(train_dir, subsets[k])
        cache: dict[tuple, object] = {}
        for name, (fields, description) in candidates.items():
            if fields["part"] == "rows":
                model = load_model(args.model)
                t1 = time.perf_counter()
                fit_rows(model, samples, model.labels, steps=int(fields.get("steps", args.steps)), lr=fields["lr"],
                         anchor=fields["anchor"], seed=args.seed)
                results["candidates"][name] = {"description": description, "method": fields}
                record(k, name, model.net, 0.0, time.perf_counter() - t1)
                continue
            method = FrozenMethod(**{**fields, "steps": int(fields.get("steps", args.steps))})
            results["candidates"][name] = {"description": description, "method": method.__dict__}
            net = load_model(args.model).net
            start = trainable_start(net, method.part)
            key = (start, method.short_sides, method.mirror)
            t1 = time.perf_counter()
            if key not in cache:
                cache[key] = training_views(net, start, parent.mean, samples, index, method, device)
            t_views = time.perf_counter() - t1
            fit_frozen(net, start, cache[key], method, len(parent.labels), seed=args.seed,
                       replay=replay if method.replay_weight > 0 else None)
            t_fit = time.perf_counter() - t1 - t_views
            record(k, name, net, t_views, t_fit)
    write_markdown(results, args.out.with_suffix(".md"))
    return 0


def measure_cat(args: argparse.Namespace) -> int:
    """The new label ``cat``: its precision, recall, AP and how often it fires without a cat."""
    parent = load_model(args.model)
    start = trainable_start(parent.net, "block")
    device = torch.device("cpu")
    cat_dir, noto_dir = args.cat_data / f"cat-{args.split}", args.data / f"noto-{args.split}"
    cat_cache = args.cache / f"{args.model.stem}-cat-{args.split}.pt" if args.cache else None
    sets = {f"cat-{args.split}": Evaluator(parent, start, samples_of(cat_dir, read_truth(cat_dir)), device, cat_cache),
            f"noto-{args.split}": Evaluator(parent, start, samples_of(noto_dir, [with_cat_tag(r) for r in read_truth(
                noto_dir)[: args.eval_images]]), device, args.cache / f"{args.model.stem}-noto-{args.split}-"
                f"{args.eval_images}.pt" if args.cache else None)}
    results = {"command": "python bench/finetune_methods.py " + shlex.join(sys.argv[1:]),
               "model": str(args.model), "split": args.split, "eval_images": args.eval_images, "machine": machine(),
               "models": {}}
    fits = {}
    for spec in args.cat_fit or []:
        name, _, fields = spec.partition(":")
        fits[name] = {k: int(v) if k in ("folds", "steps") else v if k == "start" else float(v)
                      for k, v in (kv.split("=") for kv in fields.split(",") if kv)}
    train, _ = split_samples(samples_of(args.cat_data / "cat-train", read_truth(args.cat_data / "cat-train")), 0.1)

    def fitted(name: str):
        model = load_model(args.model)
        add_labels(model, ["cat"])
        t0 = time.perf_counter()
        report = fit_rows(model, train, ["cat"], seed=args.seed, **fits[name])
        print(name, f"fitted in {time.perf_counter() - t0:.0f} s", report, flush=True)
        return model

    for path in [*(args.cat_models or []), *fits]:
        model = fitted(path) if path in fits else load_model(path)
        threshold = Threshold.from_dict(model.card["threshold"], len(model.labels))
        results["models"][str(path)] = {
            "provenance": {k: model.card.get("provenance", {}).get(k) for k in ("recipe", "train_seconds", "init")},
            **{name: e.metrics(model.net, threshold, model.labels, label="cat") for name, e in sets.items()}}
        print(path, json.dumps({n: {k: v for k, v in m.items() if k.startswith("cat") or k == "accuracy"}
                                for n, m in results["models"][str(path)].items() if n != "provenance"}), flush=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


def write_markdown(results: dict, path: Path) -> None:
    split = results["split"]
    s = results["start"]
    lines = [f"## Fine-tuning methods side by side ({split} sets)", "",
             f"Machine: {results['machine']}. Produced by "
             + "; ".join(f"`{c}`" for c in results.get("commands", [results.get("command", "")])) + ".", "",
             f"Start: `{Path(results['model']).name}`, Twemoji accuracy {s['twemoji']['accuracy']:.3f} (mAP "
             f"{s['twemoji']['mAP']:.3f}), Noto {s['noto']['accuracy']:.3f} ({s['noto']['mAP']:.3f}) on the first "
             f"{results['eval_images']} scenes of `twemoji-{split}` / `noto-{split}`. Each cell: Twemoji accuracy / "
             "Noto accuracy (Twemoji mAP) after fine-tuning on the first k scenes of one seeded permutation of "
             "`twemoji-train`; the front of the network frozen, "
             f"{results['steps']} steps of 32 random 256-px crops (8×8 cells) of 4 views of each image (short side "
             "256 and 288, mirrored), AdamW with warm-up and cosine decay.", "",
             "| candidate | " + " | ".join(f"k = {k}" for k in results["ks"]) + " | fit s (k = max) |",
             "|---|" + "---:|" * (len(results["ks"]) + 1)]
    for name, c in results["candidates"].items():
        rows = {r["k"]: r for r in results["rows"] if r["candidate"] == name}
        cells = [f"{rows[k]['twemoji']['accuracy']:.3f} / {rows[k]['noto']['accuracy']:.3f} "
                 f"({rows[k]['twemoji']['mAP']:.3f})" if k in rows else "" for k in results["ks"]]
        last = rows.get(max(rows, default=0), {})
        lines.append(f"| `{name}`: {c['description']} | " + " | ".join(cells) + f" | {last.get('fit_s', '')} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
