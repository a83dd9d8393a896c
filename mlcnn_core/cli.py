"""The `mlcnn` command line: train, predict, evaluate, tag, info.

Other tools (the GUI's training panel, scripts) depend on these flags, the JSON written and the
exit codes; change them only compatibly.

Exit codes: 0 everything was done; 1 the command ran but something failed (an image that cannot be
read, a sidecar that cannot be written, training that diverged); 2 the command was refused before
any work (a bad option or value, a model file, folder or dataset that cannot be used).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

from . import __version__
from .openmp import wait_passively
from .recipes import RECIPES, TrainConfig

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
SIDECAR_FORMATS = ("txt", "xmp")


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"mlcnn: error: {message}", file=sys.stderr)
    return code


# --- option values, checked by argparse before any work --------------------------------------

def _number(kind, low=None, high=None, low_open=False, what="a number"):
    """An argparse ``type``: ``kind`` (int or float), finite, within [low, high] (``low_open``:
    above ``low``), so that a bad value is refused before a model loads or a file is touched."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: give {what}")
        if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r}: give {what}")
        return value
    return parse


COUNT = _number(int, 1, what="a whole number, 1 or more")
COUNT_OR_ZERO = _number(int, 0, what="a whole number, 0 or more")
POSITIVE = _number(float, 0, low_open=True, what="a number above 0")
NON_NEGATIVE = _number(float, 0, what="a number, 0 or more")
FRACTION = _number(float, 0, 1, low_open=True, what="a number above 0 and at most 1")
HELD_OUT = _number(float, 0, 0.9, what="a fraction from 0 to 0.9")


def _short_side(text: str) -> int:
    from .card import MAX_SHORT_SIDE, MIN_SHORT_SIDE

    return _number(int, MIN_SHORT_SIDE, MAX_SHORT_SIDE,
                   what=f"a whole number of pixels from {MIN_SHORT_SIDE} to {MAX_SHORT_SIDE}")(text)


def _sidecar_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    if formats == ["none"]:
        return []
    unknown = [f for f in formats if f not in SIDECAR_FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"{text!r}: give txt, xmp, txt,xmp or none")
    return list(dict.fromkeys(formats))


def _tag_list(text: str) -> list[str]:
    from .tag_rules import parse_tag_list

    tags = list(parse_tag_list(text))
    if not tags:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more comma-separated tags")
    return tags


def _tag_rules(args: argparse.Namespace):
    """The proposal and caption rules of ``predict`` and ``tag`` (tag_rules.py), as the app applies them."""
    from .tag_rules import TagRules

    return TagRules(min_confidence=args.min_confidence, exclude=[t for group in args.exclude for t in group],
                    max_tags=args.max_tags, prefix=getattr(args, "prefix", None) or (),
                    word_separator=getattr(args, "word_separator", "keep"))


def _proposals(rules, predictor, result) -> dict[str, float]:
    """Apply ``rules`` to a prediction's labels in place (the card's threshold, or the person's), as
    the app's predictor worker does; returns the confidences in [0, 1] that the rules saw and the
    library stores (tag_rules.display_confidences)."""
    from .tag_rules import display_confidences

    confidences = display_confidences(result.confidences, predictor.config.rescore is not None)
    result.labels = rules.choose(result.labels, confidences)
    return confidences


def _model_path(arg: str | None) -> Path:
    from .modelfile import ModelFileError, starter_model_path

    if arg:
        return Path(arg)
    starter = starter_model_path()
    if starter is None:
        raise ModelFileError("no --model given and no starter model is installed "
                             "(resources/models/starter.safetensors)")
    return starter


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainingDiverged, train

    if args.epochs == 0 and not args.init:
        return _fail(f"--epochs {args.epochs}: give 1 or more (0 only with --init: fit new labels, train nothing)")
    if args.short_side_range:
        from .data import MIN_TRAIN_SIDE

        lo, hi = args.short_side_range
        if not MIN_TRAIN_SIDE <= lo <= hi:
            return _fail(f"--short-side-range {lo} {hi}: give LO <= HI, LO at least {MIN_TRAIN_SIDE} pixels")
    if Path(args.out).is_dir():
        return _fail(f"--out {args.out} is a folder; give the model file to write")
    cfg = train_config(args)
    try:
        train(cfg)
    except TrainingDiverged as e:
        return _fail(str(e), EXIT_FAILED)
    return EXIT_OK


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run ``mlcnn train``'s parsed flags describe: the inverse of ``TrainConfig.to_argv``."""
    return TrainConfig(data=args.data, out=args.out, arch=args.arch, init=args.init, recipe=args.recipe,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_max=args.lr_max,
                       val_fraction=args.val_fraction, val_data=args.val_data, device=args.device,
                       bf16=False if args.no_bf16 else None, workers=args.workers, patience=args.patience,
                       norm_stats=args.norm_stats, anchor=args.anchor, learns=args.learn,
                       distill=args.distill,
                       threshold=args.threshold, seed=args.seed, resume=args.resume, events=args.events,
                       max_steps=args.max_steps, time_budget_min=args.time_budget, new_labels=args.new_labels,
                       replay=args.replay, replay_weight=args.replay_weight,
                       short_sides=tuple(args.short_side_range) if args.short_side_range else None,
                       name=args.name)


