"""Keeping a trained model (moving its file into the kept models' folder, reading its card) and
listing the kept models, off the GUI thread: one job at a time, in the order asked."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from tagger_app.models.model_registry import KeptModel, ModelRegistry


class _Signals(QObject):
    listed = Signal(int, object)  # generation, list[KeptModel]
    kept = Signal(object, str)  # KeptModel or None, error ("" if none)


class _ListJob(QRunnable):
    def __init__(self, signals: _Signals, registry: ModelRegistry, generation: int):
        super().__init__()
        self.signals, self.registry, self.generation = signals, registry, generation

    def run(self) -> None:
        try:
            models = self.registry.models()
        except OSError:  # the folder went away meanwhile: nothing kept to show
            models = []
        self.signals.listed.emit(self.generation, models)


class _KeepJob(QRunnable):
    def __init__(self, signals: _Signals, registry: ModelRegistry, source: str, stem: str, checkpoint: str):
        super().__init__()
        self.signals, self.registry = signals, registry
        self.source, self.stem, self.checkpoint = source, stem, checkpoint

    def run(self) -> None:
        try:
            kept = self.registry.keep(self.source, stem=self.stem)
        except (OSError, ValueError) as exc:
            self.signals.kept.emit(None, str(exc))
            return
        checkpoint_dir = Path(self.checkpoint).parent if self.checkpoint else None
        if checkpoint_dir is not None and checkpoint_dir.name.endswith(".ckpt"):
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # only a cancelled run needs it, to resume
        self.signals.kept.emit(kept, "")


class ModelKeeper(QObject):
    """Runs the registry's disk work; only the latest listing is delivered."""

    listed = Signal(object)  # list[KeptModel], newest first
    kept = Signal(object)  # KeptModel
    keepFailed = Signal(str)

    def __init__(self, registry: ModelRegistry, parent: QObject | None = None):
        super().__init__(parent)
        self.registry = registry
        self._generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._signals = _Signals()
        self._signals.listed.connect(self._on_listed)
        self._signals.kept.connect(self._on_kept)

    def list_models(self) -> None:
        self._generation += 1
        self._pool.start(_ListJob(self._signals, self.registry, self._generation))

    def keep(self, source: str, stem: str, checkpoint: str = "") -> None:
        """Move the trained model ``source`` into the registry; with ``checkpoint``, remove the run's
        checkpoint folder (``<model>.ckpt``) once it is kept."""
        self._pool.start(_KeepJob(self._signals, self.registry, source, stem, checkpoint))

    def wait(self, msecs: int = 5000) -> bool:
        return self._pool.waitForDone(msecs)

    def _on_listed(self, generation: int, models: list[KeptModel]) -> None:
        if generation == self._generation:
            self.listed.emit(models)

    def _on_kept(self, kept: KeptModel | None, error: str) -> None:
        if kept is None:
            self.keepFailed.emit(error)
        else:
            self.kept.emit(kept)
