"""What a training run from the app trains on: the confirmed images of the open library and of the
libraries ticked beside it, split as ``mlcnn train`` will split them.

No Qt here: the training panel shows what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlcnn_core.data import Sample, split_samples, write_manifest
from mlcnn_core.library import (
    LIBRARY_DIRNAME,
    LIBRARY_FILENAME,
    Library,
    LibraryError,
    fallback_library_path,
    user_data_dir,
)


def training_runs_dir() -> Path:
    """Where each run's manifests, events and model file go, one folder per run."""
    return user_data_dir() / "training-runs"


def model_stem(finetune: bool) -> str:
    """How a run's model file and the copy kept of it are named: ``fine-tuned`` or ``trained``."""
    return "fine-tuned" if finetune else "trained"


@dataclass
class TrainingSource:
    """Confirmed images of one library: (absolute path, the person's tags)."""

    folder: Path
    images: list[tuple[Path, list[str]]]


@dataclass
class LabelCounts:
    """Images to train on and held out, in all and per label."""

    n_train: int = 0
    n_held_out: int = 0
    train: dict[str, int] = field(default_factory=dict)
    held_out: dict[str, int] = field(default_factory=dict)


def existing_library(folder: str | Path) -> Library | None:
    """The library of a folder the person opened before, or None (never creates one)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if not (folder / LIBRARY_DIRNAME / LIBRARY_FILENAME).is_file() and not fallback_library_path(folder).is_file():
        return None
    try:
        return Library.open(folder)
    except LibraryError:
        return None


def read_sources(library: Library | None, other_folders: list[str]) -> tuple[list[TrainingSource], list[str]]:
    """The confirmed images of ``library`` and of the ``other_folders`` that have a library; and the
    folders that have none (or are gone)."""
    sources, missing = [], []
    if library is not None:
        sources.append(TrainingSource(library.root, library.confirmed_images()))
    for folder in other_folders:
        other = existing_library(folder)
        if other is None:
            missing.append(folder)
            continue
        try:
            sources.append(TrainingSource(other.root, other.confirmed_images()))
        finally:
            other.close()
    return sources, missing


def write_manifests(run_dir: Path, sources: list[TrainingSource]) -> list[str]:
    """One ``confirmed-<i>.jsonl`` manifest in ``run_dir`` per source with images; their paths."""
    manifests = []
    for i, source in enumerate(sources):
        if source.images:
            path = run_dir / f"confirmed-{i}.jsonl"
            write_manifest(path, source.images)
            manifests.append(str(path))
    return manifests


def count_labels(sources: list[TrainingSource], val_fraction: float) -> LabelCounts:
    """Split as ``mlcnn train`` will (by file name; an image with a label no trained image has is
    trained on) and count each label's images on either side."""
    samples = [Sample(str(image), tuple(tags)) for source in sources for image, tags in source.images]
    train_samples, held_samples = split_samples(samples, val_fraction)
    counts = LabelCounts(len(train_samples), len(held_samples))
    for part, per_label in ((train_samples, counts.train), (held_samples, counts.held_out)):
        for sample in part:
            for tag in sample.labels:
                per_label[tag] = per_label.get(tag, 0) + 1
    return counts
