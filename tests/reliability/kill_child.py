"""A fork server for tests/reliability/test_kill_writes.py: imports the library once, then for each
``run SEED`` line on stdin forks a child that edits tags and writes sidecars (both formats) without
end, prints the child's pid, waits for it (the test kills it) and prints how it ended.

Children log each decision to ``decisions.log`` before (``try``) and after (``done``, with the
child's pid) the library commits it, so the test can check that no committed decision was lost.
"""

import os
import random
import sys
import traceback
from pathlib import Path

from mlcnn_core.library import Library

VOCAB = ["cat", "dog", "blue sky", "a & b", "<tag>", "naïve", "日本", "emoji 🐱", "ohwx", "1girl"]


def edit_forever(folder: Path, seed: int) -> None:
    rng = random.Random(seed)
    lib = Library.open(folder, data_dir=folder / ".fallback-data")
    images = lib.images()
    with open(folder / "decisions.log", "a", encoding="utf-8") as log:
        while True:
            record = rng.choice(images)
            tag = rng.choice(VOCAB)
            state = rng.choice(["added", "added", "rejected"])
            log.write(f"try\t{record.id}\t{tag}\t{state}\n")
            log.flush()
            lib.set_tag(record.id, tag, state)
            log.write(f"done\t{record.id}\t{tag}\t{state}\t{os.getpid()}\n")
            log.flush()
            lib.write_sidecars(
                record.id,
                formats=["txt", "xmp"],
                txt_path=lib.abspath(record.path).with_suffix(".txt"),
                policy=rng.choice(["merge", "replace"]),
            )


def serve(folder: Path) -> None:
    for line in sys.stdin:
        seed = int(line.split()[1])
        pid = os.fork()
        if pid == 0:
            try:
                edit_forever(folder, seed)
            except BaseException:  # noqa: BLE001 - any failure is the test's finding
                with open(folder / "child-error.txt", "a", encoding="utf-8") as fh:
                    traceback.print_exc(file=fh)
                os._exit(1)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
