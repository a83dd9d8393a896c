"""The choice of images a new label's row is fitted on (the fit itself: test_train_cli.py)."""

import numpy as np
import torch

from mlcnn_core.data import Sample
from mlcnn_core.newlabels import MAX_IMAGES, _chosen


def test_images_with_and_without_the_new_label_alternate_so_a_cap_keeps_both():
    tagged = [Sample(f"t{i}.jpg", ("old", "new")) for i in range(3 * MAX_IMAGES)]
    others = [Sample(f"o{i}.jpg", ("old",)) for i in range(10)]
    chosen = _chosen(tagged + others, {"new"}, seed=0)
    assert sorted(s.image for s in chosen) == sorted(s.image for s in tagged + others)  # all, reordered
    first = chosen[:20]
    assert sum("new" in s.labels for s in first) == 10 and sum("new" not in s.labels for s in first) == 10
    assert chosen == _chosen(tagged + others, {"new"}, seed=0)


def test_every_new_label_is_within_the_cap_however_rare():
    common = [Sample(f"c{i}.jpg", ("old", "common")) for i in range(3 * MAX_IMAGES)]
    rare = [Sample("r0.jpg", ("old", "rare")), Sample("r1.jpg", ("rare", "common"))]
    others = [Sample(f"o{i}.jpg", ("old",)) for i in range(3 * MAX_IMAGES)]
    chosen = _chosen(common + rare + others, {"common", "rare"}, seed=3)
    assert sorted(s.image for s in chosen) == sorted(s.image for s in common + rare + others)  # each once
    tagged = [s for s in chosen if {"common", "rare"} & set(s.labels)]
    assert "rare" in tagged[0].labels and "common" in tagged[1].labels  # the rarer label's turn comes first
    assert {"r0.jpg", "r1.jpg"} <= {s.image for s in tagged[:3]}


class _Margins:
    """A stand-in for a row fit: image i scores ``margin[i] + b`` for the one new label, chosen above 0."""

    new_idx = [0]
    b_start = torch.zeros(1)

    def __init__(self, margin):
        self.margin = torch.as_tensor(margin)

    def __call__(self, groups):
        return torch.zeros(1, 1), torch.zeros(1)

    def chosen(self, g, w, b):
        return ((self.margin[torch.as_tensor(g["ids"])] + b) > 0).numpy()[:, None]


def test_the_cut_of_a_new_row_is_placed_on_images_left_out_of_its_fit():
    from mlcnn_core.newlabels import CUT_BETA, MIN_PER_FOLD, SHIFTS, _cross_validated_shift

    # images with the label score 2.5-6, images without it -1 to 1.5: only a shift between -2.5 and -1.5
    # keeps all the positives without a negative
    positives, negatives = [2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0], [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]

    def groups(margin, tagged):
        n = len(margin)
        return [{"ids": np.arange(n), "truth": torch.tensor([[i < tagged] for i in range(n)]),
                 "hidden": [torch.zeros(n, 1, 1, 1)], "old": [torch.zeros(n, 1, 1, 1)], "threshold": torch.zeros(n, 1)}]

    margin = positives + negatives
    assert len(positives) >= 2 * MIN_PER_FOLD
    shift = float(_cross_validated_shift(_Margins(margin), groups(margin, len(positives)), folds=2))
    assert -2.5 <= shift < -1.5
    assert CUT_BETA < 1 and SHIFTS.min() < -2.5 and SHIFTS.max() == 0  # the cut only rises
    # too few images with the label to split: the fitted bias stays
    few = positives[:3] + negatives
    assert float(_cross_validated_shift(_Margins(few), groups(few, 3), folds=2)) == 0.0
