"""Section 4's comparison: single-pass prediction (2.6) against the 10-crop baseline (4.2).

Both are scored with the thresholds stored in the model card, which training fitted on
validation data (never on the data evaluated here). Each method's forward cost is reported
twice: multiply-accumulates counted by torch's FLOP counter, and wall time on this machine.
``single_pass`` is the card's reading: for a card with a second pass (predict.py) it costs both
passes, and ``single_pass["passes"]`` lists their short sides.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .data import ImageError, Sample, multi_hot, short_side_size
from .metrics import mean_average_precision, per_label_metrics, set_metrics
from .modelfile import TaggerModel
from .predict import Predictor
from .threshold import Threshold


class ForwardFlops:
    """FLOPs of the test form (one image of a given size) and of the training form (a batch of
    crops), counted on meta-device copies of the network: shapes only, no arithmetic."""

    def __init__(self, predictor: Predictor):
        # float32: the predictor's trunk may hold bf16 weights, and FLOPs do not depend on the type
        self.trunk = copy.deepcopy(predictor.trunk).to("meta", torch.float32)
        self.head = copy.deepcopy(predictor.head).to("meta", torch.float32)
        self.cache: dict[tuple[int, int], int] = {}

    @staticmethod
    def _count(fn) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return int(counter.get_total_flops())

    def single_pass(self, height: int, width: int) -> int:
        if (height, width) not in self.cache:
            x = torch.empty(1, 3, height, width, device="meta")
            self.cache[height, width] = self._count(lambda: self.head.forward_map(self.trunk(x)))
        return self.cache[height, width]

    def crops(self, count: int = 10, size: int = 224) -> int:
        x = torch.empty(count, 3, size, size, device="meta")
        return self._count(lambda: self.head(self.trunk(x).mean(dim=(2, 3))))


def evaluate(model: TaggerModel, samples: list[Sample], device: str = "auto", bf16: bool | None = None,
             baseline: bool = True, seed: int = 0, per_label: bool = False,
             baseline_threshold: Threshold | None = None, only_labels: list[str] | None = None) -> dict:
    """Metrics and costs of ``model`` on ``samples``. The baseline uses ``baseline_threshold``, else
    the card's ``baseline_threshold`` (fitted by training on validation data), else — for a model
    whose training was cancelled before that fit — the single-pass threshold, which is then said
    in the result (``baseline_threshold_source``). ``only_labels`` scores those labels only: the
    model predicts all of its labels, and the others are left out of the metrics (a model that
    learnt more labels than a benchmark has, compared on the benchmark's)."""
    predictor = Predictor(model, device=device, bf16=bf16)
    labels = model.labels
    index = {lab: i for i, lab in enumerate(labels)}
    rng = np.random.default_rng(seed)
    single, crops, truth = [], [], []
    t_single = t_crops = 0.0
    flops_single = 0
    counter = ForwardFlops(predictor)
    unreadable = 0
    for s in samples:
        try:
            rgb = predictor.read(s.image)
        except ImageError:
            unreadable += 1
            continue
        truth.append(multi_hot(s.labels, index) > 0)
        t0 = time.perf_counter()
        single.append(predictor.predict_array(rgb).scores)
        t_single += time.perf_counter() - t0
        flops_single += sum(counter.single_pass(*short_side_size(*rgb.shape[:2], short))
                            for short in predictor.config.passes)
        if baseline:
            t0 = time.perf_counter()
            crops.append(predictor.ten_crop_scores(rgb, rng))
            t_crops += time.perf_counter() - t0
    n = len(truth)
    truth_arr = np.array(truth).reshape(n, len(labels))
    result: dict = {"images": n, "unreadable": unreadable, "labels": len(labels), "device": str(predictor.device),
                    "bf16": predictor.bf16}
    single_arr = np.array(single).reshape(n, len(labels))
    keep = None if only_labels is None else np.array([index[lab] for lab in only_labels if lab in index], int)
    result["single_pass"] = _score(single_arr, truth_arr, predictor.threshold, labels, per_label, keep)
    result["single_pass"]["cost"] = {"gflops_per_image": flops_single / max(n, 1) / 1e9,
                                     "ms_per_image": 1000 * t_single / max(n, 1)}
    result["single_pass"]["passes"] = predictor.config.passes
    if baseline:
        if baseline_threshold is not None:
            base_t, source = baseline_threshold, "given"
        elif "baseline_threshold" in model.card:
            base_t, source = Threshold.from_dict(model.card["baseline_threshold"], len(labels)), "card"
        else:
            base_t, source = predictor.threshold, "single-pass threshold (the card has no baseline threshold)"
        result["baseline_threshold_source"] = source
        crop_arr = np.array(crops).reshape(n, len(labels))
        result["ten_crop"] = _score(crop_arr, truth_arr, base_t, labels, per_label, keep)
        gflops = counter.crops() / 1e9
        result["ten_crop"]["cost"] = {"gflops_per_image": gflops, "ms_per_image": 1000 * t_crops / max(n, 1)}
        result["cost_ratio"] = {
            "flops": gflops / max(result["single_pass"]["cost"]["gflops_per_image"], 1e-12),
            "time": t_crops / max(t_single, 1e-12),
        }
    return result


@torch.inference_mode()
def _score(scores: np.ndarray, truth: np.ndarray, threshold: Threshold, labels: list[str], per_label: bool,
           keep: np.ndarray | None = None) -> dict:
    pred = threshold.select(scores) if len(scores) else np.zeros_like(truth)
    if keep is not None:
        scores, truth, pred, labels = scores[:, keep], truth[:, keep], pred[:, keep], [labels[i] for i in keep]
    out = set_metrics(pred, truth)
    out["mAP"] = mean_average_precision(scores, truth) if len(scores) else float("nan")
    if per_label:
        out["per_label"] = per_label_metrics(pred, truth, labels)
    return out
