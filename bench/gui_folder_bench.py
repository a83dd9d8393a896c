"""Open a folder of 10,000 images in the real main window (offscreen) and time what a person waits for.

    python bench/gui_folder_bench.py                  # generates 10,000 images in a temp folder
    python bench/gui_folder_bench.py --folder DIR     # uses (and fills, if short) DIR
    python bench/gui_folder_bench.py --launch         # as `tagger-app FOLDER`: the starter model loads too
    python bench/gui_folder_bench.py --reopen         # then opens it again (library and thumbnails kept)
    python bench/gui_folder_bench.py --keywords       # each JPEG holds 3 embedded XMP keywords
    python bench/gui_folder_bench.py --reopen --new-process   # ... in a new process: quit, launch again
    python bench/gui_folder_bench.py --train 40       # fine-tune from the training panel; GUI gaps meanwhile
    python bench/gui_folder_bench.py --click 300      # then step through 300 images, as J held down
    python bench/gui_folder_bench.py --click 300 --writing   # ... while every image's sidecar is written

What is measured, from the moment ``open_folder`` is called, on the GUI thread's clock:

* listed: the folder was scanned (library worker thread, one SQLite transaction) and every image is a
  row of the gallery's model;
* first thumbnail painted: the first decoded thumbnail reached the screen (a paint event of the grid's
  viewport after the first thumbnail arrived);
* first screen complete: every thumbnail visible in the 1400x900 window is decoded;
* laid out: the grid's batched layout has placed the last item (it can be scrolled to);
* keywords shown (``--keywords``): the keywords embedded in every image were read (in the
  background, after listing) and are the gallery's tags;
* scrolling: the grid is scrolled page by page to the end; each step's rendering of the visible
  cells (``grab()``) is timed
  (thumbnails for new rows are decoded off the GUI thread, so a repaint never waits for them);
* model ready (``--launch``): the starter model loaded; the longest GUI-thread gap then covers the
  model's loading too;
* tagging (``--launch --tag N``): then Tag on the first N images, its time and the longest GUI-thread
  gap while it runs;
* training (``--train N``): a folder of N images of ``data/emoji/noto-train`` with their caption files,
  every image confirmed, launched with the starter model; the training panel shown and left idle for
  20 s (the gaps the machine's load alone causes), then its Fine-tune with its default options, and
  the longest GUI-thread gap from the click until the comparison of the new model with the old one
  is shown (the trainer and the evaluator run in child processes), and the time the GUI thread
  spends in the panel's handlers of the click (``start_training``, and ``_begin_run`` where the run
  starts once the confirmed images are read off the GUI thread);
* clicking (``--click N``): then the next image is shown every 40 ms (J held down, the keyboard's
  auto-repeat), N times: the longest GUI-thread gap meanwhile, the GUI thread's time per step in
  ``show_image`` and in the handler of the tags read off the GUI thread (where there is one), and
  how long after ``show_image`` the tag panel showed the image's tags (its last read, when it came);
  with ``--writing``, the window is asked first to write every image's ``.txt`` sidecar (machine
  content, as Sidecars ▸ Write predicted tags), so the clicks run while the library worker writes
  them, and the write's time is reported;
* peak memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the whole process.

Thumbnails are kept on disk (thumbnail_cache.py) in a temporary ``XDG_CACHE_HOME``, so the first
opening decodes them and ``--reopen`` measures a second opening that reads them back: in the same
process (the app's thumbnails still in memory are dropped with its window), or with ``--new-process``
in a new one, as a person quits and launches the app again (``--cache-dir`` names the cache, kept).

Each run starts with a fresh library (the folder's ``.mlcnn-tagger`` is deleted) unless --keep-library.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def generate(folder: Path, count: int, size: int) -> float:
    import numpy as np
    from PIL import Image

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    have = {p.name for p in folder.rglob("*.jpg")}
    for i in range(count):
        sub = folder / f"part{i // 1000:02d}"
        name = f"img{i:05d}.jpg"
        if name in have:
            continue
        sub.mkdir(parents=True, exist_ok=True)
        rgb = np.empty((size * 3 // 4, size, 3), np.uint8)
        rgb[...] = rng.integers(0, 256, 3, dtype=np.uint8)
        rgb[:, :: 1 + i % 13] //= 2
        Image.fromarray(rgb).save(sub / name, quality=85)
    return time.perf_counter() - start


def embed_keywords(folder: Path) -> float:
    """Give each JPEG of ``folder`` an XMP packet (APP1) with three keywords out of 51, where it has none."""
    start = time.perf_counter()
    signature = b"http://ns.adobe.com/xap/1.0/\x00"
    for path in sorted(folder.rglob("*.jpg")):
        data = path.read_bytes()
        if signature in data[:4096]:
            continue
        packet = (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
            f"<rdf:li>bench</rdf:li><rdf:li>{path.parent.name}</rdf:li><rdf:li>shade{len(data) % 40}</rdf:li>"
            "</rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>"
        ).encode()
        payload = signature + packet
        path.write_bytes(data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:])
    return time.perf_counter() - start


def run(folder: Path, timeout: float, launch: bool = False, tag: int = 0, scroll: bool = True,
        keywords: bool = False, train: bool = False, click: int = 0, writing: bool = False) -> dict:
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication

    from tagger_app.app import parse_args, start
    from tagger_app.main_window import MainWindow
    from tagger_app.models.image_list_model import IdRole
    from tagger_app.settings import AppSettings

    app = QApplication.instance() or QApplication([])
    settings_dir = tempfile.mkdtemp(prefix="gui-bench-settings-")
    settings_file = Path(settings_dir) / "settings.ini"
    t_launch = time.perf_counter()
    if launch:
        window = start(parse_args([str(folder), "--settings", str(settings_file)]))
    else:
        window = MainWindow(AppSettings(settings_file), load_default_model=False)
        window.show()
    window.error_dialogs = False
    window.resize(1400, 900)
    app.processEvents()

    view = window.gallery.view
    marks: dict[str, float] = {}
    t0 = 0.0

    def mark(name: str) -> None:
        marks.setdefault(name, time.perf_counter() - t0)

    paints = [0]

    class PaintWatch(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                paints[0] += 1
                if "first thumbnail ready" in marks:
                    QTimer.singleShot(0, lambda: mark("first thumbnail painted"))
            return False

    watch = PaintWatch()
    view.viewport().installEventFilter(watch)
    window.thumbnails.ready.connect(lambda _key: mark("first thumbnail ready"))
    window.folderOpened.connect(lambda _root: mark("listed"))
    window.modelReady.connect(lambda _summary: mark("model ready"))

    visible = [0]

    def visible_rows() -> list[int]:
        rect = view.viewport().rect()
        model = view.model()
        rows = []
        for row in range(model.rowCount()):
            r = view.visualRect(model.index(row, 0))
            if r.isValid() and r.intersects(rect):
                rows.append(row)
            elif rows:
                break
        return rows

    def poll() -> None:
        if "listed" in marks:
            model = view.model()
            count = model.rowCount()
            if count and "laid out" not in marks and view.visualRect(model.index(count - 1, 0)).isValid():
                mark("laid out")
            if "first thumbnail ready" in marks and "first screen complete" not in marks:
                rows = visible_rows()
                cache = window.thumbnails._cache
                ids = [model.index(r, 0).data(IdRole) for r in rows]
                if rows and all(i in cache for i in ids):
                    mark("first screen complete")
                    visible[0] = len(rows)
            if keywords and count and len(window.gallery.proxy._tags) >= count:
                mark("keywords shown")
        wanted = ("listed", "first thumbnail painted", "first screen complete", "laid out") + ("model ready",) * launch
        wanted += ("keywords shown",) * keywords
        done = all(k in marks for k in wanted)
        if done or time.perf_counter() - t0 > timeout:
            app.exit(0)  # not quit(): since Qt 6 it closes the window, which shuts the app down

    if launch:
        t0 = t_launch  # the folder is already being opened; times count from the launch
    else:
        t0 = time.perf_counter()
    gaps = GapWatch(t0, poll)
    if not launch:
        window.open_folder(folder)
    app.exec()
    gaps.stop()
    tagging = time_tagging(app, window, tag, timeout) if tag and window.model is not None else None
    training = time_training(app, window, timeout) if train and window.model is not None else None
    clicking = time_clicks(app, window, click, timeout, writing) if click else None

    # scroll to the end page by page, timing each rendering of the visible cells
    bar = view.verticalScrollBar()
    steps = []
    page = max(1, bar.pageStep())
    value = 0
    paints_before = paints[0]
    while scroll and value < bar.maximum() and len(steps) < 5000:
        value = min(bar.maximum(), value + page)
        bar.setValue(value)
        start = time.perf_counter()
        view.viewport().grab()  # renders the visible cells now, through the delegate
        app.processEvents()
        steps.append(time.perf_counter() - start)

    result = {
        "images": window.images.rowCount(),
        "visible_cells": visible[0],
        "marks": marks,
        "open_longest_gui_gap_ms": 1000 * gaps.longest,
        "open_longest_gui_gap_end_ms": 1000 * gaps.longest_end,
        "after_first_screen_longest_gui_gap_ms": _ms(gaps.longest_after(marks.get("first screen complete"))),
        "scroll_steps": len(steps),
        "scroll_paints": paints[0] - paints_before,
        "scroll_worst_ms": 1000 * max(steps) if steps else 0.0,
        "scroll_median_ms": 1000 * sorted(steps)[len(steps) // 2] if steps else 0.0,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "prediction_process_peak_mb": prediction_process_peak_mb(window),
        "tagging": tagging,
        "training": training,
        "clicking": clicking,
    }
    window.shutdown()
    window.deleteLater()
    shutil.rmtree(settings_dir, ignore_errors=True)
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def prediction_process_peak_mb(window) -> float | None:
    """Peak resident memory of the app's prediction process, where there is one (Linux /proc)."""
    pid = getattr(window.predictor.worker, "process_id", lambda: None)()
    try:
        status = Path(f"/proc/{pid}/status").read_text() if pid else ""
    except OSError:
        return None
    peak = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(peak[0]) / 1024 if peak else None


