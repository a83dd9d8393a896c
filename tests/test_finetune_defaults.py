"""``mlcnn train --init MODEL`` with no other flags: defaults for 25–200 corrected images (finetune_recipe)."""

from mlcnn_core.recipes import RECIPES, TrainConfig, finetune_recipe

SIZES = (22, 45, 90, 180)  # the training part of 25, 50, 100, 200 confirmed images


def test_a_full_fine_tune_gets_more_epochs_for_small_sets_within_a_cpu_budget():
    base = RECIPES["default"]
    recipes = [finetune_recipe(base, n, "all") for n in SIZES]
    epochs = [r.epochs for r in recipes]
    assert epochs == sorted(epochs, reverse=True)
    for n, r in zip(SIZES, recipes, strict=True):
        assert 10 <= r.epochs <= 40
        assert 800 <= r.epochs * n <= 4500  # image presentations: minutes on a 2-core CPU, not tens of minutes
        assert r.batch_size <= 32
        assert r.patience == 0  # a handful of held-out images cannot stop training early
        assert r.lr < base.lr and r.schedule == base.schedule
        assert r.anchor > 0  # pulled toward the parent: what it knew holds
        assert r.learns == "all"
    assert base.anchor == 0 and base.learns == "all"


def test_a_fine_tune_learns_only_the_head_unless_asked():
    assert all(finetune_recipe(RECIPES["default"], n).learns == "head" for n in SIZES)
    assert TrainConfig(data=["x"], out="y", init="m").recipe_for(90).learns == "head"
    assert TrainConfig(data=["x"], out="y", init="m", learns="all").recipe_for(90).learns == "all"
    assert TrainConfig(data=["x"], out="y", init="m", learns="all").recipe_for(90).anchor == 2500


def test_a_fine_tune_of_the_head_runs_a_fixed_number_of_steps():
    from mlcnn_core import recipes
    from mlcnn_core.finetune import FrozenMethod
    from mlcnn_core.recipes import FINETUNE_FROZEN_STEPS

    base = RECIPES["default"]
    for n in SIZES:
        r = finetune_recipe(base, n, "head")
        assert r.learns == "head" and r.anchor > 0 and r.patience == 0 and r.lr < base.lr
        steps_per_epoch = -(-n * FrozenMethod().views_per_image // r.batch_size)
        assert recipes.steps_per_epoch(r, n) == steps_per_epoch  # what the panel shows is what trains
        assert FINETUNE_FROZEN_STEPS <= r.epochs * steps_per_epoch < FINETUNE_FROZEN_STEPS + steps_per_epoch


def cfg_distill_recipe():
    return TrainConfig(data=["x"], out="y", init="model.safetensors", distill=0.5).recipe_for(90)


def test_flags_override_the_fine_tune_defaults():
    cfg = TrainConfig(data=["x"], out="y", init="model.safetensors")
    assert cfg.recipe_for(90) == finetune_recipe(RECIPES["default"], 90)
    cfg = TrainConfig(data=["x"], out="y", init="model.safetensors", learns="all")
    assert cfg.recipe_for(90) == finetune_recipe(RECIPES["default"], 90, "all")
    cfg = TrainConfig(data=["x"], out="y", init="model.safetensors", epochs=3, lr=1e-3)
    recipe = cfg.recipe_for(90)
    assert recipe.epochs == 3 and recipe.lr == 1e-3 and recipe.lr_max == 1e-3
    assert recipe.distill == 0 and cfg_distill_recipe().distill == 0.5
    scratch = TrainConfig(data=["x"], out="y").recipe_for(90)
    assert scratch == RECIPES["default"]


def test_fine_tunes_keep_batch_norm_statistics():
    import torch

    from mlcnn_core.model import build_model
    from mlcnn_core.spec import arch_spec
    from mlcnn_core.train import freeze_norm_stats

    assert finetune_recipe(RECIPES["default"], 90).norm_stats == "frozen"
    assert RECIPES["default"].norm_stats == "update"
    assert TrainConfig(data=["x"], out="y", init="m", norm_stats="update").recipe_for(90).norm_stats == "update"
    net = build_model(arch_spec("tiny", norm=True), 3)
    net.train()
    freeze_norm_stats(net)
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bn]
    net(torch.randn(4, 3, 64, 64) * 5 + 3).sum().backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bn, strict=True))
    assert net.training and all(p.grad is not None for m in bn for p in (m.weight, m.bias))


def test_threshold_kind():
    from mlcnn_core.train import threshold_kind

    assert threshold_kind("linear", 10) == "linear" and threshold_kind("global", 5000) == "global"
    assert threshold_kind("auto", 1000) == "linear" and threshold_kind("auto", 199) == "global"
    # a fine-tune keeps the kind its parent was given, whatever the number of held-out images
    assert threshold_kind("auto", 1000, {"kind": "global", "bias": 3.0}) == "global"
    assert threshold_kind("auto", 50, {"kind": "linear", "weights": [], "bias": 0.0}) == "linear"
    assert threshold_kind("linear", 1000, {"kind": "global"}) == "linear"


def test_pull_toward_start_keeps_old_weights_and_frees_new_label_rows():
    import torch

    from mlcnn_core.finetune import anchors, pull_toward_start
    from mlcnn_core.model import build_model, grow_labels
    from mlcnn_core.spec import arch_spec

    net = build_model(arch_spec("tiny", norm=True), 3)
    grow_labels(net, 2)
    pairs = anchors(net, old_labels=3)
    last = net.head.fcs[-1]
    assert [start.shape[0] for p, start in pairs if p is last.weight] == [3]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    before_new = last.weight[3:].clone()
    pull_toward_start(pairs, 0.25)
    for p, start in pairs:
        n = start.shape[0]
        assert torch.allclose(p[:n] - start, torch.full_like(start, 0.75))
    assert torch.equal(last.weight[3:], before_new)  # new labels' rows are not pulled anywhere


def test_pull_toward_start_never_overshoots():
    import torch

    from mlcnn_core.train import pull_toward_start

    w = torch.nn.Parameter(torch.ones(4))
    start = torch.zeros(4)
    pull_toward_start([(w, start)], 2.5)  # e.g. --lr 1e-3 with the default anchor of 2500
    assert torch.equal(w.detach(), start)
