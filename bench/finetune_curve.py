#!/usr/bin/env python3
"""Fine-tuning on a person's corrections, measured: the k-curve, forgetting, and a new label.

Starting from a model that never saw a style (``--new-style``: OpenMoji for the Noto-only model,
Twemoji for the shipped starter, which saw Noto and OpenMoji), a person confirms k scenes of that
style (k = 25, 50, 100, 200 by default, taken from ``<style>-train``; ``--ks`` takes others, up to
its 2,000 scenes, to see how many corrections a new style needs); each time the model is
fine-tuned with the CLI's defaults, exactly what the training panel runs::

    mlcnn train --init MODEL --data <manifest of the k images> --out K.safetensors

and measured with ``mlcnn evaluate --no-baseline`` on other scenes of that style (``<style>-test``;
``--split val`` uses ``<style>-val`` for tuning) and on Noto scenes (``noto-test``/``noto-val``)
to see whether what the model knew held.

A new label: ``cat`` on scenes showing a cat emoji (🐱 🐈 🐈‍⬛ and the cat faces 😺…😾), which the
model only knows as the Unicode subgroups ``cat-face`` / ``animal-mammal``. Scenes are composed
with the benchmark builder (``bench/emoji_scenes.py``, Noto style): 30 training scenes with a cat
and 60 without, held out 100 with and 200 without (``cat-test``; ``cat-val``, 50 and 100, for
tuning), big cats left out of all of them. The model is fine-tuned three ways (the defaults, the
new row fitted with nothing trained, the new row learnt by training alone: ``CAT_VARIANTS``) and
``cat``'s precision and recall read from ``mlcnn evaluate --per-label``; Noto accuracy after it
is measured with ``cat`` added to the Noto scenes that show a cat.

Every command runs under ``nice``; timings are wall-clock on this machine. Results:
``<results>/finetune.json`` and ``finetune.md``.

Usage::

    python bench/finetune_curve.py --model runs/noto/model.safetensors [--ks 25 50 100 200]
        [--new-style openmoji|twemoji] [--eval-images 400] [--split test|val]
        [--train-flag=--epochs=20 ...] [--skip-cat]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from emoji_scenes import read_truth  # noqa: E402

CAT_LABEL = "cat"
STYLE_NAMES = {"noto": "Noto", "openmoji": "OpenMoji", "twemoji": "Twemoji"}
OLD_STYLE = "noto"  # the style every starting model knows; the cat scenes are drawn in it too
KEEP_RATIOS = ("1", "0.5", "0.25")
# 🐱 cat face, 🐈 cat, 🐈‍⬛ black cat; every emoji of the "cat-face" subgroup (😺 😸 😹 😻 😼 😽 🙀 😿 😾) is one too.
CAT_CODEPOINTS = {(0x1F431,), (0x1F408,), (0x1F408, 0x200D, 0x2B1B)}
# Lion, tiger, leopard: cats to some, not to others; left out of the cat scenes' world altogether.
BIG_CAT_CODEPOINTS = {(0x1F981,), (0x1F42F,), (0x1F405,), (0x1F406,)}
CAT_SETS = {"cat-train": (30, 60), "cat-val": (50, 100), "cat-test": (100, 200)}  # (with a cat, without)
# How the new label is learnt: (description, extra `mlcnn train` flags); the first is the default.
CAT_VARIANTS = {
    "cat": ("defaults: rows fitted to the test form, fine-tuned, fitted again", ()),
    "cat-fit-only": ("rows fitted to the test form, nothing trained (`--epochs 0`)", ("--epochs", "0")),
    "cat-train-form": ("learnt by the fine-tune alone, training form (`--new-labels train`)",
                       ("--new-labels", "train")),
}


# ------------------------------------------------------------------------------------------ commands


def mlcnn(*args: str) -> list[str]:
    return ["nice", "-n", "10", sys.executable, "-m", "mlcnn_core.cli", *args]


def relative(arg: str) -> str:
    """A path inside the repository as a relative path; anything else unchanged."""
    if "/" not in arg:
        return arg
    try:
        return str(Path(arg).resolve().relative_to(REPO))
    except ValueError:
        return arg


def shown(cmd: list[str]) -> str:
    """The command as a person would type it (``mlcnn ...``), paths relative to the repository."""
    return "mlcnn " + " ".join(shlex.quote(relative(a)) for a in cmd[cmd.index("mlcnn_core.cli") + 1 :])


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` (output to ``log``); returns its wall-clock seconds; raises on failure."""
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO))
        )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{shown(cmd)} failed ({proc.returncode}):\n{tail}")
    return seconds


