"""Choosing labels from the final confidence vector (end of section 2.6).

"we used the method recommended by Ref. [17], which consists in picking a threshold as a linear
function of the confidence values, trained to maximize multi-label accuracy". Zhang & Zhou
(BP-MLL) pick, for each training image, the threshold that best separates its labels, then fit
t(c) = w·c + b by linear least squares. Following the paper we pick, per image, the threshold
that maximises that image's accuracy |Y ∩ P| / |Y ∪ P| (the middle of the best interval between
consecutive scores), then fit w, b by ridge-regularised least squares.

Guards (a weak model otherwise teaches the fit the wrong thing):
- a label whose final score is 0 was pruned (it won no position): it is never predicted, so
  "predict all labels" cannot score above zero on an image whose true labels were all pruned;
- such images carry no information about where to cut and are left out of the fit.

``kind="global"`` is the single-threshold alternative measured against it: one t for all images,
chosen to maximise mean accuracy on the validation data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .card import CardFields
from .metrics import set_metrics


@dataclass
class Threshold:
    kind: str = "global"           # "linear" or "global"
    bias: float = 0.0
    weights: list[float] = field(default_factory=list)
    at_least_one: bool = False     # always keep the best label when none passes
    # per label, what its score is multiplied by before it meets the threshold (empty: 1 for all): a
    # label a person added has its own cut, placed by cross-validation (finetune.cross_validated_label_scales)
    label_scales: list[float] = field(default_factory=list)

    def thresholds(self, scores: np.ndarray) -> np.ndarray:
        scores = np.atleast_2d(scores)
        if self.kind == "linear":
            return scores @ np.asarray(self.weights, dtype=np.float64) + self.bias
        return np.full(len(scores), self.bias)

    def select(self, scores: np.ndarray) -> np.ndarray:
        """Boolean [n, l]: labels above their image's threshold (never a label scoring 0)."""
        scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
        scaled = scores * np.asarray(self.label_scales, dtype=np.float64) if self.label_scales else scores
        chosen = (scaled > self.thresholds(scores)[:, None]) & (scores > 0)
        if self.at_least_one:
            empty = ~chosen.any(axis=1) & (scores.max(axis=1) > 0)
            chosen[np.flatnonzero(empty), scaled[empty].argmax(axis=1)] = True
        return chosen

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.label_scales:
            del d["label_scales"]
        return d

    @classmethod
    def from_dict(cls, d: dict, num_labels: int, name: str = "threshold") -> Threshold:
        """A card's threshold object; a wrong value raises ``ValueError`` naming the field
        (``name.key``) and what it holds."""
        f = CardFields(d, name)
        t = cls(kind=f.choice("kind", "global", ("linear", "global")), bias=f.number("bias", 0.0),
                weights=f.numbers("weights", []), at_least_one=f.flag("at_least_one", False),
                label_scales=f.numbers("label_scales", []))
        if t.kind == "linear" and len(t.weights) != num_labels:
            f.fail("weights", t.weights, f"{num_labels} weights, one a label")
        if t.label_scales and (len(t.label_scales) != num_labels
                               or not all(np.isfinite(v) and v > 0 for v in t.label_scales)):
            f.fail("label_scales", t.label_scales, f"{num_labels} label scales, each a positive number")
        return t


def best_image_threshold(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """The threshold that maximises one image's accuracy, or None when no true label scores > 0."""
    positive = scores > 0
    if not (truth & positive).any():
        return None
    values = np.unique(scores[positive])[::-1]          # distinct positive scores, high to low
    # Cutting just below values[k] predicts every label scoring ≥ values[k].
    best_acc, best_k = -1.0, 0
    for k, v in enumerate(values):
        pred = scores >= v
        acc = (pred & truth).sum() / (pred | truth).sum()
        if acc > best_acc:
            best_acc, best_k = acc, k
    # Any t in [next lower score, values[best_k]) gives that set with ``scores > t``: take the middle.
    lower = values[best_k + 1] if best_k + 1 < len(values) else 0.0
    return float((values[best_k] + lower) / 2)


def fit_linear(scores: np.ndarray, truth: np.ndarray, ridge: float = 1e-2) -> Threshold:
    scores, truth = np.asarray(scores, np.float64), np.asarray(truth, bool)
    targets, rows = [], []
    for i in range(len(scores)):
        t = best_image_threshold(scores[i], truth[i])
        if t is not None:
            targets.append(t)
            rows.append(i)
    if len(rows) < 2:
        return fit_global(scores, truth)
    x = np.hstack([scores[rows], np.ones((len(rows), 1))])
    y = np.asarray(targets)
    gram = x.T @ x
    reg = ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
    reg[-1, -1] = 0.0                                    # the bias is not shrunk
    coef = np.linalg.solve(gram + reg, x.T @ y)
    return Threshold(kind="linear", weights=[float(c) for c in coef[:-1]], bias=float(coef[-1]))


def fit_global(scores: np.ndarray, truth: np.ndarray, at_least_one: bool = False) -> Threshold:
    """The one cut with the best accuracy, judged with the selection it will make (``at_least_one``
    included: an image it would leave empty keeps its best label, so the best cut is higher)."""
    scores, truth = np.asarray(scores, np.float64), np.asarray(truth, bool)
    positive = scores[scores > 0]
    if positive.size == 0:
        return Threshold(kind="global", bias=0.0, at_least_one=at_least_one)
    candidates = np.unique(np.quantile(positive, np.linspace(0, 1, 401)))
    candidates = np.concatenate([[0.0], (candidates[:-1] + candidates[1:]) / 2, [candidates[-1]]])

    def accuracy(t: float) -> float:
        return set_metrics(Threshold(kind="global", bias=float(t), at_least_one=at_least_one).select(scores),
                           truth)["accuracy"]

    return Threshold(kind="global", bias=float(max(candidates, key=accuracy)), at_least_one=at_least_one)


def fit_threshold(scores: np.ndarray, truth: np.ndarray, kind: str = "linear",
                  at_least_one: bool = False) -> Threshold:
    t = fit_linear(scores, truth) if kind == "linear" else fit_global(scores, truth, at_least_one)
    t.at_least_one = at_least_one
    return t
