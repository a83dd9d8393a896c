"""Scene compositions beyond the classic one of ``emoji_scenes.compose_scene``.

``varied`` (training; ``varied-plain`` is the same without openclipart) draws scenes as varied as
real artwork: 1-8 emoji at 8-75 % of the short side (log-uniform), each allowed to be up to half
hidden by later ones, rotated by up to ±30°, over photographs, gradients, flat colours or
openclipart drawings of *training* creators, with openclipart clutter (drawings that are none of
the labels), blur, noise, colour shifts, grayscale and JPEG quality 40-95.

The test compositions are built with settings training never uses, so that a model that learnt the
generator rather than the subjects shows it:

* ``ood``: 1-6 emoji at 15-60 % of the short side (uniform, not log-uniform), up to 40 % hidden,
  rotated by up to ±25°, on other backgrounds (MATE and GNOME wallpapers, drawings of *test*
  creators), clutter of test creators, scenes of 256-384 px short side and aspect up to 2 (training:
  256 px, aspect up to 1.33), JPEG 60-90, no grayscale.
* ``small``: the same but 2-4 emoji at 12-30 % of the short side.

An emoji's label counts when at least half of it (``1 - max_hidden``) is visible; its box in the truth
is the whole pasted glyph's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

WALLPAPER_DIRS = (Path("/usr/share/backgrounds/mate"), Path("/usr/share/backgrounds/gnome"))
# wallpapers that show one of the labels' subjects (a ladybird, flowers, elephants) are left out
WALLPAPER_EXCLUDED = ("LadyBird", "FreshFlower", "Elephants")
WALLPAPER_MAX_SIDE = 1024


@dataclass(frozen=True)
class Composition:
    name: str
    counts: tuple[int, ...]
    count_weights: tuple[float, ...]
    size_min: float  # emoji max side / scene short side
    size_max: float
    log_sizes: bool
    max_hidden: float  # of an emoji's opaque pixels that later ones may cover
    max_rotation: float
    clutter_max: int
    creators: str  # "train" or "test": whose openclipart drawings are used
    short_min: int
    short_max: int
    aspect_max: float
    jpeg_min: int
    jpeg_max: int
    grayscale: float  # probability
    drawings: bool = True  # openclipart clutter and drawn backgrounds
    topics_max: int = 0  # openclipart drawings per scene labelled with their topic (0 to this many)


def _weights(n: int, decay: float) -> tuple[float, ...]:
    w = np.array([decay ** i for i in range(n)])
    return tuple(float(x) for x in w / w.sum())


COMPOSITIONS = {
    c.name: c
    for c in (
        Composition("varied", tuple(range(1, 9)), _weights(8, 0.75), 0.08, 0.75, True, 0.5, 30.0, 3, "train",
                    256, 256, 1.33, 40, 95, 0.08),
        # the ablation of openclipart: "varied" without clutter or drawn backgrounds
        Composition("varied-plain", tuple(range(1, 9)), _weights(8, 0.75), 0.08, 0.75, True, 0.5, 30.0, 0, "train",
                    256, 256, 1.33, 40, 95, 0.08, drawings=False),
        # the ablation of topic labels: "varied" plus 0-2 openclipart drawings labelled with their topic
        Composition("varied-topics", tuple(range(1, 9)), _weights(8, 0.75), 0.08, 0.75, True, 0.5, 30.0, 3, "train",
                    256, 256, 1.33, 40, 95, 0.08, topics_max=2),
        Composition("ood", tuple(range(1, 7)), _weights(6, 0.6), 0.15, 0.60, False, 0.4, 25.0, 2, "test",
                    256, 384, 2.0, 60, 90, 0.0),
        Composition("small", (2, 3, 4), (0.4, 0.35, 0.25), 0.12, 0.30, False, 0.4, 25.0, 2, "test",
                    256, 384, 2.0, 60, 90, 0.0),
    )
}


class SceneSources:
    """Backgrounds and clutter of one side of the split: classic backgrounds (photographs, gradients,
    flat colours) and training creators' drawings for ``train``; wallpapers and test creators'
    drawings for ``test``."""

    def __init__(self, classic, drawings: list, wallpapers: list[np.ndarray], topics: list = ()):
        self.classic = classic  # emoji_scenes.Backgrounds
        self.drawings = drawings
        self.wallpapers = wallpapers
        self.topics = list(topics)  # openclipart.TopicDrawing of this side, for topics_max > 0

    def background(self, rng: np.random.Generator, width: int, height: int, comp: Composition) -> Image.Image:
        r = rng.random()
        if r < 0.2 and self.drawings and comp.drawings:
            return self._drawn(rng, width, height)
        if comp.creators == "test" and self.wallpapers:
            from emoji_scenes import crop_photo

            return crop_photo(rng, self.wallpapers[int(rng.integers(len(self.wallpapers)))], width, height, 0.4)
        return self.classic.sample(rng, width, height)

    def _drawn(self, rng: np.random.Generator, width: int, height: int) -> Image.Image:
        from emoji_scenes import flat_background

        bg = flat_background(rng, width, height)
        d = self.drawings[int(rng.integers(len(self.drawings)))].rgba
        scale = max(width, height) * rng.uniform(0.8, 1.6) / max(d.shape[:2])
        im = Image.fromarray(d, "RGBA").resize((max(1, round(d.shape[1] * scale)), max(1, round(d.shape[0] * scale))),
                                               Image.Resampling.BILINEAR)
        x = int(rng.integers(min(0, width - im.width), max(1, width - im.width + 1)))
        y = int(rng.integers(min(0, height - im.height), max(1, height - im.height + 1)))
        bg.paste(im, (x, y), im)
        return bg


def load_wallpapers() -> list[np.ndarray]:
    out = []
    for folder in WALLPAPER_DIRS:
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() not in (".jpg", ".png", ".webp") or any(w in p.name for w in WALLPAPER_EXCLUDED):
                continue
            if "_3840x" in p.name or "_5640x" in p.name:
                continue
            try:
                im = Image.open(p).convert("RGB")
            except OSError:
                continue
            im.thumbnail((WALLPAPER_MAX_SIDE, WALLPAPER_MAX_SIDE))
            out.append(np.asarray(im))
    return out


def _transform(rng: np.random.Generator, rgba: np.ndarray, side: int, max_rotation: float) -> np.ndarray:
    from emoji_scenes import transform_glyph

    return np.asarray(transform_glyph(rng, rgba, side, max_rotation, flip=True, brightness=0.2))


def _place(rng: np.random.Generator, owner: np.ndarray, visible: list[int], areas: list[int], mask: np.ndarray,
           max_hidden: float, width: int, height: int) -> tuple[int, int] | None:
    """A position where ``mask`` leaves every earlier emoji at least ``1 - max_hidden`` visible."""
    gh, gw = mask.shape
    if gw > width or gh > height:
        return None
    for _ in range(30):
        x, y = int(rng.integers(0, width - gw + 1)), int(rng.integers(0, height - gh + 1))
        under = owner[y:y + gh, x:x + gw][mask]
        covered = np.bincount(under[under >= 0], minlength=len(areas)) if len(areas) else np.zeros(0, int)
        if all(visible[i] - covered[i] >= (1 - max_hidden) * areas[i] for i in range(len(areas))):
            return x, y
    return None


def _effects(rng: np.random.Generator, im: Image.Image, comp: Composition) -> Image.Image:
    if rng.random() < 0.3:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    arr = np.asarray(im).astype(np.float32)
    if rng.random() < 0.3:
        arr = arr * rng.uniform(0.85, 1.15, 3) + rng.uniform(-15, 15, 3)
    if rng.random() < 0.3:
        arr = arr + rng.normal(0, rng.uniform(2, 12), arr.shape)
    if rng.random() < comp.grayscale:
        arr = np.repeat(arr @ np.array([0.299, 0.587, 0.114], np.float32), 3).reshape(arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _size(rng: np.random.Generator, comp: Composition, short: int) -> int:
    if comp.log_sizes:
        frac = float(np.exp(rng.uniform(np.log(comp.size_min), np.log(comp.size_max))))
    else:
        frac = rng.uniform(comp.size_min, comp.size_max)
    return max(8, int(round(frac * short)))


def compose_varied(rng: np.random.Generator, pool, sources: SceneSources,
                   comp: Composition) -> tuple[Image.Image, dict]:
    """One scene of composition ``comp``: the RGB image and its truth record (with ``jpeg_quality``)."""
    short = int(rng.integers(comp.short_min, comp.short_max + 1))
    long_ = int(round(short * rng.uniform(1.0, comp.aspect_max)))
    width, height = (long_, short) if rng.random() < 0.5 else (short, long_)
    n = int(rng.choice(comp.counts, p=comp.count_weights))
    picks = []
    for _ in range(n):
        label = pool.labels[int(rng.integers(len(pool.labels)))]
        glyph = pool.glyphs[label][int(rng.integers(len(pool.glyphs[label])))]
        picks.append((label, glyph.rgba, _size(rng, comp, short),
                      {"emoji": glyph.entry.emoji, "codepoints": glyph.entry.hex}))
    if comp.topics_max and sources.topics:
        for _ in range(int(rng.integers(0, comp.topics_max + 1))):
            d = sources.topics[int(rng.integers(len(sources.topics)))]
            picks.append((d.label, d.rgba, _size(rng, comp, short), {"drawing": d.path}))
    picks.sort(key=lambda p: -p[2])
    bg = sources.background(rng, width, height, comp)
    for _ in range(int(rng.integers(0, comp.clutter_max + 1)) if sources.drawings and comp.drawings else 0):
        d = sources.drawings[int(rng.integers(len(sources.drawings)))]
        side = int(round(rng.uniform(0.15, 0.6) * short))
        clutter = Image.fromarray(_transform(rng, d.rgba, side, 30.0), "RGBA")
        if clutter.width <= width and clutter.height <= height:
            bg.paste(clutter, (int(rng.integers(0, width - clutter.width + 1)),
                               int(rng.integers(0, height - clutter.height + 1))), clutter)
    owner = np.full((height, width), -1, np.int16)
    visible: list[int] = []
    areas: list[int] = []
    objects: list[dict] = []
    for label, rgba, side, source in picks:
        arr = _transform(rng, rgba, side, comp.max_rotation)
        placed = None
        for _shrink in range(4):
            mask = arr[..., 3] >= 128
            placed = _place(rng, owner, visible, areas, mask, comp.max_hidden, width, height)
            if placed is not None:
                break
            im = Image.fromarray(arr, "RGBA")
            arr = np.asarray(im.resize((max(1, round(im.width * 0.8)), max(1, round(im.height * 0.8))),
                                       Image.Resampling.LANCZOS))
        if placed is None or not mask.any():
            continue
        x, y = placed
        gh, gw = mask.shape
        region = owner[y:y + gh, x:x + gw]
        under = region[mask]
        for i, c in enumerate(np.bincount(under[under >= 0], minlength=len(areas))):
            visible[i] -= int(c)
        region[mask] = len(areas)
        areas.append(int(mask.sum()))
        visible.append(int(mask.sum()))
        im = Image.fromarray(arr, "RGBA")
        bg.paste(im, (x, y), im)
        objects.append({"label": label, **source, "box": [x, y, x + gw, y + gh]})
    for o, v, a in zip(objects, visible, areas, strict=True):
        o["visible"] = round(v / a, 3)
    bg = _effects(rng, bg.convert("RGB"), comp)
    record = {"width": width, "height": height, "labels": sorted({o["label"] for o in objects}),
              "objects": objects, "jpeg_quality": int(rng.integers(comp.jpeg_min, comp.jpeg_max + 1))}
    return bg, record
