"""``mlcnn train --init MODEL`` with no other flags: defaults for 25–200 corrected images (finetune_recipe)."""

from mlcnn_core.train import RECIPES, TrainConfig, _resolve_recipe, finetune_recipe

SIZES = (22, 45, 90, 180)  # the training part of 25, 50, 100, 200 confirmed images


def test_small_sets_get_more_epochs_within_a_cpu_budget():
    base = RECIPES["default"]
    recipes = [finetune_recipe(base, n) for n in SIZES]
    epochs = [r.epochs for r in recipes]
    assert epochs == sorted(epochs, reverse=True)
    for n, r in zip(SIZES, recipes, strict=True):
        assert 10 <= r.epochs <= 40
        assert 800 <= r.epochs * n <= 4500  # image presentations: minutes on a 2-core CPU, not tens of minutes
        assert r.batch_size <= 32
        assert r.patience == 0  # a handful of held-out images cannot stop training early
        assert r.lr < base.lr and r.schedule == base.schedule


def test_flags_override_the_fine_tune_defaults():
    cfg = TrainConfig(data=["x"], out="y", init="model.safetensors")
    assert _resolve_recipe(cfg, 90) == finetune_recipe(RECIPES["default"], 90)
    cfg = TrainConfig(data=["x"], out="y", init="model.safetensors", epochs=3, lr=1e-3)
    recipe = _resolve_recipe(cfg, 90)
    assert recipe.epochs == 3 and recipe.lr == 1e-3 and recipe.lr_max == 1e-3
    scratch = _resolve_recipe(TrainConfig(data=["x"], out="y"), 90)
    assert scratch == RECIPES["default"]
