#!/usr/bin/env python3
"""Deterministic builder of the "emoji scenes" multi-label benchmark.

Each image is a scene of 1-4 colour emoji pasted on a photograph, a colour gradient or a flat noisy
colour. Its labels are the Unicode emoji *subgroups* of the emoji it shows (67 labels, 1,337 emoji
with Unicode Emoji 15.0). Two artwork styles:

* ``noto``     - Noto Color Emoji (Debian ``fonts-noto-color-emoji``), the training style;
* ``openmoji`` - OpenMoji (npm ``openmoji``), a second artist the model never sees in training;
* ``twemoji``  - Twemoji (npm ``@twemoji/svg``), a third artist, which the shipped starter (trained on
  the first two) never sees: the new style of the fine-tuning benchmark that starts from it.

Output per set ``<out>/<set>/``: ``000000.jpg`` + ``000000.txt`` (labels, ", "-separated), ...,
``truth.jsonl`` (labels and emoji boxes per image) and a ``DONE`` marker; ``<out>/labels.json``
lists the labels in a stable order with their emoji per style.

Every scene draws from its own numpy Generator seeded by (seed, set name, index), so a set is
byte-identical whatever the number of workers or chunking, and an interrupted build resumes.

Usage::

    python bench/emoji_scenes.py --out data/emoji \
        --sets noto-train:12000 noto-val:1000 noto-test:1000 \
               openmoji-train:2000 openmoji-val:500 openmoji-test:1000 [--seed 0] [--workers 2]

Only numpy and Pillow are needed for the scene/layout/writer logic (tests use synthetic glyphs);
the real artwork and backgrounds need what ``bench/setup.sh`` installs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compositions import COMPOSITIONS, SceneSources, compose_varied, load_wallpapers  # noqa: E402
from iconify_artists import ARTISTS, TRAINING_ARTISTS, IconifyRenderer  # noqa: E402

# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------

HERE = Path(__file__).resolve().parent
EMOJI_TEST_PATH = Path("/usr/share/unicode/emoji/emoji-test.txt")
NOTO_FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
DEFAULT_OPENMOJI_DIR = HERE / ".npm" / "node_modules" / "openmoji"
DEFAULT_TWEMOJI_DIR = HERE / ".npm" / "node_modules" / "@twemoji" / "svg"

# the first three are drawn by this module's renderers, the others from Iconify JSON packages
# (iconify_artists.py); "mix" draws each emoji from one of the training artists
STYLES = ("noto", "openmoji", "twemoji", *ARTISTS, "mix")
EXCLUDED_GROUPS = frozenset({"Flags", "Component"})
MIN_PER_LABEL = 8
# Label/emoji counts that the selection must give, per emoji-test.txt version.
EXPECTED_COUNTS = {"15.0": (67, 1337)}

COUNT_CHOICES = (1, 2, 3, 4)
COUNT_WEIGHTS = (0.75, 0.17, 0.05, 0.03)
MAX_IOU = 0.15  # between any two emoji boxes of a scene
MAX_OVERLAP_OF_SMALLER = 0.30  # intersection / area of the smaller box
MAX_ROTATION_DEG = 15.0
ALPHA_THRESHOLD = 8  # alpha below this is cleared after transforms (keeps boxes tight)
GLYPH_CACHE_MAX_SIDE = 256
JPEG_QUALITY = 90
CACHE_VERSION = 1
NOTO_FONT_SIZE = 109  # the only size at which the CBDT font renders
NOTO_CANVAS = 160

# Backgrounds: photographs that ship inside the wheels (never fetched at run time).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "rocket.jpg",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
BACKGROUND_KINDS = ("photo", "gradient", "flat")
BACKGROUND_WEIGHTS = (0.5, 1 / 3, 1 / 6)


# --------------------------------------------------------------------------------------------------
# Taxonomy: emoji-test.txt parsing and selection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmojiEntry:
    codepoints: tuple[int, ...]
    status: str
    group: str
    subgroup: str
    name: str

    @property
    def emoji(self) -> str:
        return "".join(chr(c) for c in self.codepoints)

    @property
    def hex(self) -> str:
        """Code points as upper-case hex separated by spaces (the emoji-test.txt notation)."""
        return " ".join(f"{c:04X}" for c in self.codepoints)


@dataclass
class Taxonomy:
    labels: list[str]  # stable order: first appearance in emoji-test.txt
    groups: dict[str, str]  # label -> group
    emoji: dict[str, list[EmojiEntry]]  # label -> entries, file order
    version: str = ""

    @property
    def entries(self) -> list[EmojiEntry]:
        return [e for lab in self.labels for e in self.emoji[lab]]


def parse_emoji_test(text: str) -> tuple[list[EmojiEntry], str]:
    """Parse emoji-test.txt content into entries (all statuses) and the file's version string."""
    entries: list[EmojiEntry] = []
    group = subgroup = ""
    version = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            if body.startswith("group:"):
                group = body.split(":", 1)[1].strip()
            elif body.startswith("subgroup:"):
                subgroup = body.split(":", 1)[1].strip()
            elif body.startswith("Version:") and not version:
                version = body.split(":", 1)[1].strip()
            continue
        data, _, comment = line.partition("#")
        cps_text, _, status = data.partition(";")
        if not status:
            continue
        cps = tuple(int(c, 16) for c in cps_text.split())
        # Comment: "<emoji> E<version> <name>"
        parts = comment.strip().split(" ", 2)
        name = parts[2] if len(parts) == 3 else comment.strip()
        entries.append(EmojiEntry(cps, status.strip(), group, subgroup, name))
    return entries, version


