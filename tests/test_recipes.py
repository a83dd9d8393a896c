"""``TrainConfig.to_argv`` is the only encoder of ``mlcnn train``'s flags: whatever it writes, the
command line reads back as the same config."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlcnn_core.cli import build_parser, train_config
from mlcnn_core.recipes import RECIPES, TrainConfig, finetune_recipe

paths = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12).filter(
    lambda text: text != "--")  # refused by to_argv: argparse drops it
# no subnormal floats: training run earlier in the same process may set the CPU to flush them to zero
rates = st.floats(min_value=1e-9, max_value=10.0, allow_subnormal=False)
maybe = st.none().__or__


configs = st.builds(
    TrainConfig,
    data=st.lists(paths, min_size=1, max_size=3),
    out=paths,
    arch=st.sampled_from(["compact", "paper", "nin", "tiny"]),
    init=maybe(paths),
    recipe=st.sampled_from(sorted(RECIPES)),
    epochs=maybe(st.integers(1, 500)),  # 0 refuses --new-labels train (test below)
    batch_size=maybe(st.integers(1, 1024)),
    lr=maybe(rates),
    lr_max=maybe(rates),
    val_fraction=st.floats(min_value=0.0, max_value=0.9, allow_subnormal=False),
    val_data=maybe(st.lists(paths, min_size=1, max_size=2)),
    device=st.sampled_from(["auto", "cpu", "cuda"]),
    bf16=st.sampled_from([None, False]),
    workers=maybe(st.integers(0, 16)),
    patience=maybe(st.integers(0, 50)),
    norm_stats=maybe(st.sampled_from(["update", "frozen"])),
    anchor=maybe(st.floats(min_value=0.0, max_value=1e4, allow_subnormal=False)),
    learns=maybe(st.sampled_from(["all", "block", "head", "last"])),
    distill=maybe(st.floats(min_value=0.0, max_value=100.0, allow_subnormal=False)),
    threshold=st.sampled_from(["auto", "linear", "global"]),
    seed=st.integers(-(2**31), 2**31),
    resume=st.booleans(),
    events=maybe(st.one_of(st.just("-"), paths)),
    max_steps=maybe(st.integers(1, 10**6)),
    time_budget_min=maybe(st.floats(min_value=1e-3, max_value=1e4, allow_subnormal=False)),
    new_labels=st.sampled_from(["fit", "train"]),
    short_sides=maybe(st.tuples(st.integers(32, 512), st.integers(32, 1024))),
    name=maybe(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10).filter(
        lambda text: text != "--")),
)


@settings(max_examples=300, deadline=None)
@given(configs)
def test_the_command_line_reads_back_what_to_argv_wrote(config):
    args = build_parser().parse_args(["train", *config.to_argv()])
    assert train_config(args) == config


def test_defaults_write_no_flags_and_a_panel_run_reads_as_typed():
    assert TrainConfig(data=["d"], out="m.safetensors").to_argv() == ["--data", "d", "--out", "m.safetensors"]
    config = TrainConfig(data=["/runs/a b/confirmed-0.jsonl"], out="/runs/m.safetensors", init="/m/starter.safetensors",
                         events="-", anchor=200.0, time_budget_min=5, val_fraction=0.3)
    assert config.command_line() == ("mlcnn train --data '/runs/a b/confirmed-0.jsonl' --out /runs/m.safetensors "
                                     "--init /m/starter.safetensors --val-fraction 0.3 --anchor 200 --events - "
                                     "--time-budget 5")


def test_recipe_for_a_fine_tune_is_the_fine_tune_recipe_with_the_options_given():
    assert TrainConfig(data=[], out="", init="m").recipe_for(90) == finetune_recipe(RECIPES["default"], 90)
    paper = TrainConfig(data=[], out="", recipe="paper", lr=0.02).recipe_for(90)
    assert paper.lr == 0.02 and paper.lr_max == RECIPES["paper"].lr_max  # α_max stays the paper's


def test_new_label_cuts_are_refused_for_a_fine_tune_of_every_weight():
    with pytest.raises(ValueError, match="--new-labels cut .* with --learn all give --new-labels fit or train"):
        TrainConfig(data=[], out="", init="m", new_labels="cut", learns="all")
    for learns in (None, "head", "block", "last"):   # None: a fine-tune learns its head (FINETUNE_LEARNS)
        TrainConfig(data=[], out="", init="m", new_labels="cut", learns=learns)
    TrainConfig(data=[], out="", new_labels="cut", learns="all")   # from scratch: no label is new


def test_no_epochs_fit_the_new_rows_and_refuse_modes_that_learn_them_in_steps():
    from mlcnn_core.data import Sample
    from mlcnn_core.train import new_label_mode

    for mode in ("train", "cut"):
        with pytest.raises(ValueError, match=f"--new-labels {mode} .* --epochs 0 takes none"):
            TrainConfig(data=[], out="", init="m", new_labels=mode, epochs=0)
    TrainConfig(data=[], out="", init="m", new_labels="fit", epochs=0)
    only_new_words = [Sample(f"{i}.png", ("zz-new",)) for i in range(12)]   # "Teach only the new labels"
    assert new_label_mode("auto", only_new_words, ["zz-new"], "head", 0)[0] == "fit"
    assert new_label_mode("auto", only_new_words, ["zz-new"], "head", 3)[0] == "train"
