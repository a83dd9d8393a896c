"""Section 4.1's metrics, plus mean average precision and per-label counts.

With P_i the predicted and Y_i the true label set of test image i (n' images):

    precision = (1/n') Σ |Y_i ∩ P_i| / |P_i|
    recall    = (1/n') Σ |Y_i ∩ P_i| / |Y_i|
    accuracy  = (1/n') Σ |Y_i ∩ P_i| / |Y_i ∪ P_i|      (the Hamming score)

An empty prediction (P_i = ∅) leaves |Y_i ∩ P_i| / |P_i| undefined; we count it as precision 0
for that image (it proposed nothing correct), so a method cannot raise its precision by
abstaining. Images without true labels are left out of all three (as they are from training)
and counted in ``unlabelled``.
"""

from __future__ import annotations

import numpy as np


def set_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``pred`` and ``truth`` are boolean [n, l] arrays."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    labelled = truth.any(axis=1)
    pred, truth = pred[labelled], truth[labelled]
    inter = (pred & truth).sum(axis=1)
    n_pred = pred.sum(axis=1)
    union = (pred | truth).sum(axis=1)
    n = max(len(truth), 1)
    return {
        "precision": float(np.divide(inter, n_pred, out=np.zeros(len(inter)), where=n_pred > 0).sum() / n),
        "recall": float((inter / truth.sum(axis=1)).sum() / n),
        "accuracy": float((inter / union).sum() / n),
        "images": int(len(truth)),
        "empty_predictions": int((n_pred == 0).sum()),
        "unlabelled": int((~labelled).sum()),
        "labels_per_image": float(n_pred.mean()) if len(n_pred) else 0.0,
    }


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Non-interpolated AP of one label: mean of the precision at the rank of each positive,
    images ranked by score (ties in input order)."""
    order = np.argsort(-scores, kind="stable")
    hits = truth[order].astype(bool)
    if not hits.any():
        return float("nan")
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def mean_average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean of :func:`average_precision` over labels with at least one positive image."""
    aps = [average_precision(scores[:, j], truth[:, j]) for j in range(truth.shape[1]) if truth[:, j].any()]
    return float(np.mean(aps)) if aps else float("nan")


def per_label_metrics(pred: np.ndarray, truth: np.ndarray, labels: list[str]) -> dict[str, dict]:
    """Precision, recall and F1 of each label over the images (the per-label view of the panel)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    out = {}
    for j, label in enumerate(labels):
        tp = int((pred[:, j] & truth[:, j]).sum())
        fp = int((pred[:, j] & ~truth[:, j]).sum())
        fn = int((~pred[:, j] & truth[:, j]).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        out[label] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                      "support": tp + fn, "predicted": tp + fp}
    return out


def f_beta(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta: float) -> np.ndarray:
    """F-beta from counts of true positives, false positives and false negatives (elementwise; 0
    where there is nothing to count). ``beta`` < 1 weighs precision more than recall."""
    beta2 = beta ** 2
    return (1 + beta2) * tp / np.maximum(1e-9, (1 + beta2) * tp + beta2 * fn + fp)