def fine_tune(base: Path, data: list[Path], out: Path, flags: list[str]) -> dict:
    events = out.with_suffix(".events.jsonl")
    cmd = mlcnn("train", "--init", str(base), *sum((["--data", str(d)] for d in data), []), "--out", str(out), *flags)
    shown_cmd = shown(cmd)
    timing = out.with_suffix(".seconds")
    if out.is_file() and timing.is_file() and '"event": "done"' in events.read_text(encoding="utf-8"):
        seconds = float(timing.read_text())  # trained by an earlier run of this benchmark
    else:
        events.unlink(missing_ok=True)
        seconds = run(cmd + ["--events", str(events)], out.with_suffix(".train.log"))
        timing.write_text(f"{seconds:.1f}\n")
    start = done = None
    for line in events.read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        if e["event"] == "start":
            start = e
        elif e["event"] == "done":
            done = e
    recipe = start["recipe"] if start else {}
    print(
        f"  fine-tuned in {seconds:.0f} s: {start and start['train_images']} images, {recipe.get('epochs')} "
        f"epochs × {start and start['steps_per_epoch']} steps, lr {recipe.get('lr')}",
        flush=True,
    )
    return {
        "command": shown_cmd,
        "seconds": round(seconds, 1),
        "train_images": start and start["train_images"],
        "val_images": start and start["val_images"],
        "epochs": recipe.get("epochs"),
        "steps": start and start["epochs"] * start["steps_per_epoch"],
        "batch_size": recipe.get("batch_size"),
        "lr": recipe.get("lr"),
        "trainer_seconds": done and done["seconds"],
    }


def evaluate(model: Path, data: Path, out: Path, per_label: bool = False, extra: tuple[str, ...] = ()) -> dict:
    cmd = mlcnn(
        "evaluate",
        "--model",
        str(model),
        "--data",
        str(data),
        "--no-baseline",
        "--no-bf16",
        "--json",
        str(out),
        *(["--per-label"] if per_label else []),
        *extra,
    )
    previous = out.with_suffix(".seconds")
    if out.is_file() and previous.is_file() and out.stat().st_mtime > model.stat().st_mtime:
        seconds = float(previous.read_text())  # this model was already evaluated on this data
    else:
        seconds = run(cmd, out.with_suffix(".log"))
        previous.write_text(f"{seconds:.1f}\n")
    result = json.loads(out.read_text(encoding="utf-8"))["single_pass"]
    metrics = {k: round(float(result[k]), 4) for k in ("precision", "recall", "accuracy", "mAP")}
    metrics.update(images=result["images"], seconds=round(seconds, 1), command=shown(cmd))
    if per_label:
        metrics["per_label"] = result["per_label"]
    return metrics


# ------------------------------------------------------------------------------------------ data


def write_manifest(path: Path, set_dir: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            json.dumps({"image": str((set_dir / r["image"]).resolve()), "labels": r["labels"]}, ensure_ascii=False)
            + "\n"
            for r in rows
        ),
        encoding="utf-8",
    )
    return path


