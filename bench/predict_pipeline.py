"""`mlcnn predict`'s pipeline against the model alone, and its memory over many images.

Run through ``bench/speed.py --pipeline`` and ``bench/speed.py --rss N``. The folders are generated
JPEGs (a colour gradient and a few filled shapes; no project code): ``fixed`` holds 384×256 images,
``mixed`` images whose sides are drawn independently in 256–1200 px, as a person's folder of
downloads looks (``small``, for the memory run: 120–480 px, as many aspect ratios, quicker to make
and decode). They are kept under ``--folder`` (default: the system's temporary folder) and made
again only when missing.

``versions_table`` (``bench/speed.py --versions``) compares two checkouts of the code on the same
folders, each row in a child process of its own (the OpenMP wait policy is fixed when torch loads),
rows alternating within each round:

    python bench/speed.py --versions before=/tmp/main-checkout after=. --images 200 --rounds 3

A checkout's pipeline runs with the environment ``mlcnn`` gives it (``OMP_WAIT_POLICY`` as its
``mlcnn_core/openmp.py`` sets it, if it has one); the model alone runs once with libgomp's default
spinning and once with passive waiting. Each row prints img/s and the process's CPU time per image.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mlcnn_core.buckets import bucket_shape
from mlcnn_core.data import find_images
from mlcnn_core.modelfile import load_model, starter_model_path
from mlcnn_core.predict import Predictor

SIZES = {"fixed": ((384, 384), (256, 256)), "mixed": ((256, 1200), (256, 1200)), "small": ((120, 480), (120, 480))}


def _make_image(job: tuple[Path, int, int, int]) -> None:
    path, width, height, seed = job
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    top, bottom, side = (rng.integers(0, 255, 3).astype(np.float32) for _ in range(3))
    pixels = (top * (1 - y) + bottom * y) * (1 - x / 2) + side * x / 2
    im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, max(21, width // 2))), y0 + int(rng.integers(20, max(21, height // 2)))
        box = [x0, y0, x1, y1]
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    im.save(path, quality=88)


def generated_folder(root: Path, kind: str, count: int) -> list[Path]:
    """``count`` generated images of the ``kind`` of sizes (SIZES), made once under ``root``."""
    folder = root / f"{kind}-{count}"
    if not (folder / "DONE").exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng({"fixed": 1, "mixed": 2, "small": 3}[kind])
        (w_lo, w_hi), (h_lo, h_hi) = SIZES[kind]
        jobs = [(folder / f"img_{i:05d}.jpg", int(rng.integers(w_lo, w_hi + 1)), int(rng.integers(h_lo, h_hi + 1)), i)
                for i in range(count)]
        with Pool(2) as pool:
            pool.map(_make_image, jobs, chunksize=64)
        (folder / "DONE").write_text("")
    return find_images(folder)


def _rate(fn, count: int) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def _forward_batches(predictor: Predictor, views: list[list[np.ndarray]], batch: int = 8,
                     streams: bool = False) -> None:
    """The model alone: every pass of every image, batches of ``batch`` images of one shape; with
    ``streams``, the batches run in the predictor's forward streams (streams.py) as the pipeline's do."""
    batches = [np.stack([v[k] for v in views[i:i + batch]])
               for k in range(len(predictor.config.passes)) for i in range(0, len(views), batch)]
    if not streams:
        for x in batches:
            predictor.raw_maps(x)
        return
    in_flight = []
    for x in batches:
        in_flight.append(predictor.forward_streams.submit(predictor.raw_maps, x))
        if len(in_flight) > predictor.forward_streams.streams:
            in_flight.pop(0).result()
    for future in in_flight:
        future.result()


def _same_pixels(views: list[list[np.ndarray]], passes: list[int], rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Images of one shape per pass with the mean pixel count of ``views``' pass (short side kept)."""
    shapes = []
    for k, short in enumerate(passes):
        pixels = statistics.mean(v[k].shape[0] * v[k].shape[1] for v in views)
        shapes.append((short, round(pixels / short), 3))
    return [[rng.integers(0, 255, shape, dtype=np.uint8) for shape in shapes] for _ in views]


