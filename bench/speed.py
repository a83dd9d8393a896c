"""Training and prediction throughput on this machine.

Default: `compact` and `paper`, fp32 against bf16. Synthetic inputs at the paper's sizes: training
steps on 256×256 crops (forward, backward, optimiser step, channels_last), prediction through the
test form on 256×341 images plus the multi-scale / prune / sum post-processing. fp32 and bf16
rounds alternate so that both see the same background load; the report gives medians and the
bf16/fp32 ratio of each pair.

    python bench/speed.py [--rounds 3] [--json speed.json]

``--pipeline``: `mlcnn predict`'s pipeline (Predictor.predict_files: decoding, resizing, shape
buckets, forward, post-processing) against the model alone (the forward pass on images already
decoded and resized, batches of 8 of one shape), on generated JPEG folders of one size and of mixed
sizes, in one run; rounds alternate so every row sees the same load (predict_pipeline.py).

    python bench/speed.py --pipeline [--model starter] [--images 300] [--rounds 3]

``--versions NAME=CHECKOUT NAME=CHECKOUT``: the same pipeline in two checkouts of the code, each row
in its own process, rows alternating (predict_pipeline.versions_table).

    python bench/speed.py --versions before=/tmp/main-checkout after=. [--images 200] [--rounds 3]

``--rss N``: resident memory while `predict_files` reads N generated mixed-size images.

    python bench/speed.py --rss 10000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from mlcnn_core.loss import multilabel_softmax_loss
from mlcnn_core.modelfile import new_model
from mlcnn_core.predict import Predictor
from mlcnn_core.recipes import RECIPES
from mlcnn_core.runtime import autocast, configure_cpu, cpu_supports_bf16
from mlcnn_core.train import make_optimizer

LABELS = [f"l{i}" for i in range(67)]


def train_rate(net, optimizer, batch: int, steps: int, bf16: bool) -> float:
    x = torch.randn(batch, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(batch, len(LABELS))
    y[torch.arange(batch), torch.randint(0, len(LABELS), (batch,))] = 1
    net.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast(torch.device("cpu"), bf16):
            logits = net(x)
        loss, _ = multilabel_softmax_loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - t0)


def predict_rate(model, images: list[np.ndarray], bf16: bool) -> float:
    predictor = Predictor(model, device="cpu", bf16=bf16)
    t0 = time.perf_counter()
    predictor.predict_arrays(images)
    return len(images) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--archs", nargs="+", default=["compact", "paper"])
    ap.add_argument("--json")
    ap.add_argument("--pipeline", action="store_true", help="mlcnn predict's pipeline against the model alone")
    ap.add_argument("--versions", nargs="+", metavar="NAME=CHECKOUT", help="compare checkouts' pipelines")
    ap.add_argument("--rss", type=int, metavar="N", help="resident memory while predicting N mixed-size images")
    ap.add_argument("--model", default="starter", help="model file for --pipeline/--rss (default: the starter)")
    ap.add_argument("--images", type=int, default=300, help="images per folder for --pipeline")
    ap.add_argument("--folder", help="where the generated folders are kept (default: a temporary folder)")
    args = ap.parse_args()
    if args.versions:
        from pathlib import Path

        from predict_pipeline import versions_table

        checkouts = {name: Path(path).resolve() for name, path in (v.split("=", 1) for v in args.versions)}
        versions_table(checkouts, args.images, args.rounds, args.folder)
        return
    if args.pipeline or args.rss:
        from predict_pipeline import pipeline_table, rss_run

        if args.pipeline:
            pipeline_table(args.model, args.images, args.rounds, args.folder)
        if args.rss:
            rss_run(args.model, args.rss, args.folder)
        return
    configure_cpu()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_supports_bf16()}")
    rng = np.random.default_rng(0)
    results = {}
    for arch in args.archs:
        batch, steps, n_pred = (32, 3, 16) if arch == "compact" else (16, 2, 8)
        model = new_model(arch, labels=LABELS)
        net = model.net.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(net, RECIPES["default"])
        images = [rng.integers(0, 255, (256, 341, 3), dtype=np.uint8) for _ in range(n_pred)]
        for bf16 in (False, True):  # warm-up
            train_rate(net, optimizer, batch, 1, bf16)
            predict_rate(model, images[:2], bf16)
        rates = {k: [] for k in ("train_fp32", "train_bf16", "predict_fp32", "predict_bf16")}
        for _ in range(args.rounds):
            for bf16 in (False, True):
                tag = "bf16" if bf16 else "fp32"
                rates[f"train_{tag}"].append(train_rate(net, optimizer, batch, steps, bf16))
                rates[f"predict_{tag}"].append(predict_rate(model, images, bf16))
        med = {k: statistics.median(v) for k, v in rates.items()}
        med["train_bf16_over_fp32"] = med["train_bf16"] / med["train_fp32"]
        med["predict_bf16_over_fp32"] = med["predict_bf16"] / med["predict_fp32"]
        results[arch] = med
        print(f"{arch:8s} train img/s fp32 {med['train_fp32']:7.1f}  bf16 {med['train_bf16']:7.1f}  "
              f"(×{med['train_bf16_over_fp32']:.2f})   predict img/s fp32 {med['predict_fp32']:7.1f}  "
              f"bf16 {med['predict_bf16']:7.1f}  (×{med['predict_bf16_over_fp32']:.2f})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
