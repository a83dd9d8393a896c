"""A person's rules for the tags the model proposes and the captions written, shared by the
``mlcnn`` command line and the app, so both propose and write the same tags.

Proposals (:meth:`TagRules.choose`, applied to every prediction before it is printed or stored):

* ``min_confidence``: a label is proposed when its confidence is at least this, instead of the
  model card's own threshold. The confidence is the number in [0, 1] the app draws as a bar
  (:func:`display_confidences`): for a rescored card (the starter, and models fine-tuned from it)
  the label's probability, as ``mlcnn predict`` prints it; for a card read as the paper's summed
  vector, the label's share of the image's summed evidence (its printed score over the sum of all).
* ``exclude``: tags never proposed nor written (exact, or with ``*`` and ``?`` wildcards; case,
  spaces against underscores, and how many of them separate two words do not matter:
  ``Long__Hair`` excludes ``long_hair``; kaomoji such as ``^_^`` and ``^__^`` stay apart).
* ``max_tags``: at most this many proposals, the most confident first. A person's own tags are
  never cut.

Written captions (:meth:`TagRules.written`, applied where a sidecar is written):

* ``prefix``: tags written first in every ``.txt`` caption, in this order (a trigger word, for
  kohya's ``--keep_tokens``); XMP keywords are a set and do not get them.
* ``word_separator``: ``"space"`` writes ``long_hair`` as ``long hair``, ``"underscore"`` the
  reverse, ``"keep"`` leaves tags as they are (kaomoji such as ``^_^`` are kept in any case). A
  tag of the file in the other form is rewritten in its place. The prefix is written as given.
* excluded tags are not written (a file that already holds one keeps it under ``merge``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mlcnn_core.sidecars import normalize_tag, normalize_tags

WORD_SEPARATORS: tuple[str, ...] = ("keep", "space", "underscore")
_WORD_UNDERSCORE = re.compile(r"(?<=[^\W_])_+|_+(?=[^\W_])")
_WORD_SEPARATORS = re.compile(r"(?<=[^\W_])[_ ]+|[_ ]+(?=[^\W_])")


def display_confidences(scores: dict[str, float], rescored: bool) -> dict[str, float]:
    """A prediction's per-label scores as confidences in [0, 1]: a rescored card's probabilities as
    they are, else each label's share of the image's summed evidence (negative sums count as none)."""
    positive = {k: max(float(v), 0.0) for k, v in scores.items()}
    if rescored:
        return positive
    total = sum(positive.values())
    return {k: v / total if total > 0 else 0.0 for k, v in positive.items()}


def _match_key(tag: str) -> str:
    """What an excluded tag is compared on: case folded, a run of underscores and spaces beside a
    letter or digit one space (``Long__Hair`` is ``long_hair``), any other underscore a space."""
    return _WORD_SEPARATORS.sub(" ", normalize_tag(tag)).replace("_", " ").casefold()


def _wildcard_pattern(pattern: str) -> re.Pattern:
    """``*`` and ``?`` as wildcards and every other character as itself: ``[sic]`` is a tag, not
    fnmatch's set of three letters."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in _match_key(pattern))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def parse_tag_list(text: str) -> tuple[str, ...]:
    """Comma-separated tags (a setting's text) as a tuple, normalised, empty items dropped."""
    return tuple(normalize_tags(text.split(",")))


@dataclass(frozen=True)
class TagRules:
    min_confidence: float | None = None
    exclude: tuple[str, ...] = ()
    max_tags: int | None = None
    prefix: tuple[str, ...] = ()
    word_separator: str = "keep"

    def __post_init__(self) -> None:
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"a minimum confidence is from 0 to 1, not {self.min_confidence}")
        if self.max_tags is not None and self.max_tags < 1:
            raise ValueError(f"a maximum tag count is 1 or more, not {self.max_tags}")
        if self.word_separator not in WORD_SEPARATORS:
            raise ValueError(f"unknown word separator {self.word_separator!r} (expected one of {WORD_SEPARATORS})")
        object.__setattr__(self, "exclude", tuple(normalize_tags(self.exclude)))
        object.__setattr__(self, "prefix", tuple(normalize_tags(self.prefix)))
        if any("," in t for t in self.prefix):
            raise ValueError("a caption prefix is comma-separated tags; a tag in it cannot hold a comma")
        patterns = [_wildcard_pattern(p) for p in self.exclude]
        object.__setattr__(self, "_patterns", patterns)

    def excluded(self, tag: str) -> bool:
        key = _match_key(tag)
        return any(p.match(key) for p in self._patterns)

    def choose(self, labels: Sequence[str], confidences: dict[str, float]) -> list[str]:
        """The proposals of a prediction: ``labels`` (the card's choice) or, with ``min_confidence``,
        every label whose ``confidences`` value (:func:`display_confidences`) reaches it; excluded
        ones dropped; at most ``max_tags``, the most confident kept."""
        if self.min_confidence is None:
            chosen = list(labels)
        else:
            chosen = [k for k, v in confidences.items() if v > 0 and v >= self.min_confidence]
        chosen = [t for t in chosen if not self.excluded(t)]
        chosen.sort(key=lambda t: -confidences.get(t, 0.0))
        return chosen[: self.max_tags] if self.max_tags is not None else chosen

    def word_form(self, tag: str) -> str:
        """A tag as written under ``word_separator``. Only an underscore beside a letter or digit
        is a word separator (``hatsune_miku_(cosplay)`` is ``hatsune miku (cosplay)``), and tags of
        three characters or fewer are kept, so that kaomoji (``^_^``, ``o_o``) stay as they are."""
        tag = normalize_tag(tag)
        if self.word_separator == "keep" or len(tag) <= 3:
            return tag
        if self.word_separator == "space":
            return _WORD_UNDERSCORE.sub(" ", tag)
        return tag.replace(" ", "_")

    def written(self, tags: Iterable[str]) -> list[str]:
        """Tags as a sidecar gets them: excluded ones dropped, words separated as asked (the prefix
        is not added here: see :attr:`prefix`)."""
        return normalize_tags(self.word_form(t) for t in tags if not self.excluded(t))

NO_RULES = TagRules()