def is_selected(entry: EmojiEntry) -> bool:
    """The per-emoji filter of the benchmark (before the per-subgroup minimum)."""
    if entry.status != "fully-qualified" or entry.group in EXCLUDED_GROUPS:
        return False
    cps = entry.codepoints
    if any(0x1F3FB <= c <= 0x1F3FF for c in cps):  # skin-tone modifiers
        return False
    if any(0x1F9B0 <= c <= 0x1F9B3 for c in cps):  # hair components
        return False
    if 0x200D in cps and (0x2640 in cps or 0x2642 in cps):  # gendered ZWJ sequences
        return False
    return True


def select_taxonomy(entries: Iterable[EmojiEntry], min_per_label: int = MIN_PER_LABEL,
                    version: str = "") -> Taxonomy:
    by_label: dict[str, list[EmojiEntry]] = {}
    groups: dict[str, str] = {}
    for e in entries:
        if is_selected(e):
            by_label.setdefault(e.subgroup, []).append(e)
            groups.setdefault(e.subgroup, e.group)
    labels = [lab for lab, es in by_label.items() if len(es) >= min_per_label]
    return Taxonomy(labels, {lab: groups[lab] for lab in labels}, {lab: by_label[lab] for lab in labels},
                    version)


def load_taxonomy(path: Path = EMOJI_TEST_PATH, check: bool = True) -> Taxonomy:
    if not path.exists():
        raise SystemExit(f"{path} not found: install Debian 'unicode-data' (bash bench/setup.sh)")
    entries, version = parse_emoji_test(path.read_text(encoding="utf-8"))
    tax = select_taxonomy(entries, version=version)
    n_lab, n_emo = len(tax.labels), len(tax.entries)
    if check and version in EXPECTED_COUNTS:
        if (n_lab, n_emo) != EXPECTED_COUNTS[version]:
            raise AssertionError(f"emoji-test.txt {version}: expected {EXPECTED_COUNTS[version]} "
                                 f"labels/emoji, got {n_lab}/{n_emo}")
    elif check:
        print(f"WARNING: emoji-test.txt version {version!r} is not the benchmark's (15.0): "
              f"{n_lab} labels, {n_emo} emoji; results are not comparable", file=sys.stderr)
    return tax


# --------------------------------------------------------------------------------------------------
# Glyphs
# --------------------------------------------------------------------------------------------------


@dataclass
class Glyph:
    entry: EmojiEntry
    rgba: np.ndarray  # (h, w, 4) uint8, cropped to its alpha bounding box


@dataclass
class GlyphPool:
    """The glyphs one style can draw, by label (labels without any glyph are left out)."""

    style: str
    labels: list[str]
    glyphs: dict[str, list[Glyph]]
    missing: list[EmojiEntry] = field(default_factory=list)