def nested_subsets(rows: list[dict], ks: list[int], seed: int) -> dict[int, list[dict]]:
    """The first k of one seeded permutation: each person's corrections extend the previous ones."""
    order = np.random.default_rng(seed).permutation(len(rows))
    return {k: [rows[i] for i in order[:k]] for k in ks}


def is_cat(entry) -> bool:
    return entry.subgroup == "cat-face" or tuple(entry.codepoints) in CAT_CODEPOINTS


def with_cat_tag(row: dict) -> dict:
    """A benchmark scene's truth with ``cat`` added when one of its emoji is a cat."""
    shows_cat = any(o["label"] == "cat-face" or tuple(int(h, 16) for h in o["codepoints"].split()) in CAT_CODEPOINTS
                    for o in row["objects"])
    return dict(row, labels=sorted(set(row["labels"]) | {CAT_LABEL})) if shows_cat else row


def build_cat_sets(out_dir: Path, glyph_cache: Path, seed: int = 0) -> dict[str, Path]:
    """Noto scenes with and without a cat (see the module docstring); skipped when already built."""
    import emoji_scenes as es

    sets = {name: out_dir / name for name in CAT_SETS}
    if all((d / "DONE").is_file() for d in sets.values()):
        return sets
    t0 = time.perf_counter()
    tax = es.load_taxonomy()
    pool = es.load_glyph_pool("noto", tax, cache_dir=glyph_cache, verbose=False)
    cats = [g for lab in pool.labels for g in pool.glyphs[lab] if is_cat(g.entry)]
    kept = {
        lab: [
            g for g in pool.glyphs[lab] if not is_cat(g.entry) and tuple(g.entry.codepoints) not in BIG_CAT_CODEPOINTS
        ]
        for lab in pool.labels
    }
    no_cat_pool = es.GlyphPool("noto", [lab for lab in pool.labels if kept[lab]], {k: v for k, v in kept.items() if v})
    backgrounds = es.Backgrounds(es.load_photos(verbose=False))
    for name, (with_cat, without) in CAT_SETS.items():
        set_dir = sets[name]
        set_dir.mkdir(parents=True, exist_ok=True)
        geo = es.geometry_for(name)
        truth = []
        for index in range(with_cat + without):
            rng = es.scene_rng(seed, name, index)
            image, record = es.compose_scene(rng, no_cat_pool, backgrounds, geo)
            if index < with_cat:
                # As many emoji as in any scene: the cat alone as often as a scene has one emoji.
                while True:
                    if es.sample_count(rng) == 1:
                        width, height = es.sample_size(rng, geo)
                        image = backgrounds.sample(rng, width, height)
                        record = {"width": width, "height": height, "labels": [], "objects": []}
                    if add_cat(rng, image, record, cats, geo):
                        break
                    image, record = es.compose_scene(rng, no_cat_pool, backgrounds, geo)
            truth.append(es.write_scene(set_dir, index, image, record))
        (set_dir / "truth.jsonl").write_text(
            "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in truth), encoding="utf-8"
        )
        (set_dir / "DONE").write_text(json.dumps({"seed": seed, "with_cat": with_cat, "without": without}) + "\n")
    print(f"cat scenes built in {time.perf_counter() - t0:.0f} s: {', '.join(map(str, sets.values()))}")
    return sets


def add_cat(rng: np.random.Generator, image, record: dict, cats: list, geo) -> bool:
    """Paste one cat emoji where it overlaps nothing much; label the scene ``cat`` (and its subgroup)."""
    import emoji_scenes as es

    glyph = cats[int(rng.integers(len(cats)))]
    short = min(image.size)
    side = max(8, int(round(rng.uniform(geo.size_min, geo.size_max) * short)))
    im = es.transform_glyph(rng, glyph.rgba, side)
    boxes = [o["box"] for o in record["objects"]]
    for _shrink in range(5):
        gw, gh = im.size
        if gw <= image.width and gh <= image.height:
            for _try in range(30):
                x, y = int(rng.integers(0, image.width - gw + 1)), int(rng.integers(0, image.height - gh + 1))
                box = [x, y, x + gw, y + gh]
                if es.overlap_ok(box, boxes):
                    image.paste(im, (x, y), im)
                    record["objects"].append(
                        {
                            "label": glyph.entry.subgroup,
                            "emoji": glyph.entry.emoji,
                            "codepoints": glyph.entry.hex,
                            "box": box,
                        }
                    )
                    record["labels"] = sorted({o["label"] for o in record["objects"]} | {CAT_LABEL})
                    return True
        im = im.resize((max(1, round(gw * 0.8)), max(1, round(gh * 0.8))))
    return False


