"""The multi-label error function of section 2.3.

    E_i(W) = −log( Σ_{j∈Y_i} exp C_ij / Σ_{j∈L} exp C_ij ),   E(W) = (1/n) Σ_i E_i

computed as logsumexp over the true labels minus logsumexp over all labels, so it neither
overflows nor underflows. It "generalizes the MLR error function to multiple labels": with one
label per image it is the usual softmax cross-entropy.
"""

from __future__ import annotations

import torch


def multilabel_softmax_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``logits`` [n, l], ``targets`` [n, l] in {0, 1}. Returns (mean loss, images left out).

    An image with no label has an empty numerator (log 0 = −∞): it cannot be trained on, so it is
    left out of the mean and counted. A batch where every image is left out gives a zero loss
    that still carries a graph (so distributed training stays in step)."""
    logits = logits.float()
    has_label = targets.bool().any(dim=1)
    skipped = int((~has_label).sum())
    if skipped == logits.shape[0]:
        return logits.sum() * 0.0, skipped
    logits, targets = logits[has_label], targets[has_label].bool()
    on_labels = logits.masked_fill(~targets, float("-inf"))
    per_image = torch.logsumexp(logits, dim=1) - torch.logsumexp(on_labels, dim=1)
    return per_image.mean(), skipped
