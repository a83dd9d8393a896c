"""An edit of many selected images (Edit ▸ Add a tag to the selected images): the selection's
one-transaction path (Library.add_tag_to_images, snapshots of all images in two queries, undo
restoring them in one transaction) against the same edit made one image at a time, as an edit of
the current image does (a snapshot, set_tag and a snapshot per image; undo image by image). Both
run on the GUI thread, so their time is how long the window waits. Rounds alternate so both see the
same background load; medians are reported.

    python bench/selection_edits.py [--images 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlcnn_core.library import Library


def one_at_a_time(library: Library, ids: list[int], tag: str) -> float:
    start = time.perf_counter()
    before = {i: library.snapshot_tags(i) for i in ids}
    for image_id in ids:
        library.set_tag(image_id, tag, "added")
    {i: library.snapshot_tags(i) for i in ids}  # noqa: B018 - what the command keeps for redo
    for image_id, snapshot in before.items():
        library.restore_snapshot(image_id, snapshot)
    return time.perf_counter() - start


def as_a_selection(library: Library, ids: list[int], tag: str) -> float:
    start = time.perf_counter()
    before = library.snapshot_images(ids)
    library.add_tag_to_images(ids, tag)
    library.snapshot_images(ids)
    library.restore_snapshots(before)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for n in range(args.images):
            (Path(folder) / f"img{n:06d}.jpg").write_bytes(b"")
        library = Library.open(folder)
        library.scan()
        ids = [r.id for r in library.images()]
        for image_id in ids:  # each image has a few tags already, as a tagged folder has
            for tag in ("a", "b", "c"):
                library.set_tag(image_id, tag, "added")
        times: dict[str, list[float]] = {"one at a time": [], "as a selection": []}
        for _ in range(args.rounds):
            times["one at a time"].append(one_at_a_time(library, ids, "new"))
            times["as a selection"].append(as_a_selection(library, ids, "new"))
        library.close()
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"add a tag to {args.images} images, undo it (median of {args.rounds} rounds):")
    for name, seconds in medians.items():
        print(f"  {name:16s} {seconds:.3f} s")
    print(f"  ratio            {medians['one at a time'] / medians['as a selection']:.1f}×")


if __name__ == "__main__":
    main()