# ------------------------------------------------------------------------------------------ report


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, torch {torch.__version__}"


def fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def write_report(results: dict, path_md: Path, path_json: Path) -> None:
    path_json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    split = results["split"]
    new = results.get("new_style", "openmoji")
    New = STYLE_NAMES[new]
    about = results.get("about") or f"a model that never saw {New}"
    lines = [
        f"## Fine-tuning on a person's corrections: {New} scenes",
        "",
        f"Machine: {results['machine']}. Date: {results['date']}. Every step's time added up: "
        f"{sum(results['timings'].values()) / 60:.1f} min; this invocation: {results['total_seconds'] / 60:.1f} min "
        "wall-clock (finished fine-tunes and evaluations of a work folder are reused; under `nice`, on a shared "
        "machine). "
        f"Produced by `{results['command']}`.",
        "",
        f"Start: `{results['base_model']}`, {about}. "
        f"Each row fine-tunes it on the first k of one seeded permutation of `{new}-train` with the "
        f"CLI's defaults (the training panel's command) and evaluates single-pass prediction with the "
        f"model's own fitted threshold on the first {results['eval_images']} images of `{new}-{split}` and "
        f"`noto-{split}` (`mlcnn evaluate --no-baseline --no-bf16`). k = 0 is the starting model. "
        f"{'Extra training flags: `' + ' '.join(results['train_flags']) + '`. ' if results['train_flags'] else ''}"
        + (f"Each fine-tune also trains on {results['replay']} seeded `noto-train` scenes (`--replay`: what the "
           "panel's \"Also train on confirmed images of\" another library does)." if results.get("replay") else ""),
        "",
        f"| k | fine-tune | epochs × steps | {New} precision | recall | accuracy | mAP | Noto precision | "
        "recall | accuracy | mAP |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base_noto = results["curve"][0]["noto"]
    for row in results["curve"]:
        t = row.get("train")
        om, no = row[new], row["noto"]
        steps = f"{t['epochs']} × {t['steps'] // max(1, t['epochs'])}" if t else "—"
        lines.append(f"| {row['k']} | {t['seconds']:.0f} s |  {steps} |" if t else f"| {row['k']} | — | — |")
        lines[-1] += (
            f" {fmt(om['precision'])} | {fmt(om['recall'])} | **{fmt(om['accuracy'])}** | {fmt(om['mAP'])} |"
            f" {fmt(no['precision'])} | {fmt(no['recall'])} | {fmt(no['accuracy'])} "
            f"({no['accuracy'] - base_noto['accuracy']:+.3f}) | {fmt(no['mAP'])} |"
        )
    lines += ["", "Commands (one per number above):", ""]
    for row in results["curve"]:
        if row.get("train"):
            lines.append(f"- k = {row['k']}: `{row['train']['command']}`")
        lines.append(f"  - `{row[new]['command']}`")
        lines.append(f"  - `{row['noto']['command']}`")
    cat = results.get("new_label")
    if cat:
        c_old = cat["noto_before"]
        default = next(iter(cat["variants"].values()))
        lines += [
            "",
            "### A label the model did not know: `cat`",
            "",
            f"{cat['train_with_cat']} training scenes with a cat emoji (🐱 🐈 🐈‍⬛ or a cat face 😺…😾) tagged "
            f"`cat` plus their subgroup labels, and {cat['train_without']} without; held out (`{cat['held_out']}`): "
            f"{cat['test_with_cat']} with a cat and {cat['test_without']} without (Noto style, composed with "
            f"`bench/emoji_scenes.py`, in `{cat['folder']}`). The model knew `cat-face` and `animal-mammal`, "
            f"never `cat`. The trainer holds out {default['train']['val_images']} of the 90 scenes and fine-tunes on "
            f"{default['train']['train_images']}. Noto after: the first {results['eval_images']} `noto-{split}` "
            f"scenes, tagged `cat` where one of their emoji is a cat ({cat['noto_with_cat']} scenes); before: the "
            f"starting model on the same scenes without that tag ({fmt(c_old['accuracy'])}).",
            "",
            "| how `cat` is learnt | time | `cat` precision | recall | F1 | predicted | held-out accuracy (all labels) "
            "| Noto accuracy | `cat` on Noto P / R |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for v in cat["variants"].values():
            per, noto, on_noto = v["cat"], v["noto_after"], v["cat_on_noto"]
            lines.append(
                f"| {v['how']} | {v['train']['seconds']:.0f} s | **{per.get('precision', 0):.3f}** | "
                f"**{per.get('recall', 0):.3f}** | {per.get('f1', 0):.3f} | {per.get('predicted', 0)} | "
                f"{fmt(v['all']['accuracy'])} | {fmt(noto['accuracy'])} "
                f"({noto['accuracy'] - c_old['accuracy']:+.3f}) | "
                f"{on_noto.get('precision', 0):.3f} / {on_noto.get('recall', 0):.3f} |"
            )
        lines += ["", "Commands:", ""]
        for v in cat["variants"].values():
            lines += [f"- `{v['train']['command']}`", f"  - `{v['cat_eval_command']}`",
                      f"  - `{v['noto_after']['command']}`"]
        if cat.get("by_pruning"):
            lines += [
                "",
                "The default model read with each per-position pruning (`--keep-ratio`; 1 is the paper's "
                "\"keep only the highest confidence label\"; the model card's own reading is the table above):",
                "",
                "| keep ratio | `cat` precision | `cat` recall | `cat` predicted | P / R / acc (all labels) |",
                "|---|---:|---:|---:|---|",
            ]
            for ratio, r in cat["by_pruning"].items():
                c = r["cat"]
                lines.append(f"| {ratio} | {c.get('precision', 0):.3f} | {c.get('recall', 0):.3f} | "
                             f"{c.get('predicted', 0)} | {fmt(r['precision'])} / {fmt(r['recall'])} / "
                             f"{fmt(r['accuracy'])} |")
            lines += ["", *(f"- `{r['command']}`" for r in cat["by_pruning"].values())]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings"].items()), ""]
    path_md.write_text("\n".join(lines), encoding="utf-8")


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "runs/noto/model.safetensors"))
    parser.add_argument("--data", default=str(REPO / "data/emoji"), help="the emoji-scenes benchmark folder")
    parser.add_argument("--new-style", default="openmoji", choices=["openmoji", "twemoji"],
                        help="the style the person corrects, one the model never saw")
    parser.add_argument("--about", help="what the starting model is, for the report (default: one that never "
                                        "saw the new style)")
    parser.add_argument("--work", default=str(REPO / "runs/finetune"))
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--ks", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--eval-images", type=int, default=400, help="first N images of each evaluation set")
    parser.add_argument("--split", default="test", choices=["test", "val"], help="val: for tuning the recipe")
    parser.add_argument("--train-flag", action="append", default=[], help="extra mlcnn train flag (tuning)")
    parser.add_argument("--replay", type=int, default=0, metavar="N",
                        help=f"also train every k on N seeded {OLD_STYLE}-train scenes (the panel's other library)")
    parser.add_argument("--skip-cat", action="store_true")
    parser.add_argument("--skip-curve", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="finetune", help="report file stem")
    parser.add_argument("--cat-model", help="start of the new-label experiment (default: --model)")
    parser.add_argument("--parallel", type=int, default=1, help="evaluations (and the two experiments) at once")
    args = parser.parse_args(argv)
    t_all = time.perf_counter()
    data, work, model = Path(args.data), Path(args.work), Path(args.model).resolve()
    cat_model = Path(args.cat_model).resolve() if args.cat_model else model
    work.mkdir(parents=True, exist_ok=True)
    flags = [f for flag in args.train_flag for f in flag.split("=", 1)]
    timings: dict[str, float] = {}
    results: dict = {
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/finetune_curve.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "base_model": relative(str(model)),
        "split": args.split,
        "eval_images": args.eval_images,
        "train_flags": flags,
        "ks": args.ks,
        "new_style": args.new_style,
        "about": args.about,
        "replay": args.replay,
    }
    styles = (args.new_style, OLD_STYLE)
    new_name = STYLE_NAMES[args.new_style]
    eval_sets = {}
    for style in styles:
        set_dir = data / f"{style}-{args.split}"
        eval_sets[style] = write_manifest(
            work / f"eval-{style}-{args.split}-{args.eval_images}.jsonl",
            set_dir,
            read_truth(set_dir)[: args.eval_images],
        )

    pool = ThreadPoolExecutor(max_workers=max(1, args.parallel))

    def measure(name: str, m: Path) -> dict:
        jobs = [pool.submit(evaluate, m, eval_sets[s], work / f"{name}-{s}-{args.split}.json") for s in styles]
        row = {s: job.result() for s, job in zip(styles, jobs, strict=True)}
        timings[f"evaluate {name}"] = sum(row[s]["seconds"] for s in styles)
        print(
            f"  {name}: {new_name} accuracy {row[args.new_style]['accuracy']:.3f} "
            f"mAP {row[args.new_style]['mAP']:.3f}; "
            f"Noto accuracy {row['noto']['accuracy']:.3f} mAP {row['noto']['mAP']:.3f}",
            flush=True,
        )
        return row

    def k_curve() -> list[dict]:
        new_dir = data / f"{args.new_style}-train"
        subsets = nested_subsets(read_truth(new_dir), args.ks, args.seed)
        replay = []
        if args.replay:
            old_dir = data / f"{OLD_STYLE}-train"
            old_rows = nested_subsets(read_truth(old_dir), [args.replay], args.seed)[args.replay]
            replay = [write_manifest(work / f"{OLD_STYLE}-replay{args.replay}.jsonl", old_dir, old_rows)]
        rows = []
        for k in args.ks:
            print(f"k = {k}", flush=True)
            manifest = write_manifest(work / f"{args.new_style}-k{k}.jsonl", new_dir, subsets[k])
            out = work / f"k{k}.safetensors"
            train = fine_tune(model, [manifest, *replay], out, flags)
            timings[f"fine-tune k={k}"] = train["seconds"]
            rows.append({"k": k, "train": train, **measure(f"k{k}", out)})
        return rows

    def new_label() -> dict:
        print("new label: cat", flush=True)
        t0 = time.perf_counter()
        sets = build_cat_sets(data.parent / "emoji-cat", glyph_cache=data, seed=args.seed)
        timings["build cat scenes"] = time.perf_counter() - t0
        held_out = sets[f"cat-{args.split}"]
        noto_dir = data / f"noto-{args.split}"
        # Noto scenes showing a cat are tagged `cat` too: a model that learnt it is right to say so
        noto_rows = [with_cat_tag(r) for r in read_truth(noto_dir)[: args.eval_images]]
        noto_cat = write_manifest(work / f"eval-noto-{args.split}-{args.eval_images}-cat.jsonl", noto_dir, noto_rows)
        variants = {}
        for name, (how, extra) in CAT_VARIANTS.items():
            out = work / f"{name}.safetensors"
            train = fine_tune(cat_model, [sets["cat-train"]], out, flags + list(extra))
            timings[f"fine-tune {name}"] = train["seconds"]
            cat_job = pool.submit(evaluate, out, held_out, work / f"{name}-cat-{args.split}.json", True)
            noto_after = evaluate(out, noto_cat, work / f"{name}-noto-{args.split}-cat.json", True)
            cat_eval = cat_job.result()
            timings[f"evaluate {name}"] = cat_eval["seconds"] + noto_after["seconds"]
            per = cat_eval["per_label"].get(CAT_LABEL, {})
            print(f"  {name}: cat precision {per.get('precision', 0):.3f} recall {per.get('recall', 0):.3f} "
                  f"(support {per.get('support')}); Noto accuracy {base['noto']['accuracy']:.3f} → "
                  f"{noto_after['accuracy']:.3f}", flush=True)
            variants[name] = {
                "how": how, "train": train, "cat": per, "cat_eval_command": cat_eval["command"],
                "all": {k: cat_eval[k] for k in ("precision", "recall", "accuracy", "mAP", "images")},
                "noto_after": {k: v for k, v in noto_after.items() if k != "per_label"},
                "cat_on_noto": noto_after["per_label"].get(CAT_LABEL, {}),
            }
        # the default model read with each per-position pruning (predict.py, keep_ratio): a tag that
        # covers the same drawing as a known label can only win positions when both are kept
        default = work / f"{next(iter(CAT_VARIANTS))}.safetensors"
        by_pruning = {}
        for ratio in KEEP_RATIOS:
            r = evaluate(default, held_out, work / f"cat-{args.split}-keep{ratio}.json", True, ("--keep-ratio", ratio))
            timings[f"evaluate cat keep {ratio}"] = r["seconds"]
            by_pruning[ratio] = {"cat": r["per_label"].get(CAT_LABEL, {}), "command": r["command"],
                                 **{k: r[k] for k in ("precision", "recall", "accuracy", "mAP")}}
        return {
            "label": CAT_LABEL,
            "folder": str(sets["cat-train"].parent.relative_to(REPO)),
            "held_out": held_out.name,
            "train_with_cat": CAT_SETS["cat-train"][0],
            "train_without": CAT_SETS["cat-train"][1],
            "test_with_cat": CAT_SETS[held_out.name][0],
            "test_without": CAT_SETS[held_out.name][1],
            "model": relative(str(cat_model)),
            "noto_before": base["noto"],
            "noto_with_cat": sum(CAT_LABEL in r["labels"] for r in noto_rows),
            "variants": variants,
            "by_pruning": by_pruning,
        }

    print(f"k = 0: {model}", flush=True)
    base = measure("k0", model)
    # The curve and the new-label experiment are independent: with --parallel 2 they run side by side.
    experiments = ThreadPoolExecutor(max_workers=2 if args.parallel > 1 else 1)
    curve_job = experiments.submit(k_curve) if not args.skip_curve else None
    cat_job = experiments.submit(new_label) if not args.skip_cat else None
    results["curve"] = [{"k": 0, **base}] + (curve_job.result() if curve_job else [])
    if cat_job:
        try:
            results["new_label"] = cat_job.result()
        except RuntimeError as e:
            print(f"new label: {e}", file=sys.stderr)
            results["new_label_error"] = str(e)[-1500:]
    results["timings"] = {k: round(v, 1) for k, v in timings.items()}
    results["total_seconds"] = round(time.perf_counter() - t_all, 1)
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(results, out_dir / f"{args.name}.md", out_dir / f"{args.name}.json")
    print(f"total {results['total_seconds'] / 60:.1f} min; wrote {out_dir / (args.name + '.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