class GapWatch:
    """A 5 ms timer on the GUI thread: the longest time between two of its ticks, and when that gap
    ended (seconds after ``t0``); ``on_tick`` runs at each tick."""

    def __init__(self, t0: float, on_tick=None):
        from PySide6.QtCore import QTimer

        self.t0 = t0
        self.longest = self.longest_end = 0.0
        self.gaps: list[tuple[float, float]] = []  # (end after t0, length) of every gap over 20 ms
        self.on_tick = on_tick
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        if now - self.last > self.longest:
            self.longest, self.longest_end = now - self.last, now - self.t0
        if now - self.last > 0.02:
            self.gaps.append((now - self.t0, now - self.last))
        self.last = now
        if self.on_tick is not None:
            self.on_tick()

    def stop(self) -> None:
        self.timer.stop()

    def longest_after(self, moment: float | None) -> float | None:
        """The longest gap that ended after ``moment`` (seconds after t0)."""
        if moment is None:
            return None
        return max((length for end, length in self.gaps if end > moment), default=0.0)


def time_tagging(app, window, count: int, timeout: float) -> dict:
    """Tag the first ``count`` images and watch the GUI thread while it runs."""
    finished = []

    def on_finished(done: int, _total: int, _cancelled: bool) -> None:
        finished.append(done)
        app.exit(0)

    window.batchFinished.connect(on_finished)
    start = time.perf_counter()
    gaps = GapWatch(start, lambda: time.perf_counter() - start > timeout and app.exit(0))
    window._tag([record.id for record in window.images.records()[:count]])
    app.exec()
    gaps.stop()
    return {"images": finished[0] if finished else 0, "seconds": time.perf_counter() - start,
            "longest_gui_gap_ms": 1000 * gaps.longest}


