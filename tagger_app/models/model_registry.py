"""The kept models: one ``.safetensors`` file each in ``user_data_dir("mlcnn-tagger")/models/``.

Every fine-tune the person keeps lands here; any of them can be made the active model again. Cards
are read from the file header only, with :func:`mlcnn_core.modelfile.read_card`, which checks them
without importing torch (tests/test_card.py holds it to that); the weights are checked by the
predictor worker that loads the model.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QModelIndex, QObject, Qt

from mlcnn_core.library import user_data_dir
from mlcnn_core.modelfile import read_card, replay_path_for
from tagger_app.models.column_table_model import ColumnTableModel


def models_dir() -> Path:
    return user_data_dir() / "models"


@dataclass
class KeptModel:
    """A kept model as read from disk (by the registry, off the GUI thread): the table shows it without
    touching the file again."""

    path: Path
    card: dict
    saved: str = ""  # when the file was written (a fine-tune's card keeps its parent's ``created``)
    real_path: str = ""  # the path with links resolved, to tell the active model

    @classmethod
    def read(cls, path: Path, card: dict) -> KeptModel:
        try:
            saved = dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
        except OSError:
            saved = ""
        return cls(path, card, saved, str(path.resolve()))

    @property
    def name(self) -> str:
        # A fine-tune inherits its parent's card name; the file name tells kept models apart.
        return self.path.stem

    @property
    def labels(self) -> list[str]:
        return list(self.card.get("labels", []))

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
                kept.append(KeptModel.read(path, read_card(path)))
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
        """Move a freshly trained model file into the folder, under its own name when that is free;
        returns it as kept."""
        source = Path(source)
        card = read_card(source)
        target = self.root / source.name
        if target.exists() or not re.fullmatch(r"[\w.-]+\.safetensors", source.name):
            target = self.new_model_path(stem)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
        if replay_path_for(source).is_file():  # its replay set goes with it, for its own fine-tunes
            shutil.move(str(replay_path_for(source)), str(replay_path_for(target)))
        return KeptModel.read(target, card)


class KeptModelsModel(ColumnTableModel):
    """The kept models as a table: name, when saved, summary; marks the active one. Its rows come from
    :meth:`ModelRegistry.models`, read off the GUI thread (workers/model_keeper.py)."""

    COLUMNS = ("Model", "Saved", "About")
    PathRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.rows: list[KeptModel] = []
        self._active = ""

    def set_models(self, models: list[KeptModel]) -> None:
        self.beginResetModel()
        self.rows = list(models)
        self.endResetModel()

    def set_active(self, path: str | Path | None) -> None:
        self._active = str(Path(path).resolve()) if path else ""
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, 0))

    def model_at(self, row: int) -> KeptModel | None:
        return self.rows[row] if 0 <= row < len(self.rows) else None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        model = self.model_at(index.row())
        if model is None:
            return None
        active = model.real_path == self._active
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
