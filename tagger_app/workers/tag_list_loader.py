"""Reading an autocomplete tag list (a booru's is about 100,000 rows) off the GUI thread."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from mlcnn_core.tag_vocabulary import TagListError, read_tag_list


class _Signals(QObject):
    done = Signal(int, str, object, str)  # generation, path, tags, error ("" if none)


class _ReadJob(QRunnable):
    def __init__(self, signals: _Signals, generation: int, path: str):
        super().__init__()
        self.signals, self.generation, self.path = signals, generation, path

    def run(self) -> None:
        try:
            tags, error = read_tag_list(Path(self.path)), ""
        except TagListError as exc:
            tags, error = [], str(exc)
        self.signals.done.emit(self.generation, self.path, tags, error)


class TagListLoader(QObject):
    """Reads one tag list at a time; only the latest request's result is delivered."""

    loaded = Signal(str, object)  # path, tags
    failed = Signal(str, str)  # path, message

    def __init__(self, parent=None):
        super().__init__(parent)
        self._generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._signals = _Signals()
        self._signals.done.connect(self._on_done)

    def load(self, path: str) -> None:
        self._generation += 1
        self._pool.start(_ReadJob(self._signals, self._generation, path))

    def wait(self, msecs: int = 5000) -> bool:
        return self._pool.waitForDone(msecs)

    def _on_done(self, generation: int, path: str, tags: list[str], error: str) -> None:
        if generation != self._generation:
            return
        if error:
            self.failed.emit(path, error)
        else:
            self.loaded.emit(path, tags)
