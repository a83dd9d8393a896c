"""Output rows for labels a person adds: fitted to what prediction does with them.

The network learns its labels in the training form ("global average pooling" before the FC
layers) but predicts in the test form (the FC layers applied at every position, then the
per-position softmax, pruning and summing of section 2.6). A label the parent never had gets a new
last-layer row; trained only in the training form, on a few dozen images, that row never meets a
position without its drawing. On held-out scenes it then wins background positions everywhere:
the benchmark's new label ``cat`` (30 training scenes) was predicted on 252 of 300 held-out scenes,
precision 0.36, and its scores on scenes without a cat overlapped those with one, so no cutoff
could separate them.

:func:`fit_new_rows` fits the new rows (weights and bias; every other weight fixed) on the test
form of the training images, through a differentiable copy of section 2.6's scoring
(:func:`~mlcnn_core.predict.soft_final_scores`), against the threshold the model predicts with:

- an image tagged with the new label should score it above the threshold (by ``margin_above``),
- an image without it should score it well below (under ``margin_below`` × the threshold): every
  position of such an image is a negative, which the training form never shows,
- the image's other true labels should stay above the threshold: a new label that covers the
  same drawing as an old one (``cat`` on a cat face) must share its positions, not take them.

Each image is used as it is and mirrored; 300 Adam steps on the new rows alone (the maps are
computed once) take about 15 s for 80 images on a 2-core CPU. The fit runs before the fine-tune
(so the first gradient steps do not pull the old weights toward a random row) and again after it
(on the features the fine-tune left). On the benchmark's ``cat-val`` scenes (bench/finetune_curve.py
--split val) ``cat`` went from precision 0.38 / recall 0.94 (the row left to the fine-tune) to
0.96 / 0.86. With the paper's pruning (``keep_ratio`` 1: one label per position) a tag on a drawing
the model knows can only win that label's positions; the shipped models keep labels within half
of a position's best, so both can be predicted.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import ImageError, Sample, multi_hot
from .metrics import f_beta, per_label_metrics
from .modelfile import TaggerModel
from .predict import Predictor, final_scores, soft_final_scores
from .spec import trunk_stride

MAX_IMAGES = 400        # images of the person's corrections used, with and without a new label alternately
MAX_FEATURE_BYTES = 1 << 29  # the last layer's input maps kept for the fit
MARGIN_ABOVE = 1.3      # a true label's score: at least this times the threshold
MARGIN_BELOW = 0.5      # a new label's score where it is absent: at most this times the threshold
KEEP_OLD = 2.0          # weight of the image's known labels staying above the threshold
FOLDS = 3               # folds of the cross-validation that places a new row's cut (mlcnn train's last fit)
MIN_PER_FOLD = 4        # images with the label per fold for that cut to say anything


def fit_new_rows(model: TaggerModel, samples: list[Sample], new: list[str], device: str = "cpu",
                 bf16: bool | None = None, steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-2,
                 seed: int = 0, folds: int = 0, start: str = "zero") -> dict[str, dict]:
    """Fit the last-layer rows of the ``new`` labels of ``model`` (in place) on ``samples``, from zero
    (or from their ``start``, see :func:`fit_rows`). With ``folds`` ≥ 2, each row's bias is then moved
    to the cut found by cross-validation (:func:`fit_rows`). Returns, per new label, its precision and
    recall on those images after the fit."""
    return fit_rows(model, samples, new, device=device, bf16=bf16, steps=steps, lr=lr, weight_decay=weight_decay,
                    seed=seed, folds=folds, start=start)


def fit_rows(model: TaggerModel, samples: list[Sample], fitted: list[str], device: str = "cpu",
             bf16: bool | None = None, steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-2,
             seed: int = 0, anchor: float | None = None, margin_below: float = MARGIN_BELOW,
             negatives: float = 1.0, folds: int = 0, start: str = "zero") -> dict[str, dict]:
    """Fit the last-layer rows of the ``fitted`` labels of ``model`` (in place) on ``samples``; the
    other rows stay as they are. With ``anchor`` None the rows start from zero (new labels); with a
    number they start from their current values and are held near them by ``anchor`` × the squared
    distance (L2-SP) instead of the weight decay toward zero (a person's corrections of labels the
    model knows). ``margin_below``: how far under the threshold a label should score where it is
    absent; ``negatives``: the weight of those images against the ones with the label.

    A row fitted on a few dozen images separates them (nearly) perfectly, so where it cuts on them
    says little about where it cuts on others. With ``folds`` ≥ 2 the images are split in that many
    folds, the rows fitted on all folds but one score the one left out, and each row's bias is then
    moved by the shift that scores best (:data:`CUT_BETA`) on those out-of-fold images.

    ``start`` (rows without an ``anchor``): "zero", or "prototype": each row starts from the
    prototype of its label's positions (:func:`prototype_rows`), computed on the images each fit
    is given; with ``steps`` 0 the prototype is the row.
    Returns, per fitted label, its precision and recall on those images after the fit."""
    if start not in ("zero", "prototype"):
        raise ValueError(f"unknown start {start!r} of new rows: choose zero or prototype")
    labels = list(model.labels)
    new_idx = [labels.index(lab) for lab in fitted]
    old_idx = [i for i in range(len(labels)) if i not in set(new_idx)]
    was_training = model.net.training
    predictor = Predictor(model, device=device, bf16=bf16)
    last = model.net.head.fcs[-1]
    groups = _hidden_groups(predictor, _chosen(samples, set(fitted), seed))
    if not groups:
        model.net.train(was_training)
        return {}
    dev = predictor.device
    w_old = last.weight.detach()[old_idx].float().to(dev)
    b_old = last.bias.detach()[old_idx].float().to(dev)
    for g in groups:
        g["old"] = [torch.einsum("nchw,lc->nlhw", h, w_old) + b_old[:, None, None] for h in g["hidden"]]
    w_start = last.weight.detach()[new_idx].float().to(dev)
    b_start = last.bias.detach()[new_idx].float().to(dev)
    _set_targets(groups, predictor, new_idx, old_idx, labels, None if anchor is None else (w_start, b_start))
    fit = _RowFit(predictor, new_idx, old_idx, w_start, b_start, anchor, steps, lr, weight_decay, margin_below,
                  negatives, prototype=start == "prototype" and anchor is None)
    w_new, b_new = fit(groups)
    if folds >= 2:
        b_new = b_new + _cross_validated_shift(fit, groups, folds)
    with torch.no_grad():
        last.weight[new_idx] = w_new.to(last.weight)
        last.bias[new_idx] = b_new.to(last.bias)
    report = _report(predictor, groups, fitted, new_idx)
    model.net.train(was_training)
    return report


# How a new row's cut is chosen on out-of-fold images: the bias shift with the best F-beta, beta < 1
# weighing precision more (a tag that fires on images without it is what a person sees and corrects).
CUT_BETA = 0.5
# Bias shifts tried, in logits: only down. The fit already aims each image's labels above the cut; a
# higher bias would let the new label take positions from the labels the model knew (a known label on
# the same drawing then drops under the threshold).
SHIFTS = np.linspace(-4.0, 0.0, 17)


class _RowFit:
    """Fits the rows on a set of groups (see :func:`fit_rows`) and scores them with a bias shift."""

    def __init__(self, predictor: Predictor, new_idx: list[int], old_idx: list[int], w_start: torch.Tensor,
                 b_start: torch.Tensor, anchor: float | None, steps: int, lr: float, weight_decay: float,
                 margin_below: float, negatives: float, prototype: bool = False):
        self.predictor, self.new_idx, self.old_idx = predictor, new_idx, old_idx
        self.prototype = prototype
        self.w_start, self.b_start, self.anchor = w_start, b_start, anchor
        self.steps, self.lr, self.weight_decay = steps, lr, weight_decay
        self.margin_below, self.negatives = margin_below, negatives
        order = old_idx + new_idx  # the logits are laid out old rows first, new rows last
        self.inverse = torch.as_tensor(np.argsort(order), device=w_start.device)

    def raws(self, g: dict, w: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
        return [torch.cat([old, torch.einsum("nchw,lc->nlhw", h, w) + b[:, None, None]], dim=1)[:, self.inverse]
                for h, old in zip(g["hidden"], g["old"], strict=True)]

    def __call__(self, groups: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        anchor, w_start, b_start = self.anchor, self.w_start, self.b_start
        if self.prototype:
            w_new, b_new = prototype_rows(self, groups)
        else:
            w_new, b_new = (torch.zeros_like(w_start) if anchor is None else w_start.clone()), b_start.clone()
        w_new.requires_grad_(True)
        b_new.requires_grad_(True)
        opt = torch.optim.Adam([w_new, b_new], lr=self.lr)
        total = sum(len(g["truth"]) for g in groups)
        for _ in range(self.steps):
            if anchor is None:
                loss = self.weight_decay * (w_new ** 2).sum()
            else:
                loss = anchor * (((w_new - w_start) ** 2).sum() + ((b_new - b_start) ** 2).sum())
            for g in groups:
                raws = self.raws(g, w_new, b_new)
                scores = soft_final_scores(raws[0], self.predictor.config, second=_second(raws))
                loss = loss + len(g["truth"]) / total * _loss(scores, g, self.new_idx, self.old_idx,
                                                              self.margin_below, self.negatives)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return w_new.detach(), b_new.detach()

    @torch.no_grad()
    def chosen(self, g: dict, w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        """The new labels as prediction chooses them [n, new], with rows (w, b)."""
        raws = self.raws(g, w, b)
        scores = final_scores(raws[0], self.predictor.config, _second(raws))[0].cpu().numpy()
        return self.predictor.threshold.select(scores)[:, self.new_idx]


# How far the prototype's direction is scaled, in norms of the known rows: the scale whose rows, with
# the bias the known rate gives, score best (CUT_BETA) on the images the prototype was made from.
PROTOTYPE_SCALES = (0.5, 1.0, 2.0, 4.0)
# The positions of an image with a label that make its prototype: this share of them, those most
# unlike the images without it.
PROTOTYPE_POSITIONS = 0.25


@torch.no_grad()
def prototype_rows(fit: _RowFit, groups: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the new labels imprinted from the last layer's input features (weight imprinting, Qi,
    Brown & Lowe 2018, for a layer without normalised features): per label, the direction is the mean
    feature of its positions minus the mean feature of every position of the images without it. An
    image is tagged, not its positions: the label's positions are the quarter (PROTOTYPE_POSITIONS) of
    each tagged image's positions that lie furthest along the difference of the two images' means.
    The row is that direction scaled to a multiple of the known rows' mean norm (PROTOTYPE_SCALES), with
    the bias at which prediction picks the label on as many of these images as carry it (the known
    rate); the multiple that then scores best (F-beta, CUT_BETA) on them is kept."""
    device = fit.w_start.device
    width = fit.w_start.shape[1]
    known_norm = float(fit.predictor.head.fcs[-1].weight.detach()[fit.old_idx].float().norm(dim=1).mean())
    directions = []
    for j in fit.new_idx:
        pos_sum, pos_n, neg_sum, neg_n = torch.zeros(width, device=device), 0, torch.zeros(width, device=device), 0
        tagged_maps = []
        for g in groups:
            has = g["truth"][:, j]
            for h in g["hidden"]:
                flat = h.float().flatten(2)  # [n, C, positions]
                neg_sum += flat[~has].sum(dim=(0, 2))
                neg_n += int((~has).sum()) * flat.shape[2]
                tagged_maps.append(flat[has])
                pos_sum += flat[has].sum(dim=(0, 2))
                pos_n += int(has.sum()) * flat.shape[2]
        if not pos_n or not neg_n:
            directions.append(torch.zeros(width, device=device))
            continue
        neg_mean = neg_sum / neg_n
        rough = pos_sum / pos_n - neg_mean
        chosen_sum, chosen_n = torch.zeros(width, device=device), 0
        for flat in tagged_maps:
            if not len(flat):
                continue
            along = torch.einsum("ncp,c->np", flat, rough)
            keep = max(1, round(PROTOTYPE_POSITIONS * flat.shape[2]))
            top = along.topk(keep, dim=1).indices  # [n, keep]
            chosen_sum += torch.gather(flat, 2, top[:, None, :].expand(-1, width, -1)).sum(dim=(0, 2))
            chosen_n += top.numel()
        direction = chosen_sum / chosen_n - neg_mean
        directions.append(direction / direction.norm().clamp(min=1e-12))
    direction = torch.stack(directions)
    truth = np.concatenate([g["truth"][:, fit.new_idx].cpu().numpy() for g in groups])
    rate = truth.mean(0)
    best = None
    for scale in PROTOTYPE_SCALES:
        w = scale * known_norm * direction
        b = _bias_for_rate(fit, groups, w, rate)
        chosen = np.concatenate([fit.chosen(g, w, b) for g in groups])
        tp, fp = (chosen & truth).sum(0), (chosen & ~truth).sum(0)
        fn = (~chosen & truth).sum(0)
        score = f_beta(tp, fp, fn, CUT_BETA)
        if best is None:
            best = [w.clone(), b.clone(), score]
        better = torch.as_tensor(score > best[2], device=device)
        best[0] = torch.where(better[:, None], w, best[0])
        best[1] = torch.where(better, b, best[1])
        best[2] = np.maximum(score, best[2])
    return best[0], best[1]


