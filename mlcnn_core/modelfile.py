"""One model = one ``.safetensors`` file: the weights, and a JSON card in the header's metadata.

The card holds everything needed to use the weights: format version, architecture spec, the
ordered label list, the training set's mean pixel, input size, prediction settings, the
threshold coefficients, and provenance (data, recipe, time, metrics).

Nothing here unpickles: a model file from a stranger can hold tensors and text, never code.
Every check names the file and the problem. Reading a card (:func:`read_card`) parses only the
header and does not import torch, so the GUI can show cards at start-up.
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

FORMAT = "mlcnn-tagger-model"
FORMAT_VERSION = 1
CARD_KEY = "mlcnn_card"
MAX_HEADER = 100 * 1024 * 1024


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""


class CardWarning(UserWarning):
    """A model file that loads, with a card holding keys this version does not know (a newer
    version's, or misspelt): they are kept, and written again by a fine-tune, but not used."""


def starter_model_path() -> Path | None:
    """The starter model shipped in ``resources/models/`` (or ``$MLCNN_STARTER_MODEL``), if present."""
    from .shipped import resources_dir

    override = os.environ.get("MLCNN_STARTER_MODEL")
    path = Path(override) if override else resources_dir() / "models" / "starter.safetensors"
    return path if path.is_file() else None


def replay_path_for(model_path: str | os.PathLike) -> Path:
    """Where a model's replay set lives (replay.py): ``NAME.safetensors`` → ``NAME.replay.safetensors``."""
    p = Path(model_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".replay.safetensors")


def _read_header(path: Path) -> tuple[dict, int, int]:
    """The safetensors JSON header, its length and the file size, after checking the framing.

    The framing is tried first: a valid safetensors file may well start with byte 0x80 (a header
    length of 128 mod 256). Only a file that fails it is told apart as a pickle or a zip."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # opening a FIFO would wait for a writer for ever
            raise ModelFileError(f"{path}: not a model file (a folder, a pipe or a device)")
        size = info.st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            raw = f.read(n) if 0 <= n <= MAX_HEADER and n + 8 <= size else b""
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read model file ({e.strerror or e})") from e
    try:
        header = json.loads(raw) if raw[:1] == b"{" else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        header = None
    if isinstance(header, dict):
        return header, n, size
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise ModelFileError(
            f"{path}: this is a pickle or a PyTorch zip checkpoint, not a .safetensors model file; "
            "it is refused because unpickling can run code")
    if len(head) < 8:
        raise ModelFileError(f"{path}: file is too short to be a .safetensors model ({size} bytes)")
    if n > MAX_HEADER or n + 8 > size:
        raise ModelFileError(f"{path}: not a .safetensors file, or truncated (header of {n} bytes in a file of {size})")
    raise ModelFileError(f"{path}: not a .safetensors file (unreadable header)")


def validate_card(card: object, where: str) -> dict:
    """Check a card's structure; return it. ``where`` names the file in messages."""
    from .threshold import Threshold  # numpy only

    def fail(problem: str):
        raise ModelFileError(f"{where}: {problem}")

    if not isinstance(card, dict):
        fail("model card is not a JSON object")
    if card.get("format") != FORMAT:
        fail(f"not an MLCNN Tagger model (card format is {card.get('format')!r}, expected {FORMAT!r})")
    version = card.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        fail(f"model format version {version!r} is newer than this program reads ({FORMAT_VERSION}); update it")
    labels = card.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        fail("card has no label list")
    if len(set(labels)) != len(labels):
        fail("card's label list has duplicates")
    mean = card.get("mean")
    if not (isinstance(mean, list) and len(mean) == 3 and all(isinstance(v, (int, float)) for v in mean)):
        fail("card's mean pixel is not three numbers")
    try:
        from .card import CardFields, PredictConfig, card_reading, check_about
        from .spec import validate_spec
        validate_spec(card.get("arch"))
        check_about(card)
        # a field that is absent takes its defaults; one that is present is checked, null included
        if "prediction" in card:
            CardFields(card["prediction"], "prediction")  # from_dict alone reads null as the defaults
            PredictConfig.from_dict(card["prediction"])
        for key in ("threshold", "baseline_threshold", "summed_threshold"):
            if key in card:
                Threshold.from_dict(card[key], len(labels), key)
        if "single_pass" in card:  # the one-pass reading of a card with a second pass (predict.py)
            single = CardFields(card["single_pass"], "single_pass")
            Threshold.from_dict(single.d.get("threshold"), len(labels), "single_pass.threshold")
            single.numbers("rescore", None)
            card_reading(card, single_pass=True)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        fail(f"bad model card: {e}")
    return card


def read_card(path: str | os.PathLike) -> dict:
    """The card of a model file, checked, without loading weights."""
    path = Path(path)
    header, _, _ = _read_header(path)
    meta = header.get("__metadata__") or {}
    if CARD_KEY not in meta:
        raise ModelFileError(f"{path}: a .safetensors file without an MLCNN Tagger card (no '{CARD_KEY}' metadata)")
    try:
        card = json.loads(meta[CARD_KEY])
    except RecursionError:
        raise ModelFileError(f"{path}: model card is nested too deeply to be a card") from None
    except ValueError as e:
        raise ModelFileError(f"{path}: model card is not valid JSON ({e})") from e
    validate_card(card, str(path))
    from .card import unknown_keys

    unknown = unknown_keys(card)
    if unknown:
        warnings.warn(f"{path}: the card has keys this version does not know, kept but not used (written by a "
                      f"newer version, or misspelt): {', '.join(unknown)}", CardWarning, stacklevel=2)
    return card


@dataclass
class TaggerModel:
    """A network with its card. ``path`` is where it was loaded from (None when built in memory)."""

    net: object          # mlcnn_core.model.MLCNN
    card: dict
    path: Path | None = None

    @property
    def labels(self) -> list[str]:
        return self.card["labels"]

    @property
    def mean(self) -> list[float]:
        return self.card["mean"]

    @property
    def name(self) -> str:
        return self.card.get("name") or (self.path.stem if self.path else "unsaved model")


def new_card(arch_spec: dict, labels: list[str], mean: list[float], **extra) -> dict:
    """A card for a fresh model; prediction settings and threshold take their defaults."""
    from .card import PredictConfig
    from .threshold import Threshold

    card = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": extra.pop("name", ""),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "arch": arch_spec,
        "labels": list(labels),
        "mean": [float(v) for v in mean],
        "input": {"short_side": 256, "crop": 256},
        "prediction": PredictConfig().to_dict(),
        "threshold": Threshold(kind="global", bias=0.0, at_least_one=True).to_dict(),
    }
    card.update(extra)
    return card