def _expand(paths: list[str]) -> list[Path]:
    """Folders replaced by the images under them; any other path is kept (one that cannot be read
    is reported as an error line, like any unreadable file)."""
    from .data import find_images

    out: list[Path] = []
    for p in map(Path, paths):
        out += find_images(p) if p.is_dir() else [p]
    return out


def _load_for_prediction(args: argparse.Namespace):
    """The model named by ``--model`` (else the starter), with ``--single-pass``, ``--summed``,
    ``--keep-ratio`` and ``--short-side`` applied to its card."""
    from .card import PredictConfig, card_reading
    from .modelfile import load_model

    model = load_model(_model_path(args.model))
    try:
        model.card = card_reading(model.card, summed=args.summed, single_pass=args.single_pass)
    except ValueError as e:
        raise SystemExit(f"mlcnn: {args.model or 'the starter'}: {e}") from None
    prediction = dict(model.card["prediction"])
    if args.keep_ratio is not None:
        prediction["keep_ratio"] = args.keep_ratio
    if args.short_side is not None:
        prediction["short_side"] = args.short_side
    model.card["prediction"] = PredictConfig.from_dict(prediction).to_dict()
    return model


_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def _output_problem(output: str, inputs: list[str]) -> str | None:
    """Why ``predict --output`` must not be written (it would destroy an image), or None."""
    from .sidecars import IMAGE_EXTENSIONS

    out = Path(output)
    if out.suffix.lower() in IMAGE_EXTENSIONS:
        return f"--output {output} is named like an image; give a .jsonl file"
    if out.is_dir():
        return f"--output {output} is a folder; give a .jsonl file"
    if not out.parent.is_dir():
        return f"--output {output}: no folder {out.parent}"
    if not out.exists():
        return None
    if any(Path(p).exists() and os.path.samefile(p, out) for p in inputs):
        return f"--output {output} is one of the images to predict"
    try:
        with open(out, "rb") as f:
            head = f.read(12)
    except OSError as e:
        return f"--output {output}: {e.strerror or e}"
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return f"--output {output} is an image; give a .jsonl file"
    return None


