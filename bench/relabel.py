#!/usr/bin/env python3
"""A copy of a scene set with some labels renamed: the same images (hard links where the file system
allows), the labels of ``truth.jsonl`` and the ``.txt`` sidecars mapped.

    python bench/relabel.py data/artists/mix-topics-train data/artists/mix-topicsemoji-train \
        --map bird=animal-bird --map fruit=food-fruit ...

A label without a ``--map`` stays as it is; ``--drop`` removes a label from the images' labels (its
objects stay in the pictures, unlabelled, like clutter).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from emoji_scenes import label_line  # noqa: E402


def relabel(src: Path, dst: Path, mapping: dict[str, str], drop: set[str]) -> int:
    if (dst / "DONE").exists():
        raise SystemExit(f"{dst} exists; delete it first")
    dst.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (src / "truth.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for obj in record["objects"]:
            obj["label"] = mapping.get(obj["label"], obj["label"])
        record["labels"] = sorted({mapping.get(lab, lab) for lab in record["labels"]} - drop)
        image = dst / record["image"]
        if not image.exists():
            try:
                os.link(src / record["image"], image)
            except OSError:
                shutil.copy2(src / record["image"], image)
        image.with_suffix(".txt").write_text(label_line(record["labels"]) + "\n", encoding="utf-8")
        lines.append(json.dumps(record, ensure_ascii=False))
    (dst / "truth.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (dst / "DONE").write_text(json.dumps({"relabelled_from": str(src), "map": mapping, "drop": sorted(drop)}) + "\n")
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--map", action="append", default=[], metavar="OLD=NEW")
    ap.add_argument("--drop", action="append", default=[], metavar="LABEL")
    args = ap.parse_args(argv)
    mapping = {}
    for item in args.map:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            ap.error(f"--map {item!r}: expected OLD=NEW")
        mapping[old] = new
    n = relabel(args.src, args.dst, mapping, set(args.drop))
    print(f"{args.dst}: {n} images, {len(mapping)} labels renamed, {len(args.drop)} dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
