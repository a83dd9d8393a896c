"""Small generated multi-label datasets for tests: coloured shapes on noisy backgrounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["red-square", "blue-disc", "green-triangle", "yellow-cross"]
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 230), "green": (30, 200, 60), "yellow": (240, 220, 20)}


def draw_shape(draw: ImageDraw.ImageDraw, label: str, box: tuple[int, int, int, int]) -> None:
    colour_name, kind = label.split("-")
    colour = COLOURS[colour_name]
    x0, y0, x1, y1 = box
    if kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "disc":
        draw.ellipse(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
    else:
        w = (x1 - x0) // 4
        draw.rectangle((x0, (y0 + y1) // 2 - w, x1, (y0 + y1) // 2 + w), fill=colour)
        draw.rectangle(((x0 + x1) // 2 - w, y0, (x0 + x1) // 2 + w, y1), fill=colour)


def make_scene(rng: np.random.Generator, size: tuple[int, int] = (96, 80)) -> tuple[Image.Image, list[str]]:
    w, h = size
    background = rng.integers(90, 160, size=(h, w, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    count = 1 if rng.random() < 0.7 else 2
    labels = list(rng.choice(SHAPES, size=count, replace=False))
    for i, label in enumerate(labels):
        s = int(rng.integers(h // 3, h // 2 + 1))
        x0 = int(rng.integers(0, w // count - s + 1)) + i * (w // count)
        y0 = int(rng.integers(0, h - s + 1))
        draw_shape(draw, label, (x0, y0, x0 + s, y0 + s))
    return image, sorted(labels)


def make_dataset(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (96, 80),
                 sidecars: bool = True) -> list[tuple[Path, list[str]]]:
    """Write ``n`` JPEG scenes with ``.txt`` sidecars into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image, labels = make_scene(rng, size)
        path = folder / f"scene{seed}_{i:04d}.jpg"
        image.save(path, quality=92)
        if sidecars:
            path.with_suffix(".txt").write_text(", ".join(labels), encoding="utf-8")
        out.append((path, labels))
    return out


def train_tiny_model(root: Path, images: int = 120, seed: int = 1) -> Path:
    """A tiny model trained for 4 epochs on ``images`` shape scenes in ``root/train``: a parent to
    fine-tune."""
    from mlcnn_core.cli import main

    make_dataset(root / "train", images, seed=seed)
    out = root / "parent.safetensors"
    assert main(["train", "--data", str(root / "train"), "--out", str(out), "--arch", "tiny", "--epochs", "4",
                 "--batch-size", "16", "--workers", "0", "--events", str(root / "ev.jsonl")]) == 0
    return out


def noise_images(folder: Path, count: int, seed: int, sides: tuple[int, int]) -> list[Path]:
    """``count`` PNGs of random pixels whose height and width are drawn independently in ``sides``."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{i:02d}.png"
        shape = (int(rng.integers(*sides)), int(rng.integers(*sides)), 3)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
