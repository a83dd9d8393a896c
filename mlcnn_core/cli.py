"""The `mlcnn` command line: train, predict, evaluate, tag, info.

Other tools (the GUI's training panel, scripts) depend on these flags and on the JSON written;
change them only compatibly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(f"mlcnn: error: {message}", file=sys.stderr)
    return EXIT_USAGE


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
    from .train import TrainConfig, train

    if args.anchor is not None and args.anchor < 0:
        return _fail(f"--anchor {args.anchor:g}: the pull toward the --init model is a strength, 0 or more")
    if args.epochs is not None and (args.epochs < 0 or (args.epochs == 0 and not args.init)):
        return _fail(f"--epochs {args.epochs}: give 1 or more (0 only with --init: fit new labels, train nothing)")
    if args.time_budget is not None and args.time_budget <= 0:
        return _fail(f"--time-budget {args.time_budget:g}: give the minutes training may take, more than 0")
    if args.short_side_range:
        from .data import MIN_TRAIN_SIDE

        lo, hi = args.short_side_range
        if not MIN_TRAIN_SIDE <= lo <= hi:
            return _fail(f"--short-side-range {lo} {hi}: give LO <= HI, LO at least {MIN_TRAIN_SIDE} pixels")
    cfg = TrainConfig(data=args.data, out=args.out, arch=args.arch, init=args.init, recipe=args.recipe,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_max=args.lr_max,
                      val_fraction=args.val_fraction, val_data=args.val_data, device=args.device,
                      bf16=False if args.no_bf16 else None, workers=args.workers, patience=args.patience,
                      norm_stats=args.norm_stats, anchor=args.anchor, learns=args.learn,
                      threshold=args.threshold, seed=args.seed, resume=args.resume, events=args.events,
                      max_steps=args.max_steps,
                      time_budget_s=args.time_budget * 60 if args.time_budget is not None else None,
                      new_labels=args.new_labels,
                      short_sides=tuple(args.short_side_range) if args.short_side_range else None,
                      extra_card={"name": args.name} if args.name else {})
    train(cfg)
    return 0


def _expand(paths: list[str]) -> list[Path]:
    from .data import IMAGE_EXTENSIONS, find_images

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += find_images(p)
        elif p.suffix.lower() in IMAGE_EXTENSIONS or p.exists():
            out.append(p)
        else:
            out.append(p)  # reported as an error line, like any unreadable file
    return out


def _load_for_prediction(args: argparse.Namespace):
    """The model named by ``--model`` (else the starter), with ``--single-pass``, ``--summed``,
    ``--keep-ratio`` and ``--short-side`` applied to its card."""
    from .modelfile import load_model
    from .predict import PredictConfig, card_reading

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


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import Predictor

    model = _load_for_prediction(args)
    predictor = Predictor(model, device=args.device, bf16=False if args.no_bf16 else None)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for path, result in predictor.predict_files(_expand(args.paths), batch_size=args.batch_size):
            row = {"image": str(path), "error": str(result)} if isinstance(result, Exception) else result.to_json(path)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


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
    optionally write the predictions to sidecars (marked in the library as machine-written)."""
    from .library import Library, ModelInfo
    from .predict import Predictor
    from .sidecars import SidecarError, plan_txt_paths, write_image_sidecars

    library = Library.open(args.folder)
    if library.fallback_reason:
        print(f"mlcnn: {library.fallback_reason}", file=sys.stderr)
    library.scan()
    for problem in library.import_sidecars(as_confirmed=args.sidecars_confirmed):
        print(f"mlcnn: {problem}", file=sys.stderr)
    records = library.images(None if args.only == "all" else ["untagged"])
    model = _load_for_prediction(args)
    predictor = Predictor(model, device=args.device, bf16=False if args.no_bf16 else None)
    info = ModelInfo.for_model(model)
    formats = [f for f in args.write.split(",") if f and f != "none"]
    txt_paths = plan_txt_paths([library.abspath(r.path) for r in library.images()], args.naming)
    by_path = {library.abspath(r.path): r for r in records}
    done = failed = 0
    for path, result in predictor.predict_files(list(by_path), batch_size=args.batch_size):
        record = by_path[path]
        if isinstance(result, Exception):
            print(f"mlcnn: {result}", file=sys.stderr)
            failed += 1
            continue
        library.store_prediction(record.id, result.labels, result.confidences, info)
        if formats:
            try:
                write_image_sidecars(path, library.positive_tags(record.id), formats=formats,
                                     txt_path=txt_paths.get(path), policy=args.policy)
                library.mark_sidecar_written(record.id, content="machine")
            except SidecarError as e:
                library.mark_sidecar_failed(record.id, str(e))
                print(f"mlcnn: {e} (kept in the library)", file=sys.stderr)
        done += 1
        print(json.dumps({"image": str(path), "labels": result.labels}, ensure_ascii=False), flush=True)
    print(f"mlcnn: tagged {done} images, {failed} unreadable; library {library.db_path}", file=sys.stderr)
    library.close()
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .modelfile import read_card

    card = read_card(_model_path(args.model))
    if not args.full:
        card = {k: v for k, v in card.items() if k not in ("threshold", "baseline_threshold")}
        if "provenance" in card:
            card["provenance"] = {k: v for k, v in card["provenance"].items() if k != "history"}
    print(json.dumps(card, indent=2, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlcnn", description="Multi-label CNN tagger (Vallet & Sakamoto 2015)")
    sub = parser.add_subparsers(dest="command", required=True)

    def device_flags(p):
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--no-bf16", action="store_true", help="run in float32 even where bf16 is supported")

    def reading_flags(p):
        p.add_argument("--keep-ratio", type=float, metavar="R",
                       help="per-position pruning: keep labels within R of the best (1 = the paper's, best "
                            "label only); default: the model card's. The card's threshold was fitted for its own R")
        p.add_argument("--summed", action="store_true",
                       help="choose labels from the paper's summed vector of one pass with its own threshold, "
                            "not the card's rescored one (rescore.py)")
        p.add_argument("--single-pass", action="store_true",
                       help="for a card that reads each image twice (a second, smaller pass), read it once, "
                            "with the card's one-pass rescoring and threshold (section 2.6's single pass)")
        p.add_argument("--short-side", type=int, metavar="PX",
                       help="resize each image so that its shorter side is PX pixels before the (first) pass "
                            "(64-2048); default: the model card's (256 for a new model). The card's threshold "
                            "was fitted at its own size")

    t = sub.add_parser("train", help="train a model, or fine-tune one with --init")
    t.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="folder of images with .txt sidecars, or a JSONL manifest; repeatable")
    t.add_argument("--out", required=True, metavar="MODEL.safetensors")
    t.add_argument("--arch", default="compact", choices=["compact", "paper", "nin", "tiny"])
    t.add_argument("--init", metavar="MODEL", help="fine-tune from this model (new labels are added)")
    t.add_argument("--recipe", default="default", choices=["default", "paper"])
    t.add_argument("--epochs", type=int, help="passes over the data (default: the recipe's; with --init, 0 only "
                                              "fits the new labels' rows and measures the result)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, metavar="A0", help="α0 (paper recipe) or peak rate (default recipe)")
    t.add_argument("--lr-max", type=float, metavar="AMAX", help="α_max of the paper's optimiser")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="held-out part of the data (deterministic by file name), never trained on")
    t.add_argument("--val-data", action="append", metavar="PATH", help="separate validation data instead")
    t.add_argument("--patience", type=int, help="early stopping after N epochs without improvement (0: off)")
    t.add_argument("--norm-stats", choices=["update", "frozen"],
                   help="batch norm running statistics while training (default: frozen for --init, else update)")
    t.add_argument("--anchor", type=float, metavar="S",
                   help="with --init: pull the weights toward that model's, S per unit of learning rate (L2-SP; "
                        "default 2500; rate × S is capped at 1, so a higher --lr needs a lower S)")
    t.add_argument("--learn", choices=["all", "block", "head", "last"],
                   help="with --init, what moves: every weight, the head and the trunk's last block, the head, or "
                        "its last layer; the frozen part's maps are computed once (default: the fine-tune recipe's)")
    t.add_argument("--threshold", default="auto", choices=["auto", "linear", "global"],
                   help="auto: a fine-tune keeps its parent's kind; else linear with ≥ 200 held-out images")
    t.add_argument("--new-labels", choices=["fit", "train"], default="fit",
                   help="with --init, labels the model lacks: fit: their output rows are fitted to the test form "
                        "of the training images before and after the fine-tune (positions without the label are "
                        "negatives); train: learnt by the fine-tune alone, in the training form")
    t.add_argument("--short-side-range", type=int, nargs=2, metavar=("LO", "HI"),
                   help="scale augmentation: each batch resizes its images so their shorter side is a random "
                        "size in [LO, HI] (log-uniform), then crops min(size, 256) square: below 256 whole scenes "
                        "drawn smaller, above it zoomed crops (default: 256 for every batch, the paper's)")
    t.add_argument("--workers", type=int, help="data-loading processes")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--name", help="the model's name in its card (default: kept from --init, else empty)")
    t.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)
    t.add_argument("--time-budget", type=float, metavar="MIN",
                   help="train fewer epochs when the planned ones would take longer than MIN minutes "
                        "(planned again after every epoch from the median epoch time; the schedule is fitted "
                        "to the epochs that fit)")
    t.add_argument("--events", metavar="FILE|-",
                   help="JSON lines of progress (- for stdout; FILE is started afresh unless --resume)")
    t.add_argument("--resume", action="store_true", help="continue from OUT.ckpt/last.safetensors")
    device_flags(t)
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict tags of images (files or folders), one JSON line each")
    p.add_argument("--model", help="model file (default: the starter model)")
    p.add_argument("--output", metavar="FILE.jsonl")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("paths", nargs="+", metavar="PATH")
    device_flags(p)
    reading_flags(p)
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="precision, recall, accuracy, mAP: single pass vs 10-crop baseline")
    e.add_argument("--model")
    e.add_argument("--data", action="append", required=True, metavar="PATH")
    e.add_argument("--json", metavar="FILE")
    e.add_argument("--split", default="all", choices=["all", "val", "train"],
                   help="evaluate only the held-out (val) or training part of --data")
    e.add_argument("--val-fraction", type=float, default=0.1)
    e.add_argument("--no-baseline", action="store_true")
    e.add_argument("--per-label", action="store_true")
    device_flags(e)
    reading_flags(e)
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("tag", help="predict a folder into its library (as the app does), optionally writing sidecars")
    g.add_argument("folder")
    g.add_argument("--model", help="model file (default: the starter model)")
    g.add_argument("--only", default="untagged", choices=["untagged", "all"])
    g.add_argument("--write", default="none", metavar="txt,xmp|none", help="sidecar formats to write")
    g.add_argument("--naming", default="auto", choices=["auto", "stem", "full"],
                   help=".txt naming: image.txt, image.ext.txt, or auto (image.ext.txt only where stems collide)")
    g.add_argument("--policy", default="merge", choices=["merge", "replace"], help="for existing sidecars")
    g.add_argument("--sidecars-confirmed", action="store_true", help="treat existing sidecars as confirmed tags")
    g.add_argument("--batch-size", type=int, default=8)
    device_flags(g)
    reading_flags(g)
    g.set_defaults(func=cmd_tag)

    i = sub.add_parser("info", help="print a model's card")
    i.add_argument("model", nargs="?")
    i.add_argument("--full", action="store_true", help="include thresholds and the training history")
    i.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import DatasetError
    from .library import LibraryError
    from .modelfile import ModelFileError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ModelFileError, DatasetError, LibraryError, FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `mlcnn predict ... | head`: the reader has gone, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
