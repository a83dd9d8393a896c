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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageError, Sample, read_image, resize_short_side, to_tensor
from .loss import multilabel_softmax_loss
from .model import MLCNN
from .optim import warmup_cosine
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
    temperature: float = 2.0
    weight_decay: float = 0.0
    norm_stats: str = "frozen"  # "frozen" | "update": the trainable block's batch-norm statistics
    short_sides: tuple[int, ...] = FROZEN_SHORT_SIDES
    mirror: bool = True

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


def training_views(net: MLCNN, start: int, mean: list[float], samples: list[Sample], index: dict[str, int],
                   method: FrozenMethod, device: torch.device) -> TrainingViews:
    views, targets, unreadable, readable = [], [], [], 0
    for s in samples:
        try:
            rgb = read_image(s.image, max(method.short_sides))
        except ImageError:
            unreadable.append(s.image)
            continue
        readable += 1
        target = np.zeros(len(index), np.float32)
        for lab in s.labels:
            if lab in index:
                target[index[lab]] = 1.0
        for short in method.short_sides:
            im = resize_short_side(rgb, short)
            for flip in (False, True) if method.mirror else (False,):
                views.append(np.ascontiguousarray(im[:, ::-1]) if flip else im)
                targets.append(target)
    maps = frozen_maps(net, start, mean, views, device) if views else []
    return TrainingViews(maps, torch.as_tensor(np.array(targets).reshape(-1, len(index))), readable, unreadable)


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


def fit_frozen(net: MLCNN, start: int, views: TrainingViews, method: FrozenMethod, old_labels: int,
               seed: int = 0, on_step: Callable[[int, int, float], bool] | None = None) -> int:
    """Train ``trunk[start:]`` and the head of ``net`` (in place) on random crops of ``views``.
    ``old_labels``: output rows the parent had (the rows after them are new and not anchored or
    distilled). ``on_step(step, steps, loss)`` is called after each step; returning True stops.
    Returns the steps taken."""
    if not views.maps:
        return 0
    device = views.maps[0].device
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    back = trunk_part(net, start)
    params = _trainable_parameters(net, start, method.part)
    trainable = {id(p) for p in params}
    for p in net.parameters():
        p.requires_grad_(id(p) in trainable)
    parent = copy.deepcopy(net).eval() if method.distill > 0 else None
    pairs = anchors(net, old_labels, params) if method.anchor > 0 else []
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": method.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=method.lr)
    n = len(views.maps)
    step = 0
    threads = torch.get_num_threads()
    if method.part in ("head", "last") and device.type == "cpu":
        # a step of the head is a few small matrix products: more threads only add synchronisation,
        # which costs far more than the work itself on a CPU that other programs are using
        torch.set_num_threads(1)
    try:
        for step in range(1, method.steps + 1):
            for g in opt.param_groups:
                g["lr"] = method.lr * warmup_cosine(step - 1, method.steps, 0.1)
            net.train()
            if method.norm_stats == "frozen" or method.part != "block":
                for m in back.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
            idx = rng.choice(n, size=min(method.batch_size, n), replace=False)
            x = _crops([views.maps[i] for i in idx], rng, CROP_CELLS)
            logits = net.head(back(x).mean(dim=(2, 3)))
            loss, _ = multilabel_softmax_loss(logits, views.targets[idx].to(device))
            if parent is not None:
                with torch.no_grad():
                    teacher = parent.head(trunk_part(parent, start)(x).mean(dim=(2, 3)))[:, :old_labels]
                t = method.temperature
                loss = loss + method.distill * t * t * F.kl_div(
                    F.log_softmax(logits[:, :old_labels] / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if pairs:
                pull_toward_start(pairs, opt.param_groups[0]["lr"] * method.anchor)
            if on_step is not None and on_step(step, method.steps, loss.item()):
                break
    finally:
        torch.set_num_threads(threads)
        for p in net.parameters():
            p.requires_grad_(True)
        net.eval()
    return step


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
