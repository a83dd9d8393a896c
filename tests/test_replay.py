"""The replay set shipped beside a model (replay.py) and what a head fine-tune does with it."""

import json

import numpy as np
import pytest
import torch
from shapes import SHAPES, make_dataset, train_tiny_model
from test_finetune_frozen import _light_drawings, _position_winners

from mlcnn_core.cli import main
from mlcnn_core.data import Sample
from mlcnn_core.finetune import (
    FrozenMethod,
    cross_validated_label_scales,
    fit_frozen,
    trainable_start,
    training_views,
)
from mlcnn_core.modelfile import add_labels, load_model, new_model, save_model
from mlcnn_core.predict import PredictConfig
from mlcnn_core.replay import ReplayError, load_replay, make_replay, replay_path_for, save_replay
from mlcnn_core.threshold import Threshold


def _samples(items, extra=()):
    return [Sample(str(p), tuple(labs) + tuple(extra)) for p, labs in items]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny model trained on shape scenes, with the replay set of those scenes beside it."""
    root = tmp_path_factory.mktemp("replay")
    out = train_tiny_model(root, images=80)
    assert main(["replay", "--model", str(out), "--data", str(root / "train"), "--images", "40"]) == 0
    return out


def test_a_replay_file_round_trips_and_names_its_trunk(parent):
    model = load_model(parent)
    replay = load_replay(replay_path_for(parent), model.net)
    assert replay.features.shape == (40 * 4, model.net.head.fcs[0].in_features)   # 2 sizes × mirrored
    assert replay.labels == model.labels and replay.targets.shape == (160, len(model.labels))
    assert (replay.targets.sum(1) > 0).all()
    wider = replay.targets_for([*model.labels, "zz-new"])
    assert wider.shape == (160, len(model.labels) + 1) and not wider[:, -1].any()
    with pytest.raises(ReplayError, match="lacks the replay set's labels"):
        replay.targets_for(model.labels[1:])


def test_a_replay_file_of_another_trunk_or_format_is_refused(parent, tmp_path):
    other = new_model("tiny", labels=list(SHAPES), mean=[0.5, 0.5, 0.5])
    with pytest.raises(ReplayError, match="another trunk"):
        load_replay(replay_path_for(parent), other.net)
    with pytest.raises(ReplayError, match="not a replay file"):
        load_replay(parent)                                   # a model file is not a replay file
    junk = tmp_path / "junk.replay.safetensors"
    junk.write_bytes(b"\x80\x04pickle")
    with pytest.raises(ReplayError, match="cannot read replay file"):
        load_replay(junk)
    with pytest.raises(ReplayError, match="no such replay file"):
        load_replay(tmp_path / "missing.replay.safetensors")


def test_replay_keeps_the_old_labels_positions_against_a_new_label(tmp_path):
    """A person's folder tagged only with a label the parent lacks: alone, the fine-tune gives the
    new label the positions of the parent's own scenes; with the parent's scenes replayed, the old
    labels keep most of them."""
    scenes = make_dataset(tmp_path / "scenes", 16, seed=6)
    torch.manual_seed(0)
    model = new_model("tiny", labels=list(SHAPES), mean=[0.5, 0.5, 0.5])
    net, start = model.net, len(model.net.trunk)
    learn_old = FrozenMethod(part="head", steps=150, batch_size=16, lr=1e-2)
    old_views = training_views(net, start, model.mean, _samples(scenes), {lab: i for i, lab in enumerate(SHAPES)},
                               learn_old, torch.device("cpu"))
    fit_frozen(net, start, old_views, learn_old, old_labels=len(SHAPES))
    replay = make_replay(model, _samples(scenes))
    add_labels(model, ["zz-new"])
    index = {lab: i for i, lab in enumerate(model.labels)}
    person = [Sample(str(p), ("zz-new",)) for p in _light_drawings(tmp_path / "person", 16, seed=7)]
    kept = {}
    for weight in (0.0, 1.0):
        tuned = new_model("tiny", labels=model.labels, mean=model.mean)
        tuned.net.load_state_dict(model.net.state_dict())
        method = FrozenMethod(part="head", steps=150, batch_size=16, lr=1e-2, replay_weight=weight)
        views = training_views(tuned.net, start, model.mean, person, index, method, torch.device("cpu"))
        before = _position_winners(tuned.net, old_views.maps)
        fit_frozen(tuned.net, start, views, method, old_labels=len(SHAPES),
                   replay=(replay.features, replay.targets_for(model.labels)))
        kept[weight] = float((_position_winners(tuned.net, old_views.maps) == before).float().mean())
    assert kept[1.0] > 0.5 > kept[0.0], f"positions the old labels kept: {kept}"


def test_a_head_fine_tune_replays_the_init_models_set_and_passes_it_on(parent, tmp_path):
    data = tmp_path / "person"
    for p in _light_drawings(data, 12, seed=8):
        p.with_suffix(".txt").write_text("zz-new")
    out, events = tmp_path / "tuned.safetensors", tmp_path / "ev.jsonl"
    assert main(["train", "--init", str(parent), "--data", str(data), "--out", str(out), "--epochs", "2",
                 "--new-labels", "train", "--events", str(events)]) == 0
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    replayed = [e for e in lines if e["event"] == "replay"]
    assert replayed and replayed[0]["crops"] == 160 and replayed[0]["file"] == str(replay_path_for(parent))
    # the child's trunk is the parent's: its replay set is the parent's, and a fine-tune of it finds it
    child = load_replay(replay_path_for(out), load_model(out).net)
    assert child.labels == load_model(parent).labels
    assert load_model(out).card["provenance"]["replay"] == {"file": str(replay_path_for(parent)), "crops": 160,
                                                            "weight": 1.0}


def test_replay_is_off_with_none_and_refused_for_a_fine_tune_of_the_block(parent, tmp_path):
    data = tmp_path / "person"
    for p in _light_drawings(data, 12, seed=8):
        p.with_suffix(".txt").write_text("zz-new")
    events = tmp_path / "ev.jsonl"
    assert main(["train", "--init", str(parent), "--data", str(data), "--out", str(tmp_path / "a.safetensors"),
                 "--epochs", "1", "--new-labels", "train", "--replay", "none", "--events", str(events)]) == 0
    assert "replay" not in {json.loads(line)["event"] for line in events.read_text().splitlines()}
    assert not replay_path_for(tmp_path / "a.safetensors").exists()
    assert main(["train", "--init", str(parent), "--data", str(data), "--out", str(tmp_path / "b.safetensors"),
                 "--epochs", "1", "--learn", "block", "--replay", str(replay_path_for(parent))]) == 2


def test_a_tampered_automatic_replay_file_is_skipped_with_a_warning(parent, tmp_path):
    model = load_model(parent)
    init = save_model(model, tmp_path / "init.safetensors")
    replay = load_replay(replay_path_for(parent))
    replay.trunk_sha256 = "0" * 64
    save_replay(replay, replay_path_for(init))
    data = tmp_path / "person"
    for p in _light_drawings(data, 12, seed=8):
        p.with_suffix(".txt").write_text("zz-new")
    events = tmp_path / "ev.jsonl"
    assert main(["train", "--init", str(init), "--data", str(data), "--out", str(tmp_path / "c.safetensors"),
                 "--epochs", "1", "--new-labels", "train", "--events", str(events)]) == 0
    warnings = [json.loads(line) for line in events.read_text().splitlines()
                if json.loads(line)["event"] == "warning"]
    assert any("another trunk" in w["message"] and "without replay" in w["message"] for w in warnings)


def test_the_cross_validated_cut_lifts_a_new_label_that_never_passes_the_threshold(parent, tmp_path):
    """A new row that scores under the model's threshold on images with its label (as rows learnt
    beside replayed scenes do): the cut found on held-out folds multiplies its score by more than 1."""
    model = load_model(parent)
    add_labels(model, ["zz-new"])
    items = make_dataset(tmp_path / "d", 30, seed=9)
    samples = _samples(items[:15], extra=("zz-new",)) + _samples(items[15:])
    start = trainable_start(model.net, "head")
    index = {lab: i for i, lab in enumerate(model.labels)}
    method = FrozenMethod(part="head", steps=30, batch_size=16, lr=1e-3)   # a few slow steps
    views = training_views(model.net, start, model.mean, samples, index, method, torch.device("cpu"))
    threshold = Threshold(kind="global", bias=5.0)   # over what the new label's images score after them
    config = PredictConfig.from_dict(model.card.get("prediction"))
    scales = cross_validated_label_scales(model.net, start, model.mean, config, threshold.select, samples, views,
                                          method, len(SHAPES), folds=3)
    assert scales.shape == (1,) and scales[0] > 1
    # too few images with the label in a fold: the row's bias stays
    few = _samples(items[:3], extra=("zz-new",)) + _samples(items[3:])
    few_views = training_views(model.net, start, model.mean, few, index, method, torch.device("cpu"))
    assert np.array_equal(cross_validated_label_scales(model.net, start, model.mean, config, threshold.select,
                                                       few, few_views, method, len(SHAPES), folds=3), [1.0])


def test_a_labels_scale_moves_its_cut_only():
    scores = np.array([[0.9, 0.05, 0.3], [0.2, 0.3, 0.0]])
    plain = Threshold(kind="global", bias=0.4, at_least_one=True)
    scaled = Threshold(kind="global", bias=0.4, at_least_one=True, label_scales=[1.0, 4.0, 1.0])
    assert plain.select(scores).tolist() == [[True, False, False], [False, True, False]]
    # 0.3 × 4 passes; 0.05 × 4 does not; a label scoring 0 never does, and the empty image keeps its best
    assert scaled.select(scores).tolist() == [[True, False, False], [False, True, False]]
    assert scaled.select([[0.9, 0.2, 0.3]]).tolist() == [[True, True, False]]
    assert Threshold.from_dict(scaled.to_dict(), 3) == scaled and "label_scales" not in plain.to_dict()
    for bad in ([1.0, 2.0], [1.0, 0.0, 1.0], [1.0, float("nan"), 1.0]):
        with pytest.raises(ValueError, match="label scales"):
            Threshold.from_dict(dict(scaled.to_dict(), label_scales=bad), 3)


def test_labels_added_to_a_model_with_cuts_of_its_own_get_scale_1(parent, tmp_path):
    model = load_model(parent)
    model.card["threshold"] = dict(model.card["threshold"], label_scales=[2.0] * len(model.labels))
    add_labels(model, ["zz-a", "zz-b"])
    assert model.card["threshold"]["label_scales"] == [2.0] * (len(model.labels) - 2) + [1.0, 1.0]
    Threshold.from_dict(model.card["threshold"], len(model.labels))


def test_auto_learns_new_rows_with_the_head_on_a_folder_tagged_only_with_new_words(parent, tmp_path):
    only_new = tmp_path / "only-new"
    for p in _light_drawings(only_new, 12, seed=8):
        p.with_suffix(".txt").write_text("zz-new")
    mixed = tmp_path / "mixed"
    for image, labels in make_dataset(mixed, 12, seed=5):
        image.with_suffix(".txt").write_text(", ".join(labels + ["zz-new"]))
    for folder, mode in ((only_new, "train"), (mixed, "fit")):
        out, events = tmp_path / f"{mode}.safetensors", tmp_path / f"{mode}.jsonl"
        assert main(["train", "--init", str(parent), "--data", str(folder), "--out", str(out), "--epochs", "1",
                     "--events", str(events)]) == 0
        kinds = {json.loads(line)["event"]: json.loads(line) for line in events.read_text().splitlines()}
        assert kinds["new_labels_mode"]["mode"] == mode
        assert ("new_labels_fitted" in kinds) is (mode == "fit")
        assert load_model(out).card["provenance"]["new_labels"]["mode"] == mode


def test_keeping_a_fine_tuned_model_takes_its_replay_set_along(parent, tmp_path):
    from tagger_app.models.model_registry import ModelRegistry

    run = tmp_path / "run"
    run.mkdir()
    model = save_model(load_model(parent), run / "tuned.safetensors")
    save_replay(load_replay(replay_path_for(parent)), replay_path_for(model))
    registry = ModelRegistry(tmp_path / "kept")
    kept = registry.keep(model)
    assert load_replay(replay_path_for(kept.path)).labels == load_model(parent).labels
    assert not replay_path_for(model).exists()
    assert [m.path for m in registry.models()] == [kept.path]   # the replay set is not listed as a model