def new_model(arch: str = "compact", labels: list[str] | None = None, mean: list[float] | None = None,
              norm: bool = True, init: str = "default", **card_extra) -> TaggerModel:
    """A freshly initialised model with a valid card (e.g. for training from scratch, or tests)."""
    from .model import build_model
    from .spec import arch_spec

    labels = labels or ["label"]
    spec = arch_spec(arch, norm)
    net = build_model(spec, len(labels), init=init)
    return TaggerModel(net, new_card(spec, labels, mean or [0.5, 0.5, 0.5], **card_extra))


def add_labels(model: TaggerModel, new: list[str]) -> None:
    """Grow ``model`` by output rows for ``new`` labels, appended after the old ones (old rows and
    order kept), and keep its card consistent: a linear threshold gets weight 0 for each new label."""
    from .model import grow_labels

    if not new:
        return
    grow_labels(model.net, len(new))
    card = dict(model.card, labels=model.labels + list(new))
    def grown(threshold: dict) -> dict:
        if threshold.get("label_scales"):
            threshold = dict(threshold, label_scales=list(threshold["label_scales"]) + [1.0] * len(new))
        if threshold.get("kind") != "linear":
            return threshold
        return dict(threshold, weights=list(threshold["weights"]) + [0.0] * len(new))

    for key in ("threshold", "baseline_threshold", "summed_threshold"):
        if key in card:
            card[key] = grown(card[key])
    if "single_pass" in card:
        card["single_pass"] = dict(card["single_pass"], threshold=grown(card["single_pass"]["threshold"]))
    model.card = card


def save_model(model: TaggerModel, path: str | os.PathLike) -> Path:
    """Write atomically (temporary file, fsync, rename): a killed process leaves the old file."""
    path = Path(path)
    card = dict(model.card)
    if len(card["labels"]) != model.net.num_labels:
        raise ValueError(f"card has {len(card['labels'])} labels, network has {model.net.num_labels} outputs")
    validate_card(card, str(path))
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    broken = next((k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()), None)
    if broken is not None:
        raise ModelFileError(f"{path}: not written: tensor {broken} holds NaN or infinite values")
    return write_safetensors(tensors, path, {CARD_KEY: json.dumps(card)})


def write_safetensors(tensors: dict, path: Path, metadata: dict[str, str]) -> Path:
    """Write a ``.safetensors`` file atomically (temporary file, fsync, rename): a killed process
    leaves the old file. Readable by others as the umask allows, like any document."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files that earlier :func:`save_model` calls for ``path`` left when they
    were killed (``.NAME.PID.tmp`` of a process that no longer runs); return them."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if not pid.isdigit() or _process_exists(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _process_exists(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would end the process there: keep every temporary file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def load_model(path: str | os.PathLike) -> TaggerModel:
    """Load and check a model file: framing, card, tensor names and shapes, then the weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model import MLCNN

    path = Path(path)
    card = read_card(path)
    header, n, size = _read_header(path)
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        end = max((int(v["data_offsets"][1]) for v in entries.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelFileError(f"{path}: malformed tensor table in the header ({e})") from e
    if 8 + n + end != size:
        raise ModelFileError(f"{path}: truncated or padded model file (expected {8 + n + end} bytes, found {size})")
    import torch

    with torch.device("meta"):  # shapes only: a card's architecture allocates nothing before the check
        expected = {k: tuple(v.shape) for k, v in MLCNN(card["arch"], len(card["labels"])).state_dict().items()}
    found = {k: tuple(v.get("shape", ())) for k, v in entries.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"tensor {k} has shape {list(found[k])}, the card's architecture needs {list(expected[k])}")
        raise ModelFileError(f"{path}: weights do not match the card ({'; '.join(parts)})")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: cannot read weights ({e})") from e
    net = MLCNN(card["arch"], len(card["labels"]))
    net.load_state_dict(tensors, strict=True)
    net.eval()
    return TaggerModel(net, card, path)