def pipeline_table(model_path: str, count: int, rounds: int, folder: str | None) -> None:
    root = Path(folder or Path(tempfile.gettempdir()) / "mlcnn-speed-bench")
    model = load_model(starter_model_path() if model_path == "starter" else model_path)
    predictor = Predictor(model)
    exact = Predictor(model, bucket_step=1)  # buckets of one shape each: every image at its own size
    sets = {kind: generated_folder(root, kind, count) for kind in ("fixed", "mixed")}
    views = {kind: [predictor.read_passes(p)[0] for p in paths] for kind, paths in sets.items()}
    rng = np.random.default_rng(0)
    same_px = _same_pixels(views["mixed"], predictor.config.passes, rng)
    for kind, vs in views.items():
        px = statistics.mean(sum(v.shape[0] * v.shape[1] for v in vv) for vv in vs)
        shapes = {(k, v.shape[:2]) for vv in vs for k, v in enumerate(vv)}
        buckets = {(k, bucket_shape(*v.shape[:2], predictor.bucket_step)) for vv in vs for k, v in enumerate(vv)}
        print(f"{kind}: {len(vs)} images, {px:,.0f} input pixels per image over {len(predictor.config.passes)} "
              f"passes, {len(shapes)} distinct pass shapes, {len(buckets)} buckets", flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 {predictor.bf16}, "
          f"bucket step {predictor.bucket_step} px", flush=True)
    def pipeline(p: Predictor, kind: str) -> float:
        return _rate(lambda: list(p.predict_files(sets[kind])), count)

    rows = {
        "model alone, fixed size, batch 8": lambda: _rate(lambda: _forward_batches(predictor, views["fixed"]), count),
        "model alone, one shape with the mixed set's pixels, batch 8":
            lambda: _rate(lambda: _forward_batches(predictor, same_px), count),
        "mlcnn predict pipeline, fixed size": lambda: pipeline(predictor, "fixed"),
        "mlcnn predict pipeline, mixed sizes": lambda: pipeline(predictor, "mixed"),
        "mlcnn predict pipeline, mixed sizes, exact shapes (no buckets)": lambda: pipeline(exact, "mixed"),
    }
    _forward_batches(predictor, views["fixed"][:8])
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(rounds):
        for name, row in rows.items():
            rates[name].append(row())
        print(f"round {r + 1}: " + ", ".join(f"{v[-1]:.1f}" for v in rates.values()), flush=True)
    med = {name: statistics.median(v) for name, v in rates.items()}
    names = list(rows)
    print("\n| what | img/s min / median / max | ratio (medians) |\n|---|---|---|")
    ratios = {names[2]: med[names[2]] / med[names[0]], names[3]: med[names[3]] / med[names[1]],
              names[4]: med[names[4]] / med[names[1]]}
    for name, v in rates.items():
        ratio = f"{ratios[name]:.0%} of the model alone" if name in ratios else ""
        print(f"| {name} | {min(v):.1f} / {med[name]:.1f} / {max(v):.1f} | {ratio} |")
    print(f"\nbuckets against exact shapes on mixed sizes: ×{med[names[3]] / med[names[4]]:.2f}")


