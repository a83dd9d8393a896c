"""Real drawings by hundreds of people: Debian ``openclipart-svg`` (public domain), for scene clutter and
drawn backgrounds, split by creator.

Each SVG names its creator in ``dc:creator`` and its keywords in ``dc:subject``. **Split rule**
(fixed; bench/README.md): a creator is a *test* creator when the first byte of
``sha1(creator.strip().lower())`` is divisible by 5, else a *training* creator; files without a
creator count as the creator ``""`` (training). Training scenes only ever draw on training
creators, the out-of-generator test sets only on test creators.

Clutter must be none of the benchmark's 67 labels, which cover most of what people draw (animals,
food, plants, people, vehicles, buildings, tools, sports, music, arrows, card suits...). So clutter
and drawn backgrounds come only from topic folders that depict none of them (``CLUTTER_FOLDERS``),
less file names that name a subject the labels have (``EXCLUDED_WORDS``): maps and outlines,
decorations, frames, patterns and abstract shapes. That is a rule of thumb, not a guarantee.

**Topic labels** (``TOPICS``, for fine-tunes and ablations that teach labels the starter does not
have): one label per topic folder two levels down (``animals/birds``) that (a) names a concrete kind
of thing one can point at in a drawing (an animal, a plant, a food, an object, a vehicle, a
building), not a theme (``recreation/holiday``, ``recreation/party``), a symbol or icon set
(``computer/icons``, ``signs_and_symbols/*``, ``transportation/aiga-symbols``, ``shapes/*``) or a
drawing style (``people/stickmen``, ``people/smilies``), and (b) holds at least 30 SVG files. The
label is a short English word for the folder, never one of the starter's 67 label names (so
``clothes``, not ``clothing``; ``music-gear``, not ``music``; ``hardware``, not ``computer``).
``people/bodypart`` (30 files, many anatomy charts) is left out as not one kind of thing. Files
are read from the folder and its subfolders; the same file in two folders gives two drawings, one
per label.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OPENCLIPART_DIR = Path("/usr/share/openclipart/svg")
CLUTTER_FOLDERS = ("geography", "decorations", "special", "shapes", "containers", "buttons", "logos")
EXCLUDED_WORDS = re.compile(
    r"arrow|heart|coeur|pique|trefle|carreau|card|star|sun|moon|cloud|flag|clock|person|people|face|man_|woman|"
    r"animal|bird|fish|flower|tree|car_|house|book|phone|music|note|ball|cup|key|lock|bell|skull|smil|hand|"
    r"money|coin|dollar|euro|sign|warning|globe|earth|fire|water|rain|snow|light|bulb|candle|gift|trophy",
    re.IGNORECASE)
# label -> topic folders (the rule is in the module docstring; SVG files per folder in bench/README.md)
TOPICS: dict[str, tuple[str, ...]] = {
    "bird": ("animals/birds",),
    "bug": ("animals/bugs",),
    "mammal": ("animals/mammals",),
    "fruit": ("food/fruit",),
    "dessert": ("food/desserts",),
    "beverage": ("food/beverages",),
    "meat": ("food/meats_and_eggs",),
    "flower": ("plants/flowers",),
    "vehicle": ("transportation/vehicles",),
    "boat": ("transportation/boating",),
    "house": ("buildings/homes",),
    "clothes": ("people/clothing",),
    "music-gear": ("recreation/music",),
    "sports-gear": ("recreation/sports",),
    "toy": ("recreation/toys",),
    "weapon": ("tools/weapons",),
    "hardware": ("computer/hardware",),
}
MAX_SVG_BYTES = 300_000  # a few huge files take seconds each to render
RENDER_SIDE = 256
CACHE_VERSION = 1
CREATOR_RE = re.compile(r"<dc:creator>\s*<cc:Agent[^>]*>\s*<dc:title>(.*?)</dc:title>", re.DOTALL)


def creator_of(svg_text: str) -> str:
    m = CREATOR_RE.search(svg_text)
    return m.group(1).strip() if m else ""


def is_test_creator(creator: str) -> bool:
    """The fixed split rule (see the module docstring)."""
    return hashlib.sha1(creator.strip().lower().encode("utf-8")).digest()[0] % 5 == 0


@dataclass
class Drawing:
    path: str  # relative to OPENCLIPART_DIR
    creator: str
    rgba: np.ndarray  # (h, w, 4) uint8, cropped to its alpha box, longest side <= RENDER_SIDE


@dataclass
class TopicDrawing:
    path: str  # relative to OPENCLIPART_DIR
    creator: str
    label: str  # a key of TOPICS
    rgba: np.ndarray  # (h, w, 4) uint8, cropped to its alpha box, longest side <= RENDER_SIDE


def clutter_files(root: Path = OPENCLIPART_DIR) -> list[Path]:
    files = []
    for folder in CLUTTER_FOLDERS:
        for p in sorted((root / folder).rglob("*.svg")):
            rel = p.relative_to(root).as_posix()
            if "/arrows/" in rel or EXCLUDED_WORDS.search(p.stem) or p.stat().st_size > MAX_SVG_BYTES:
                continue
            files.append(p)
    return files


def _render(path: Path) -> tuple[str, np.ndarray | None]:
    from emoji_scenes import crop_to_alpha, limit_side, rasterize_svg

    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        rgba = rasterize_svg(RENDER_SIDE, bytestring=text.encode("utf-8"))
    except Exception:  # noqa: BLE001 - a drawing cairosvg cannot read is skipped
        return creator_of(text), None
    cropped = crop_to_alpha(rgba, threshold=16)
    if cropped is None or min(cropped.shape[:2]) < 12:
        return creator_of(text), None
    return creator_of(text), limit_side(cropped, RENDER_SIDE)


def _render_job(path: str) -> tuple[str, str, np.ndarray | None]:
    creator, rgba = _render(Path(path))
    return path, creator, rgba


def topic_files(root: Path = OPENCLIPART_DIR) -> list[tuple[str, Path]]:
    """(label, file) for every SVG of the TOPICS folders small enough to render quickly."""
    return [(label, p) for label, folders in TOPICS.items() for folder in folders
            for p in sorted((root / folder).rglob("*.svg")) if p.stat().st_size <= MAX_SVG_BYTES]


def _rendered(cache: Path, files: list[Path], root: Path, workers: int, verbose: bool, what: str
              ) -> list[tuple[str, str, np.ndarray]]:
    """(path relative to ``root``, creator, RGBA) of each of ``files`` that renders, in order, rendered
    once into ``cache`` (reused while the list of files is the same)."""
    key = hashlib.sha256(f"{CACHE_VERSION}|{RENDER_SIDE}|".encode()
                         + "\n".join(p.relative_to(root).as_posix() for p in files).encode()).hexdigest()
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["__key__"]) == key:
                names = [str(n) for n in z["__paths__"]]
                creators = [str(c) for c in z["__creators__"]]
                return [(n, c, z[f"d{i}"]) for i, (n, c) in enumerate(zip(names, creators, strict=True))]
    t0 = time.time()
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            results = list(pool.imap(_render_job, [str(p) for p in files], chunksize=8))
    else:
        results = [_render_job(str(p)) for p in files]
    rendered = [(Path(p).relative_to(root).as_posix(), c, a) for p, c, a in results if a is not None]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez_compressed(tmp, __key__=np.array(key), __paths__=np.array([r[0] for r in rendered]),
                        __creators__=np.array([r[1] for r in rendered]),
                        **{f"d{i}": r[2] for i, r in enumerate(rendered)})
    os.replace(tmp, cache)
    if verbose:
        print(f"openclipart: {len(rendered)}/{len(files)} {what} drawings rendered in {time.time() - t0:.1f} s")
    return rendered


def load_drawings(cache_dir: Path, root: Path = OPENCLIPART_DIR, workers: int = 2,
                  verbose: bool = True) -> list[Drawing]:
    """Every clutter drawing, rendered once into ``<cache_dir>/.openclipart.npz`` (all creators)."""
    rendered = _rendered(Path(cache_dir) / ".openclipart.npz", clutter_files(root), root, workers, verbose, "clutter")
    return [Drawing(p, c, a) for p, c, a in rendered]


def topic_drawings(cache_dir: Path, root: Path = OPENCLIPART_DIR, workers: int = 2,
                   verbose: bool = True) -> list[TopicDrawing]:
    """Every drawing of the TOPICS folders with its label (all creators; files over MAX_SVG_BYTES
    and those that do not render are left out), rendered once into
    ``<cache_dir>/.openclipart-topics.npz``."""
    labelled = topic_files(root)
    files = [p for _, p in labelled]
    by_path = {p: (c, a) for p, c, a in _rendered(Path(cache_dir) / ".openclipart-topics.npz", files, root,
                                                    workers, verbose, "topic")}
    out = []
    for label, p in labelled:
        rel = p.relative_to(root).as_posix()
        if rel in by_path:
            creator, rgba = by_path[rel]
            out.append(TopicDrawing(rel, creator, label, rgba))
    return out


def split_by_creator(drawings: list[Drawing]) -> tuple[list[Drawing], list[Drawing]]:
    """(training creators' drawings, test creators' drawings)."""
    train = [d for d in drawings if not is_test_creator(d.creator)]
    test = [d for d in drawings if is_test_creator(d.creator)]
    return train, test