def _bias_for_rate(fit: _RowFit, groups: list[dict], w: torch.Tensor, rate: np.ndarray,
                   low: float = -30.0, high: float = 30.0, rounds: int = 20) -> torch.Tensor:
    """Per row, the bias at which prediction picks its label on a ``rate`` share of the images (bisection:
    the share only grows with the bias)."""
    lo = torch.full((len(fit.new_idx),), low, device=w.device)
    hi = torch.full((len(fit.new_idx),), high, device=w.device)
    target = torch.as_tensor(rate, device=w.device, dtype=torch.float32)
    for _ in range(rounds):
        mid = (lo + hi) / 2
        picked = torch.as_tensor(np.concatenate([fit.chosen(g, w, mid) for g in groups]).mean(0),
                                 device=w.device, dtype=torch.float32)
        above = picked > target
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return (lo + hi) / 2


def _cross_validated_shift(fit: _RowFit, groups: list[dict], folds: int) -> torch.Tensor:
    """Per new row, the bias shift whose out-of-fold choices score the best F-beta (CUT_BETA); the
    middle of the best shifts when several tie. Folds split images, never an image from its mirror.
    A label with fewer than MIN_PER_FOLD images per fold keeps its fitted bias (no fold is fitted
    when none has enough)."""
    tagged = np.zeros(len(fit.new_idx))  # images with each new label (mirror images counted once)
    for g in groups:
        first_views = np.unique(g["ids"], return_index=True)[1]
        tagged += g["truth"][:, fit.new_idx].cpu().numpy()[first_views].sum(0)
    enough = tagged >= folds * MIN_PER_FOLD
    if not enough.any():
        return torch.zeros_like(fit.b_start)
    hits = np.zeros((len(SHIFTS), len(fit.new_idx), 3))  # true positives, false positives, false negatives
    for fold in range(folds):
        train = [_subset(g, g["ids"] % folds != fold) for g in groups]
        held = [_subset(g, g["ids"] % folds == fold) for g in groups]
        w, b = fit([g for g in train if len(g["truth"])])
        for g in held:
            if not len(g["truth"]):
                continue
            truth = g["truth"][:, fit.new_idx].cpu().numpy()
            for k, shift in enumerate(SHIFTS):
                chosen = fit.chosen(g, w, b + float(shift))
                hits[k, :, 0] += (chosen & truth).sum(0)
                hits[k, :, 1] += (chosen & ~truth).sum(0)
                hits[k, :, 2] += (~chosen & truth).sum(0)
    tp, fp, fn = hits[..., 0], hits[..., 1], hits[..., 2]
    score = f_beta(tp, fp, fn, CUT_BETA)
    shifts = []
    for j in range(len(fit.new_idx)):
        best = np.flatnonzero(score[:, j] >= score[:, j].max() - 1e-9)
        shifts.append(float(np.median(SHIFTS[best])) if enough[j] and tp[:, j].any() else 0.0)
    return torch.tensor(shifts, dtype=fit.b_start.dtype, device=fit.b_start.device)


