"""The choice of images a new label's row is fitted on (the fit itself: test_train_cli.py)."""

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
