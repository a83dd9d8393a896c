"""Images in, tensors out: decoding, section 2.1's preprocessing, and labelled datasets.

Preprocessing (2.1): "All images are resized to 256 pixels minimum dimension, using OpenCV's
pixel area resizing method. Further, pixel values are converted [...] to the [0, 1] single
precision floating point range by dividing them by 255"; the training set's mean pixel is
subtracted; training takes "a random crop of the image of size 256 by 256 pixels" flipped
horizontally "with probability 0.5"; prediction takes the whole image at any aspect ratio.

INTER_AREA is the right filter for shrinking; for the rare image smaller than 256 we enlarge
with INTER_LINEAR (area resampling degenerates to nearest-neighbour when enlarging).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps

from .card import SHORT_SIDE
from .sidecars import (
    IMAGE_EXTENSIONS,
    SidecarError,
    existing_txt_sidecar,
    find_stem_collisions,
    normalize_tags,
    read_txt,
)

CROP = 256
MIN_TRAIN_SIDE = 64  # smallest short side that --short-side-range accepts
# Refuse decompression bombs with our own message; Pillow's own limit would only warn first.
MAX_PIXELS = 120_000_000
# Longest side over shortest. Read at 288 px the cost grows with the ratio: `mlcnn predict` of one 32:1 image
# peaks at 0.45 GB of memory (4:1: 0.31 GB); a 1:5000 one would need 23 GB.
MAX_ASPECT = 32

# EXIF orientations that ImageOps.exif_transpose turns or mirrors (1 is upright)
_TURNED = range(2, 9)

cv2.setNumThreads(1)


class ImageError(Exception):
    """An image that cannot be used: unreadable, truncated, not an image, or too large."""


class DatasetError(Exception):
    """A dataset path or manifest that cannot be read."""


def read_image(path: str | os.PathLike, min_side: int | None = SHORT_SIDE) -> np.ndarray:
    """Decode ``path`` to an RGB uint8 array [H, W, 3] with its EXIF orientation applied
    (:func:`read_image_sized` without the size)."""
    return read_image_sized(path, min_side)[0]


def read_image_sized(path: str | os.PathLike, min_side: int | None = SHORT_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` to an RGB uint8 array [H, W, 3] with its EXIF orientation applied, and the
    image's own (width, height), oriented: a reduced-scale decode (below) is smaller than the file.

    With ``min_side``, a JPEG much larger than needed is decoded at a reduced scale (libjpeg's
    DCT scaling through Pillow's ``draft``) whose short side is still ≥ ``min_side``; the exact
    resize happens in :func:`resize_short_side`. GIFs give their first frame; 16-bit grayscale is
    scaled to 8 bits. Refused with :class:`ImageError`: anything but a regular file (a FIFO would
    block for ever), more than :data:`MAX_PIXELS` pixels, or a long side more than
    :data:`MAX_ASPECT` times the short one (resized to the network's input, a 1×5000 image would
    become 288×1,440,000 pixels)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageError(f"{path}: not a regular file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{path}: {w}×{h} pixels is more than the {MAX_PIXELS:,} this program decodes")
                if max(w, h) > MAX_ASPECT * min(w, h):
                    raise ImageError(f"{path}: {w}×{h} pixels, its long side is more than {MAX_ASPECT} times its "
                                     "short side; cut it into parts to tag it")
                if min_side and im.format == "JPEG" and min(w, h) >= 2 * min_side:
                    scale = min(8, min(w, h) // min_side)
                    im.draft("RGB", (w // scale, h // scale))
                im.seek(0)
                im.load()  # as exif_transpose does first: some formats keep their EXIF after the pixels
                # exif_transpose and convert copy the whole image even when there is nothing to do
                if im.getexif().get(ExifTags.Base.Orientation, 1) in _TURNED:
                    im = ImageOps.exif_transpose(im)
                if im.mode.startswith("I"):
                    gray = _wide_gray_to_rgb(np.asarray(im))
                    return gray, (gray.shape[1], gray.shape[0])
                rgb = im if im.mode == "RGB" else im.convert("RGB")
                rgb.load()
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(f"{path}: no such file") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from e
    out = np.array(rgb)  # writable, so torch can take it without a copy or a warning
    turned = (out.shape[1] >= out.shape[0]) != (w >= h)  # EXIF rotated it by 90°
    return out, ((h, w) if turned else (w, h))


def _wide_gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """16-bit (Pillow's ``I;16*``, or ``I`` holding 16-bit values) grayscale as 8-bit RGB. Pillow's
    own conversion clips at 255, turning a 16-bit image almost white."""
    scaled = np.clip(np.rint(gray.astype(np.float32) / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(scaled[:, :, None], 3, axis=2)


def short_side_size(height: int, width: int, short: int = SHORT_SIDE) -> tuple[int, int]:
    """(height, width) of an image resized so its shorter side is ``short`` pixels."""
    scale = short / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_short_side(rgb: np.ndarray, short: int = SHORT_SIDE) -> np.ndarray:
    """Resize so the shorter side is ``short`` pixels, keeping the aspect ratio."""
    h, w = rgb.shape[:2]
    if min(h, w) == short:
        return rgb
    new_h, new_w = short_side_size(h, w, short)
    return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if short < min(h, w) else cv2.INTER_LINEAR)


def random_crop_flip(rgb: np.ndarray, rng: np.random.Generator, crop: int = CROP) -> np.ndarray:
    """Section 2.1.3–2.1.4: a random ``crop``×``crop`` window, flipped horizontally with p = 0.5."""
    h, w = rgb.shape[:2]
    y = int(rng.integers(0, h - crop + 1))
    x = int(rng.integers(0, w - crop + 1))
    out = rgb[y:y + crop, x:x + crop]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.array(out, copy=True)  # writable and contiguous, for torch.as_tensor


def to_tensor(batch_uint8, mean: Sequence[float]):
    """uint8 [N, H, W, 3] (numpy or torch) → float [N, 3, H, W] in [0, 1] minus the mean pixel,
    channels_last in memory."""
    import torch

    x = torch.as_tensor(batch_uint8)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    x -= torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


class PixelTable:
    """:func:`to_tensor` followed by a cast to ``dtype``, as a table look-up: each channel's 256 values
    are computed once by to_tensor itself, so the result is the same to the bit, and a batch then
    takes one pass of ``cv2.LUT`` over its bytes instead of four over float32 copies."""

    def __init__(self, mean: Sequence[float], dtype):
        import torch

        ramp = torch.arange(256, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, 1, 256, 3).contiguous()
        values = to_tensor(ramp, mean).to(dtype)[0, :, 0, :].T.contiguous()  # [256, 3]
        bits = torch.int16 if values.element_size() == 2 else torch.int32
        self.dtype = dtype
        self._table = values.view(bits).numpy().reshape(256, 1, 3)

    def __call__(self, batch_uint8: np.ndarray):
        """uint8 [N, H, W, 3] → ``dtype`` [N, 3, H, W], channels_last in memory, on the CPU."""
        import torch

        batch = np.ascontiguousarray(batch_uint8)
        n, h, w, c = batch.shape
        out = cv2.LUT(batch.reshape(n * h, w, c), self._table)
        return torch.from_numpy(out).view(self.dtype).view(n, h, w, c).permute(0, 3, 1, 2)


# --- labelled samples --------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    image: str
    labels: tuple[str, ...]


def find_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursive, sorted), skipping hidden folders."""
    root = Path(root)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return found


def samples_from_folder(folder: Path) -> list[Sample]:
    """Images with a ``.txt`` sidecar, read the way the app writes them: ``image.ext.txt`` first,
    ``image.txt`` only when no other image shares the stem. Images without one are not returned."""
    images = find_images(folder)
    collided = {p for group in find_stem_collisions(images) for p in group}
    samples = []
    for image in images:
        sidecar = existing_txt_sidecar(image, image in collided)
        if sidecar is None:
            continue
        try:
            labels = read_txt(sidecar)
        except SidecarError as e:
            raise DatasetError(str(e)) from e
        samples.append(Sample(str(image), tuple(labels)))
    return samples


def write_manifest(path: Path, images: Iterable[tuple[str | os.PathLike, Sequence[str]]]) -> None:
    """A JSONL manifest of ``{"image": path, "labels": [...]}`` lines, as :func:`samples_from_manifest` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({"image": str(p), "labels": list(tags)}, ensure_ascii=False) + "\n" for p, tags in images),
        encoding="utf-8",
    )


def samples_from_manifest(manifest: Path) -> list[Sample]:
    """JSON lines ``{"image": path, "labels": [...]}``; relative paths are relative to the manifest."""
    samples = []
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{manifest}: cannot read manifest ({e})") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image, labels = row["image"], row["labels"]
            if not isinstance(image, str) or not isinstance(labels, list):
                raise TypeError("image must be a string and labels a list")
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{manifest}:{n}: not a {{\"image\", \"labels\"}} object ({e})") from e
        path = Path(image)
        if not path.is_absolute():
            path = manifest.parent / path
        samples.append(Sample(str(path), tuple(normalize_tags(labels))))
    return samples


def load_samples(paths: Iterable[str | os.PathLike]) -> list[Sample]:
    """Samples from folders of images with ``.txt`` sidecars and/or JSONL manifests."""
    samples: list[Sample] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            samples += samples_from_folder(p)
        elif p.is_file():
            samples += samples_from_manifest(p)
        else:
            raise DatasetError(f"{p}: no such folder or manifest")
    return samples


def is_held_out(image: str, fraction: float) -> bool:
    """Deterministic split: an image is held out for validation when a hash of its file name
    (not its folder, so a copied folder splits the same way) falls below ``fraction``."""
    digest = hashlib.sha1(Path(image).name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_samples(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """(train, validation) by :func:`is_held_out`, except that an image with a label no trained image
    has is trained on: held out, that label would never be learnt (a new tag on one image)."""
    held = [is_held_out(s.image, fraction) for s in samples]
    trained = {label for s, h in zip(samples, held, strict=True) if not h for label in s.labels}
    held = [h and all(label in trained for label in s.labels) for s, h in zip(samples, held, strict=True)]
    train = [s for s, h in zip(samples, held, strict=True) if not h]
    val = [s for s, h in zip(samples, held, strict=True) if h]
    return train, val


def label_vocabulary(samples: Iterable[Sample]) -> list[str]:
    """Sorted set of all labels in ``samples``."""
    return sorted({lab for s in samples for lab in s.labels})


def multi_hot(labels: Iterable[str], index: dict[str, int]) -> np.ndarray:
    row = np.zeros(len(index), dtype=np.float32)
    for lab in labels:
        if lab in index:
            row[index[lab]] = 1.0
    return row


class TrainingSet:
    """Map-style dataset for a DataLoader: decode → resize short side → random crop + flip.

    Returns (uint8 [CROP, CROP, 3], multi-hot targets). Mean subtraction and the float
    conversion happen on the batch in the training process (cheaper to send uint8 between
    processes). An unreadable image is replaced by a random other one, and counted.

    A key is an index, or (index, short side) from :class:`ScaledBatches`: the image's shorter side
    is then resized to that size and the crop is ``min(short side, crop)`` square, so a smaller size
    shows the whole scene smaller and a larger one zooms in."""

    def __init__(self, samples: list[Sample], labels: list[str], seed: int = 0, crop: int = CROP):
        self.samples = samples
        self.index = {lab: i for i, lab in enumerate(labels)}
        self.seed = seed
        self.crop = crop
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]):
        i, short = key if isinstance(key, tuple) else (key, self.crop)
        crop = min(short, self.crop)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        for _ in range(10):
            sample = self.samples[i]
            try:
                rgb = resize_short_side(read_image(sample.image, short), short)
                return random_crop_flip(rgb, rng, crop), multi_hot(sample.labels, self.index)
            except ImageError as e:
                warnings.warn(str(e), stacklevel=1)
                i = int(rng.integers(0, len(self.samples)))
        raise ImageError("ten unreadable images in a row; is the dataset readable?")


class ScaledBatches:
    """Batches of (index, short side) keys for :class:`TrainingSet`: scale augmentation.

    Each batch draws one short side log-uniformly in ``short_sides`` = (lo, hi), since a batch's
    crops must share a size: below the crop size the batch is whole scenes at that size (objects
    drawn smaller, as a larger image read at a small size shows them); above it, crops of a zoomed
    image. The paper trains at one scale (short side 256, section 2.1.3); this is ours. ``indices``
    is an index sampler (a RandomSampler, or a DistributedSampler for this rank)."""

    def __init__(self, indices, batch_size: int, short_sides: tuple[int, int], seed: int = 0,
                 drop_last: bool = True):
        lo, hi = short_sides
        if not MIN_TRAIN_SIDE <= lo <= hi:
            raise ValueError(f"training short sides must satisfy {MIN_TRAIN_SIDE} <= lo <= hi, got {lo}, {hi}")
        self.indices = indices
        self.batch_size = batch_size
        self.short_sides = (lo, hi)
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.indices, "set_epoch"):
            self.indices.set_epoch(epoch)

    def short_side(self, batch: int) -> int:
        lo, hi = self.short_sides
        rng = np.random.default_rng((self.seed, self.epoch, batch, 0x5CA1E))
        return lo if lo == hi else int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        batch: list[int] = []
        number = 0
        for i in self.indices:
            batch.append(int(i))
            if len(batch) == self.batch_size:
                yield self._keys(batch, number)
                batch, number = [], number + 1
        if batch and not self.drop_last:
            yield self._keys(batch, number)

    def _keys(self, batch: list[int], number: int) -> list[tuple[int, int]]:
        short = self.short_side(number)
        return [(i, short) for i in batch]


def compute_mean_pixel(samples: list[Sample], limit: int = 2000, seed: int = 0) -> list[float]:
    """Mean RGB in [0, 1] over (up to ``limit`` randomly chosen) training images, after the
    short-side resize. Section 2.1.2 uses all images; a sample of 2000 estimates the same value
    to about three decimals."""
    rng = np.random.default_rng(seed)
    chosen = samples if len(samples) <= limit else [samples[i] for i in rng.choice(len(samples), limit, replace=False)]
    total = np.zeros(3)
    count = 0
    for s in chosen:
        try:
            rgb = resize_short_side(read_image(s.image))
        except ImageError:
            continue
        total += rgb.reshape(-1, 3).sum(axis=0) / 255.0
        count += rgb.shape[0] * rgb.shape[1]
    if count == 0:
        raise DatasetError("no readable training image to compute the mean pixel from")
    return [float(v) for v in total / count]
