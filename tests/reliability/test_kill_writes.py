"""SIGKILL a process that edits tags, writes sidecars (.txt and XMP) and the library, at random
moments: every sidecar is whole (old or new, never torn), the library passes its integrity check,
no committed decision is lost, and an image marked as written has the library's tags in its files.

``MLCNN_KILLS`` sets the number of kills (default 120, about 20 s); docs/reliability.md has the soak.
"""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from mlcnn_core import sidecars
from mlcnn_core.library import Library

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from kill_child import VOCAB  # noqa: E402

FOREIGN_TAGS = ["cat", "sky"]
FOREIGN_XMP = (HERE.parent / "test_sidecars.py").read_text(encoding="utf-8")
FOREIGN_XMP = FOREIGN_XMP.split('DIGIKAM_XMP = textwrap.dedent(\n    """\\\n', 1)[1].split('"""', 1)[0]
FOREIGN_XMP = "\n".join(line[4:] for line in FOREIGN_XMP.splitlines()) + "\n"


def make_folder(folder: Path, n: int = 6) -> None:
    folder.mkdir()
    for i in range(n):
        (folder / f"img{i}.jpg").write_bytes(b"not really an image")
    (folder / "img0.jpg.xmp").write_text(FOREIGN_XMP, encoding="utf-8")  # another tool's file
    (folder / "img1.txt").write_text("ohwx, 1girl\nA caption line that must stay.\n", encoding="utf-8")
    lib = Library.open(folder, data_dir=folder / ".fallback-data")
    lib.scan()
    assert lib.import_sidecars() == []
    lib.close()


def check_sidecars(folder: Path) -> list[str]:
    problems = []
    allowed = set(VOCAB) | set(FOREIGN_TAGS) | {"ohwx", "1girl"}
    for txt in folder.glob("*.txt"):
        data = txt.read_bytes()
        try:
            tags = sidecars.parse_tag_text(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            problems.append(f"{txt.name}: not UTF-8 ({exc})")
            continue
        if not data.endswith(b"\n") or not set(tags) <= allowed:
            problems.append(f"{txt.name}: torn or foreign content {data[-80:]!r}")
        if txt.name == "img1.txt" and "A caption line that must stay." not in data.decode("utf-8"):
            problems.append("img1.txt lost its caption line")
    for xmp in folder.glob("*.xmp"):
        text = xmp.read_text(encoding="utf-8")
        try:
            ET.parse(xmp)
        except ET.ParseError as exc:
            problems.append(f"{xmp.name}: does not parse ({exc})")
            continue
        if not text.rstrip().endswith('<?xpacket end="w"?>'):
            problems.append(f"{xmp.name}: lost its xpacket trailer")
        if xmp.name == "img0.jpg.xmp" and 'xmp:Rating="4"' not in text:
            problems.append("img0.jpg.xmp lost another tool's rating")
        if not set(sidecars.read_xmp(xmp)) <= allowed:
            problems.append(f"{xmp.name}: foreign tags")
    return problems


def check_library(folder: Path) -> list[str]:
    db = sqlite3.connect(folder / ".mlcnn-tagger" / "library.sqlite")
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        keys = db.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        db.close()
    return ([] if integrity == "ok" else [f"integrity_check: {integrity}"]) + (
        [f"foreign_key_check: {keys}"] if keys else []
    )


def check_decisions(folder: Path, lib: Library) -> list[str]:
    """Each (image, tag): the library holds the last committed decision or a later attempted one."""
    possible: dict[tuple[int, str], set[str]] = {}
    for line in (folder / "decisions.log").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")  # try, image, tag, state; done, image, tag, state, pid
        if len(parts) != {"try": 4, "done": 5}.get(parts[0]):
            continue  # the line being written when the kill came
        kind, image_id, tag, state = parts[:4]
        key = (int(image_id), tag)
        if kind == "done":
            possible[key] = {state}
        else:
            possible.setdefault(key, set()).add(state)
    problems = []
    for (image_id, tag), states in possible.items():
        record = lib.tag_record(image_id, tag)
        if record is None or record.state not in states:
            problems.append(f"image {image_id} {tag!r}: library has {record}, expected one of {states}")
    return problems


def check_written_match(lib: Library) -> list[str]:
    """An image whose sidecars are not pending has the library's tags in both files."""
    pending = {i for i, _ in lib.pending_sidecars()}
    problems = []
    for record in lib.images():
        written = lib.conn.execute("SELECT written FROM sidecars WHERE image_id = ?", (record.id,)).fetchone()
        if record.id in pending or not written or written[0] is None:
            continue
        image = lib.abspath(record.path)
        want = set(lib.sidecar_tags(record.id))
        for path in (image.with_suffix(".txt"), sidecars.xmp_target(image)):
            have = set(sidecars.read_sidecar_file(path)[0])
            if have != want:
                problems.append(f"{path.name}: marked written with {sorted(want)} but holds {sorted(have)}")
    return problems


def wait_for_a_decision(log: Path, pid: int, timeout_s: float = 30.0) -> None:
    """Until the writer ``pid`` has committed a decision."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and f"\t{pid}\n" in log.read_text(encoding="utf-8"):
            return
        time.sleep(0.005)
    raise AssertionError(f"writer {pid} committed nothing in {timeout_s} s")


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    kills = int(os.environ.get("MLCNN_KILLS", "120"))
    folder = tmp_path / "f"
    make_folder(folder)
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen(
        [sys.executable, str(HERE / "kill_child.py"), str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    killed = temp_files = 0
    problems: list[str] = []
    start = time.perf_counter()
    try:
        for i in range(kills):
            server.stdin.write(f"run {i}\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            if i % 2:  # half the kills fall in the middle of the editing, however slow the machine is
                wait_for_a_decision(folder / "decisions.log", pid)
            time.sleep(rng.uniform(0.005, 0.2))
            os.kill(pid, signal.SIGKILL)
            status = int(server.stdout.readline())
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                killed += 1
            else:
                error = folder / "child-error.txt"
                why = error.read_text() if error.exists() else ""
                raise AssertionError(f"the writer ended by itself ({status}): {why}")
            round_problems = check_sidecars(folder) + check_library(folder)
            temp_files = len(list(folder.glob(".*.tmp")))
            problems += [f"kill {i}: {p}" for p in round_problems]
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    lib = Library.open(folder, data_dir=folder / ".fallback-data")
    lib.stale_temp_age_s = 0  # every write has ended: what is left is litter
    try:
        lib.import_sidecars()
        assert list(folder.glob(".*.tmp")) == []
        problems += check_decisions(folder, lib) + check_written_match(lib)
        decisions = sum(1 for line in (folder / "decisions.log").open() if line.startswith("done"))
    finally:
        lib.close()
    seconds = time.perf_counter() - start
    print(f"{killed} kills, {decisions} decisions committed, {temp_files} temp files cleaned up, {seconds:.1f} s")
    assert killed == kills
    assert decisions >= kills // 2  # the kills fell while work was going on, not only before it started
    assert problems == []