def crop_to_alpha(rgba: np.ndarray, threshold: int = 1) -> np.ndarray | None:
    alpha = rgba[..., 3]
    rows = np.flatnonzero((alpha >= threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((alpha >= threshold).any(axis=0))
    return rgba[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def limit_side(rgba: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgba.shape[:2]
    if max(h, w) <= max_side:
        return np.ascontiguousarray(rgba)
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.LANCZOS))


class NotoRenderer:
    def __init__(self, font_path: Path = NOTO_FONT_PATH):
        from PIL import ImageFont, features

        if not font_path.exists():
            raise FileNotFoundError(f"{font_path} (Debian fonts-noto-color-emoji)")
        layout = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
        if layout != ImageFont.Layout.RAQM:
            print("WARNING: Pillow without raqm: ZWJ/keycap sequences will be missing", file=sys.stderr)
        self.font = ImageFont.truetype(str(font_path), NOTO_FONT_SIZE, layout_engine=layout)
        self.single_width = self.font.getlength("\U0001F600")
        self.source_id = f"{font_path}:{font_path.stat().st_size}:{layout}"

    def render(self, entry: EmojiEntry) -> np.ndarray | None:
        from PIL import ImageDraw

        text = entry.emoji
        if self.font.getlength(text) > 1.5 * self.single_width:  # not one ligature: not supported
            return None
        im = Image.new("RGBA", (NOTO_CANVAS, NOTO_CANVAS), (0, 0, 0, 0))
        ImageDraw.Draw(im).text((8, 8), text, font=self.font, embedded_color=True)
        return crop_to_alpha(np.asarray(im))


class SvgRenderer:
    """One SVG file per emoji, named by its code points: ``0023-FE0F-20E3.svg`` (OpenMoji) or, with
    ``short_hex``, ``23-20e3.svg`` (Twemoji: lower case, no leading zeros)."""

    def __init__(self, package_dir: Path, svg_dir: Path, name: str, render_px: int, short_hex: bool):
        self.svg_dir = svg_dir
        if not self.svg_dir.is_dir():
            raise FileNotFoundError(f"{self.svg_dir} (npm {name}; run bash bench/setup.sh)")
        self.render_px = render_px
        self.short_hex = short_hex
        version = ""
        pkg = Path(package_dir) / "package.json"
        if pkg.exists():
            version = json.loads(pkg.read_text(encoding="utf-8")).get("version", "")
        self.source_id = f"{name}:{version}:{render_px}"

    def find(self, entry: EmojiEntry) -> Path | None:
        for name in openmoji_names(entry.codepoints):
            if self.short_hex:
                name = "-".join(part.lstrip("0").lower() for part in name.split("-"))
            p = self.svg_dir / f"{name}.svg"
            if p.exists():
                return p
        return None

    def render(self, entry: EmojiEntry) -> np.ndarray | None:
        path = self.find(entry)
        if path is None:
            return None
        return crop_to_alpha(rasterize_svg(self.render_px, self.render_px, url=str(path)))


class OpenMojiRenderer(SvgRenderer):
    def __init__(self, openmoji_dir: Path = DEFAULT_OPENMOJI_DIR, render_px: int = 360):
        # the 72-unit view box; glyphs cover ~2/3 of it
        super().__init__(openmoji_dir, Path(openmoji_dir) / "color" / "svg", "openmoji", render_px, short_hex=False)


class TwemojiRenderer(SvgRenderer):
    def __init__(self, twemoji_dir: Path = DEFAULT_TWEMOJI_DIR, render_px: int = 240):
        # the 36-unit view box, filled edge to edge: 240 px gives glyphs of OpenMoji's size
        super().__init__(twemoji_dir, Path(twemoji_dir), "@twemoji/svg", render_px, short_hex=True)


def renderer_for(style: str, openmoji_dir: Path = DEFAULT_OPENMOJI_DIR, twemoji_dir: Path = DEFAULT_TWEMOJI_DIR):
    if style == "noto":
        return NotoRenderer()
    if style == "openmoji":
        return OpenMojiRenderer(openmoji_dir)
    if style == "twemoji":
        return TwemojiRenderer(twemoji_dir)
    if style in ARTISTS:
        return IconifyRenderer(style)
    raise ValueError(f"unknown style {style!r}; one of {STYLES}")


def openmoji_names(codepoints: Sequence[int]) -> list[str]:
    """Candidate OpenMoji file stems: as given, without any FE0F, then without some FE0F."""
    fe0f = [i for i, c in enumerate(codepoints) if c == 0xFE0F]
    drops = [(), tuple(fe0f)] + [d for k in range(1, len(fe0f)) for d in itertools.combinations(fe0f, k)]
    names: list[str] = []
    for drop in drops:
        name = "-".join(f"{c:04X}" for i, c in enumerate(codepoints) if i not in drop)
        if name not in names:
            names.append(name)
    return names


def _cache_key(style: str, source_id: str, entries: Sequence[EmojiEntry]) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}|{style}|{source_id}|{GLYPH_CACHE_MAX_SIDE}".encode())
    for e in entries:
        h.update(e.hex.encode() + b";")
    return h.hexdigest()


def load_glyph_pool(style: str, tax: Taxonomy, cache_dir: Path | None = None,
                    openmoji_dir: Path = DEFAULT_OPENMOJI_DIR, verbose: bool = True,
                    twemoji_dir: Path = DEFAULT_TWEMOJI_DIR) -> GlyphPool:
    """Render (or load from ``<cache_dir>/.glyphs-<style>.npz``) every glyph of a style.

    Without the artwork (no font or SVGs on this machine) an existing cache is used as it is, so a
    cache copied from another machine is enough to build sets."""
    entries = tax.entries
    cache = Path(cache_dir) / f".glyphs-{style}.npz" if cache_dir is not None else None
    try:
        renderer = renderer_for(style, openmoji_dir, twemoji_dir)
        key = _cache_key(style, renderer.source_id, entries)
    except FileNotFoundError as exc:
        if cache is None or not cache.exists():
            raise
        print(f"[{style}] artwork unavailable ({exc}); using the glyph cache {cache} as it is")
        renderer, key = None, None
    arrays: dict[str, np.ndarray] = {}
    t0 = time.time()
    loaded = False
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if key is None or str(z["__key__"]) == key:
                arrays = {k: z[k] for k in z.files if k != "__key__"}
                loaded = True
    if not loaded:
        for e in entries:
            arr = renderer.render(e)
            if arr is not None:
                arrays[e.hex] = limit_side(arr, GLYPH_CACHE_MAX_SIDE)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.name + ".tmp.npz")
            np.savez_compressed(tmp, __key__=np.array(key), **arrays)
            os.replace(tmp, cache)
    glyphs: dict[str, list[Glyph]] = {}
    missing: list[EmojiEntry] = []
    for lab in tax.labels:
        for e in tax.emoji[lab]:
            if e.hex in arrays:
                glyphs.setdefault(lab, []).append(Glyph(e, arrays[e.hex]))
            else:
                missing.append(e)
    labels = [lab for lab in tax.labels if lab in glyphs]
    pool = GlyphPool(style, labels, glyphs, missing)
    if verbose:
        how = "loaded from cache" if loaded else "rendered"
        print(f"[{style}] {len(entries) - len(missing)}/{len(entries)} glyphs {how} in "
              f"{time.time() - t0:.1f} s; missing {len(missing)}"
              + (": " + " ".join(e.emoji for e in missing[:40]) + (" ..." if len(missing) > 40 else "")
                 if missing else ""))
        for lab in tax.labels:
            if lab not in glyphs:
                print(f"WARNING: [{style}] label {lab!r} has no glyph in this style", file=sys.stderr)
    return pool