def _subset(g: dict, keep: np.ndarray) -> dict:
    idx = torch.as_tensor(np.flatnonzero(keep), device=g["truth"].device)
    return {"hidden": [h[idx] for h in g["hidden"]], "old": [o[idx] for o in g["old"]], "truth": g["truth"][idx],
            "threshold": g["threshold"][idx], "ids": g["ids"][keep.astype(bool)]}


def final_fit_cost(folds: int, images: list[int]) -> float:
    """A fit with a cross-validated cut, in fits without one, when the new labels have ``images``
    each: the maps are read once, and each of the ``folds`` fits trains on all but one fold (an
    estimate for ETAs)."""
    return float(folds) if folds >= 2 and any(n >= folds * MIN_PER_FOLD for n in images) else 1.0


def _chosen(samples: list[Sample], new: set[str], seed: int) -> list[Sample]:
    """Images with a new label and images without one, alternately (in a seeded order), so that a
    cap on their number keeps both kinds; the images with new labels take each new label in turn
    (the rarest first), so that a cap keeps every new label that has an image."""
    order = np.random.default_rng(seed).permutation(len(samples))
    tagged = _each_label_in_turn([samples[i] for i in order if new & set(samples[i].labels)], new)
    others = [samples[i] for i in order if not new & set(samples[i].labels)]
    mixed = [s for pair in zip(tagged, others, strict=False) for s in pair]
    rest = tagged[len(others):] + others[len(tagged):]
    return mixed + rest


