"""Fine-tunes that learn only the head (and the last block) on the frozen front's maps (finetune.py)."""

import json
import signal

import numpy as np
import pytest
import torch
from shapes import SHAPES, make_dataset, train_tiny_model

from mlcnn_core import finetune
from mlcnn_core.cli import main
from mlcnn_core.data import Sample
from mlcnn_core.finetune import FrozenMethod, fit_frozen, trainable_start, training_views
from mlcnn_core.model import build_model
from mlcnn_core.modelfile import load_model, new_model, read_card
from mlcnn_core.spec import arch_spec


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("frozen"))


def test_trainable_start_cuts_after_the_last_pooling():
    net = build_model(arch_spec("compact", norm=True), 5)
    block = trainable_start(net, "block")
    assert isinstance(net.trunk[block - 1], torch.nn.MaxPool2d)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in list(net.trunk)[block:])
    assert trainable_start(net, "head") == trainable_start(net, "last") == len(net.trunk)
    with pytest.raises(ValueError, match="unknown trainable part"):
        trainable_start(net, "everything")


def _weights(net, prefix):
    return {k: v.clone() for k, v in net.state_dict().items() if k.startswith(prefix)}


@pytest.mark.parametrize("part", ["head", "block", "last"])
def test_only_the_trainable_part_moves(tmp_path, part):
    items = make_dataset(tmp_path / "d", 12, seed=3)
    model = new_model("tiny", labels=list(SHAPES), mean=[0.5, 0.5, 0.5])
    net = model.net
    start = trainable_start(net, part)
    before = net.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    method = FrozenMethod(part=part, steps=5, batch_size=8, lr=1e-2)
    index = {lab: i for i, lab in enumerate(model.labels)}
    views = training_views(net, start, model.mean, [Sample(str(p), tuple(labs)) for p, labs in items], index,
                           method, torch.device("cpu"))
    assert len(views.maps) == 12 * method.views_per_image and views.images == 12
    fit_frozen(net, start, views, method, old_labels=len(model.labels))
    after = net.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    frozen_trunk = {k for k in before if k.startswith("trunk.") and int(k.split(".")[1]) < start}
    assert moved and not moved & frozen_trunk
    if part == "last":
        assert moved <= {"head.fcs.1.weight", "head.fcs.1.bias"}
    if part == "block":
        assert any(k.startswith("trunk.") for k in moved)
    # batch-norm statistics of the trainable block stay the parent's unless asked for
    assert all(torch.equal(before[k], after[k]) for k in before if "running_" in k)


def test_the_anchor_holds_the_weights_near_the_parent(tmp_path):
    items = make_dataset(tmp_path / "d", 12, seed=4)
    samples = [Sample(str(p), tuple(labs)) for p, labs in items]
    distances = []
    for anchor in (0.0, 500.0):
        model = new_model("tiny", labels=list(SHAPES), mean=[0.5, 0.5, 0.5])
        torch.manual_seed(0)
        start_w = model.net.head.fcs[0].weight.detach().clone()
        method = FrozenMethod(part="head", steps=20, batch_size=8, lr=1e-2, anchor=anchor)
        index = {lab: i for i, lab in enumerate(model.labels)}
        views = training_views(model.net, len(model.net.trunk), model.mean, samples, index, method,
                               torch.device("cpu"))
        fit_frozen(model.net, len(model.net.trunk), views, method, old_labels=len(model.labels))
        distances.append(float((model.net.head.fcs[0].weight.detach() - start_w).norm()))
    assert distances[1] < 0.5 * distances[0]


def test_cli_fine_tune_of_the_head_keeps_the_trunk(parent, tmp_path):
    data = tmp_path / "new"
    for image, labels in make_dataset(data, 30, seed=5)[:15]:
        image.with_suffix(".txt").write_text(", ".join(labels + ["zz-new"]))
    (data / "junk.jpg").write_bytes(b"not an image")
    (data / "junk.txt").write_text("blue-disc")
    out, events = tmp_path / "tuned.safetensors", tmp_path / "ev.jsonl"
    assert main(["train", "--init", str(parent), "--data", str(data), "--out", str(out), "--learn", "head",
                 "--epochs", "3", "--events", str(events)]) == 0
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [e["event"] for e in lines]
    assert kinds[0] == "labels_added" and kinds[-1] == "done" and "frozen_features" in kinds
    start = next(e for e in lines if e["event"] == "start")
    steps = [e for e in lines if e["event"] == "step"]
    assert steps[-1]["step"] == steps[-1]["total_steps"] == 3 * start["steps_per_epoch"]
    assert [e["epoch"] for e in lines if e["event"] == "epoch"] == [1, 2, 3]
    assert {"epoch", "step", "images_per_s", "loss", "eta_s", "step_in_epoch"} <= set(steps[0])
    old, new = load_model(parent), load_model(out)
    assert new.labels == old.labels + ["zz-new"]
    assert all(torch.equal(a, b) for a, b in zip(old.net.trunk.state_dict().values(),
                                                  new.net.trunk.state_dict().values(), strict=True))
    assert not torch.equal(old.net.head.fcs[0].weight, new.net.head.fcs[0].weight)
    card = read_card(out)
    assert card["provenance"]["recipe"]["learns"] == "head" and card["provenance"]["steps"] == steps[-1]["step"]


