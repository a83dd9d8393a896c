"""The time a frozen fine-tune has left, the ETA its events carry and the training panel shows.

A fine-tune of the head has phases that cost very different things: the frozen trunk reads each
training image (most of the run), then hundreds of steps of the head (milliseconds each), an epoch
end every few steps (the held-out images scored, sometimes a checkpoint), and the work after the last
step (the new labels' rows fitted again, the 10-crop baseline on the held-out images, the file). Each
phase is estimated from its own measured cost: a rate measured on one phase says little about another
(the 10-crop baseline runs several times faster per pixel than the reading of the training images,
which decodes and resizes every view). The machine is shared, so a rate follows the recent part of its
phase rather than all of it: when another program starts or stops, the ETA follows within a few units.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


class MeasuredRate:
    """Seconds per unit of one phase (an image read, a step, an epoch end), from the units measured so
    far: the rate over their most recent half (``RECENT``), and over no fewer than ``trust_after``
    units. Until ``trust_after`` units (≥ 1) are measured, a ``guess`` made before the phase began
    (e.g. a few trial steps)."""

    RECENT = 0.5

    def __init__(self, guess: float = 0.0, trust_after: int = 1):
        self.guess = guess
        self.trust_after = max(1, trust_after)
        self._units = [0.0]     # cumulative units measured
        self._seconds = [0.0]   # cumulative seconds they took

    def add(self, units: float, seconds: float) -> None:
        if units <= 0:
            return
        self._units.append(self._units[-1] + units)
        self._seconds.append(self._seconds[-1] + max(0.0, seconds))

    @property
    def measured(self) -> float:
        return self._units[-1]

    def seconds_per_unit(self) -> float:
        units = self._units[-1]
        if units < self.trust_after:
            return self.guess
        # the latest mark at or before the window's start: the window is that long or a little longer
        start = units - max(self.RECENT * units, self.trust_after)
        first = max(0, bisect.bisect_right(self._units, start) - 1)
        return (self._seconds[-1] - self._seconds[first]) / (units - self._units[first])


@dataclass
class RemainingWork:
    """What is left of a frozen fine-tune, each part at the rate measured for it: the training
    images the front has not read yet, the steps not taken, the epoch ends still to come, and the
    seconds of work after the last step."""

    images: int = 0
    reading: MeasuredRate = field(default_factory=MeasuredRate)
    steps: int = 0
    stepping: MeasuredRate = field(default_factory=MeasuredRate)
    epoch_ends: int = 0
    ending: MeasuredRate = field(default_factory=MeasuredRate)
    after_steps: float = 0.0

    def parts(self) -> dict[str, float]:
        """The seconds left in each phase (what the ETA is made of; the events carry it)."""
        return {"reading": self.images * self.reading.seconds_per_unit(),
                "steps": self.steps * self.stepping.seconds_per_unit(),
                "epoch_ends": self.epoch_ends * self.ending.seconds_per_unit(), "after_steps": self.after_steps}

    def seconds(self) -> float:
        return sum(self.parts().values())


def epoch_ends_after(step: int, total: int, steps_per_epoch: int) -> int:
    """Epoch ends still to come after ``step`` of ``total`` (the last step ends an epoch too)."""
    ends = total // steps_per_epoch - step // steps_per_epoch
    return ends + (1 if total % steps_per_epoch and step < total else 0)
