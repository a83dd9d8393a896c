"""Where `mlcnn predict`'s time goes: each stage of the prediction pipeline run one after the other on
one folder, timed apart (CPU time and wall time per image).

    python bench/pipeline_split.py FOLDER [--threads 1] [--bucket-steps 64 128 --rounds 3]

The stages are those of ``Predictor.predict_files`` (decoding, resizing to each pass, padding views
into their shape bucket's batch, turning a batch into the network's input, the masked trunk, the
head, post-processing: per-position softmax, pruning, sums, rescoring, threshold, peaks) plus the
frame the app's prediction process writes per image. Nothing overlaps, so on a busy machine the CPU
times are what to read; ``--threads 1`` keeps torch from waiting on a second thread the machine may
not give it. Every batch shape is run once first, so oneDNN's kernels for it are made before timing.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections import defaultdict

import numpy as np
import torch

from mlcnn_core.buckets import BucketQueues, bucket_shape, masked_trunk
from mlcnn_core.data import SHORT_SIDE, find_images, read_image_sized
from mlcnn_core.frames import write_frame
from mlcnn_core.modelfile import load_model, starter_model_path
from mlcnn_core.predict import Predictor

STAGES = ("decode", "resize", "pad", "to input", "trunk", "head", "post-processing", "frame (app)")


class Clock:
    def __init__(self):
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def stage(self, name: str):
        clock = self

        class Timed:
            def __enter__(self):
                self.wall, self.cpu = time.perf_counter(), time.process_time()

            def __exit__(self, *_):
                clock.wall[name] += time.perf_counter() - self.wall
                clock.cpu[name] += time.process_time() - self.cpu

        return Timed()


def run(predictor: Predictor, paths, clock: Clock, batch_size: int = 8) -> None:
    images = []
    for path in paths:
        with clock.stage("decode"):
            rgb, size = read_image_sized(path, max(*predictor.config.passes, SHORT_SIDE))
        with clock.stage("resize"):
            views = predictor.resize_passes(rgb)
        images.append((views, size))
    queues = BucketQueues(predictor.bucket_step)
    for seq, (views, _) in enumerate(images):
        for k, view in enumerate(views):
            queues.add(k, seq, view)
    raws: dict[int, list] = {}
    with torch.inference_mode():
        while queues:
            key = queues.oldest()
            members = queues.take(key, batch_size)
            views = [v for _, v in members]
            with clock.stage("pad"):
                height, width = bucket_shape(max(v.shape[0] for v in views), max(v.shape[1] for v in views),
                                             predictor.bucket_step)
                batch = np.zeros((len(views), height, width, 3), np.uint8)
                for n, v in enumerate(views):
                    batch[n, :v.shape[0], :v.shape[1]] = v
            with clock.stage("to input"):
                x = predictor._input(batch)
            with clock.stage("trunk"):
                fmap, sizes = masked_trunk(predictor.trunk, x, [v.shape[:2] for v in views])
            with clock.stage("head"):
                maps = predictor._map_head.forward_map(fmap).float()
            for n, ((seq, _), (h, w)) in enumerate(zip(members, sizes, strict=True)):
                raws.setdefault(seq, [None] * len(predictor.config.passes))[key[0]] = maps[n, :, :h, :w]
    predictions = []
    with clock.stage("post-processing"):
        for seq, (_, size) in enumerate(images):
            passes = raws[seq]
            predictions += predictor._postprocess([(passes[0], size, passes[1] if len(passes) > 1 else None)])
    with clock.stage("frame (app)"):
        out = io.BytesIO()
        for p in predictions:
            write_frame(out, {"event": "prediction", "labels": p.labels, "confidences": p.confidences,
                              "peaks": {k: list(v) for k, v in p.peaks.items()}, "label_names": p.label_names,
                              "image_size": list(p.image_size)}, [p.maps, p.winner])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--model", help="model file (default: the starter)")
    ap.add_argument("--bucket-steps", type=int, nargs="+", metavar="PX",
                    help="shape bucket steps to compare, one column each (default: the predictor's own)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, the columns alternating; medians reported")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = find_images(args.folder)
    model = load_model(args.model or starter_model_path())
    predictors = {step: Predictor(model, bucket_step=step) for step in args.bucket_steps or [None]}
    for predictor in predictors.values():
        run(predictor, paths, Clock())  # every batch shape once: oneDNN makes its kernels
    clocks: dict = {step: [] for step in predictors}
    for _ in range(args.rounds):
        for step, predictor in predictors.items():
            clock, start = Clock(), time.perf_counter()
            run(predictor, paths, clock)
            clock.wall["all"] = time.perf_counter() - start
            clocks[step].append(clock)
    n = len(paths)
    print(f"{args.folder}: {n} images, {torch.get_num_threads()} torch threads, stages one after the other, "
          f"median of {args.rounds} round(s)")
    steps = [predictor.bucket_step for predictor in predictors.values()]
    print("\n| stage | " + " | ".join(f"CPU / wall ms per image, {step}-px buckets" for step in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name in (*STAGES, "all"):
        cells = []
        for runs in clocks.values():
            cpu = statistics.median(sum(c.cpu.values()) if name == "all" else c.cpu[name] for c in runs)
            wall = statistics.median(c.wall[name] for c in runs)
            cells.append(f"{1000 * cpu / n:.2f} / {1000 * wall / n:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
