"""Single-pass multi-label prediction (section 2.6) and the 10-crop baseline (section 4.2).

confidence maps (test form, one forward pass on the whole image)
  → per-position softmax over labels                          [reading, flag ``scores``]
  → average pooling with kernels 3, 5, 7, upsampled back      [reading, flag ``pool_stride``]
  → averaged: multi-scale maps                                [flag ``multiscale``]
  → at each position keep only the best label (prune), sum per label
  → labels above a linear threshold of the summed vector (threshold.py)

Readings of the ambiguous sentences, each with its alternative behind a flag:

* "we apply average pooling to each individual confidence map with a pyramid of kernel sizes:
  {3×3, 5×5, 7×7}. We then upsample the resulting confidence maps to the original resolution".
  ``pool_stride="one"`` (default) pools with stride 1 and 'same' padding (padding not counted),
  so the upsampling is the identity; ``pool_stride="kernel"`` pools with stride = kernel size
  (ceil mode) and upsamples bilinearly back to the map's size.
* "we only keep the highest confidence label for each spatial point [...] We then simply sum
  up the remaining confidence values". The network is trained with a softmax-based loss that
  is invariant to adding a constant to all of an image's outputs, so raw outputs have no fixed
  zero: summed raw winners can be negative and rank labels backwards. ``scores="softmax"``
  (default) turns each position's outputs into a distribution over labels before pooling;
  ``scores="raw"`` sums the raw outputs as written.
* "picking a threshold as a linear function of the confidence values": the summed vector grows
  with a drawing's area, so small drawings and labels that won a few positions inside another's
  drawing get the same sums. ``rescore`` (weights of rescore.py's logistic model, fitted on
  held-out images) turns each surviving label's map into a score in (0, 1) before the threshold;
  ``None`` (default) is the paper's summed vector.
* Beyond the paper, ``second_short_side`` reads the image a second time at another size and
  rescores each label on both passes' maps (rescore.py); the maps, peaks and heatmaps are still
  the first pass's. A card with it keeps its one-pass reading in ``single_pass`` (see
  :func:`card_reading`).
* "we only keep the highest confidence label for each spatial point" also means that two true
  labels covering the same drawing (a person's new tag ``cat`` on what the model knows as
  ``cat-face``) can never both be predicted: one wins every position it shares with the other.
  ``keep_ratio`` r < 1 keeps at each position every label whose confidence is at least r times
  the best one's (for raw outputs: within ln(1/r) of the best output); r = 1 is the paper's
  pruning.
"""

from __future__ import annotations

import copy
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .buckets import BucketQueues, bucket_shape, check_trunk, masked_trunk
from .card import MAX_SHORT_SIDE, MIN_SHORT_SIDE, PredictConfig, card_reading  # noqa: F401 - re-exported
from .data import SHORT_SIDE, ImageError, PixelTable, read_image, read_image_sized, resize_short_side, to_tensor
from .model import fold_batchnorm
from .modelfile import TaggerModel
from .readahead import DECODE_AHEAD_BYTES, decode_ahead
from .rescore import label_features, rescore
from .runtime import autocast, configure_cpu, pick_device, release_free_memory, use_bf16
from .spec import trunk_stride
from .streams import ForwardStreams, default_streams
from .threshold import Threshold

# views waiting for a full batch of their bucket before the oldest image's queue runs anyway
WAITING_BYTES = 64 << 20
# images predicted between two returns of free heap memory to the system (runtime.release_free_memory)
TRIM_EVERY = 32


