"""A replay set: what the model's own training scenes look like to its head, shipped beside it.

A person's folder tagged only with their own words says, at every position of every image, "none of
the labels the model knew". A head fine-tuned on it alone forgets them: on the realistic benchmark
(a clip-art folder tagged with 12 new topic words, BENCHMARKS.md) mix-ood accuracy fell from 0.425
to 0.03 after 100 images. Issue 28 lists "a small replay set of the training artists shipped with
the model (say ≤ 5 MB)" among what holds the old knowledge.

The head of the test form learns from the frozen trunk's maps, pooled over random 8×8-cell crops
(finetune.py): so a crop of a training scene is, to the head, one vector of the trunk's width (256
numbers for ``compact``) and its labels. The replay set is a few thousand such vectors (float16) with
their labels, taken from the scenes the model was trained on, in a ``.safetensors`` file named after
the model (``starter.safetensors`` → ``starter.replay.safetensors``). Each step of a head fine-tune
then adds a batch of replayed crops to the person's, with their labels and none of the new ones, so
the old labels keep their place on scenes like those and the new labels learn where they are absent.

The vectors are only valid for the trunk that made them: the file records the trunk's SHA-256 and a
fine-tune that moves the trunk (``--learn block`` or ``all``) does not use it. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import Sample
from .modelfile import TaggerModel, replay_path_for, write_safetensors

__all__ = ["Replay", "ReplayError", "load_replay", "make_replay", "replay_path_for", "save_replay",
           "trunk_sha256"]

FORMAT = "mlcnn-replay"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024


class ReplayError(ValueError):
    """A replay file that cannot be used; the message names the file and the problem."""


@dataclass
class Replay:
    """Pooled trunk features of crops of training scenes [n, C] and their labels [n, len(labels)]."""

    features: torch.Tensor
    targets: torch.Tensor
    labels: list[str]
    trunk_sha256: str

    def targets_for(self, labels: list[str]) -> torch.Tensor:
        """The targets laid out for a model's ``labels`` (new labels 0); every replay label must be there."""
        missing = [lab for lab in self.labels if lab not in labels]
        if missing:
            raise ReplayError(f"the model lacks the replay set's labels {missing[:3]}")
        out = torch.zeros(len(self.targets), len(labels))
        out[:, [labels.index(lab) for lab in self.labels]] = self.targets.float()
        return out


def trunk_sha256(net: torch.nn.Module) -> str:
    """A fingerprint of the trunk's weights (and batch-norm statistics), as float32 bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.trunk.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def make_replay(model: TaggerModel, samples: list[Sample], crops_per_view: int = 1, seed: int = 0,
                device: str = "cpu", chunk: int = 64) -> Replay:
    """One pooled 8×8-cell crop per view (each image at the frozen fine-tune's short sides, and
    mirrored; ``crops_per_view`` of them) of ``samples``, the model's own training scenes."""
    from .finetune import CROP_CELLS, FrozenMethod, _crops, trainable_start, training_views

    net = model.net.eval()
    start = trainable_start(net, "head")
    index = {lab: i for i, lab in enumerate(model.labels)}
    rng = np.random.default_rng(seed)
    features, targets = [], []
    for first in range(0, len(samples), chunk):
        views = training_views(net, start, model.mean, samples[first:first + chunk], index, FrozenMethod(),
                               torch.device(device))
        for _ in range(crops_per_view):
            if views.maps:
                features.append(_crops(views.maps, rng, CROP_CELLS).mean(dim=(2, 3)).half().float())  # as stored
                targets.append(views.targets.to(torch.uint8))
    if not features:
        raise ReplayError("no readable training image to make a replay set from")
    return Replay(torch.cat(features), torch.cat(targets), list(model.labels), trunk_sha256(net))


def save_replay(replay: Replay, path: str | os.PathLike) -> Path:
    """Write atomically: a killed process leaves the old file."""
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "labels": json.dumps(replay.labels),
            "trunk_sha256": replay.trunk_sha256}
    return write_safetensors({"features": replay.features.half().contiguous(),
                              "targets": replay.targets.to(torch.uint8).contiguous()}, Path(path), meta)


def load_replay(path: str | os.PathLike, net: torch.nn.Module | None = None) -> Replay:
    """Read and check a replay file; with ``net``, also that it was made by this trunk."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        if not path.is_file():
            raise ReplayError(f"{path}: no such replay file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ReplayError(f"{path}: replay file over {MAX_FILE_BYTES >> 20} MiB")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ReplayError(f"{path}: not a replay file (format {meta.get('format')!r})")
            if meta.get("format_version") != str(FORMAT_VERSION):
                raise ReplayError(f"{path}: replay format version {meta.get('format_version')!r} is not "
                                  f"{FORMAT_VERSION}")
            if set(f.keys()) != {"features", "targets"}:
                raise ReplayError(f"{path}: replay tensors {sorted(f.keys())}, not features and targets")
            features, targets = f.get_tensor("features"), f.get_tensor("targets")
        labels = json.loads(meta.get("labels", "null"))
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, ReplayError):
            raise
        raise ReplayError(f"{path}: cannot read replay file ({e})") from e
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise ReplayError(f"{path}: the replay file's labels are not a list of names")
    if features.ndim != 2 or targets.shape != (len(features), len(labels)) or not len(features):
        raise ReplayError(f"{path}: replay tensors of shapes {list(features.shape)} and {list(targets.shape)} "
                          f"do not fit {len(labels)} labels")
    replay = Replay(features.float(), targets, labels, str(meta.get("trunk_sha256", "")))
    if net is not None:
        width = net.head.fcs[0].in_features
        if features.shape[1] != width:
            raise ReplayError(f"{path}: replay features of width {features.shape[1]}, the head reads {width}")
        if replay.trunk_sha256 != trunk_sha256(net):
            raise ReplayError(f"{path}: made by another trunk than this model's")
    return replay