def _each_label_in_turn(tagged: list[Sample], new: set[str]) -> list[Sample]:
    """``tagged`` reordered round-robin over the new labels they carry, the rarest label first; an
    image with several new labels is taken once, for the first of them whose turn it is."""
    queues: dict[str, list[int]] = {}
    for i, s in enumerate(tagged):
        for lab in new & set(s.labels):
            queues.setdefault(lab, []).append(i)
    turns = sorted(queues, key=lambda lab: (len(queues[lab]), lab))
    taken: set[int] = set()
    out: list[Sample] = []
    heads = dict.fromkeys(turns, 0)
    while len(taken) < len(tagged):
        for lab in turns:
            q = queues[lab]
            while heads[lab] < len(q) and q[heads[lab]] in taken:
                heads[lab] += 1
            if heads[lab] < len(q):
                taken.add(q[heads[lab]])
                out.append(tagged[q[heads[lab]]])
                heads[lab] += 1
    return out


def _second(raws: list[torch.Tensor]) -> torch.Tensor | None:
    """The second pass's outputs of a reading of two passes, else None."""
    return raws[1] if len(raws) > 1 else None


def _hidden_groups(predictor: Predictor, samples: list[Sample]) -> list[dict]:
    """The last layer's input maps of each image and its mirror image, one list entry per pass of the
    reading, grouped by map sizes; at most MAX_IMAGES images and MAX_FEATURE_BYTES of maps (a wide
    head on large images fills memory fast)."""
    index = {lab: i for i, lab in enumerate(predictor.labels)}
    width = predictor.head.fcs[-1].in_features
    stride = trunk_stride(predictor.model.net.spec)
    by_shape: dict[tuple, dict] = {}
    used, taken = 0, 0
    for s in samples:
        if taken >= MAX_IMAGES:
            break
        try:
            passes = predictor.resize_passes(predictor.read(s.image))
        except ImageError:
            continue
        # two views (the image and its mirror), float32
        cost = sum(2 * 4 * width * -(-v.shape[0] // stride) * -(-v.shape[1] // stride) for v in passes)
        if used + cost > MAX_FEATURE_BYTES and taken:
            break
        used, taken = used + cost, taken + 1
        truth = multi_hot(s.labels, index) > 0
        for mirror in (False, True):
            views = [np.ascontiguousarray(v[:, ::-1]) if mirror else v for v in passes]
            g = by_shape.setdefault(tuple(v.shape for v in views), {"images": [], "truth": [], "ids": []})
            g["images"].append(views)
            g["truth"].append(truth)
            g["ids"].append(taken)
    groups = []
    for g in by_shape.values():
        hidden = [torch.cat([predictor.hidden_maps(np.stack([views[k] for views in g["images"][i:i + 16]]))
                             for i in range(0, len(g["images"]), 16)])
                  for k in range(len(predictor.config.passes))]
        groups.append({"hidden": hidden, "truth": torch.as_tensor(np.array(g["truth"]), device=hidden[0].device),
                       "ids": np.array(g["ids"])})
    return groups


def _set_targets(groups: list[dict], predictor: Predictor, new_idx: list[int], old_idx: list[int],
                 labels: list[str], current: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Each image's threshold, from its scores before the fit: new labels count 0 in a linear one, or
    rows refitted from their ``current`` (weights, biases) count as they are.
    A model without a fitted threshold (0) is given half the median score of the true labels."""
    per_group = []
    for g in groups:
        raws = []
        for h, old in zip(g["hidden"], g["old"], strict=True):
            raw = torch.zeros(h.shape[0], len(labels), *h.shape[2:], device=old.device)
            raw[:, old_idx] = old
            if current is None:
                raw[:, new_idx] = -1e4
            else:
                raw[:, new_idx] = torch.einsum("nchw,lc->nlhw", h, current[0]) + current[1][:, None, None]
            raws.append(raw)
        scores = final_scores(raws[0], predictor.config, _second(raws))[0].cpu().numpy()
        per_group.append((scores, predictor.threshold.thresholds(scores)))
    true_scores = np.concatenate([s[g["truth"].cpu().numpy()] for (s, _), g in zip(per_group, groups, strict=True)])
    fallback = 0.5 * float(np.median(true_scores)) if true_scores.size and np.median(true_scores) > 0 else 1.0
    for (_, t), g in zip(per_group, groups, strict=True):
        t = np.where(t > 0, t, fallback)
        g["threshold"] = torch.as_tensor(t, dtype=torch.float32, device=g["truth"].device)[:, None]


def _loss(scores: torch.Tensor, g: dict, new_idx: list[int], old_idx: list[int], margin_below: float,
          negatives: float) -> torch.Tensor:
    t = g["threshold"]
    scale = t / 4
    truth = g["truth"].float()
    above = F.softplus((MARGIN_ABOVE * t - scores) / scale)
    below = F.softplus((scores - margin_below * t) / scale)
    pos, s_new_above, s_new_below = truth[:, new_idx], above[:, new_idx], below[:, new_idx]
    # positives and negatives of each new label weigh the same, however rare the label
    new_loss = ((pos * s_new_above).sum(0) / pos.sum(0).clamp(min=1)
                + negatives * ((1 - pos) * s_new_below).sum(0) / (1 - pos).sum(0).clamp(min=1)).mean()
    old_true = truth[:, old_idx]
    old_loss = (old_true * above[:, old_idx]).sum() / old_true.sum().clamp(min=1)
    return new_loss + KEEP_OLD * old_loss


@torch.no_grad()
def _report(predictor: Predictor, groups: list[dict], new: list[str], new_idx: list[int]) -> dict[str, dict]:
    last = predictor.head.fcs[-1]
    chosen, truth = [], []
    for g in groups:
        raws = [torch.einsum("nchw,lc->nlhw", h, last.weight.float()) + last.bias.float()[:, None, None]
                for h in g["hidden"]]
        chosen.append(predictor.threshold.select(final_scores(raws[0], predictor.config, _second(raws))[0]
                                                 .cpu().numpy()))
        truth.append(g["truth"].cpu().numpy())
    chosen, truth = np.concatenate(chosen)[:, new_idx], np.concatenate(truth)[:, new_idx]
    per_label = per_label_metrics(chosen, truth, new)
    return {lab: {"images": m["support"] // 2,  # each image counted with its mirror image
                  "precision": round(m["precision"], 3), "recall": round(m["recall"], 3)}
            for lab, m in per_label.items()}
