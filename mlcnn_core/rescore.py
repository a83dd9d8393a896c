"""Rescoring the labels that survive pruning: a logistic model over a few features of each label's map.

Section 2.6 sums each label's pruned confidences over positions and cuts the summed vector with "a
threshold as a linear function of the confidence values". The sum grows with the area a drawing
covers: a large drawing wins many positions and a small one a few, so one cut either misses small
drawings or keeps labels that won a few positions inside a large drawing of another label. Four
features of a label's map tell them apart better than the sum alone:

* ``log(1 + sum)``: the paper's score, compressed;
* the map's maximum: how sure the best position is (a small, clear drawing scores near 1);
* the maximum of the map averaged over 3×3 positions: a peak with support around it;
* the sum relative to the image's best label: a label that won a corner of another's drawing.

``p = sigmoid(w · features + b)``, fitted by L2-regularised logistic regression on held-out images
(every label with a non-zero sum is one example: is it a true label of its image?); labels scoring 0
stay 0, and a single global threshold on ``p`` (fitted after it, like the paper's threshold) picks
the labels. The features do not depend on which label it is, so a fine-tune's new labels use the
same weights (what it gains: BENCHMARKS.md, "Rescoring the summed vector"). Everything here is
differentiable, so the fit of new labels' rows (newlabels.py) sees the rescored scores too.

A reading with a second, smaller pass (``PredictConfig.second_short_side``) puts both passes'
features side by side (``2 × len(FEATURES)`` weights and a bias); a label is a candidate when it
survives pruning in either pass. A large drawing that the first pass misses is often found at the
smaller size, nearer the sizes the network was trained on (bench/two_scale.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .card import FEATURES  # noqa: F401 - the features computed here, named where cards are read


def label_features(maps: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    """[N, l, h, w] confidence maps (after multi-scale pooling) and their pruned sums [N, l] →
    features [N, l, len(FEATURES)]."""
    peak = maps.flatten(2).max(dim=2).values
    local = F.avg_pool2d(maps, 3, stride=1, padding=1, count_include_pad=False).flatten(2).max(dim=2).values
    best = sums.max(dim=1, keepdim=True).values.clamp_min(1e-6)
    return torch.stack([torch.log1p(sums.clamp_min(0)), peak, local, sums / best], dim=2)


def rescore(passes: list[tuple[torch.Tensor, torch.Tensor]], weights: tuple[float, ...], hard: bool = True
            ) -> torch.Tensor:
    """The probability-like score of every label ([N, l]) from each pass's (maps [N, l, h, w], pruned
    sums [N, l]), the passes' features side by side; with ``hard``, labels whose sum is 0 in every
    pass (they won no position) stay 0, as the threshold expects."""
    maps = passes[0][0]
    features = torch.cat([label_features(m, s) for m, s in passes], dim=2)
    if features.shape[2] + 1 != len(weights):
        raise ValueError(f"{len(passes)} pass(es) need {features.shape[2] + 1} rescoring weights, not {len(weights)}")
    w = torch.as_tensor(weights[:-1], dtype=maps.dtype, device=maps.device)
    p = torch.sigmoid(features @ w + float(weights[-1]))
    if not hard:
        return p
    alive = torch.stack([s > 0 for _, s in passes]).any(dim=0)
    return torch.where(alive, p, torch.zeros_like(p))


def fit_rescore(features: np.ndarray, truth: np.ndarray, ridge: float = 1e-3, iterations: int = 50
                ) -> tuple[float, ...]:
    """Logistic regression by Newton's method on candidate labels: ``features`` [n, k × len(FEATURES)]
    for a reading of k passes, ``truth`` [n] bool. Features are standardised for the fit and the
    weights returned for the raw features (the last number is the bias). ``ridge`` is the L2
    penalty per example (not on the bias), chosen on validation sets."""
    x = np.asarray(features, np.float64)
    y = np.asarray(truth, np.float64)
    if len(x) < 2 or y.min() == y.max():
        raise ValueError("rescoring needs held-out candidates of both kinds (true and false labels)")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = ridge * len(x) * np.eye(z.shape[1])
    penalty[-1, -1] = 0.0
    beta = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ beta)))
        grad = z.T @ (p - y) + penalty @ beta
        hess = (z * (p * (1 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    w = beta[:-1] / scale
    return (*(float(v) for v in w), float(beta[-1] - (mean / scale) @ beta[:-1]))
