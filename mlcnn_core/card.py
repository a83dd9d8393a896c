"""The model card's prediction settings, readable without torch.

Reading a card (the GUI does it on its thread, for the model list and the training panel) must not
import torch: :class:`PredictConfig` and :func:`card_reading` live here, and ``predict.py`` uses
them. Section 2.6 of the paper, and where this project departs from it, is documented there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SHORT_SIDE = 256  # the paper's input: the image resized so that its shorter side is 256 pixels
MIN_SHORT_SIDE, MAX_SHORT_SIDE = 64, 2048
FEATURES = ("log1p_sum", "max", "max_3x3", "relative_sum")  # rescore.py's features of each label's map


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
    def from_dict(cls, d: dict | None) -> PredictConfig:
        d = dict(d or {})
        cfg = cls(pool_kernels=tuple(int(k) for k in d.get("pool_kernels", (3, 5, 7))),
                  pool_stride=str(d.get("pool_stride", "one")), scores=str(d.get("scores", "softmax")),
                  multiscale=bool(d.get("multiscale", True)), keep_ratio=float(d.get("keep_ratio", 1.0)),
                  rescore=None if d.get("rescore") is None else tuple(float(w) for w in d["rescore"]),
                  short_side=int(d.get("short_side", SHORT_SIDE)),
                  second_short_side=None if d.get("second_short_side") is None else int(d["second_short_side"]))
        if (cfg.pool_stride not in ("one", "kernel") or cfg.scores not in ("softmax", "raw")
                or not 0.0 < cfg.keep_ratio <= 1.0
                or not all(MIN_SHORT_SIDE <= short <= MAX_SHORT_SIDE for short in cfg.passes)
                or (cfg.second_short_side is not None and cfg.rescore is None)
                or (cfg.rescore is not None and (cfg.scores != "softmax"
                                                 or len(cfg.rescore) != len(FEATURES) * len(cfg.passes) + 1
                                                 or not all(math.isfinite(w) for w in cfg.rescore)))):
            raise ValueError(f"bad prediction settings {d}")
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