def test_a_cancelled_fine_tune_of_the_head_resumes_where_it_stopped(parent, tmp_path, monkeypatch):
    """Cancelled mid-epoch (SIGTERM, as the panel's Cancel sends) and resumed, the run ends with the
    weights an uninterrupted run gets: the checkpoint keeps the optimiser, the step and the crops'
    random state, and the pull toward the parent stays a pull toward the parent."""
    data = tmp_path / "new"
    make_dataset(data, 16, seed=6)
    flags = ["train", "--init", str(parent), "--data", str(data), "--learn", "head", "--epochs", "6",
             "--val-fraction", "0.25"]
    whole = tmp_path / "whole.safetensors"
    assert main([*flags, "--out", str(whole), "--events", str(tmp_path / "whole.jsonl")]) == 0

    step = finetune.FrozenTrainer.train_step

    def cancelled_at_step_5(self, views):
        loss = step(self, views)
        if self.step == 5:
            signal.raise_signal(signal.SIGTERM)
        return loss

    out, events = tmp_path / "parts.safetensors", tmp_path / "parts.jsonl"
    with monkeypatch.context() as m:
        m.setattr(finetune.FrozenTrainer, "train_step", cancelled_at_step_5)
        main([*flags, "--out", str(out), "--events", str(events)])
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines[-1]["event"] == "cancelled"
    assert (tmp_path / "parts.safetensors.ckpt" / "last.safetensors").is_file()
    assert main([*flags, "--out", str(out), "--events", str(events), "--resume"]) == 0
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [e["event"] for e in lines]
    assert kinds.count("cancelled") == 1 and kinds[-1] == "done"
    assert next(e for e in lines if e["event"] == "resumed")["step"] == 5
    steps = [e["step"] for e in lines if e["event"] == "step"]
    assert steps[-1] == lines[kinds.index("start")]["epochs"] * lines[kinds.index("start")]["steps_per_epoch"]
    assert all(e["val"]["accuracy"] >= 0 for e in lines if e["event"] == "epoch")  # the panel's curve
    a, b = load_model(whole).net.state_dict(), load_model(out).net.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert read_card(out)["provenance"]["steps"] == steps[-1]


def test_resuming_with_another_part_learning_says_which(parent, tmp_path, monkeypatch, capsys):
    data = tmp_path / "new"
    make_dataset(data, 10, seed=7)
    out = tmp_path / "m.safetensors"
    assert main(["train", "--init", str(parent), "--data", str(data), "--out", str(out), "--learn", "head",
                 "--epochs", "1"]) == 0
    rc = main(["train", "--init", str(parent), "--data", str(data), "--out", str(out), "--learn", "all",
               "--resume", "--workers", "0"])
    assert rc != 0 and "resume it with --learn head" in capsys.readouterr().err


def test_a_trunk_without_pooling_learns_whole_as_the_block():
    spec = {"trunk": [["conv", 4, 3, 1, 1], ["conv", 4, 3, 1, 1]], "head": [], "dropout": 0.0, "norm": True}
    assert trainable_start(build_model(spec, 2), "block") == 0



def _position_winners(net, maps) -> torch.Tensor:
    """The label each position of each map gives the most (the per-position softmax's argmax)."""
    net.eval()
    with torch.no_grad():
        return torch.cat([net.head.forward_map(m[None]).argmax(dim=1).flatten() for m in maps])


def _light_drawings(folder, n: int, seed: int) -> list:
    """A person's folder unlike the parent's scenes: dark strokes on a light background."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        image = Image.new("RGB", (96, 80), tuple(int(v) for v in rng.integers(225, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            draw.line([tuple(int(v) for v in rng.integers(0, 80, 2)) for _ in range(3)], fill=(40, 40, 40), width=3)
        paths.append(folder / f"{i:03d}.png")
        image.save(paths[-1])
    return paths


@pytest.mark.parametrize("over, keeps", [("all", True), ("old", False)])
def test_distilling_every_label_keeps_the_old_labels_positions_against_a_new_label(tmp_path, over, keeps):
    """A person's folder tagged only with a label the parent lacks says nothing of the old labels.
    Distilled over the old rows alone, the parent's outputs keep how the old labels rank among
    themselves, and the new label takes the positions of the parent's own scenes; distilled over every
    row, the old labels keep most of the positions they won there."""
    scenes = make_dataset(tmp_path / "scenes", 16, seed=6)
    torch.manual_seed(0)
    model = new_model("tiny", labels=[*SHAPES, "zz-new"], mean=[0.5, 0.5, 0.5])
    net, start = model.net, len(model.net.trunk)
    index = {lab: i for i, lab in enumerate(model.labels)}
    learn_old = FrozenMethod(part="head", steps=150, batch_size=16, lr=1e-2)
    old_views = training_views(net, start, model.mean, [Sample(str(p), tuple(labs)) for p, labs in scenes], index,
                               learn_old, torch.device("cpu"))
    fit_frozen(net, start, old_views, learn_old, old_labels=len(SHAPES))
    person = [Sample(str(p), ("zz-new",)) for p in _light_drawings(tmp_path / "person", 16, seed=7)]
    method = FrozenMethod(part="head", steps=150, batch_size=16, lr=1e-2, distill=4.0, distill_over=over)
    views = training_views(net, start, model.mean, person, index, method, torch.device("cpu"))
    before = _position_winners(net, old_views.maps)
    fit_frozen(net, start, views, method, old_labels=len(SHAPES))
    after = _position_winners(net, old_views.maps)
    kept = float((after == before).float().mean())
    assert (kept > 0.5) is keeps, f"the old labels keep {kept:.0%} of the positions they won"
