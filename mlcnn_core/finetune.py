"""Fine-tuning on a person's corrections with the early trunk frozen: its features are computed once.

A person corrects tens to hundreds of images. Moving every weight on so few images either forgets
what the model knew or (held back hard enough not to) learns almost nothing; the layers that read
strokes and colours are also the ones a new artist's drawings need least changed. So only the last
part of the network learns: the head (the 1×1 layers of the test form), or the head and the trunk's
last block (the convolutions after its last pooling). Everything before that part is frozen, so its
output for each training image is computed once, for a few views of the image (two scales, and
mirrored), and the trainable part is then trained for many steps on random crops of those maps: a
fine-tune of 100 images takes seconds to a minute on a CPU instead of minutes.

Two things keep what the model knew: the trainable weights are pulled toward the parent's after each
step (L2-SP, like ``--anchor``), and, optionally, the parent's own outputs on the person's images
are distilled (LwF).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageError, Sample, multi_hot, read_image, resize_short_side, to_tensor
from .loss import multilabel_softmax_loss
from .metrics import f_beta
from .model import MLCNN
from .newlabels import CUT_BETA
from .optim import warmup_cosine
from .predict import PredictConfig, final_scores
from .recipes import FROZEN_SHORT_SIDES

# The map crop the trainable part sees, in trunk cells: 8 cells of 32 px = the 256 px training crop.
CROP_CELLS = 8


@dataclass
class FrozenMethod:
    """What learns and how long. ``part``: "head" (both FC layers, as 1×1 layers), "last" (the last
    layer only), or "block" (the head and the trunk's last block)."""

    part: str = "head"
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    anchor: float = 0.0        # L2-SP toward the parent, per unit of rate (rate × anchor capped at 1)
    distill: float = 0.0       # weight of the parent's outputs on the same crops (LwF)
    distill_over: str = "old"  # "old": the old rows' softmax only | "all": every row's (see _distillation)
    temperature: float = 2.0
    weight_decay: float = 0.0
    norm_stats: str = "frozen"  # "frozen" | "update": the trainable block's batch-norm statistics
    short_sides: tuple[int, ...] = FROZEN_SHORT_SIDES
    mirror: bool = True
    replay_weight: float = 0.0  # weight of a batch of replayed training crops in each step (replay.py)

    @property
    def views_per_image(self) -> int:
        return len(self.short_sides) * (2 if self.mirror else 1)


def trunk_part(net: MLCNN, start: int, end: int | None = None) -> nn.Sequential:
    """Modules ``start:end`` of the trunk, sharing their weights with it."""
    return nn.Sequential(*list(net.trunk)[start:end])


def trainable_start(net: MLCNN, part: str) -> int:
    """Index of the first trunk module that learns (``len(trunk)`` when only the head does)."""
    if part in ("head", "last"):
        return len(net.trunk)
    if part == "block":
        pools = [i for i, m in enumerate(net.trunk) if isinstance(m, nn.MaxPool2d)]
        return pools[-1] + 1 if pools else 0
    raise ValueError(f"unknown trainable part {part!r}: choose head, last or block")


@torch.no_grad()
def frozen_maps(net: MLCNN, start: int, mean: list[float], images: list[np.ndarray], device: torch.device,
                batch: int = 16) -> list[torch.Tensor]:
    """The output of ``trunk[:start]`` (eval mode) for each RGB uint8 image (any sizes), [C, h, w] each."""
    front = trunk_part(net, 0, start).eval().to(device)
    out: list[torch.Tensor | None] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    for members in by_shape.values():
        for j in range(0, len(members), batch):
            chunk = members[j:j + batch]
            x = to_tensor(np.stack([images[i] for i in chunk]), mean).to(device)
            maps = front(x).float()
            for i, m in zip(chunk, maps, strict=True):
                out[i] = m.contiguous()
    return out


@dataclass
class TrainingViews:
    """Frozen-part maps of each view of the training images, with each view's multi-hot targets."""

    maps: list[torch.Tensor]
    targets: torch.Tensor      # [views, l]
    images: int                # readable training images
    unreadable: list[str]
    pixels: int = 0            # of all the views: what the front's cost grows with


def training_views(net: MLCNN, start: int, mean: list[float], samples: list[Sample], index: dict[str, int],
                   method: FrozenMethod, device: torch.device, chunk: int = 8,
                   on_images: Callable[[int, int, TrainingViews], None] | None = None) -> TrainingViews:
    """The front's maps of every view of ``samples``, ``chunk`` images at a time; ``on_images(done,
    total, views so far)`` is called after each chunk (progress, and the rates an ETA needs)."""
    maps, targets, unreadable, readable, pixels = [], [], [], 0, 0
    for first in range(0, len(samples), chunk):
        views = []
        for s in samples[first:first + chunk]:
            try:
                rgb = read_image(s.image, max(method.short_sides))
            except ImageError:
                unreadable.append(s.image)
                continue
            readable += 1
            target = multi_hot(s.labels, index).astype(np.float32)
            for short in method.short_sides:
                im = resize_short_side(rgb, short)
                for flip in (False, True) if method.mirror else (False,):
                    views.append(np.ascontiguousarray(im[:, ::-1]) if flip else im)
                    targets.append(target)
                    pixels += im.shape[0] * im.shape[1]
        if views:
            maps += frozen_maps(net, start, mean, views, device)
        if on_images is not None:
            done = min(first + chunk, len(samples))
            on_images(done, len(samples), _views(maps, targets, index, readable, unreadable, pixels))
    return _views(maps, targets, index, readable, unreadable, pixels)


def _views(maps: list[torch.Tensor], targets: list[np.ndarray], index: dict[str, int], readable: int,
           unreadable: list[str], pixels: int) -> TrainingViews:
    return TrainingViews(maps, torch.as_tensor(np.array(targets).reshape(-1, len(index))), readable, unreadable,
                         pixels)


def _crops(maps: list[torch.Tensor], rng: np.random.Generator, cells: int) -> torch.Tensor:
    """A random ``cells``×``cells`` window of each map (stride-1 cells), stacked."""
    out = []
    for m in maps:
        h, w = m.shape[-2:]
        ch, cw = min(h, cells), min(w, cells)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = m[:, y:y + ch, x:x + cw]
        if (ch, cw) != (cells, cells):
            crop = F.interpolate(crop[None], size=(cells, cells), mode="nearest")[0]
        out.append(crop)
    return torch.stack(out)


def _trainable_parameters(net: MLCNN, start: int, part: str) -> list[nn.Parameter]:
    if part == "last":
        return list(net.head.fcs[-1].parameters())
    return [*trunk_part(net, start).parameters(), *net.head.parameters()]


def _distillation(logits: torch.Tensor, teacher: torch.Tensor, old: int, method: FrozenMethod) -> torch.Tensor:
    """KL from the parent's softmax over its ``old`` labels to the student's, at the method's
    temperature (× t², Hinton et al.). ``distill_over`` "old" compares the old rows' softmax alone:
    it keeps how the old labels rank against each other, but not their share of a position, which
    new labels are free to take. "all" compares the student's softmax over every row, the new rows'
    teacher probability being 0: each position keeps the parent's share for the old labels, so new
    labels learnt from images tagged only with them cannot take every position of every image."""
    t = method.temperature
    target = F.log_softmax(teacher[:, :old] / t, dim=1)
    rows = logits[:, :old] if method.distill_over == "old" else logits
    student = F.log_softmax(rows / t, dim=1)[:, :old]
    return t * t * (target.exp() * (target - student)).sum(dim=1).mean()


class FrozenTrainer:
    """Trains ``trunk[start:]`` and the head of ``net`` (in place) on random crops of the frozen front's
    maps, one step at a time, so that a caller can report, validate, checkpoint and stop between
    steps. ``old_labels``: output rows the parent had (the rows after them are new and not anchored
    or distilled). The L2-SP anchors and the distillation teacher are the weights ``net`` has when
    the trainer is made: make it before loading a checkpoint into ``net``."""

    def __init__(self, net: MLCNN, start: int, method: FrozenMethod, old_labels: int, seed: int = 0,
                 replay: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.net, self.start, self.method, self.old_labels = net, start, method, old_labels
        if replay is not None and start != len(net.trunk):
            raise ValueError("a replay set holds the trunk's pooled output: only a fine-tune of the head uses it")
        # (pooled features [n, C], targets [n, l]) of crops of the model's training scenes (replay.py)
        self.replay = replay if method.replay_weight > 0 else None
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.back = trunk_part(net, start)
        params = _trainable_parameters(net, start, method.part)
        trainable = {id(p) for p in params}
        for p in net.parameters():
            p.requires_grad_(id(p) in trainable)
        self.parent = copy.deepcopy(net).eval() if method.distill > 0 else None
        self.pairs = anchors(net, old_labels, params) if method.anchor > 0 else []
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": method.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=method.lr)
        self.step = 0

    @contextmanager
    def threads(self):
        """A step of the head is a few small matrix products: on a CPU more threads only add
        synchronisation, which costs far more than the work itself when other programs share it."""
        threads = torch.get_num_threads()
        device = next(self.net.parameters()).device
        if self.method.part in ("head", "last") and device.type == "cpu":
            torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def _loss(self, views: TrainingViews) -> torch.Tensor:
        method = self.method
        self.net.train()
        if method.norm_stats == "frozen" or method.part != "block":
            for m in self.back.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        idx = self.rng.choice(len(views.maps), size=min(method.batch_size, len(views.maps)), replace=False)
        x = _crops([views.maps[i] for i in idx], self.rng, CROP_CELLS)
        logits = self.net.head(self.back(x).mean(dim=(2, 3)))
        loss, _ = multilabel_softmax_loss(logits, views.targets[idx].to(x.device))
        if self.parent is not None:
            with torch.no_grad():
                teacher = self.parent.head(trunk_part(self.parent, self.start)(x).mean(dim=(2, 3)))
            loss = loss + method.distill * _distillation(logits, teacher, self.old_labels, method)
        if self.replay is not None:
            features, targets = self.replay
            pick = torch.as_tensor(self.rng.choice(len(features), size=min(method.batch_size, len(features)),
                                                   replace=False))
            replayed, _ = multilabel_softmax_loss(self.net.head(features[pick].to(x.device)),
                                                  targets[pick].to(x.device))
            loss = loss + method.replay_weight * replayed
        return loss

    def train_step(self, views: TrainingViews) -> float:
        """One optimiser step at the schedule's rate; returns its loss."""
        return self._step(views)

    def _step(self, views: TrainingViews) -> float:
        method = self.method
        for g in self.optimizer.param_groups:
            g["lr"] = method.lr * warmup_cosine(self.step, method.steps, 0.1)
        loss = self._loss(views)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.pairs:
            pull_toward_start(self.pairs, self.optimizer.param_groups[0]["lr"] * method.anchor)
        self.step += 1
        return loss.item()

    def trial_seconds(self, views: TrainingViews, steps: int = 10) -> float:
        """Seconds a step takes: the mean of ``steps`` real steps on ``views`` (the first left out, of two
        or more), after which the weights, the optimiser, the schedule and the crops' random state are
        put back."""
        weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        optimizer, step, rng = copy.deepcopy(self.optimizer.state_dict()), self.step, self.rng.bit_generator.state
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            self._step(views)
            times.append(time.perf_counter() - t0)
        self.net.load_state_dict(weights)
        self.optimizer.load_state_dict(optimizer)
        self.step, self.rng.bit_generator.state = step, rng
        self.net.eval()
        return float(np.mean(times[1:] or times))

    def state(self) -> dict:
        """What a checkpoint needs besides the weights and the optimiser (JSON)."""
        return {"step": self.step, "rng": self.rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]

    def close(self) -> None:
        for p in self.net.parameters():
            p.requires_grad_(True)
        self.net.eval()


def fit_frozen(net: MLCNN, start: int, views: TrainingViews, method: FrozenMethod, old_labels: int,
               seed: int = 0, on_step: Callable[[int, int, float], bool] | None = None,
               replay: tuple[torch.Tensor, torch.Tensor] | None = None) -> int:
    """Train ``trunk[start:]`` and the head of ``net`` (in place) on random crops of ``views``
    (:class:`FrozenTrainer`). ``on_step(step, steps, loss)`` is called after each step; returning
    True stops. Returns the steps taken."""
    if not views.maps:
        return 0
    trainer = FrozenTrainer(net, start, method, old_labels, seed, replay=replay)
    try:
        with trainer.threads():
            while trainer.step < method.steps:
                loss = trainer.train_step(views)
                if on_step is not None and on_step(trainer.step, method.steps, loss):
                    break
    finally:
        trainer.close()
    return trainer.step


class HeldOutMaps:
    """The frozen front's maps of held-out images, for each pass of the model's reading, computed
    once: scoring them as prediction does after each epoch then costs only the trainable part."""

    def __init__(self, net: MLCNN, start: int, mean: list[float], config: PredictConfig, samples: list[Sample],
                 device: torch.device):
        self.start, self.config = start, config
        self.samples: list[Sample] = []
        images: list[list[np.ndarray]] = []
        for s in samples:
            try:
                rgb = read_image(s.image, max(config.passes))
            except ImageError:
                continue
            images.append([resize_short_side(rgb, short) for short in config.passes])
            self.samples.append(s)
        self.pixels = sum(v.shape[0] * v.shape[1] for views in images for v in views)
        self.maps = [frozen_maps(net, start, mean, [v[k] for v in images], device) if images else []
                     for k in range(len(config.passes))]

    def truth(self, labels: list[str]) -> np.ndarray:
        index = {lab: i for i, lab in enumerate(labels)}
        return np.array([multi_hot(s.labels, index) > 0 for s in self.samples]).reshape(-1, len(labels))

    @torch.no_grad()
    def scores(self, net: MLCNN, only: Iterable[int] | None = None) -> np.ndarray:
        """Each image's (of ``only`` these) final score vector [n, l], as prediction scores it (test
        form, section 2.6)."""
        net.eval()
        back = trunk_part(net, self.start)
        out = []
        chosen = range(len(self.samples)) if only is None else list(only)
        for i in chosen:
            raws = [net.head.forward_map(back(m[i][None])) for m in self.maps]
            out.append(final_scores(raws[0], self.config, raws[1] if len(raws) > 1 else None)[0][0].cpu().numpy())
        return np.array(out).reshape(len(chosen), -1)


def anchors(net: MLCNN, old_labels: int, params: list[nn.Parameter] | None = None
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, starting value) pairs for :func:`pull_toward_start`, of ``params`` (default: all of
    ``net``'s). The output rows of labels added for this fine-tune have no starting value worth
    keeping and are left free."""
    last = net.head.fcs[-1]
    pairs = []
    for p in net.parameters() if params is None else params:
        start = p.detach()[:old_labels] if p is last.weight or p is last.bias else p.detach()
        pairs.append((p, start.clone()))
    return pairs


def pull_toward_start(pairs: list[tuple[torch.Tensor, torch.Tensor]], strength: float) -> None:
    """L2-SP (Li et al. 2018) in decoupled form, like AdamW's weight decay but toward the model being
    fine-tuned instead of toward zero: w ← w − strength · (w − w_start). A fine-tune on a few dozen
    images of one style otherwise drifts away from what the model knew. ``strength`` (rate × anchor)
    is capped at 1, a full return to the start: above it the pull would overshoot and diverge."""
    strength = min(strength, 1.0)
    with torch.no_grad():
        for p, start in pairs:
            n = start.shape[0]
            p[:n].sub_(p[:n] - start, alpha=strength)


# What a new label's score may be multiplied by before it meets the model's threshold: its own cut.
# Rows learnt on a person's images beside replayed (or distilled) old scenes rank the new label's
# images well but score them far under the threshold the old labels were cut at.
NEW_LABEL_SCALES = 2.0 ** np.linspace(-2.0, 6.0, 33)
NEW_LABEL_MIN_TAGGED = 2   # images with a new label per fold for its cut to be placed (else its scale is 1)


def cross_validated_label_scales(parent: MLCNN, start: int, mean: list[float], config: PredictConfig,
                                 select: Callable[[np.ndarray], np.ndarray], samples: list[Sample],
                                 views: TrainingViews, method: FrozenMethod, old_labels: int, folds: int,
                                 seed: int = 0, beta: float = CUT_BETA,
                                 replay: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """Per new label (the rows after ``old_labels``), the factor on its score at which prediction,
    thresholded by ``select`` (scores [n, l] → chosen [n, l]), picks it best on images the head did
    not learn from: the training images are split in ``folds``, the head is trained from ``parent`` (a
    copy; ``method.steps`` steps, as :class:`FrozenTrainer` trains it, with ``replay``) on the views of
    all folds but one, and the images of the one left out are scored in the test form. The factor kept
    (of NEW_LABEL_SCALES) is the one with the best F-beta over all folds (``beta`` < 1 weighs
    precision more: a tag that fires where it is absent is what a person sees and corrects), the middle
    one of a tie. A factor moves the cut only: each label's ranking of images, and so its AP, stays.
    ``samples`` are the training images in the order ``views`` were made from them."""
    unreadable = set(views.unreadable)
    readable = [s for s in samples if s.image not in unreadable]
    per_image = method.views_per_image
    n_new = views.targets.shape[1] - old_labels
    if len(readable) != views.images or len(views.maps) != views.images * per_image or n_new <= 0:
        return np.ones(max(n_new, 0))
    fold_of = np.random.default_rng(seed).permutation(len(readable)) % folds
    truth = views.targets[::per_image, old_labels:].numpy() > 0                  # [images, new]
    tagged = np.array([truth[fold_of == f].sum(0) for f in range(folds)])        # [folds, new]
    placed = (tagged >= NEW_LABEL_MIN_TAGGED).all(0)
    if not placed.any():
        return np.ones(n_new)
    held_maps = HeldOutMaps(parent, start, mean, config, readable, next(parent.parameters()).device)
    index_of = {s.image: i for i, s in enumerate(readable)}
    held_images = np.array([index_of[s.image] for s in held_maps.samples])
    scales = np.ones((len(NEW_LABEL_SCALES), views.targets.shape[1]))
    scales[:, old_labels:] = NEW_LABEL_SCALES[:, None]
    hits = np.zeros((len(NEW_LABEL_SCALES), n_new, 3))  # true positives, false positives, false negatives
    for fold in range(folds):
        keep = np.flatnonzero(np.repeat(fold_of != fold, per_image))
        net = copy.deepcopy(parent)
        fold_views = TrainingViews([views.maps[i] for i in keep], views.targets[keep], int((fold_of != fold).sum()),
                                   [])
        fit_frozen(net, start, fold_views, method, old_labels, seed=seed + 1 + fold, replay=replay)
        held = np.flatnonzero(fold_of[held_images] == fold)
        scores = held_maps.scores(net, only=held)                                   # [held, l]
        for n, j in enumerate(held):
            chosen = select(scores[n] * scales)[:, old_labels:]                     # [scales, new]
            row_truth = truth[held_images[j]]
            hits[:, :, 0] += chosen & row_truth
            hits[:, :, 1] += chosen & ~row_truth
            hits[:, :, 2] += ~chosen & row_truth
    tp, fp, fn = hits[..., 0], hits[..., 1], hits[..., 2]
    score = f_beta(tp, fp, fn, beta)
    out = np.ones(n_new)
    for j in np.flatnonzero(placed & tp.any(0)):
        best = np.flatnonzero(score[:, j] >= score[:, j].max() - 1e-9)
        out[j] = float(NEW_LABEL_SCALES[best[len(best) // 2]])
    return out