# --------------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------------


def load_photos(verbose: bool = True) -> list[np.ndarray]:
    """The in-wheel photographs of scikit-image and scikit-learn (RGB uint8), read from disk."""
    photos: list[np.ndarray] = []
    names: list[str] = []

    def add_from(folder: Path, fnames: Sequence[str]) -> None:
        for fname in fnames:
            if (folder / fname).exists():
                photos.append(np.asarray(Image.open(folder / fname).convert("RGB")))
                names.append(fname)

    try:
        import skimage.data

        add_from(Path(skimage.data.__file__).parent, SKIMAGE_PHOTOS)
    except ImportError:
        pass
    try:
        import sklearn.datasets

        add_from(Path(sklearn.datasets.__file__).parent / "images", SKLEARN_PHOTOS)
    except ImportError:
        pass
    if verbose:
        print(f"backgrounds: {len(photos)} photographs ({', '.join(names) or 'none'})")
        if len(photos) < len(SKIMAGE_PHOTOS) + len(SKLEARN_PHOTOS):
            print("WARNING: some background photographs are missing (pip install scikit-image "
                  "scikit-learn)", file=sys.stderr)
    return photos


class Backgrounds:
    def __init__(self, photos: Sequence[np.ndarray] = ()):
        self.photos = list(photos)

    def sample(self, rng: np.random.Generator, width: int, height: int) -> Image.Image:
        if self.photos:
            kind = BACKGROUND_KINDS[rng.choice(3, p=BACKGROUND_WEIGHTS)]
        else:
            kind = ("gradient", "flat")[rng.choice(2, p=(2 / 3, 1 / 3))]
        if kind == "photo":
            return self._photo(rng, width, height)
        if kind == "gradient":
            return gradient_background(rng, width, height)
        return flat_background(rng, width, height)

    def _photo(self, rng: np.random.Generator, width: int, height: int) -> Image.Image:
        photo = self.photos[int(rng.integers(len(self.photos)))]
        ph, pw = photo.shape[:2]
        full_h = min(pw, ph * width / height) * height / width
        im = crop_photo(rng, photo, width, height, min(1.0, max(0.35, 0.6 * height / full_h)))  # ≤ ~1.7× up
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return im


def crop_photo(rng: np.random.Generator, photo: np.ndarray, width: int, height: int,
               smallest: float) -> Image.Image:
    """A random crop of ``photo`` with the aspect of ``width``×``height``, between ``smallest`` and
    all of the largest such crop, resized to ``width``×``height``."""
    ph, pw = photo.shape[:2]
    aspect = width / height
    full_w = min(pw, ph * aspect)
    full_h = full_w / aspect
    s = rng.uniform(smallest, 1.0)
    cw, ch = full_w * s, full_h * s
    x0 = rng.uniform(0, pw - cw)
    y0 = rng.uniform(0, ph - ch)
    return Image.fromarray(photo).resize((width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))