CLICK_INTERVAL_MS = 40


def time_clicks(app, window, count: int, timeout: float, writing: bool = False) -> dict:
    """Show the next image every CLICK_INTERVAL_MS, ``count`` times, and time the GUI thread; with
    ``writing``, while the library worker writes every image's sidecar."""
    from PySide6.QtCore import QTimer

    write_times: dict[str, float] = {}

    def on_written(report) -> None:
        if getattr(report, "last", True):  # a request's last report (the only one, before batches)
            write_times["end"] = time.perf_counter()

    shown_at: dict[int, float] = {}
    latency: dict[int, float] = {}
    in_show: list[float] = []
    in_read: list[float] = []

    def tags_shown() -> None:
        image_id = window.current_id
        if not getattr(window, "tag_read_pending", False) and image_id in shown_at and image_id not in latency:
            latency[image_id] = time.perf_counter() - shown_at[image_id]

    def timed_show(image_id: int) -> None:
        start = shown_at[image_id] = time.perf_counter()
        window.show_image(image_id)
        in_show.append(time.perf_counter() - start)
        tags_shown()  # read on the GUI thread: shown when show_image returns

    window.gallery.currentImageChanged.disconnect(window.show_image)
    window.gallery.currentImageChanged.connect(timed_show)
    read_handler = getattr(window, "_on_image_tags_read", None)
    if read_handler is not None:
        def timed_read(read) -> None:
            start = time.perf_counter()
            read_handler(read)
            in_read.append(time.perf_counter() - start)
            tags_shown()

        signal = window.library_thread.worker.imageTagsRead
        signal.disconnect(read_handler)
        signal.connect(timed_read)

    steps = [0]
    clicker = QTimer()
    clicker.setInterval(CLICK_INTERVAL_MS)

    def click() -> None:
        if steps[0] < count:
            window.gallery.step(1)
            steps[0] += 1
        elif (window.current_id in latency and (not writing or "end" in write_times)
              or time.perf_counter() - start > timeout):
            app.exit(0)

    clicker.timeout.connect(click)
    start = time.perf_counter()
    if writing:
        window.settings.sidecar_formats = ["txt"]
        window.sidecarsWritten.connect(on_written)
        window.write_sidecars([r.id for r in window.images.records()], "machine")
    gaps = GapWatch(start)
    clicker.start()
    app.exec()
    clicker.stop()
    gaps.stop()

    def ms(values: list[float]) -> dict:
        values = sorted(values)
        return {"median": 1000 * values[len(values) // 2], "max": 1000 * values[-1]} if values else {}

    return {"steps": steps[0], "longest_gui_gap_ms": 1000 * gaps.longest, "gaps_over_20_ms": len(gaps.gaps),
            "show_image_ms": ms(in_show), "tags_read_handler_ms": ms(in_read),
            "tags_shown_after_ms": ms(list(latency.values())), "tags_shown": len(latency),
            "write_s": write_times["end"] - start if "end" in write_times else None}


def time_training(app, window, timeout: float) -> dict:
    """Fine-tune the loaded model from the training panel (its default options) on the folder's
    confirmed images and watch the GUI thread until the new model's comparison is shown."""
    window._show_training()
    panel = window.training_panel
    ended: list[str] = []
    panel.trainingEnded.connect(lambda how: ended.append(how) or how != "done" and app.exit(0))
    panel.comparisonReady.connect(lambda: app.exit(0))
    steps: list[float] = []
    panel.trainer.progress.connect(lambda _event: steps.append(time.perf_counter()))
    moments: dict[str, float] = {}
    for name, signal in (("trainer started", panel.trainer.started), ("features read", panel.trainer.preparing),
                         ("trainer finished", panel.trainer.finished), ("comparison shown", panel.comparisonReady)):
        signal.connect(lambda *_a, name=name: moments.__setitem__(name, round(time.perf_counter() - start, 2)))
    handlers = {name: time_calls(panel, name) for name in ("start_training", "_begin_run") if hasattr(panel, name)}
    idle = idle_gaps(app, IDLE_CONTROL_S)
    start = time.perf_counter()
    gaps = GapWatch(start, lambda: time.perf_counter() - start > timeout and app.exit(0))
    if not panel.start_training():
        raise RuntimeError(f"the training panel did not start: {panel.status_label.text()}")
    app.exec()
    gaps.stop()
    worst = sorted(gaps.gaps, key=lambda g: -g[1])[:5]
    return {"images": panel.n_train, "held_out": panel.n_held_out, "ended": ended[0] if ended else "timeout",
            "seconds": time.perf_counter() - start, "steps": len(steps), "moments": moments,
            "first_step_s": round(steps[0] - start, 2) if steps else None,
            "longest_gui_gap_ms": 1000 * gaps.longest, "longest_gui_gap_end_s": gaps.longest_end,
            "gaps_over_20_ms": len(gaps.gaps), "worst_gaps": [(round(e, 2), round(1000 * g)) for e, g in worst],
            "error": panel.last_error, "idle_longest_gui_gap_ms": 1000 * idle.longest,
            "idle_gaps_over_20_ms": len(idle.gaps),
            "click_handlers_ms": {name: round(1000 * sum(times), 1) for name, times in handlers.items()}}


def time_calls(obj, name: str) -> list[float]:
    """Replace the method ``name`` of ``obj`` by one that notes how long each call took (seconds)."""
    method, times = getattr(obj, name), []

    def timed(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - begin)

    setattr(obj, name, timed)
    return times


IDLE_CONTROL_S = 20.0


def idle_gaps(app, seconds: float) -> GapWatch:
    """The GUI thread watched while the app does nothing: what the machine's load alone costs it."""
    start = time.perf_counter()
    gaps = GapWatch(start, lambda: time.perf_counter() - start > seconds and app.exit(0))
    app.exec()
    gaps.stop()
    return gaps


def training_folder(folder: Path, count: int) -> None:
    """``count`` images of the benchmark's noto-train set with their caption files, every one
    confirmed in a fresh library (as a person who corrected them all)."""
    from mlcnn_core.library import Library

    source = Path(__file__).resolve().parent.parent / "data" / "emoji" / "noto-train"
    shutil.rmtree(folder / ".mlcnn-tagger", ignore_errors=True)
    for image in sorted(source.glob("*.jpg"))[:count]:
        for path in (image, image.with_suffix(".txt")):
            if not (folder / path.name).exists():
                shutil.copy2(path, folder / path.name)
    library = Library.open(folder)
    library.scan()
    library.import_sidecars()
    for record in library.images():
        library.confirm_all(record.id)
    library.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="folder to use (default: a temporary one, deleted afterwards)")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128, help="image width in pixels (height is 3/4 of it)")
    parser.add_argument("--keep-library", action="store_true", help="reuse the folder's existing library")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--launch", action="store_true", help="launch as `tagger-app FOLDER` (the model loads too)")
    parser.add_argument("--reopen", action="store_true", help="open the folder a second time, as it was left")
    parser.add_argument("--tag", type=int, default=0, metavar="N",
                        help="with --launch: then tag the first N images and time the GUI thread meanwhile")
    parser.add_argument("--no-scroll", dest="scroll", action="store_false", help="do not scroll to the end")
    parser.add_argument("--keywords", action="store_true",
                        help="embed 3 XMP keywords in each JPEG and time until the gallery shows them all")
    parser.add_argument("--new-process", action="store_true", help="with --reopen: the second opening in a new process")
    parser.add_argument("--cache-dir", type=Path, help="XDG_CACHE_HOME to use and keep (default: a temporary one)")
    parser.add_argument("--click", type=int, default=0, metavar="N",
                        help=f"then show the next image every {CLICK_INTERVAL_MS} ms, N times; time the GUI thread")
    parser.add_argument("--writing", action="store_true",
                        help="with --click: the clicks run while every image's .txt sidecar is written")
    parser.add_argument("--train", type=int, default=0, metavar="N",
                        help="fine-tune from the training panel on N confirmed noto-train images (implies --launch)")
    args = parser.parse_args(argv)
    if args.train:
        args.launch, args.count, args.scroll = True, args.train, False
        os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="gui-bench-data-")  # the runs and models it keeps
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="gui-bench-cache-"))
    os.environ["XDG_CACHE_HOME"] = str(cache)

    temporary = args.folder is None
    folder = Path(tempfile.mkdtemp(prefix="gui-bench-")) if temporary else args.folder
    folder.mkdir(parents=True, exist_ok=True)
    second = None
    try:
        if args.train:
            gen_seconds = 0.0
            training_folder(folder, args.train)
        else:
            gen_seconds = generate(folder, args.count, args.size)
            if args.keywords:
                gen_seconds += embed_keywords(folder)
            if not args.keep_library:
                shutil.rmtree(folder / ".mlcnn-tagger", ignore_errors=True)
        results = [("first opening", run(folder, args.timeout, args.launch, args.tag, args.scroll,
                                          keywords=args.keywords, train=bool(args.train), click=args.click,
                                          writing=args.writing))]
        if args.reopen and args.new_process:
            second = reopen_in_new_process(folder, cache, args)
        elif args.reopen:
            results.append(("second opening", run(folder, args.timeout, args.launch, scroll=args.scroll,
                                                  keywords=args.keywords)))
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache, ignore_errors=True)
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    for title, result in results:
        print(f"--- {title}")
        report(folder, args, gen_seconds, temporary, result)
    if second is not None:
        print("--- second opening, in a new process (the same thumbnail cache and library)")
        print(second, end="")
    return 0