def _rss_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def rss_run(model_path: str, count: int, folder: str | None) -> None:
    root = Path(folder or Path(tempfile.gettempdir()) / "mlcnn-speed-bench")
    paths = generated_folder(root, "small", count)
    predictor = Predictor(load_model(starter_model_path() if model_path == "starter" else model_path))
    print(f"{count} images of 120–480 px per side; torch {torch.get_num_threads()} threads, bf16 {predictor.bf16}")
    print(f"before: RSS {_rss_mb()[0]:.0f} MB", flush=True)
    start = last = time.perf_counter()
    step = max(1, count // 10)
    for n, _ in enumerate(predictor.predict_files(paths), 1):
        if n % step == 0 or n == count:
            now = time.perf_counter()
            rss, peak = _rss_mb()
            print(f"{n:6d} images: RSS {rss:.0f} MB (peak {peak:.0f}), {step / (now - last):.1f} img/s", flush=True)
            last = now
    print(f"{count / (time.perf_counter() - start):.1f} img/s overall")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def row(what: str, kind: str, count: int, folder: str) -> dict:
    """One row of :func:`versions_table`, in this process: ``pipeline`` (predict_files over the
    ``kind`` folder) or ``alone`` (the forward pass on its views, decoded beforehand; for ``mixed``,
    one shape with the mixed set's pixels), ``alone-streams`` (the same in the forward streams)."""
    paths = generated_folder(Path(folder), kind, count)
    predictor = Predictor(load_model(starter_model_path()))
    if what == "pipeline":
        list(predictor.predict_files(paths[:16]))
        def work() -> None:
            list(predictor.predict_files(paths))
    else:
        views = [predictor.read_passes(p)[0] for p in paths]
        if kind == "mixed":
            views = _same_pixels(views, predictor.config.passes, np.random.default_rng(0))
        streams = what == "alone-streams"
        _forward_batches(predictor, views[:16], streams=streams)
        def work() -> None:
            _forward_batches(predictor, views, streams=streams)
    cpu, start = _cpu_seconds(), time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    return {"img_s": count / seconds, "cpu_ms": 1000 * (_cpu_seconds() - cpu) / count}


def _run_row(checkout: Path, env: dict, what: str, kind: str, count: int, folder: str) -> dict:
    script = Path(__file__).resolve()
    env = {**os.environ, **env, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, str(script), what, kind, str(count), folder], env=env, cwd=checkout,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cli_environment(checkout: Path) -> dict:
    """What the checkout's `mlcnn` adds to the environment before torch loads."""
    if not (checkout / "mlcnn_core" / "openmp.py").exists():
        return {}
    code = ("import os; from mlcnn_core.openmp import wait_passively; wait_passively(); "
            "print(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"PYTHONPATH": str(checkout)}
    policy = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return {"OMP_WAIT_POLICY": policy.stdout.strip()}


def versions_table(checkouts: dict[str, Path], count: int, rounds: int, folder: str | None) -> None:
    folder = str(folder or Path(tempfile.gettempdir()) / "mlcnn-speed-bench")
    for kind in ("fixed", "mixed"):
        generated_folder(Path(folder), kind, count)
    first = next(iter(checkouts.values()))
    streams_checkout = next((c for c in reversed(checkouts.values())
                             if (c / "mlcnn_core" / "streams.py").exists()), None)
    rows: dict[str, tuple] = {}
    for kind in ("mixed", "fixed"):
        rows[f"model alone, {kind}, default OpenMP wait"] = (first, {}, "alone", kind)
        rows[f"model alone, {kind}, passive OpenMP wait"] = (first, {"OMP_WAIT_POLICY": "PASSIVE"}, "alone", kind)
        if streams_checkout is not None:
            rows[f"model alone, {kind}, passive wait, forward streams"] = (
                streams_checkout, {"OMP_WAIT_POLICY": "PASSIVE"}, "alone-streams", kind)
        for name, checkout in checkouts.items():
            rows[f"pipeline, {kind}, {name}"] = (checkout, _cli_environment(checkout), "pipeline", kind)
    for name, (checkout, env, _, _) in rows.items():
        print(f"{name}: {checkout} {env or ''}", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in rows}
    for r in range(rounds):
        for name, (checkout, env, what, kind) in rows.items():
            load = os.getloadavg()[0]
            results[name].append(_run_row(checkout, env, what, kind, count, folder))
            print(f"round {r + 1}, {name}: {results[name][-1]['img_s']:.1f} img/s, "
                  f"{results[name][-1]['cpu_ms']:.1f} CPU ms/img, load average {load:.1f} → "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    print("\n| what | img/s min / median / max | CPU ms per image, median |\n|---|---|---|")
    for name, rs in results.items():
        rates = [x["img_s"] for x in rs]
        print(f"| {name} | {min(rates):.1f} / {statistics.median(rates):.1f} / {max(rates):.1f} | "
              f"{statistics.median(x['cpu_ms'] for x in rs):.1f} |")
    print("\nper round, pipeline / the faster model alone (passive wait) of the same kind:")
    for kind in ("mixed", "fixed"):
        alone_rows = [results[name] for name in rows if name.startswith(f"model alone, {kind}, passive")]
        alone = [max(x["img_s"] for x in xs) for xs in zip(*alone_rows, strict=True)]
        for name in checkouts:
            pipe = [x["img_s"] for x in results[f"pipeline, {kind}, {name}"]]
            print(f"  {kind}, {name}: " + ", ".join(f"{p / a:.0%}" for p, a in zip(pipe, alone, strict=True)))


if __name__ == "__main__":
    what, kind, count, folder = sys.argv[1:5]
    print(json.dumps(row(what, kind, int(count), folder)))