def rasterize_svg(width: int, height: int | None = None, **source) -> np.ndarray:
    """An SVG (cairosvg's ``url=`` or ``bytestring=``) drawn ``width`` pixels wide (and ``height`` high,
    else in proportion) as an RGBA array."""
    import cairosvg

    png = cairosvg.svg2png(output_width=width, output_height=height, **source)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def gradient_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A linear or radial gradient between two (sometimes three) random colours, light noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        theta = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(theta) + yy * math.sin(theta)
    else:
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    stops = 3 if rng.random() < 0.3 else 2
    colours = [_random_colour(rng) for _ in range(stops)]
    if stops == 2:
        img = colours[0] * (1 - t[..., None]) + colours[1] * t[..., None]
    else:
        t2 = t[..., None] * 2
        img = np.where(t2 < 1, colours[0] * (1 - t2) + colours[1] * t2,
                       colours[1] * (2 - t2) + colours[2] * (t2 - 1))
    img = img + rng.normal(0, 2.0, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def flat_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    colour = _random_colour(rng)
    sigma = rng.uniform(2, 12)
    img = colour + rng.normal(0, sigma, size=(height, width, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    short_min: int
    short_max: int
    aspect_max: float
    aspect_min: float = 1.0
    size_min: float = 0.18  # emoji max side / scene short side
    size_max: float = 0.60
    restyle: float = 0.0  # probability that an emoji is redrawn in another style (restyle_glyph)
    composition: str = ""  # a composition of compositions.py instead of the classic one


TRAIN_GEOMETRY = Geometry(256, 256, 1.33)
EVAL_GEOMETRY = Geometry(256, 384, 2.0)


def geometry_for(set_name: str, restyle: float = 0.0, composition: str = "") -> Geometry:
    """Training or evaluation geometry by the set's name; ``restyle`` applies to training sets only.
    A ``composition`` (compositions.py) replaces the classic layout whatever the set's name."""
    if composition:
        return Geometry(0, 0, 0.0, restyle=restyle, composition=composition)
    if set_name.endswith("train"):
        return replace(TRAIN_GEOMETRY, restyle=restyle) if restyle else TRAIN_GEOMETRY
    return EVAL_GEOMETRY


def scene_rng(seed: int, set_name: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(set_name.encode("utf-8")), int(index)])


def sample_size(rng: np.random.Generator, geo: Geometry) -> tuple[int, int]:
    short = int(rng.integers(geo.short_min, geo.short_max + 1))
    long_ = int(round(short * rng.uniform(geo.aspect_min, geo.aspect_max)))
    return (long_, short) if rng.random() < 0.5 else (short, long_)  # (width, height)


def sample_count(rng: np.random.Generator) -> int:
    return COUNT_CHOICES[int(rng.choice(len(COUNT_CHOICES), p=COUNT_WEIGHTS))]


def box_iou(a: Sequence[int], b: Sequence[int]) -> tuple[float, float]:
    """(IoU, intersection / area of the smaller box) of two [x0, y0, x1, y1] boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0, 0.0
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def overlap_ok(box: Sequence[int], others: Iterable[Sequence[int]]) -> bool:
    for o in others:
        iou, of_smaller = box_iou(box, o)
        if iou >= MAX_IOU or of_smaller >= MAX_OVERLAP_OF_SMALLER:
            return False
    return True


def restyle_glyph(rng: np.random.Generator, rgba: np.ndarray) -> np.ndarray:
    """Redraw one glyph the way another emoji artist might: flat colours instead of shading, dark
    ink lines around the shape and between its colour regions, another palette, softer edges.

    These are the things that change from one emoji set to another while the subject stays (Noto's
    gradients against OpenMoji's flat fills and black outlines, say); a model trained on one artist
    learns the drawing instead of the concept unless they vary. Each step is taken at random, so a
    restyled glyph is anything from a recoloured Noto emoji to a flat outlined one."""
    from PIL import ImageFilter

    rgb = Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB")
    alpha = rgba[..., 3]
    side = max(rgba.shape[:2])
    regions = None
    if rng.random() < 0.7:  # flat fills
        smooth = rgb.filter(ImageFilter.MedianFilter(3 if side < 96 else 5))
        quant = smooth.quantize(colors=int(rng.integers(4, 13)), method=Image.Quantize.MEDIANCUT)
        regions = np.asarray(quant)
        rgb = quant.convert("RGB")
    arr = np.asarray(rgb).astype(np.float32)
    if rng.random() < 0.6:  # palette: saturation, hue and contrast shifts
        grey = arr.mean(axis=2, keepdims=True)
        arr = grey + (arr - grey) * rng.uniform(0.5, 1.5)
        if rng.random() < 0.5:
            arr = arr[..., list(rng.permutation(3))] * 0.3 + arr * 0.7
        arr = (arr - 128.0) * rng.uniform(0.8, 1.25) + 128.0 + rng.uniform(-20, 20)
    arr = np.clip(arr, 0, 255)
    if rng.random() < 0.6:  # ink lines
        width = max(1, int(round(side * rng.uniform(0.01, 0.045))))
        ink = np.full(3, rng.uniform(0, 60), np.float32)
        grow = ImageFilter.MaxFilter(2 * width + 1)
        solid = (alpha >= 128).astype(np.uint8) * 255
        outline = np.asarray(Image.fromarray(solid).filter(grow)) > 0
        if regions is not None:  # also where one flat colour region meets another
            edges = np.zeros(regions.shape, bool)
            edges[:, 1:] |= regions[:, 1:] != regions[:, :-1]
            edges[1:, :] |= regions[1:, :] != regions[:-1, :]
            edges &= solid > 0
            if width > 1:
                edges = np.asarray(Image.fromarray(edges.astype(np.uint8) * 255).filter(
                    ImageFilter.MaxFilter(2 * (width // 2) + 1))) > 0
            arr[edges] = ink
        ring = outline & (solid == 0)
        arr[ring] = ink
        alpha = np.where(ring, 255, alpha).astype(np.uint8)
    out = np.dstack([arr.astype(np.uint8), alpha])
    if rng.random() < 0.2:  # soft edges
        out = np.asarray(Image.fromarray(out, "RGBA").filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5))))
    return np.ascontiguousarray(out)


def transform_glyph(rng: np.random.Generator, rgba: np.ndarray, max_side: int,
                    max_rotation: float = MAX_ROTATION_DEG, flip: bool = False,
                    brightness: float = 0.15) -> Image.Image:
    """Resize to ``max_side``, rotate by up to ``max_rotation`` degrees, mirror half the time when
    ``flip``, now and then scale brightness by up to ±``brightness``, crop to the alpha box."""
    h, w = rgba.shape[:2]
    s = max_side / max(h, w)
    im = Image.fromarray(rgba, "RGBA").resize((max(1, round(w * s)), max(1, round(h * s))),
                                              Image.Resampling.LANCZOS)
    angle = rng.uniform(-max_rotation, max_rotation)
    im = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    if flip and rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.array(im)
    if rng.random() < 0.3:
        f = rng.uniform(1 - brightness, 1 + brightness)
        arr[..., :3] = np.clip(arr[..., :3].astype(np.float32) * f, 0, 255).astype(np.uint8)
    arr[arr[..., 3] < ALPHA_THRESHOLD] = 0
    cropped = crop_to_alpha(arr)
    if cropped is None:  # degenerate tiny glyph
        cropped = np.zeros((1, 1, 4), np.uint8)
        cropped[..., 3] = 255
    return Image.fromarray(np.ascontiguousarray(cropped), "RGBA")


def compose_scene(rng: np.random.Generator, pool: GlyphPool, backgrounds: Backgrounds,
                  geo: Geometry) -> tuple[Image.Image, dict]:
    """Draw one scene. Returns the RGB image and its truth record (without the "image" key)."""
    if geo.composition:
        return compose_varied(rng, pool, backgrounds, COMPOSITIONS[geo.composition])
    width, height = sample_size(rng, geo)
    short = min(width, height)
    n = sample_count(rng)
    picks: list[tuple[str, Glyph, int]] = []
    for _ in range(n):
        label = pool.labels[int(rng.integers(len(pool.labels)))]
        choices = pool.glyphs[label]
        glyph = choices[int(rng.integers(len(choices)))]
        side = int(round(rng.uniform(geo.size_min, geo.size_max) * short))
        picks.append((label, glyph, max(side, 8)))
    picks.sort(key=lambda p: -p[2])  # place large emoji first, small ones end up on top
    bg = backgrounds.sample(rng, width, height)
    objects: list[dict] = []
    boxes: list[list[int]] = []
    for label, glyph, side in picks:
        rgba = glyph.rgba
        # no draw at all without restyling, so sets built before it existed stay byte-identical
        if geo.restyle > 0 and rng.random() < geo.restyle:
            rgba = restyle_glyph(rng, rgba)
        im = transform_glyph(rng, rgba, side)
        placed = None
        for _shrink in range(5):
            gw, gh = im.size
            if gw <= width and gh <= height:
                for _try in range(30):
                    x = int(rng.integers(0, width - gw + 1))
                    y = int(rng.integers(0, height - gh + 1))
                    box = [x, y, x + gw, y + gh]
                    if overlap_ok(box, boxes):
                        placed = box
                        break
            if placed is not None:
                break
            im = im.resize((max(1, round(gw * 0.8)), max(1, round(gh * 0.8))), Image.Resampling.LANCZOS)
        if placed is None:
            continue
        bg.paste(im, (placed[0], placed[1]), im)
        boxes.append(placed)
        objects.append({"label": label, "emoji": glyph.entry.emoji, "codepoints": glyph.entry.hex,
                        "box": placed})
    record = {"width": width, "height": height,
              "labels": sorted({o["label"] for o in objects}), "objects": objects}
    return bg, record


# --------------------------------------------------------------------------------------------------
# Writing sets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetSpec:
    name: str
    count: int

    @property
    def style(self) -> str:
        return self.name.split("-", 1)[0]

    @staticmethod
    def parse(text: str) -> SetSpec:
        name, sep, count = text.partition(":")
        if not sep or not count.isdigit() or name.split("-", 1)[0] not in STYLES or "-" not in name:
            raise argparse.ArgumentTypeError(
                f"bad set {text!r}: expected <style>-<split>:<count>, style one of {STYLES}")
        return SetSpec(name, int(count))


def label_line(labels: Sequence[str]) -> str:
    return ", ".join(labels)


def write_scene(set_dir: Path, index: int, image: Image.Image, record: dict) -> dict:
    stem = f"{index:06d}"
    image.save(set_dir / f"{stem}.jpg", "JPEG", quality=record.get("jpeg_quality", JPEG_QUALITY))
    (set_dir / f"{stem}.txt").write_text(label_line(record["labels"]) + "\n", encoding="utf-8")
    return {"image": f"{stem}.jpg", **record}


def generate_chunk(set_dir: Path, set_name: str, seed: int, start: int, stop: int, pool: GlyphPool,
                   backgrounds: Backgrounds, geo: Geometry) -> Path:
    """Write scenes [start, stop) and then their truth lines to ``.chunk-<start>.jsonl``."""
    lines = []
    for i in range(start, stop):
        image, record = compose_scene(scene_rng(seed, set_name, i), pool, backgrounds, geo)
        lines.append(json.dumps(write_scene(set_dir, i, image, record), ensure_ascii=False))
    out = set_dir / f".chunk-{start:06d}.jsonl"
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, out)
    return out


_WORKER_STATE: dict = {}


def _chunk_job(args: tuple) -> tuple[int, int]:
    set_dir, set_name, seed, start, stop, style, geo = args
    generate_chunk(Path(set_dir), set_name, seed, start, stop, _WORKER_STATE["pools"][style],
                   _WORKER_STATE["backgrounds"], geo)
    return start, stop


def build_set(out_dir: Path, spec: SetSpec, seed: int, pool: GlyphPool, backgrounds: Backgrounds,
              workers: int = 1, chunk_size: int = 250, geo: Geometry | None = None,
              verbose: bool = True, restyle: float = 0.0, composition: str = "") -> Path:
    """Build ``<out_dir>/<set>/`` (resumable; skipped if already DONE). Returns its path."""
    out_dir = Path(out_dir)
    final = out_dir / spec.name
    geo = geo or geometry_for(spec.name, restyle, composition)
    # as before restyling and compositions existed
    geometry = {k: v for k, v in geo.__dict__.items() if k not in ("restyle", "composition") or v}
    params = {"set": spec.name, "count": spec.count, "seed": seed, "style": spec.style,
              "geometry": geometry, "builder_version": CACHE_VERSION,
              "labels": pool.labels, "glyphs": sum(len(v) for v in pool.glyphs.values())}
    if (final / "DONE").exists():
        done = json.loads((final / "DONE").read_text(encoding="utf-8") or "{}")
        if done != params and verbose:
            print(f"WARNING: {final} is DONE with other parameters; delete it to rebuild", file=sys.stderr)
        elif verbose:
            print(f"{spec.name}: already complete, skipped")
        return final
    tmp_dir = out_dir / f".{spec.name}.partial"
    params_file = tmp_dir / ".params.json"
    if tmp_dir.exists() and (not params_file.exists()
                             or json.loads(params_file.read_text(encoding="utf-8")) != params):
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    params_file.write_text(json.dumps(params), encoding="utf-8")

    chunks = [(s, min(s + chunk_size, spec.count)) for s in range(0, spec.count, chunk_size)]
    todo = [c for c in chunks if not (tmp_dir / f".chunk-{c[0]:06d}.jsonl").exists()]
    t0 = time.time()
    n_done = 0
    if verbose and len(todo) < len(chunks):
        print(f"{spec.name}: resuming, {len(chunks) - len(todo)}/{len(chunks)} chunks already written")
    jobs = [(str(tmp_dir), spec.name, seed, a, b, spec.style, geo) for a, b in todo]
    n_todo = sum(b - a for a, b in todo)
    _WORKER_STATE.update(pools={spec.style: pool}, backgrounds=backgrounds)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork")  # workers inherit the glyph pool without copying it
        with ctx.Pool(workers) as p:
            for a, b in p.imap_unordered(_chunk_job, jobs):
                n_done += b - a
                if verbose:
                    _progress(spec.name, n_done, n_todo, t0)
    else:
        for job in jobs:
            a, b = _chunk_job(job)
            n_done += b - a
            if verbose:
                _progress(spec.name, n_done, n_todo, t0)

    with open(tmp_dir / "truth.jsonl", "w", encoding="utf-8") as f:
        for a, _b in chunks:
            f.write((tmp_dir / f".chunk-{a:06d}.jsonl").read_text(encoding="utf-8"))
    for a, _b in chunks:
        (tmp_dir / f".chunk-{a:06d}.jsonl").unlink()
    params_file.unlink()
    (tmp_dir / "DONE").write_text(json.dumps(params), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp_dir, final)
    dt = time.time() - t0
    if verbose:
        stats = set_stats(final)
        print(f"{spec.name}: {spec.count} images in {dt:.1f} s ({n_done / max(dt, 1e-9):.1f} img/s new), "
              f"labels/image {stats['labels_per_image']:.3f}, emoji/image {stats['objects_per_image']:.3f}")
    return final


def _progress(name: str, done: int, total: int, t0: float) -> None:
    dt = time.time() - t0
    print(f"  {name}: {done}/{total} ({done / max(dt, 1e-9):.1f} img/s)", flush=True)


def read_truth(set_dir: Path) -> list[dict]:
    with open(Path(set_dir) / "truth.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def set_stats(set_dir: Path) -> dict:
    truth = read_truth(set_dir)
    n = max(len(truth), 1)
    counts = Counter(len(r["objects"]) for r in truth)
    label_freq = Counter(lab for r in truth for lab in r["labels"])
    return {"images": len(truth),
            "labels_per_image": sum(len(r["labels"]) for r in truth) / n,
            "objects_per_image": sum(len(r["objects"]) for r in truth) / n,
            "objects_hist": dict(sorted(counts.items())),
            "labels_seen": len(label_freq),
            "min_label_count": min(label_freq.values()) if label_freq else 0}


def write_labels_json(out_dir: Path, tax: Taxonomy, pools: dict[str, GlyphPool | None]) -> Path:
    data = {
        "source": f"Unicode emoji-test.txt {tax.version}: subgroups with >= {MIN_PER_LABEL} fully-qualified "
                  "emoji, no skin tones / hair components / gendered ZWJ, no Flags / Component",
        "labels": list(tax.labels),
        "groups": dict(tax.groups),
        "emoji": {},
    }
    for lab in tax.labels:
        per: dict[str, list[str]] = {"all": [e.emoji for e in tax.emoji[lab]]}
        for style in STYLES:
            pool = pools.get(style)
            if pool is not None and style != "mix":
                per[style] = [g.entry.emoji for g in pool.glyphs.get(lab, [])]
        data["emoji"][lab] = per
    text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    path = Path(out_dir) / "labels.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def mixed_pool(pools: Sequence[GlyphPool]) -> GlyphPool:
    """One pool drawing each label's emoji from every artist of ``pools`` (the "mix" style)."""
    glyphs: dict[str, list[Glyph]] = {}
    for pool in pools:
        for label, gs in pool.glyphs.items():
            glyphs.setdefault(label, []).extend(gs)
    labels = [lab for lab in pools[0].labels + [lab for p in pools[1:] for lab in p.labels] if lab in glyphs]
    return GlyphPool("mix", list(dict.fromkeys(labels)), glyphs)


def scene_sources(backgrounds: Backgrounds, cache_dir: Path, side: str, workers: int,
                  topics: bool = False) -> SceneSources:
    """Backgrounds and clutter of one side (train / test) of the openclipart creator split, and with
    ``topics`` that side's drawings of the topic labels (openclipart.TOPICS)."""
    from openclipart import is_test_creator, load_drawings, split_by_creator, topic_drawings

    train, test = split_by_creator(load_drawings(cache_dir, workers=workers))
    drawings = train if side == "train" else test
    wallpapers = load_wallpapers() if side == "test" else []
    labelled = [d for d in topic_drawings(cache_dir, workers=workers) if is_test_creator(d.creator) == (side == "test")
                ] if topics else []
    print(f"scene sources ({side}): {len(drawings)} openclipart drawings by "
          f"{len({d.creator for d in drawings})} creators, {len(wallpapers)} wallpapers, "
          f"{len(labelled)} topic drawings")
    return SceneSources(backgrounds, drawings, wallpapers, labelled)


def build_demo(out_dir: Path, count: int = 12, style: str = "noto", seed: int = 0,
               openmoji_dir: Path = DEFAULT_OPENMOJI_DIR, cache_dir: Path | None = None) -> Path:
    """A small folder of scenes (jpg + .txt sidecars + truth.jsonl), e.g. for the app's demo."""
    tax = load_taxonomy()
    pool = load_glyph_pool(style, tax, cache_dir, openmoji_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        image, record = compose_scene(scene_rng(seed, f"{style}-demo", i), pool, Backgrounds(load_photos()),
                                      EVAL_GEOMETRY)
        lines.append(json.dumps(write_scene(out_dir, i, image, record), ensure_ascii=False))
    (out_dir / "truth.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out_dir


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/emoji")
    ap.add_argument("--sets", type=SetSpec.parse, nargs="+", required=True,
                    help="sets as <style>-<split>:<count>, style noto, openmoji or twemoji (e.g. noto-train:12000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--chunk-size", type=int, default=250)
    ap.add_argument("--openmoji-dir", type=Path, default=DEFAULT_OPENMOJI_DIR,
                    help="the npm openmoji package folder (default: bench/.npm/node_modules/openmoji)")
    ap.add_argument("--twemoji-dir", type=Path, default=DEFAULT_TWEMOJI_DIR,
                    help="the npm @twemoji/svg package folder (default: bench/.npm/node_modules/@twemoji/svg)")
    ap.add_argument("--emoji-test", type=Path, default=EMOJI_TEST_PATH)
    ap.add_argument("--restyle", type=float, default=0.0, metavar="P",
                    help="in *-train sets, redraw each emoji in another style with probability P "
                         "(flat colours, ink lines, palette; see restyle_glyph)")
    ap.add_argument("--composition", choices=sorted(COMPOSITIONS), default="",
                    help="lay every set out by this composition of compositions.py instead of the classic one "
                         "(varied: training; ood, small: out-of-generator test sets)")
    ap.add_argument("--demo", type=Path, default=None,
                    help="instead of the sets, write a small demo folder here (count = first set's)")
    args = ap.parse_args(argv)
    if not 0.0 <= args.restyle <= 1.0:
        ap.error("--restyle is a probability, between 0 and 1")

    t0 = time.time()
    tax = load_taxonomy(args.emoji_test)
    print(f"taxonomy: emoji-test.txt {tax.version}: {len(tax.labels)} labels, {len(tax.entries)} emoji")
    if args.demo is not None:
        spec = args.sets[0]
        build_demo(args.demo, spec.count, spec.style, args.seed, args.openmoji_dir, args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    pools: dict[str, GlyphPool | None] = {}
    wanted = {s.style for s in args.sets}
    if "mix" in wanted:
        wanted |= set(TRAINING_ARTISTS)
    for style in STYLES:
        needed = style in wanted
        if style == "mix" or (not needed and style not in ("noto", "openmoji", "twemoji")):
            continue
        try:
            pools[style] = load_glyph_pool(style, tax, args.out, args.openmoji_dir, verbose=True,
                                           twemoji_dir=args.twemoji_dir)
        except (FileNotFoundError, ImportError) as exc:
            if needed:
                raise SystemExit(f"[{style}] artwork unavailable: {exc}") from exc
            print(f"WARNING: [{style}] artwork unavailable ({exc}); labels.json lists no {style} emoji",
                  file=sys.stderr)
            pools[style] = None
    if "mix" in wanted:
        pools["mix"] = mixed_pool([pools[a] for a in TRAINING_ARTISTS])
    print(f"wrote {write_labels_json(args.out, tax, pools)}")
    backgrounds = Backgrounds(load_photos())
    if args.composition:
        comp = COMPOSITIONS[args.composition]
        backgrounds = scene_sources(backgrounds, args.out, comp.creators, args.workers, topics=comp.topics_max > 0)
    for spec in args.sets:
        pool = pools[spec.style]
        assert pool is not None
        build_set(args.out, spec, args.seed, pool, backgrounds, workers=args.workers,
                  chunk_size=args.chunk_size, restyle=args.restyle, composition=args.composition)
    print(f"all done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