def reopen_in_new_process(folder: Path, cache: Path, args: argparse.Namespace) -> str:
    """Open ``folder`` again in a new Python process with the same thumbnail cache and library, as
    a person does who quits the app and launches it again; returns what that process printed."""
    import subprocess

    command = [sys.executable, str(Path(__file__).resolve()), "--folder", str(folder), "--count", str(args.count),
               "--size", str(args.size), "--keep-library", "--cache-dir", str(cache),
               "--timeout", str(args.timeout)]
    command += ["--launch"] * args.launch + ["--no-scroll"] * (not args.scroll) + ["--keywords"] * args.keywords
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return done.stdout.split("--- first opening\n", 1)[-1]


def report(folder: Path, args: argparse.Namespace, gen_seconds: float, temporary: bool, result: dict) -> None:
    print(
        f"folder: {folder} ({result['images']} images, {args.size}x{args.size * 3 // 4} JPEG; "
        f"generated in {gen_seconds:.1f} s){' [deleted]' if temporary else ''}"
    )
    platform = os.environ["QT_QPA_PLATFORM"]
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, QT_QPA_PLATFORM={platform}")
    print(f"times from {'the launch' if args.launch else 'open_folder()'}, GUI thread clock:")
    for name in ("listed", "first thumbnail ready", "first thumbnail painted", "first screen complete", "laid out",
                 "keywords shown", "model ready"):
        value = result["marks"].get(name)
        print(f"  {name:<26} {'not reached' if value is None else f'{value * 1000:8.0f} ms'}")
    print(f"first screen: {result['visible_cells']} thumbnails visible in the grid")
    print(
        f"longest GUI-thread gap while opening (5 ms timer): {result['open_longest_gui_gap_ms']:.0f} ms, "
        f"ending {result['open_longest_gui_gap_end_ms']:.0f} ms after the start"
    )
    after = result["after_first_screen_longest_gui_gap_ms"]
    if after is not None:
        print(f"longest GUI-thread gap after the first screen (the model loading, with --launch): {after:.0f} ms")
    print(
        f"scrolling to the end: {result['scroll_steps']} page steps ({result['scroll_paints']} paints); "
        f"rendering the visible cells: median {result['scroll_median_ms']:.1f} ms, "
        f"worst {result['scroll_worst_ms']:.1f} ms"
    )
    print(f"peak memory (ru_maxrss): {result['maxrss_mb']:.0f} MiB")
    if result["prediction_process_peak_mb"] is not None:
        print(f"peak memory of the prediction process (VmHWM): {result['prediction_process_peak_mb']:.0f} MiB")
    tagging = result["tagging"]
    if tagging is not None:
        print(
            f"tagging the first {args.tag} images: {tagging['images']} tagged in {tagging['seconds']:.1f} s, "
            f"longest GUI-thread gap {tagging['longest_gui_gap_ms']:.0f} ms"
        )
    training = result["training"]
    if training is not None:
        print(
            f"fine-tuning from the training panel on {training['images']} images ({training['held_out']} held "
            f"out): {training['ended']} after {training['seconds']:.1f} s with the comparison, "
            f"{training['steps']} step events; longest GUI-thread gap {training['longest_gui_gap_ms']:.0f} ms "
            f"({training['longest_gui_gap_end_s']:.1f} s after the click), {training['gaps_over_20_ms']} gaps "
            f"over 20 ms; worst (s after the click, ms): {training['worst_gaps']}"
            + (f"; error: {training['error']}" if training["error"] else "")
        )
        print(f"moments (s after the click): {training['moments']}, first step {training['first_step_s']}")
        print(f"GUI-thread time in the click's handlers (ms): {training['click_handlers_ms']}")
        print(f"the same window idle for {IDLE_CONTROL_S:.0f} s just before: longest GUI-thread gap "
              f"{training['idle_longest_gui_gap_ms']:.0f} ms, {training['idle_gaps_over_20_ms']} gaps over 20 ms")
    clicking = result["clicking"]
    if clicking is not None:
        def spread(times: dict) -> str:
            return f"median {times['median']:.2f} ms, max {times['max']:.2f} ms" if times else "none"

        print(
            f"clicking through {clicking['steps']} images (one every {CLICK_INTERVAL_MS} ms): longest GUI-thread gap "
            f"{clicking['longest_gui_gap_ms']:.0f} ms, {clicking['gaps_over_20_ms']} gaps over 20 ms; GUI-thread "
            f"time per step in show_image: {spread(clicking['show_image_ms'])}; in the tags-read handler: "
            f"{spread(clicking['tags_read_handler_ms'])}; tags shown after show_image "
            f"({clicking['tags_shown']} images): {spread(clicking['tags_shown_after_ms'])}"
        )
        if clicking["write_s"] is not None:
            print(f"meanwhile the sidecars of all {result['images']} images were written in "
                  f"{clicking['write_s']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