def _json_line(row: dict) -> str:
    """One JSON line; a file name that is not valid UTF-8 (held as surrogate escapes) is written
    with ``\\udcXX`` escapes, which JSON readers accept and Python turns back into the same bytes."""
    return json.dumps(row, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8") + "\n"


def cmd_replay(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load_samples
    from .modelfile import load_model
    from .replay import make_replay, replay_path_for, save_replay

    model = load_model(args.model)
    samples = load_samples(args.data)
    if args.images:
        order = np.random.default_rng(args.seed).permutation(len(samples))[:args.images]
        samples = [samples[i] for i in sorted(order)]
    replay = make_replay(model, samples, seed=args.seed)
    out = save_replay(replay, args.out or replay_path_for(args.model))
    print(f"{out}: {len(replay.features)} crops of {len(samples)} images, "
          f"{out.stat().st_size / 1e6:.1f} MB")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import Predictor

    if args.output and (problem := _output_problem(args.output, args.paths)):
        return _fail(problem)
    rules = _tag_rules(args)
    model = _load_for_prediction(args)
    predictor = Predictor(model, device=args.device, bf16=False if args.no_bf16 else None)
    failed = 0
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for path, result in predictor.predict_files(_expand(args.paths), batch_size=args.batch_size):
            if isinstance(result, Exception):
                failed += 1
                row = {"image": str(path), "error": str(result)}
            else:
                _proposals(rules, predictor, result)
                row = result.to_json(path)
            out.write(_json_line(row))
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    if failed:
        print(f"mlcnn: {failed} image{'s' * (failed != 1)} could not be read (their lines have an \"error\")",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_samples, split_samples
    from .evaluate import evaluate

    model = _load_for_prediction(args)
    samples = load_samples(args.data)
    if args.split != "all":
        train, held_out = split_samples(samples, args.val_fraction)
        samples = held_out if args.split == "val" else train
    result = evaluate(model, samples, device=args.device, bf16=False if args.no_bf16 else None,
                      baseline=not args.no_baseline, per_label=args.per_label)
    result["model"] = str(model.path)
    result["data"] = args.data
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    passes = result["single_pass"]["passes"]
    method = "single pass" if len(passes) == 1 else " + ".join(f"{px}" for px in passes) + " px"
    rows = [(method, result["single_pass"])]
    if "ten_crop" in result:
        rows.append(("10-crop baseline", result["ten_crop"]))
    print(f"{result['images']} images, {result['labels']} labels, device {result['device']}, bf16 {result['bf16']}")
    print(f"{'method':<18}{'precision':>10}{'recall':>8}{'accuracy':>10}{'mAP':>7}{'GFLOPs':>9}{'ms/img':>8}")
    for name, r in rows:
        print(f"{name:<18}{r['precision']:>10.3f}{r['recall']:>8.3f}{r['accuracy']:>10.3f}{r['mAP']:>7.3f}"
              f"{r['cost']['gflops_per_image']:>9.2f}{r['cost']['ms_per_image']:>8.1f}")
    if "cost_ratio" in result:
        print(f"10-crop / {rows[0][0]} cost: {result['cost_ratio']['flops']:.2f}× FLOPs, "
              f"{result['cost_ratio']['time']:.2f}× time")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    """The GUI's Tag ▸ untagged/all, headless: predict, record machine tags in the folder's library,
    and bring sidecars up to date with what a person confirmed; the model's proposals go to sidecars
    only with ``--write-predictions``. A caption the person did not ask to change never changes."""
    from .library import Library, ModelInfo
    from .predict import Predictor
    from .sidecars import SidecarError, existing_txt_sidecar, find_stem_collisions, plan_txt_paths

    formats = args.write
    if args.write_predictions and not formats:
        return _fail("--write-predictions needs --write txt, xmp or txt,xmp")
    if args.prefix and "txt" not in formats:
        return _fail("--prefix leads .txt captions: it needs --write txt (or txt,xmp)")
    if args.word_separator != "keep" and not formats:
        return _fail(f"--word-separator {args.word_separator} applies to written captions: it needs --write")
    rules = _tag_rules(args)
    library = Library.open(args.folder)
    if library.notice:
        print(f"mlcnn: {library.notice}", file=sys.stderr)
    skipped = library.scan().skipped
    for name in skipped:
        print(f"mlcnn: {os.fsencode(name).decode('utf-8', 'backslashreplace')}: skipped, its name is not UTF-8 "
              "text (rename it to tag it)", file=sys.stderr)
    for problem in library.import_sidecars(as_confirmed=args.sidecars_confirmed):
        print(f"mlcnn: {problem}", file=sys.stderr)
    for problem in library.import_embedded_keywords(as_confirmed=args.sidecars_confirmed).messages:
        print(f"mlcnn: {problem}", file=sys.stderr)
    images = {library.abspath(r.path): r for r in library.images()}
    if args.only == "all":
        records = list(images.values())
    else:  # untagged: no tag in the library (nor in sidecars or embedded keywords) and no caption file,
        # even one that could not be read
        tagged = library.tags_by_image()
        collided = {p for group in find_stem_collisions(images) for p in group}
        records = [r for path, r in images.items() if r.status == "untagged" and r.id not in tagged
                   and existing_txt_sidecar(path, path in collided) is None]
    model = _load_for_prediction(args)
    predictor = Predictor(model, device=args.device, bf16=False if args.no_bf16 else None)
    info = ModelInfo.for_model(model)
    txt_paths = plan_txt_paths(images, args.naming) if "txt" in formats else {}
    by_path = {library.abspath(r.path): r for r in records}
    done = failed = unwritten = 0
    written: set[int] = set()
    write_failed: set[int] = set()

    def write(path: Path, image_id: int, content: str) -> None:
        try:  # the GUI's library worker writes through the same Library.write_sidecars
            _files, notes = library.write_sidecars(image_id, content=content, formats=formats,
                                                   txt_path=txt_paths.get(path), policy=args.policy, rules=rules)
            for note in notes:
                print(f"mlcnn: {note}", file=sys.stderr)
            written.add(image_id)
        except SidecarError as e:
            write_failed.add(image_id)
            print(f"mlcnn: {e} (kept in the library)", file=sys.stderr)

    for path, result in predictor.predict_files(list(by_path), batch_size=args.batch_size):
        record = by_path[path]
        if isinstance(result, Exception):
            print(f"mlcnn: {result}", file=sys.stderr)
            sys.stdout.write(_json_line({"image": str(path), "error": str(result)}))
            failed += 1
            continue
        confidences = _proposals(rules, predictor, result)
        status = library.store_prediction(record.id, result.labels, confidences, info)
        done += 1
        sys.stdout.write(_json_line(result.to_json(path)))
        sys.stdout.flush()
        if status == "predicted" and formats:
            if args.write_predictions:
                write(path, record.id, "machine")
            else:
                unwritten += 1
    if formats:  # what a person confirmed (in the app) and is not yet in the sidecars
        for image_id, _error in library.pending_sidecars():
            record = library.image(image_id)
            if record.status == "confirmed" and image_id not in written | write_failed:
                write(library.abspath(record.path), image_id, "human")
    print(f"mlcnn: tagged {done} images, {failed} unreadable; sidecars written for {len(written)}, "
          f"failed for {len(write_failed)}; library {library.db_path}", file=sys.stderr)
    if unwritten:
        print(f"mlcnn: the proposals for {unwritten} unreviewed images are in the library only: confirm them in "
              "the app, or add --write-predictions to write them to sidecars as they are", file=sys.stderr)
    library.close()
    return EXIT_FAILED if failed or write_failed or skipped else EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from .modelfile import read_card

    card = read_card(_model_path(args.model))
    if not args.full:
        card = {k: v for k, v in card.items() if k not in ("threshold", "baseline_threshold")}
        if "provenance" in card:
            card["provenance"] = {k: v for k, v in card["provenance"].items() if k != "history"}
    print(json.dumps(card, indent=2, ensure_ascii=False))
    return 0


_EXAMPLES = """\
examples:
  mlcnn predict ~/art --output tags.jsonl         tags of every image under ~/art, one JSON line each
  mlcnn tag ~/dataset                             propose tags for images without tags or captions
  mlcnn tag ~/dataset --write txt --write-predictions
                                                  ... and write them as .txt captions (kohya, taggui)
  mlcnn train --data ~/dataset --init base.safetensors --out mine.safetensors
                                                  teach a model your tags (.txt captions)
  mlcnn info mine.safetensors                     what a model knows and how it was trained

exit status: 0 all done; 1 ran, but some images or sidecars failed (each is named on stderr) or
training diverged; 2 refused before doing anything (bad option, model, folder or data).
"""

_PREDICT_EPILOG = """\
Each output line is a JSON object:
  {"image": PATH, "labels": [TAG, ...], "confidences": {TAG: SCORE, ...}, "peaks": {TAG: [X, Y], ...}}
or, for a file that cannot be read, {"image": PATH, "error": MESSAGE} (the run goes on, exit status 1).

examples:
  mlcnn predict photo.jpg
  mlcnn predict ~/art --output tags.jsonl
  mlcnn predict ~/art | jq -r '.image + ": " + (.labels | join(", "))'
"""

_TAG_EPILOG = """\
The folder's state (the model's proposals, which tags a person confirmed) is kept in
FOLDER/.mlcnn-tagger/library.sqlite, the same library the app opens.

Which images get proposals: by default only images with no tags at all, neither in the library
nor in a caption file (.txt), an XMP sidecar or the keywords embedded in the image (XMP, IPTC);
--only all proposes tags for every image (a person's decisions are kept, confirmed images get
none). Each image's proposals are printed as `mlcnn predict` prints them (see its --help).

What is written with --write: the tags of images a person confirmed in the app. The model's
proposals are written only with --write-predictions, and they are recorded as the model's, so a
later run never takes them for a person's captions. With --policy merge (the default) new tags are
added after a file's existing ones; replace makes the file hold exactly the image's tags.

examples:
  mlcnn tag ~/dataset                                     proposals into the library only
  mlcnn tag ~/dataset --write txt                         write the captions confirmed in the app
  mlcnn tag ~/dataset --write txt,xmp --write-predictions caption the untagged images as proposed
  mlcnn tag ~/dataset --write txt --write-predictions --prefix ohwx --min-confidence 0.6 \
      --exclude "text,watermark" --max-tags 12 --word-separator space
                                                          kohya captions: trigger word first, fewer tags
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlcnn", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EXAMPLES,
        description="Tag artwork with a multi-label CNN (Vallet & Sakamoto 2015): predict tags, write them to "
                    ".txt/XMP captions, and teach the model your own tags.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def device_flags(p):
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where the network runs (default: auto, a CUDA GPU when there is one)")
        p.add_argument("--no-bf16", action="store_true", help="run in float32 even where bf16 is supported")

    def batch_flag(p):
        p.add_argument("--batch-size", type=COUNT, default=8, metavar="N",
                       help="images read and predicted together (default: 8)")

    def proposal_flags(p):
        p.add_argument("--min-confidence", type=_number(float, 0, 1, what="a number from 0 to 1"), metavar="P",
                       help="propose a tag when its confidence is at least P, instead of the model's own threshold "
                            "(the starter's confidences are probabilities; for a model read as the summed vector, "
                            "a tag's share of the image's evidence)")
        p.add_argument("--exclude", type=_tag_list, action="append", default=[], metavar="TAGS",
                       help="comma-separated tags never proposed nor written (* matches any text, ? one character; "
                            "case, _ against space and how many join two words do not matter); repeatable")
        p.add_argument("--max-tags", type=COUNT, metavar="N",
                       help="propose at most N tags per image, the most confident (a person's tags are never cut)")

    def reading_flags(p):
        p.add_argument("--keep-ratio", type=FRACTION, metavar="R",
                       help="per-position pruning: keep labels within R of the best (1 = the paper's, best "
                            "label only); default: the model card's. The card's threshold was fitted for its own R")
        p.add_argument("--summed", action="store_true",
                       help="choose labels from the paper's summed vector of one pass with its own threshold, "
                            "not the card's rescored one (rescore.py)")
        p.add_argument("--single-pass", action="store_true",
                       help="for a card that reads each image twice (a second, smaller pass), read it once, "
                            "with the card's one-pass rescoring and threshold (faster, a little less accurate)")
        p.add_argument("--short-side", type=_short_side, metavar="PX",
                       help="resize each image so that its shorter side is PX pixels before the (first) pass "
                            "(64-2048); default: the model card's (256 for a new model). The card's threshold "
                            "was fitted at its own size")

    defaults = TrainConfig(data=[], out="")  # the flags' defaults are the config's
    t = sub.add_parser("train", help="train a model, or fine-tune one with --init",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  mlcnn train --data ~/dataset --init base.safetensors --out mine.safetensors\n"
                              "  mlcnn train --data train.jsonl --val-data val.jsonl --out new.safetensors\n")
    t.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="folder of images with .txt captions, or a JSONL manifest of "
                        "{\"image\": PATH, \"labels\": [...]}; repeatable")
    t.add_argument("--out", required=True, metavar="MODEL.safetensors",
                   help="the model file to write (replaced only by a complete, finite model)")
    t.add_argument("--arch", default=defaults.arch, choices=["compact", "paper", "nin", "tiny"],
                   help="network for a new model (default: compact)")
    t.add_argument("--init", metavar="MODEL", help="fine-tune from this model (new labels are added)")
    t.add_argument("--recipe", default=defaults.recipe, choices=sorted(RECIPES))
    t.add_argument("--epochs", type=COUNT_OR_ZERO,
                   help="passes over the data (default: the recipe's; with --init, 0 only "
                        "fits the new labels' rows and measures the result)")
    t.add_argument("--batch-size", type=COUNT, metavar="N")
    t.add_argument("--lr", type=POSITIVE, metavar="A0", help="α0 (paper recipe) or peak rate (default recipe)")
    t.add_argument("--lr-max", type=POSITIVE, metavar="AMAX", help="α_max of the paper's optimiser")
    t.add_argument("--val-fraction", type=HELD_OUT, default=defaults.val_fraction, metavar="F",
                   help="held-out part of the data (deterministic by file name), never trained on "
                        f"(default: {defaults.val_fraction})")
    t.add_argument("--val-data", action="append", metavar="PATH", help="separate validation data instead")
    t.add_argument("--patience", type=COUNT_OR_ZERO, metavar="N",
                   help="early stopping after N epochs without improvement (0: off)")
    t.add_argument("--norm-stats", choices=["update", "frozen"],
                   help="batch norm running statistics while training (default: frozen for --init, else update)")
    t.add_argument("--anchor", type=NON_NEGATIVE, metavar="S",
                   help="with --init: pull the weights toward that model's, S per unit of learning rate (L2-SP; "
                        "default 100, 2500 with --learn all; rate × S is capped at 1, so a higher --lr needs a "
                        "lower S)")
    t.add_argument("--learn", choices=["all", "block", "head", "last"],
                   help="with --init, what moves: every weight, the head and the trunk's last block, the head, or "
                        "its last layer; the frozen part's maps are computed once (default: head)")
    t.add_argument("--distill", type=NON_NEGATIVE, metavar="W",
                   help="with --init and --learn head/block/last: weight of the --init model's own outputs on the "
                        "training images (LwF over every label: the old labels keep their share of each position)")
    t.add_argument("--threshold", default=defaults.threshold, choices=["auto", "linear", "global"],
                   help="auto: a fine-tune keeps its parent's kind; else linear with ≥ 200 held-out images")
    t.add_argument("--new-labels", choices=["auto", "fit", "train", "cut"], default=defaults.new_labels,
                   help="with --init, labels the model lacks: fit: their output rows are fitted to the test form "
                        "of the training images before and after the fine-tune (positions without the label are "
                        "negatives); train: learnt by the fine-tune alone, in the training form; cut: learnt so, "
                        "each with a cut of its own placed by 3-fold cross-validation of the fine-tune (not with "
                        "--learn all); auto: fit when most images with a new label also carry labels the model "
                        "knew, else train")
    t.add_argument("--replay", default=defaults.replay, metavar="FILE|auto|none",
                   help="with --init and --learn head/last: crops of the model's own training scenes replayed in "
                        "each step, so a folder tagged only with new words does not wipe the labels it knew "
                        "(auto: the --init model's NAME.replay.safetensors, when there is one)")
    t.add_argument("--replay-weight", type=NON_NEGATIVE, default=defaults.replay_weight, metavar="W",
                   help="weight of the replayed crops' loss against the person's images' (default %(default)s)")
    t.add_argument("--short-side-range", type=int, nargs=2, metavar=("LO", "HI"),
                   help="scale augmentation: each batch resizes its images so their shorter side is a random "
                        "size in [LO, HI] (log-uniform), then crops min(size, 256) square: below 256 whole scenes "
                        "drawn smaller, above it zoomed crops (default: 256 for every batch, the paper's)")
    t.add_argument("--workers", type=COUNT_OR_ZERO, metavar="N", help="data-loading processes")
    t.add_argument("--seed", type=int, default=defaults.seed)
    t.add_argument("--name", help="the model's name in its card (default: kept from --init, else empty)")
    t.add_argument("--max-steps", type=COUNT, help=argparse.SUPPRESS)
    t.add_argument("--time-budget", type=POSITIVE, metavar="MIN",
                   help="train fewer epochs when the planned ones would take longer than MIN minutes "
                        "(planned again after every epoch from the median epoch time; the schedule is fitted "
                        "to the epochs that fit)")
    t.add_argument("--events", metavar="FILE|-",
                   help="JSON lines of progress (- for stdout; FILE is started afresh unless --resume)")
    t.add_argument("--resume", action="store_true", help="continue from OUT.ckpt/last.safetensors")
    device_flags(t)
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict tags of images (files or folders), one JSON line each",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_PREDICT_EPILOG)
    p.add_argument("--model", help="model file (default: the starter model)")
    p.add_argument("--output", metavar="FILE.jsonl", help="write the lines to FILE instead of the screen")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders (searched recursively)")
    batch_flag(p)
    device_flags(p)
    proposal_flags(p)
    reading_flags(p)
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="precision, recall, accuracy, mAP: single pass vs 10-crop baseline")
    e.add_argument("--model", help="model file (default: the starter model)")
    e.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="folder of images with .txt captions, or a JSONL manifest; repeatable")
    e.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    e.add_argument("--split", default="all", choices=["all", "val", "train"],
                   help="evaluate only the held-out (val) or training part of --data")
    e.add_argument("--val-fraction", type=HELD_OUT, default=0.1, metavar="F")
    e.add_argument("--no-baseline", action="store_true")
    e.add_argument("--per-label", action="store_true")
    device_flags(e)
    reading_flags(e)
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("tag", help="propose tags for a folder (as the app does), and write captions on request",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_TAG_EPILOG)
    g.add_argument("folder", help="folder of images (searched recursively)")
    g.add_argument("--model", help="model file (default: the starter model)")
    g.add_argument("--only", default="untagged", choices=["untagged", "all"],
                   help="untagged (default): images with no tags (in the library, a caption file or keywords "
                        "embedded in the image); all: every image")
    g.add_argument("--write", type=_sidecar_formats, default=[], metavar="txt,xmp|none",
                   help="caption formats to write (default: none): the tags of confirmed images, "
                        "and with --write-predictions the model's proposals")
    g.add_argument("--write-predictions", action="store_true",
                   help="also write the model's proposals for unreviewed images (recorded as the model's)")
    g.add_argument("--naming", default="auto", choices=["auto", "stem", "full"],
                   help=".txt naming: image.txt, image.ext.txt, or auto (image.ext.txt only where stems collide)")
    g.add_argument("--policy", default="merge", choices=["merge", "replace"],
                   help="merge (default): add to a file's existing tags; replace: the file holds the image's tags")
    g.add_argument("--sidecars-confirmed", action="store_true",
                   help="treat tags found in existing captions and keywords embedded in the images as "
                        "confirmed by a person")
    g.add_argument("--prefix", type=_tag_list, metavar="TAGS",
                   help="comma-separated tags written first in every .txt caption, in this order: a trigger word "
                        "for kohya's --keep_tokens (moved to the front where a caption already has it)")
    g.add_argument("--word-separator", default="keep", choices=["keep", "space", "underscore"],
                   help="in written tags: space writes long_hair as long hair, underscore the reverse "
                        "(kaomoji such as ^_^ are kept); default: keep")
    batch_flag(g)
    device_flags(g)
    proposal_flags(g)
    reading_flags(g)
    g.set_defaults(func=cmd_tag)

    r = sub.add_parser("replay", help="make a model's replay set: crops of its own training scenes, which a "
                                      "fine-tune of the head replays so that it keeps the labels it knew")
    r.add_argument("--model", required=True, help="the model file")
    r.add_argument("--data", action="append", required=True, help="the model's training data (folder or .jsonl)")
    r.add_argument("--images", type=COUNT, help="a seeded random choice of this many images (default: all)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="default: the model's NAME.replay.safetensors, where fine-tunes look for it")
    r.set_defaults(func=cmd_replay)

    i = sub.add_parser("info", help="print a model's card")
    i.add_argument("model", nargs="?", help="model file (default: the starter model)")
    i.add_argument("--full", action="store_true", help="include thresholds and the training history")
    i.set_defaults(func=cmd_info)
    return parser


def _show_card_warnings(show):
    """``warnings.showwarning`` that writes a model card's warning as the command's own line."""
    from .modelfile import CardWarning

    def shown(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CardWarning):
            print(f"mlcnn: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return shown


def main(argv: list[str] | None = None) -> int:
    wait_passively()
    from .data import DatasetError
    from .library import LibraryError
    from .modelfile import ModelFileError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2), already explained by argparse
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    with warnings.catch_warnings():
        warnings.showwarning = _show_card_warnings(warnings.showwarning)
        try:
            return args.func(args)
        except (ModelFileError, DatasetError, LibraryError, FileNotFoundError, ValueError) as e:
            return _fail(str(e))
        except RuntimeError as e:  # e.g. --device cuda without one, or torch running out of memory
            return _fail(str(e), EXIT_FAILED)
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # e.g. `mlcnn predict ... | head`: the reader has gone, nothing to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0


if __name__ == "__main__":
    sys.exit(main())
