"""What reading the keywords embedded in a folder's images costs, in the library (no GUI).

    python bench/embedded_keywords_bench.py --folder DIR [--rounds 3]

Each round starts from a fresh library (DIR/.mlcnn-tagger deleted) and times, in one process:
the scan (listing, no image opened), the sidecar import, the first reading of every image's
embedded keywords (``Library.import_embedded_keywords``), then a second scan and reading, which
finds nothing new to read. The folder's files stay in the page cache between rounds, so this is
the warm-cache cost; the first round after a reboot reads from disk.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_round(folder: Path) -> dict[str, float]:
    from mlcnn_core.library import Library

    shutil.rmtree(folder / ".mlcnn-tagger", ignore_errors=True)
    times: dict[str, float] = {}
    library = Library.open(folder)
    start = time.perf_counter()
    total = library.scan().total
    times["scan"] = time.perf_counter() - start
    start = time.perf_counter()
    library.import_sidecars()
    times["sidecar import"] = time.perf_counter() - start
    start = time.perf_counter()
    first = library.import_embedded_keywords()
    times["embedded keywords, first reading"] = time.perf_counter() - start
    start = time.perf_counter()
    library.scan()
    again = library.import_embedded_keywords()
    times["scan and embedded keywords again"] = time.perf_counter() - start
    tagged = sum(1 for tags in library.tags_by_image().values() if tags)
    library.close()
    print(f"  {total} images, {tagged} with tags; first reading changed {len(first.changed)}, "
          f"{len(first.messages)} messages; again changed {len(again.changed)}")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rounds = [one_round(args.folder) for _ in range(args.rounds)]
    for name in rounds[0]:
        values = [r[name] * 1000 for r in rounds]
        print(f"{name:<36} median {statistics.median(values):8.0f} ms  ({', '.join(f'{v:.0f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
