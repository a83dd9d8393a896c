"""Training recipes and the options of one ``mlcnn train`` run, readable without torch.

The GUI's training panel builds a :class:`TrainConfig`, shows the recipe ``mlcnn train`` will pick
for it (:meth:`TrainConfig.recipe_for`) and runs the command :meth:`TrainConfig.to_argv` encodes; the
command line decodes those flags back into the same :class:`TrainConfig` (``cli.train_config``).
``train.py`` runs it. Two recipes (``--recipe``):

* ``paper``: Table 1 without normalisation, Glorot init with biases 1 (0 in the first and last
  layers), the RMSprop variant of section 2.5 with α0 = α_max = 0.01, constant rate, batches of 128.
* ``default``: what trains best on our benchmark (numbers in BENCHMARKS.md): batch norm after
  every convolution (folded into the convolution at prediction time), He init, AdamW with a
  short linear warm-up and cosine decay, batches of 64.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, fields, replace


@dataclass
class Recipe:
    name: str
    norm: bool
    init: str                 # "paper" | "default"
    optimizer: str            # "paper-rmsprop" | "adamw"
    lr: float                 # α0, or AdamW's peak rate
    lr_max: float             # α_max (paper-rmsprop only)
    schedule: str             # "constant" | "cosine"
    warmup_fraction: float
    weight_decay: float
    batch_size: int
    epochs: int
    patience: int             # epochs without a better validation score before stopping (0: never)
    norm_stats: str = "update"  # "update" | "frozen": batch norm's running statistics during training
    anchor: float = 0.0         # pull toward the starting weights, per unit of rate (fine-tunes; 0: off)
    learns: str = "all"         # "all" | "block" | "head" | "last": what moves (finetune.py freezes the rest)
    distill: float = 0.0        # fine-tunes of the head or block: weight of the parent's outputs (LwF; 0: off)


# Fewer held-out images than this are too few to judge by: a fine-tune keeps its parent's threshold,
# and any run keeps its last epoch instead of the one that scored best on them (the "best" of many
# epochs on a handful of held-out images is noise).
MIN_IMAGES_TO_JUDGE = 30

RECIPES = {
    "paper": Recipe("paper", norm=False, init="paper", optimizer="paper-rmsprop", lr=0.01, lr_max=0.01,
                    schedule="constant", warmup_fraction=0.0, weight_decay=0.0, batch_size=128, epochs=50,
                    patience=0),
    "default": Recipe("default", norm=True, init="default", optimizer="adamw", lr=2e-3, lr_max=2e-3,
                      schedule="cosine", warmup_fraction=0.03, weight_decay=0.05, batch_size=64, epochs=30,
                      patience=8),
}

FINETUNE_ANCHOR = 2500.0      # a fine-tune of every weight (--learn all)
FINETUNE_LEARNS = "head"      # what a fine-tune moves by default (--learn)
FINETUNE_FROZEN_ANCHOR = 100.0  # the pull of a fine-tune of the head (or the last block) toward the parent
FINETUNE_FROZEN_STEPS = 300   # steps of 32 crops of the frozen front's maps
FROZEN_SHORT_SIDES = (256, 288)  # the frozen front reads each image at these short sides, and mirrored


def finetune_recipe(base: Recipe, n_train: int, learns: str | None = None) -> Recipe:
    """Defaults for ``--init MODEL`` on a person's corrections (tens to hundreds of images).

    ``learns`` "head" (the default, FINETUNE_LEARNS), "block" or "last": the front of the network
    is frozen and only the rest learns, on maps of the front computed once (finetune.py): about 300
    steps of 32 crops whatever the number of images, half the rate from scratch, the weights pulled
    toward the parent's (``anchor``, L2-SP, FINETUNE_FROZEN_ANCHOR). On the validation sets
    (BENCHMARKS.md, "Fine-tuning methods side by side") the head with L2-SP 100 learnt a new
    artist at least as well as a fine-tune of every weight, lost less of the old ones and trained
    in seconds instead of minutes.

    ``learns`` "all" moves every weight: about 4,000 image presentations (each image seen 4000 / n
    times, within 10 to 40 epochs), a tenth of the rate from scratch, the anchor at 2500, batch-norm
    statistics frozen: without the anchor a fine-tune of every weight forgets the old styles
    (BENCHMARKS.md, "Choosing the fine-tune defaults").

    Either way no early stopping on the tiny held-out part."""
    learns = learns or FINETUNE_LEARNS
    batch = min(base.batch_size, 32)
    if learns == "all":
        epochs = int(min(40, max(10, math.ceil(4000 / max(1, n_train)))))
        return replace(base, lr=base.lr / 10, lr_max=base.lr_max / 10, batch_size=batch, epochs=epochs,
                       warmup_fraction=0.1, patience=0, norm_stats="frozen", anchor=FINETUNE_ANCHOR, learns="all")
    frozen = replace(base, batch_size=batch, learns=learns)
    epochs = math.ceil(FINETUNE_FROZEN_STEPS / steps_per_epoch(frozen, n_train))
    return replace(base, lr=base.lr / 2, lr_max=base.lr_max / 2, batch_size=batch, epochs=epochs,
                   warmup_fraction=0.1, weight_decay=0.0, patience=0, norm_stats="frozen",
                   anchor=FINETUNE_FROZEN_ANCHOR, learns=learns)


def steps_per_epoch(recipe: Recipe, n_train: int) -> int:
    """Steps in one pass over ``n_train`` images: a fine-tune of every weight steps through the
    images, one of the head (or the last block) through each image's views (FROZEN_SHORT_SIDES,
    each mirrored too)."""
    views = 1 if recipe.learns == "all" else 2 * len(FROZEN_SHORT_SIDES)
    return max(1, math.ceil(max(1, n_train) * views / recipe.batch_size))


@dataclass
class TrainConfig:
    """One ``mlcnn train`` run; ``None`` leaves the choice to the recipe (for a fine-tune:
    :func:`finetune_recipe`). Each field is one flag of the command line (:meth:`to_argv`)."""

    data: list[str]
    out: str
    arch: str = "compact"
    init: str | None = None
    recipe: str = "default"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_max: float | None = None
    val_fraction: float = 0.1
    val_data: list[str] | None = None  # validation set of its own (then nothing is split off)
    device: str = "auto"
    bf16: bool | None = None          # None: where the device supports it; False: --no-bf16
    workers: int | None = None
    patience: int | None = None
    norm_stats: str | None = None     # "update" | "frozen" (default: the recipe's)
    anchor: float | None = None       # L2-SP strength toward the --init model (default: the recipe's)
    learns: str | None = None         # "all" | "block" | "head" | "last" (default: the recipe's)
    distill: float | None = None      # LwF weight toward the --init model's outputs (default: the recipe's)
    threshold: str = "auto"           # "linear" | "global" | "auto" (see train.threshold_kind)
    seed: int = 0
    resume: bool = False
    events: str | None = None         # file path, "-" for stdout, None for a terminal progress bar
    max_steps: int | None = None      # stop early (tests, quick benchmarks)
    time_budget_min: float | None = None  # fewer epochs when the planned ones would not fit in this time
    new_labels: str = "auto"          # "fit": rows fitted on the test form (newlabels.py); "train": learnt with
                                      # the head; "cut": so, with cuts of their own; "auto": by the data
    replay: str = "auto"              # head fine-tunes: a replay file, "auto" (the --init model's, if any), "none"
    replay_weight: float = 1.0        # weight of the replayed crops' loss in each step
    short_sides: tuple[int, int] | None = None  # scale augmentation: (lo, hi) short side before the crop
    name: str | None = None           # the model's name in its card (default: kept from --init, else empty)

    def __post_init__(self) -> None:
        # A cut is placed by cross-validating the fine-tune that learns the new rows (finetune.py): three
        # more fine-tunes of the head on the frozen trunk's maps take seconds, of every weight minutes each.
        if self.init and self.new_labels == "cut" and (self.learns or FINETUNE_LEARNS) == "all":
            raise ValueError("--new-labels cut places each new label's cut by cross-validating a fine-tune of the "
                             "head or of the last block, not of every weight: with --learn all give --new-labels "
                             "fit or train, or learn head, block or last")
        if self.init and self.epochs == 0 and self.new_labels in ("train", "cut"):
            raise ValueError(f"--new-labels {self.new_labels} learns the new rows in the fine-tune's steps, and "
                             "--epochs 0 takes none: give --new-labels fit (or auto) to fit them alone, or 1 or "
                             "more epochs")

    @property
    def time_budget_s(self) -> float | None:
        return None if self.time_budget_min is None else self.time_budget_min * 60

    def recipe_for(self, n_train: int) -> Recipe:
        """The recipe this run trains with on ``n_train`` images: the named one, made a fine-tune's
        with ``init``, with the options given here in place of its own."""
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {sorted(RECIPES)}")
        recipe = RECIPES[self.recipe]
        if self.init:
            recipe = finetune_recipe(recipe, n_train, self.learns)
        overrides = {k: v for k, v in {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                                       "lr_max": self.lr_max, "patience": self.patience,
                                       "norm_stats": self.norm_stats, "anchor": self.anchor,
                                       "learns": self.learns, "distill": self.distill}.items() if v is not None}
        if "lr" in overrides and "lr_max" not in overrides and recipe.optimizer != "paper-rmsprop":
            overrides["lr_max"] = overrides["lr"]
        return replace(recipe, **overrides)

    def to_argv(self) -> list[str]:
        """The ``mlcnn train`` arguments (after ``train``) that give this config: a flag for every
        field that is not its default. The only place the flags are written."""
        if self.bf16:
            raise ValueError("mlcnn train has no flag forcing bf16 (it is used where supported)")
        default = {f.name: f.default for f in fields(self)}
        argv = [arg for path in self.data for arg in _flag("--data", str(path))] + _flag("--out", str(self.out))
        for path in self.val_data or []:
            argv += _flag("--val-data", str(path))
        valued = (("--arch", "arch"), ("--init", "init"), ("--recipe", "recipe"), ("--epochs", "epochs"),
                  ("--batch-size", "batch_size"), ("--lr", "lr"), ("--lr-max", "lr_max"),
                  ("--val-fraction", "val_fraction"), ("--device", "device"), ("--workers", "workers"),
                  ("--patience", "patience"), ("--norm-stats", "norm_stats"), ("--anchor", "anchor"),
                  ("--learn", "learns"), ("--distill", "distill"), ("--threshold", "threshold"), ("--seed", "seed"),
                  ("--events", "events"), ("--max-steps", "max_steps"), ("--time-budget", "time_budget_min"),
                  ("--new-labels", "new_labels"), ("--replay", "replay"), ("--replay-weight", "replay_weight"),
                  ("--name", "name"))
        for flag, key in valued:
            value = getattr(self, key)
            if value != default[key]:
                argv += _flag(flag, _number(value) if isinstance(value, float) else str(value))
        if self.short_sides:
            argv += ["--short-side-range", *(str(side) for side in self.short_sides)]
        if self.bf16 is False:
            argv.append("--no-bf16")
        if self.resume:
            argv.append("--resume")
        return argv

    def command_line(self) -> str:
        """The shell command a person would type for this run."""
        return shlex.join(["mlcnn", "train", *self.to_argv()])


def _flag(flag: str, value: str) -> list[str]:
    """``flag`` and its value as arguments; a value that starts with a dash (a file "-x", a seed of
    -1) is joined to its flag, so that it is not read as a flag of its own. argparse drops a value of
    "--" whatever its form, so that one is refused."""
    if value == "--":
        raise ValueError(f"{flag} --: the command line cannot take '--' as a value (give ./-- for a file)")
    return [f"{flag}={value}"] if value.startswith("-") and value != "-" else [flag, value]


def _number(value: float) -> str:
    """``value`` as briefly as it reads back exactly: 200.0 as "200", 0.0002 as "0.0002"."""
    brief = f"{value:g}"
    return brief if float(brief) == value else repr(value)
