"""Tag lists for autocomplete: the CSV files of a1111's tag autocomplete extension
(``danbooru.csv``, ``e621.csv``: ``tag,category,post count,"alias,alias"``, most used first) and
BooruDatasetTagManager, or a plain list of one tag per line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mlcnn_core.sidecars import normalize_tag

MAX_BYTES = 64 << 20  # a booru's whole tag list is a few MB


class TagListError(Exception):
    """A tag list cannot be read; the message names the file and the problem."""


def read_tag_list(path: str | Path) -> list[str]:
    """The tags of a tag list, in its order (most used first in the extension's files), without
    duplicates. A ``tag,...`` row gives its first column; a header row (``name`` or ``tag``) and
    empty rows are skipped; aliases are not tags and are not returned."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise TagListError(f"{path} is larger than {MAX_BYTES >> 20} MB: not a tag list")
        data = path.read_bytes()
    except OSError as exc:
        raise TagListError(f"cannot read the tag list {path}: {exc.strerror or exc}") from exc
    if b"\0" in data[:4096]:
        raise TagListError(f"{path} is not a text file")
    text = data.decode("utf-8-sig", errors="replace")
    tags: dict[str, None] = {}
    try:
        for n, row in enumerate(csv.reader(io.StringIO(text))):
            tag = normalize_tag(row[0]) if row else ""
            if tag and not (n == 0 and tag.casefold() in ("name", "tag")):
                tags.setdefault(tag)
    except csv.Error as exc:
        raise TagListError(f"{path} is not a tag list (CSV): {exc}") from exc
    return list(tags)
