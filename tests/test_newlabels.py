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


class _MaxPosition:
    """A stand-in for a row fit over features [n, 3, 2, 2]: an image is chosen when its best position
    scores above 0 (w · h + b); the known rows have norm 2."""

    new_idx, old_idx = [1], [0]
    w_start = torch.zeros(1, 3)

    def __init__(self):
        last = torch.nn.Linear(3, 2)
        with torch.no_grad():
            last.weight[:] = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        self.predictor = type("P", (), {"head": type("H", (), {"fcs": [last]})()})()

    def chosen(self, g, w, b):
        along = torch.einsum("nchw,lc->nlhw", g["hidden"][0], w) + b[:, None, None]
        return (along.flatten(2).max(dim=2).values > 0).numpy()


def test_a_prototype_row_points_at_the_features_of_the_labels_positions():
    from mlcnn_core.newlabels import prototype_rows

    rng = np.random.default_rng(0)
    background = torch.tensor([1.0, 0.5, 0.0])
    cat = torch.tensor([1.0, 0.5, 3.0])
    n, tagged = 24, 8
    hidden = background[None, :, None, None].repeat(n, 1, 2, 2) + 0.05 * torch.as_tensor(rng.normal(size=(n, 3, 2, 2)),
                                                                                          dtype=torch.float32)
    hidden[:tagged, :, 0, 1] = cat  # one position of four shows the new label
    truth = torch.tensor([[True, i < tagged] for i in range(n)])
    w, b = prototype_rows(_MaxPosition(), [{"hidden": [hidden], "truth": truth}])
    direction = w[0] / w[0].norm()
    assert float(direction[2]) > 0.99  # the third feature: only the label's positions have it
    assert any(abs(float(w[0].norm()) - m) < 1e-4 for m in (1.0, 2.0, 4.0, 8.0))  # a multiple of the known norm
    chosen = _MaxPosition().chosen({"hidden": [hidden]}, w, b)[:, 0]
    assert chosen[:tagged].all() and not chosen[tagged:].any()
