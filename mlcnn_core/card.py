"""The model card's prediction settings, readable without torch.

Reading a card (the GUI does it on its thread, for the model list and the training panel) must not
import torch: :class:`PredictConfig` and :func:`card_reading` live here, and ``predict.py`` uses
them. Section 2.6 of the paper, and where this project departs from it, is documented there.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import NoReturn

SHORT_SIDE = 256  # the paper's input: the image resized so that its shorter side is 256 pixels
MIN_SHORT_SIDE, MAX_SHORT_SIDE = 64, 2048
FEATURES = ("log1p_sum", "max", "max_3x3", "relative_sum")  # rescore.py's features of each label's map


def _shown(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, list, dict, type(None))) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class CardFields:
    """Typed reads of one object of a model card (the card itself, ``prediction``, ``threshold``): a
    value of the wrong kind raises ``ValueError`` naming the field (``name.key``) and what it holds, as JSON."""

    def __init__(self, d: object, name: str):
        if not isinstance(d, dict):
            raise ValueError(f"{name} is {_shown(d)}, not an object")
        self.d, self.name = d, name

    def _field(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def fail(self, key: str, value: object, expected: str) -> NoReturn:
        raise ValueError(f"{self._field(key)} is {_shown(value)}, not {expected}")

    def _get(self, key: str, default, ok, expected: str):
        if key not in self.d:
            return default
        value = self.d[key]
        if not ok(value):
            self.fail(key, value, expected)
        return value

    def number(self, key: str, default: float | None) -> float | None:
        """A number; null too where the default is None."""
        value = self._get(key, default, lambda v: _is_number(v) or (v is None and default is None),
                          "a number" + (" or null" if default is None else ""))
        return None if value is None else float(value)

    def text(self, key: str, default: str | None) -> str | None:
        """A string; null too where the default is None."""
        return self._get(key, default, lambda v: isinstance(v, str) or (v is None and default is None),
                         "a string" + (" or null" if default is None else ""))

    def nested(self, key: str) -> CardFields | None:
        """The object under ``key``, for reading its own fields (None where it is absent)."""
        return CardFields(self.d[key], self._field(key)) if key in self.d else None

    def whole(self, key: str, default: int | None) -> int | None:
        """A whole number; null too where the default is None."""
        return self._get(key, default, lambda v: _is_whole(v) or (v is None and default is None),
                         "a whole number" + (" or null" if default is None else ""))

    def flag(self, key: str, default: bool) -> bool:
        return self._get(key, default, lambda v: isinstance(v, bool), "true or false")

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        return self._get(key, default, lambda v: v in choices, "one of " + ", ".join(map(_shown, choices)))

    def numbers(self, key: str, default: list | None) -> list[float] | None:
        """A list of numbers; null too where the default is None."""
        value = self._get(key, default, lambda v: _is_list_of(v, _is_number) or (v is None and default is None),
                          "a list of numbers" + (" or null" if default is None else ""))
        return None if value is None else [float(v) for v in value]

    def wholes(self, key: str, default: list) -> list[int]:
        return list(self._get(key, default, lambda v: _is_list_of(v, _is_whole), "a list of whole numbers"))


# The keys of a card that this version writes or reads (``prediction_source`` and ``training_data``
# are the bench scripts'); any other is a newer version's, or misspelt.
CARD_KEYS = frozenset({
    "format", "format_version", "name", "created", "arch", "labels", "mean", "input", "prediction", "threshold",
    "baseline_threshold", "summed_threshold", "single_pass", "provenance", "metrics", "prediction_source",
    "training_data",
})
# The entries of a card's ``metrics`` written by mlcnn train and the bench scripts, each an object.
METRICS = ("validation_single_pass", "validation_ten_crop", "validation_rescored", "validation_two_pass")


# The keys of a card's threshold objects (threshold.Threshold's fields, which import this module).
THRESHOLD_KEYS = frozenset({"kind", "bias", "weights", "at_least_one", "label_scales"})
THRESHOLD_OBJECTS = ("threshold", "baseline_threshold", "summed_threshold")


def unknown_keys(card: dict) -> list[str]:
    """The keys of ``card`` that this version does not know: at its top level, and inside the objects
    that say how it reads (``prediction``, the thresholds, ``single_pass``), named by their path
    (``prediction.keep_ratoi``)."""
    unknown = set(card) - CARD_KEYS
    known_inside = {"prediction": {f.name for f in fields(PredictConfig)}, "single_pass": {"threshold", "rescore"},
                    "single_pass.threshold": THRESHOLD_KEYS} | dict.fromkeys(THRESHOLD_OBJECTS, THRESHOLD_KEYS)
    for path, known in known_inside.items():
        inner = card
        for key in path.split("."):
            inner = inner.get(key) if isinstance(inner, dict) else None
        if isinstance(inner, dict):
            unknown |= {f"{path}.{key}" for key in set(inner) - known}
    return sorted(unknown)


def check_about(card: dict) -> None:
    """Check what a card says about its model as the code reads it: ``name`` and ``created``
    strings; ``provenance`` an object, and the parents it keeps too, whose ``init``, ``epochs_run``
    and ``train_seconds`` the kept-models table shows; ``metrics`` an object, its entries of
    :data:`METRICS` objects. A wrong value raises ``ValueError`` naming the field
    (``provenance.parent.train_seconds``)."""
    f = CardFields(card, "")
    f.text("name", "")
    f.text("created", "")
    provenance = f.nested("provenance")
    while provenance is not None:
        provenance.text("init", None)
        provenance.whole("epochs_run", None)
        provenance.number("train_seconds", None)
        provenance = provenance.nested("parent")
    metrics = f.nested("metrics")
    for key in METRICS if metrics is not None else ():
        metrics.nested(key)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list_of(value: object, ok) -> bool:
    return isinstance(value, list) and all(ok(v) for v in value)


@dataclass
class PredictConfig:
    pool_kernels: tuple[int, ...] = (3, 5, 7)
    pool_stride: str = "one"        # "one" | "kernel"
    scores: str = "softmax"         # "softmax" | "raw"
    multiscale: bool = True
    keep_ratio: float = 1.0         # 1: keep only the best label per position (the paper)
    rescore: tuple[float, ...] | None = None  # rescore.py's weights and bias; None: the summed vector
    short_side: int = SHORT_SIDE    # the image is resized so that its shorter side has this many pixels
    second_short_side: int | None = None  # a second pass at this short side (rescored with both); None: one pass

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pool_kernels"] = list(self.pool_kernels)
        d["rescore"] = None if self.rescore is None else list(self.rescore)
        return d

    @classmethod
    def from_dict(cls, d: dict | None, name: str = "prediction") -> PredictConfig:
        """The settings of a card's ``prediction`` object (None: the defaults); a wrong value raises
        ``ValueError`` naming the field (``name.key``) and what it holds."""
        f = CardFields({} if d is None else d, name)
        kernels, rescore = f.wholes("pool_kernels", [3, 5, 7]), f.numbers("rescore", None)
        if not kernels or min(kernels) < 1:
            f.fail("pool_kernels", kernels, "one or more kernel sizes of 1 or more")
        cfg = cls(pool_kernels=tuple(kernels), pool_stride=f.choice("pool_stride", "one", ("one", "kernel")),
                  scores=f.choice("scores", "softmax", ("softmax", "raw")), multiscale=f.flag("multiscale", True),
                  keep_ratio=f.number("keep_ratio", 1.0), rescore=None if rescore is None else tuple(rescore),
                  short_side=f.whole("short_side", SHORT_SIDE), second_short_side=f.whole("second_short_side", None))
        if not 0.0 < cfg.keep_ratio <= 1.0:
            f.fail("keep_ratio", cfg.keep_ratio, "a number above 0 and at most 1")
        for key, short in (("short_side", cfg.short_side), ("second_short_side", cfg.second_short_side)):
            if short is not None and not MIN_SHORT_SIDE <= short <= MAX_SHORT_SIDE:
                f.fail(key, short, f"a side from {MIN_SHORT_SIDE} to {MAX_SHORT_SIDE} pixels")
        if cfg.second_short_side is not None and cfg.rescore is None:
            f.fail("rescore", None, "weights: a second pass is read through rescoring")
        if cfg.rescore is not None:
            weights = len(FEATURES) * len(cfg.passes) + 1
            if cfg.scores != "softmax":
                f.fail("scores", cfg.scores, "'softmax': rescoring reads softmax maps")
            if len(cfg.rescore) != weights or not all(math.isfinite(w) for w in cfg.rescore):
                f.fail("rescore", list(cfg.rescore), f"{weights} finite weights for {len(cfg.passes)} pass(es)")
        return cfg

    @property
    def passes(self) -> list[int]:
        """The short side of each forward pass, the first pass (maps, peaks) first."""
        return [self.short_side] if self.second_short_side is None else [self.short_side, self.second_short_side]


def card_reading(card: dict, summed: bool = False, single_pass: bool = False) -> dict:
    """A copy of a model card set to one of its other readings: ``single_pass`` drops a second pass
    (the one-pass rescoring and threshold the card keeps in ``single_pass``), ``summed`` reads the
    paper's summed vector of one pass with the card's ``summed_threshold``. Raises ``ValueError``
    when the card has no threshold for the reading asked for."""
    card = dict(card)
    prediction = dict(card.get("prediction") or {})
    if (single_pass or summed) and prediction.get("second_short_side") is not None:
        if "single_pass" not in card:
            raise ValueError("its card has no one-pass reading (single_pass)")
        prediction.update(second_short_side=None, rescore=card["single_pass"]["rescore"])
        card["threshold"] = card["single_pass"]["threshold"]
    if summed and prediction.get("rescore") is not None:
        if "summed_threshold" not in card:
            raise ValueError("its card has no threshold for the summed vector (summed_threshold)")
        prediction["rescore"] = None
        card["threshold"] = card["summed_threshold"]
    card["prediction"] = PredictConfig.from_dict(prediction).to_dict()
    return card
