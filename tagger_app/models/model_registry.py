"""The kept models: one ``.safetensors`` file each in ``user_data_dir("mlcnn-tagger")/models/``.

Every fine-tune the person keeps lands here; any of them can be made the active model again. Cards
are read from the file header only. :func:`mlcnn_core.modelfile.read_card` validates the card's
architecture with ``mlcnn_core.model``, which imports torch, so listing models here parses the
header itself and leaves the full check to the predictor worker that loads the model.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt

CARD_KEY = "mlcnn_card"
MAX_HEADER_BYTES = 100 * 1024 * 1024


def models_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("mlcnn-tagger", appauthor=False)) / "models"


def read_card_header(path: str | Path) -> dict:
    """The card in a model file's safetensors header, without loading weights or importing torch.

    Raises ValueError naming the file when there is no readable card."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{path}: too short to be a model file")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise ValueError(f"{path}: not a .safetensors model file")
            header = json.loads(f.read(n))
        card = json.loads(header["__metadata__"][CARD_KEY])
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from e
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: no MLCNN Tagger model card in this file ({e})") from e
    if not isinstance(card, dict) or not isinstance(card.get("labels"), list):
        raise ValueError(f"{path}: the model card has no label list")
    return card


@dataclass
class KeptModel:
    path: Path
    card: dict

    @property
    def name(self) -> str:
        # A fine-tune inherits its parent's card name; the file name tells kept models apart.
        return self.path.stem

    @property
    def labels(self) -> list[str]:
        return list(self.card.get("labels", []))

    @property
    def saved(self) -> str:
        """When the file was written (a fine-tune's card keeps its parent's ``created``)."""
        try:
            stamp = self.path.stat().st_mtime
        except OSError:
            return ""
        return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")

    @property
    def arch(self) -> str:
        arch = self.card.get("arch")
        return str(arch.get("name", "?")) if isinstance(arch, dict) else "?"

    @property
    def provenance(self) -> dict:
        value = self.card.get("provenance")
        return value if isinstance(value, dict) else {}

    def summary(self) -> str:
        prov = self.provenance
        parts = [f"{len(self.labels)} labels", self.arch]
        if prov.get("init"):
            parts.append(f"fine-tuned from {Path(str(prov['init'])).name}")
        if prov.get("epochs_run") is not None:
            parts.append(f"{prov['epochs_run']} epochs")
        if prov.get("train_seconds") is not None:
            parts.append(f"{prov['train_seconds']:.0f} s")
        return ", ".join(parts)


class ModelRegistry:
    """The folder of kept models."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else models_dir()

    def models(self) -> list[KeptModel]:
        """Kept models, newest first; files without a readable card are skipped."""
        if not self.root.is_dir():
            return []
        kept = []
        for path in self.root.glob("*.safetensors"):
            try:
                kept.append(KeptModel(path, read_card_header(path)))
            except ValueError:
                continue
        kept.sort(key=lambda m: (m.saved, m.path.name), reverse=True)
        return kept

    def new_model_path(self, stem: str) -> Path:
        """A free path ``<root>/<stem>-<UTC time>.safetensors`` for a new model."""
        stem = re.sub(r"[^\w.-]+", "-", stem).strip("-") or "model"
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        path = self.root / f"{stem}-{stamp}.safetensors"
        n = 2
        while path.exists():
            path = self.root / f"{stem}-{stamp}-{n}.safetensors"
            n += 1
        return path

    def keep(self, source: str | Path, stem: str = "fine-tuned") -> KeptModel:
        """Move a freshly trained model file into the folder; returns it as kept."""
        source = Path(source)
        card = read_card_header(source)
        target = self.new_model_path(stem)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
        return KeptModel(target, card)


class KeptModelsModel(QAbstractTableModel):
    """The kept models as a table: name, when saved, summary; marks the active one."""

    COLUMNS = ("Model", "Saved", "About")
    PathRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, registry: ModelRegistry, parent: QObject | None = None):
        super().__init__(parent)
        self.registry = registry
        self._models: list[KeptModel] = []
        self._active = ""

    def refresh(self) -> None:
        self.beginResetModel()
        self._models = self.registry.models()
        self.endResetModel()

    def set_active(self, path: str | Path | None) -> None:
        self._active = str(Path(path).resolve()) if path else ""
        if self._models:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._models) - 1, 0))

    def model_at(self, row: int) -> KeptModel | None:
        return self._models[row] if 0 <= row < len(self._models) else None

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._models)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        model = self.model_at(index.row())
        if model is None:
            return None
        active = str(model.path.resolve()) == self._active
        if role == Qt.ItemDataRole.DisplayRole:
            if index.column() == 0:
                return ("● " if active else "") + model.name
            if index.column() == 1:
                return model.saved
            return model.summary()
        if role == Qt.ItemDataRole.ToolTipRole:
            return str(model.path)
        if role == Qt.ItemDataRole.FontRole and active:
            from PySide6.QtGui import QFont

            font = QFont()
            font.setBold(True)
            return font
        if role == self.PathRole:
            return str(model.path)
        return None