def multiscale_maps(conf: torch.Tensor, cfg: PredictConfig) -> torch.Tensor:
    """[N, l, h, w] → [N, l, h, w]: the mean over kernels of average-pooled, upsampled maps."""
    if not cfg.multiscale:
        return conf
    h, w = conf.shape[-2:]
    pooled = []
    for k in cfg.pool_kernels:
        if cfg.pool_stride == "one":
            pooled.append(F.avg_pool2d(conf, k, stride=1, padding=k // 2, count_include_pad=False))
        else:
            small = F.avg_pool2d(conf, k, stride=k, ceil_mode=True, padding=0)
            pooled.append(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False))
    return torch.stack(pooled).mean(dim=0)


def prune_and_sum(maps: torch.Tensor, keep_ratio: float = 1.0, log_domain: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """"we only keep the highest confidence label for each spatial point [...] We then simply sum
    up the remaining confidence values from this confidence map for each label."
    With ``keep_ratio`` < 1, labels within that ratio of the position's best are kept too
    (``log_domain``: the maps are raw outputs, so "ratio" means a difference of ln(keep_ratio)).
    [N, l, h, w] → (scores [N, l], winner [N, h, w])."""
    best, winner = maps.max(dim=1)
    if keep_ratio >= 1.0:
        scores = torch.zeros(maps.shape[:2], dtype=maps.dtype, device=maps.device)
        scores.scatter_add_(1, winner.flatten(1), best.flatten(1))
        return scores, winner
    floor = best + math.log(keep_ratio) if log_domain else best * keep_ratio
    kept = maps >= floor.unsqueeze(1)
    return (maps * kept).sum(dim=(2, 3)), winner


def final_scores(raw: torch.Tensor, cfg: PredictConfig, second: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Test-form output [N, l, h, w] (and, for a reading of two passes, the second pass's ``second``
    [N, l, h', w']) → (scores [N, l], multi-scale maps [N, l, h, w], winner [N, h, w]) of the first."""
    conf = raw.softmax(dim=1) if cfg.scores == "softmax" else raw
    maps = multiscale_maps(conf, cfg)
    scores, winner = prune_and_sum(maps, cfg.keep_ratio, log_domain=cfg.scores == "raw")
    if cfg.rescore is not None:
        scores = rescore([(maps, scores), *_second_pass(second, cfg)], cfg.rescore)
    return scores, maps, winner


def _check_passes(second: torch.Tensor | None, cfg: PredictConfig) -> None:
    if (second is None) != (cfg.second_short_side is None):
        raise ValueError("a reading of two passes needs both passes' outputs, a one-pass reading only one")


def _second_pass(second: torch.Tensor | None, cfg: PredictConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The second pass's (maps, pruned sums), or none for a one-pass reading."""
    _check_passes(second, cfg)
    if second is None:
        return []
    maps = multiscale_maps(second.softmax(dim=1), cfg)
    return [(maps, prune_and_sum(maps, cfg.keep_ratio)[0])]


def candidate_features(raw: torch.Tensor, cfg: PredictConfig) -> tuple[np.ndarray, np.ndarray]:
    """rescore.py's features of every label of test-form outputs [N, l, h, w] ([N, l, len(FEATURES)])
    and whether the label survives pruning ([N, l]: the candidates the logistic model scores)."""
    maps = multiscale_maps(raw.softmax(dim=1), cfg)
    sums, _ = prune_and_sum(maps, cfg.keep_ratio)
    return label_features(maps, sums).cpu().numpy(), (sums > 0).cpu().numpy()


def rescore_examples(raw: torch.Tensor, truth: np.ndarray, cfg: PredictConfig) -> tuple[np.ndarray, np.ndarray]:
    """What rescore.py's logistic model is fitted on: for test-form outputs [N, l, h, w] and their true
    labels [N, l], the features of every label that survives pruning ([n, len(FEATURES)]) and whether
    it is true ([n])."""
    features, alive = candidate_features(raw, cfg)
    return features[alive], np.asarray(truth, bool)[alive]


def soft_final_scores(raw: torch.Tensor, cfg: PredictConfig, sharpness: float = 20.0,
                      second: torch.Tensor | None = None) -> torch.Tensor:
    """A differentiable stand-in for :func:`final_scores`' scores, for fitting output rows to what
    prediction does with them (newlabels.py): the per-position pruning's hard cut becomes a sigmoid
    of the distance to the position's floor (``sharpness`` per unit of softmax confidence; raw
    outputs get a quarter of it per unit of log-ratio). [N, l, h, w] (and the second pass's) → [N, l]."""
    _check_passes(second, cfg)
    passes = []
    for out in [raw] if second is None else [raw, second]:
        conf = out.softmax(dim=1) if cfg.scores == "softmax" else out
        maps = multiscale_maps(conf, cfg)
        best = maps.max(dim=1, keepdim=True).values
        if cfg.scores == "raw":
            kept = torch.sigmoid(sharpness / 4 * (maps - (best + math.log(cfg.keep_ratio))))
        else:
            kept = torch.sigmoid(sharpness * (maps - best * cfg.keep_ratio))
        passes.append((maps, (maps * kept).sum(dim=(2, 3))))
    return passes[0][1] if cfg.rescore is None else rescore(passes, cfg.rescore, hard=False)


def map_peaks(maps: np.ndarray, image_size: tuple[int, int], refine: bool = True) -> list[tuple[int, int]]:
    """Per label, the original-image pixel (x, y) where its map [l, h, w] peaks: the centre of the
    maximum cell, or with ``refine`` the weighted centre of that cell and its 8 neighbours (weights:
    the map above its median), so that a peak can fall between cells of the coarse map."""
    count, h, w = maps.shape
    width, height = image_size
    flat = maps.reshape(count, -1)
    cy, cx = np.divmod(flat.argmax(axis=1), w)
    y, x = cy.astype(np.float64), cx.astype(np.float64)
    if refine and count:
        rows = np.arange(count)[:, None]
        ny = cy[:, None] + np.repeat([-1, 0, 1], 3)[None]
        nx = cx[:, None] + np.tile([-1, 0, 1], 3)[None]
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        values = maps[rows, ny.clip(0, h - 1), nx.clip(0, w - 1)].astype(np.float64)
        median = np.median(flat, axis=1).astype(np.float64)[:, None]
        weight = np.where(inside, np.clip(values - median, 0, None), 0.0)
        total = weight.sum(axis=1)
        ok = total > 0
        y = np.where(ok, (ny * weight).sum(axis=1) / np.where(ok, total, 1), y)
        x = np.where(ok, (nx * weight).sum(axis=1) / np.where(ok, total, 1), x)
    px = np.minimum(width - 1, ((x + 0.5) * width / w).astype(np.int64))
    py = np.minimum(height - 1, ((y + 0.5) * height / h).astype(np.int64))
    return [(int(a), int(b)) for a, b in zip(px, py, strict=True)]


def _out_of_memory(error: Exception) -> bool:
    """A failed allocation: Python's MemoryError, torch's OutOfMemoryError (CUDA) or the CPU
    allocator's RuntimeError."""
    return (isinstance(error, (MemoryError, torch.OutOfMemoryError))
            or isinstance(error, RuntimeError) and "alloc" in str(error).lower())


@dataclass
class Prediction:
    """What one image gets: chosen labels, final scores, peaks and the maps behind them."""

    labels: list[str]
    confidences: dict[str, float]
    peaks: dict[str, tuple[int, int]]
    label_names: list[str]
    maps: np.ndarray                  # float32 [l, h, w], multi-scale (per-position softmax by default)
    winner: np.ndarray                # int32 [h, w], index into label_names
    scores: np.ndarray                # float32 [l], what the threshold saw: the summed vector, or its rescoring
    image_size: tuple[int, int]       # (width, height) of the original image, EXIF-oriented
    extra: dict = field(default_factory=dict)

    def to_json(self, image_path: str | os.PathLike) -> dict:
        return {"image": str(image_path), "labels": self.labels,
                "confidences": {k: round(v, 5) for k, v in self.confidences.items()},
                "peaks": {k: list(v) for k, v in self.peaks.items()}}


class Predictor:
    """Owns a model prepared for inference (eval mode, batch norm folded, channels_last, weights
    cast to bf16 once where the hardware has it) and turns images into :class:`Prediction` s.

    The forward pass is prepared from the model's weights when the predictor is made: a predictor
    does not see later changes to the model's trunk (``head`` stays the model's own, for
    :meth:`hidden_maps` and the 10-crop baseline). ``streams`` batches run at once (streams.py; by
    default two on a CPU with two or more torch threads)."""

    def __init__(self, model: TaggerModel, device: str = "auto", bf16: bool | None = None,
                 config: PredictConfig | None = None, threshold: Threshold | None = None,
                 bucket_step: int | None = None, streams: int | None = None):
        self.model = model
        self.labels = list(model.labels)
        self.device = pick_device(device)
        self.bf16 = use_bf16(self.device, bf16)
        if self.device.type == "cpu":
            configure_cpu()
        self.config = config or PredictConfig.from_dict(model.card.get("prediction"))
        self.threshold = threshold or Threshold.from_dict(model.card.get("threshold", {}), len(self.labels))
        net = model.net.eval()
        self.dtype = torch.bfloat16 if self.bf16 else torch.float32
        # autocast would cast every weight again on every call; the folded trunk is our own copy
        self.trunk = fold_batchnorm(net.trunk).eval().to(self.device, self.dtype, memory_format=torch.channels_last)
        check_trunk(self.trunk)
        self.head = net.head.eval().to(self.device)
        self._map_head = copy.deepcopy(self.head).to(self.dtype)
        self.mean = list(model.mean)
        self._pixels = PixelTable(self.mean, self.dtype)
        self.bucket_step = bucket_step or 2 * trunk_stride(net.spec)
        self.forward_streams = ForwardStreams(streams or default_streams(self.device))
        self._images_read = 0

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """The image as the (first) pass sees it: its shorter side ``config.short_side`` pixels."""
        return resize_short_side(rgb, self.config.short_side)

    def resize_passes(self, rgb: np.ndarray) -> list[np.ndarray]:
        """The image as each pass of the reading sees it, the first pass first."""
        return [resize_short_side(rgb, short) for short in self.config.passes]

    def read(self, path: str | os.PathLike) -> np.ndarray:
        """Decode an image file, large enough for every pass and for the 10-crop baseline (a big JPEG
        is decoded at a reduced scale, never below any of their short sides); raises
        :class:`ImageError` when it cannot be read."""
        return read_image(path, max(*self.config.passes, SHORT_SIDE))

    def read_resized(self, path: str | os.PathLike) -> np.ndarray:
        """An image file as the (first) pass sees it."""
        return self.resize(self.read(path))

    def read_passes(self, path: str | os.PathLike) -> tuple[list[np.ndarray], tuple[int, int]]:
        """An image file as each pass sees it, and the file's own (width, height) (a big JPEG is
        decoded smaller; peaks are given in the file's pixels); what decode threads run."""
        rgb, size = read_image_sized(path, max(*self.config.passes, SHORT_SIDE))
        return self.resize_passes(rgb), size

    # --- the forward pass -------------------------------------------------------------------
    def _input(self, batch_uint8: np.ndarray) -> torch.Tensor:
        return self._pixels(batch_uint8).to(self.device)

    @torch.inference_mode()
    def raw_maps(self, batch_resized: np.ndarray) -> torch.Tensor:
        """Test-form output [n, l, h, w] (float32, on the device) for same-sized preprocessed images
        ([n, H, W, 3] uint8, or one [H, W, 3] image)."""
        if batch_resized.ndim == 3:
            batch_resized = batch_resized[None]
        return self._map_head.forward_map(self.trunk(self._input(batch_resized))).float()

    @torch.inference_mode()
    def bucketed_raw_maps(self, views: list[np.ndarray]) -> list[torch.Tensor]:
        """Test-form outputs [l, h, w] (float32) of preprocessed images of any sizes, run as one batch
        padded to the bucket of the largest (buckets.py: the padding is masked out, each map is the
        image's own)."""
        height, width = bucket_shape(max(v.shape[0] for v in views), max(v.shape[1] for v in views),
                                     self.bucket_step)
        batch = np.zeros((len(views), height, width, 3), np.uint8)
        for n, v in enumerate(views):
            batch[n, :v.shape[0], :v.shape[1]] = v
        fmap, sizes = masked_trunk(self.trunk, self._input(batch), [v.shape[:2] for v in views])
        maps = self._map_head.forward_map(fmap).float()
        return [maps[n, :, :h, :w] for n, (h, w) in enumerate(sizes)]

    @torch.inference_mode()
    def hidden_maps(self, batch_resized: np.ndarray) -> torch.Tensor:
        """What the last layer sees at each position, [n, C, h, w] float32 (the test form without its
        last 1×1 convolution), for same-sized preprocessed images."""
        with autocast(self.device, self.bf16):
            hidden = self.head.hidden_map(self.trunk(self._input(batch_resized)))
        return hidden.float()

    def predict_arrays(self, images: list[np.ndarray], batch_size: int = 8) -> list[Prediction]:
        """Predict RGB uint8 images of any sizes; images of one shape bucket share a batch."""
        items = ((i, self.resize_passes(rgb), (rgb.shape[1], rgb.shape[0])) for i, rgb in enumerate(images))
        return [p for _, p in self._predict_stream(items, batch_size)]

    def predict_array(self, rgb: np.ndarray) -> Prediction:
        """Predict one RGB uint8 image of any size and aspect ratio."""
        return self.predict_arrays([rgb])[0]

    def _postprocess(self, outputs: list[tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]]
                     ) -> list[Prediction]:
        """Predictions from (first pass's raw output [l, h, w], image size, second pass's or None);
        outputs whose maps have the same shapes are scored as one batch."""
        groups: dict[tuple, list[int]] = {}
        for i, (raw, _, second) in enumerate(outputs):
            groups.setdefault((raw.shape, None if second is None else second.shape), []).append(i)
        out: list[Prediction | None] = [None] * len(outputs)
        for members in groups.values():
            raw = torch.stack([outputs[i][0] for i in members])
            second = None if outputs[members[0]][2] is None else torch.stack([outputs[i][2] for i in members])
            scores, maps, winner = final_scores(raw, self.config, second)
            scores_np, maps_np = scores.cpu().numpy().astype(np.float32), maps.cpu().numpy().astype(np.float32)
            winner_np, raw_np = winner.cpu().numpy().astype(np.int32), raw.cpu().numpy()
            chosen = self.threshold.select(scores_np)
            for n, i in enumerate(members):
                out[i] = self._prediction(scores_np[n].copy(), chosen[n], maps_np[n].copy(), winner_np[n].copy(),
                                          raw_np[n], outputs[i][1])
        return out

    def _prediction(self, scores: np.ndarray, chosen: np.ndarray, maps: np.ndarray, winner: np.ndarray,
                    raw: np.ndarray, image_size: tuple[int, int]) -> Prediction:
        nonzero = np.flatnonzero(scores != 0)
        nonzero = nonzero[np.argsort(-scores[nonzero], kind="stable")]
        # where a label is: the refined peak of its raw map; softmax and pooling blur it (BENCHMARKS.md §3)
        peaks = map_peaks(raw[nonzero], image_size, refine=True) if len(nonzero) else []
        return Prediction(
            labels=[self.labels[j] for j in nonzero if chosen[j]],
            confidences={self.labels[j]: float(scores[j]) for j in nonzero},
            peaks={self.labels[j]: p for j, p in zip(nonzero, peaks, strict=True)},
            label_names=self.labels, maps=maps, winner=winner, scores=scores, image_size=image_size)

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        """Predict an image file; raises :class:`ImageError` when it cannot be read."""
        return [p for _, p in self._predict_stream([(0, *self.read_passes(path))], batch_size=1)][0]

    def predict_files(self, paths: Iterable[str | os.PathLike], batch_size: int = 8, workers: int = 2,
                      ahead_bytes: int = DECODE_AHEAD_BYTES) -> Iterator[tuple[Path, Prediction | ImageError]]:
        """Predict many files, decoding and resizing ahead in ``workers`` background threads (at most
        about ``ahead_bytes`` of decoded views waiting) while the network runs, in batches of up to
        ``batch_size`` views of one shape bucket, as many batches at once as the predictor has forward
        streams. Yields (path, Prediction) or (path, ImageError) in input order."""
        decoded = decode_ahead([Path(p) for p in paths], self.read_passes, workers, ahead_bytes)
        yield from self._predict_stream(decoded, batch_size)

    def _predict_stream(self, items: Iterable[tuple[object, list[np.ndarray] | ImageError, tuple[int, int]]],
                        batch_size: int) -> Iterator[tuple[object, Prediction | ImageError]]:
        """(key, views of each pass or the ImageError, (width, height)) in → (key, result) out, in
        the same order; views wait in per-bucket queues until a batch is full, or until the views
        waiting pass ``WAITING_BYTES`` (then the queue of the oldest image runs, full or not)."""
        queues = BucketQueues(self.bucket_step)
        images: dict[int, list] = {}  # seq → [key, image size, raw map per pass]
        done: dict[int, tuple[object, Prediction | ImageError]] = {}
        in_flight: deque[tuple[tuple, list[tuple[int, np.ndarray]], Future]] = deque()
        passes = len(self.config.passes)
        next_out = 0

        def run(queue_key: tuple) -> None:
            members = [(seq, view) for seq, view in queues.take(queue_key, batch_size) if seq in images]
            if members:
                in_flight.append((queue_key, members,
                                  self.forward_streams.submit(self._raw_maps_or_errors, [view for _, view in members])))
            while len(in_flight) > self.forward_streams.streams or in_flight and in_flight[0][2].done():
                collect(*in_flight.popleft())

        def collect(queue_key: tuple, members: list[tuple[int, np.ndarray]], future: Future) -> None:
            complete = []
            for (seq, _), raw in zip(members, future.result(), strict=True):
                if seq not in images:  # its other pass ran out of memory
                    continue
                if isinstance(raw, BaseException):
                    key = images.pop(seq)[0]
                    done[seq] = (key, ImageError(f"{key}: not enough memory to predict it ({raw})"))
                    continue
                image = images[seq]
                image[2][queue_key[0]] = raw
                if all(r is not None for r in image[2]):
                    complete.append(seq)
            outputs = [(images[seq][2][0], images[seq][1], images[seq][2][1] if passes > 1 else None)
                       for seq in complete]
            with self.forward_streams.caller_share():
                predictions = self._postprocess(outputs)
            for seq, prediction in zip(complete, predictions, strict=True):
                done[seq] = (images.pop(seq)[0], prediction)

        for seq, (key, views, size) in enumerate(items):
            self._images_read += 1
            if self._images_read % TRIM_EVERY == 0:
                release_free_memory()
            if isinstance(views, ImageError):
                done[seq] = (key, views)
            else:
                images[seq] = [key, size, [None] * passes]
                for k, view in enumerate(views):
                    full = queues.add(k, seq, view)
                    if len(queues.members(full)) >= batch_size:
                        run(full)
                while queues.bytes > WAITING_BYTES:
                    run(queues.oldest())
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
        while queues:
            run(queues.oldest())
        while in_flight:
            collect(*in_flight.popleft())
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1

    def _raw_maps_or_errors(self, views: list[np.ndarray]) -> list[torch.Tensor | BaseException]:
        """:meth:`bucketed_raw_maps`, but a batch that runs out of memory is run again one view at a
        time, so one oversized image costs only its own result."""
        try:
            return self.bucketed_raw_maps(views)
        except Exception as e:
            if not _out_of_memory(e):
                raise
            if len(views) == 1:
                return [e]
        return [self._raw_maps_or_errors([view])[0] for view in views]

    # --- the baseline of section 4.2 --------------------------------------------------------
    @torch.inference_mode()
    def ten_crop_scores(self, rgb: np.ndarray, rng: np.random.Generator, crops: int = 10,
                        size: int = 224) -> np.ndarray:
        """"the baseline averages confidence values from 10 randomly chosen 224×224 crops" through
        the training form. We average per-crop softmax distributions (the same scale as the
        single-pass per-position softmax)."""
        img = resize_short_side(rgb)
        h, w = img.shape[:2]
        batch = []
        for _ in range(crops):
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            batch.append(img[y:y + size, x:x + size])
        x = to_tensor(np.stack(batch), self.mean).to(self.device)
        with autocast(self.device, self.bf16):
            logits = self.head(self.trunk(x).mean(dim=(2, 3)))
        return logits.float().softmax(dim=1).mean(dim=0).cpu().numpy()
