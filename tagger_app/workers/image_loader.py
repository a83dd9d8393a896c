"""Decoding off the GUI thread: thumbnails (scaled decode, LRU cache in memory, optionally the shared
cache on disk of thumbnail_cache.py) and full images for the viewer."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QImage, QImageReader, QPixmap

from tagger_app.workers.thumbnail_cache import ThumbnailDiskCache

THUMBNAIL_SIZE = 128
MAX_QUEUED = 256  # thumbnail decodes waiting at most; about ten screens of the grid
VIEWER_MAX_SIDE = 4096


def decode_image(path: Path, max_side: int | None) -> QImage:
    """Decode ``path`` (first frame, EXIF-oriented), shrunk while decoding so that its longer side
    is at most ``max_side``. Returns a null QImage when the file cannot be read. Thread-safe."""
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    size = reader.size()
    if max_side and size.isValid() and max(size.width(), size.height()) > max_side:
        reader.setScaledSize(size.scaled(QSize(max_side, max_side), Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    if image.isNull():
        image = _decode_with_pillow(path, max_side)
    return image


def _decode_with_pillow(path: Path, max_side: int | None) -> QImage:
    try:
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            if max_side:
                im.draft("RGB", (max_side, max_side))
            im = ImageOps.exif_transpose(im).convert("RGBA")
            if max_side:
                im.thumbnail((max_side, max_side))
            data = im.tobytes()
            return QImage(data, im.width, im.height, 4 * im.width, QImage.Format.Format_RGBA8888).copy()
    except Exception:  # noqa: BLE001 - any decoder failure means "unreadable" here
        return QImage()


class _DecodeSignals(QObject):
    decoded = Signal(int, object, QImage)  # generation, key, image


class _DecodeJob(QRunnable):
    def __init__(self, signals: _DecodeSignals, generation: int, key, path: Path, max_side: int | None, skip=None,
                 disk: ThumbnailDiskCache | None = None):
        super().__init__()
        self.signals, self.generation, self.key = signals, generation, key
        self.path, self.max_side, self.skip, self.disk = path, max_side, skip, disk

    def run(self) -> None:
        if self.skip is not None and self.key in self.skip:
            self.skip.discard(self.key)  # no longer wanted: nothing to decode, nothing to deliver
            return
        image = self.disk.read(self.path) if self.disk is not None else None
        if image is None:
            image = decode_image(self.path, self.max_side)
            if self.disk is not None:
                self.disk.write(self.path, image)
        self.signals.decoded.emit(self.generation, self.key, image)


class ThumbnailLoader(QObject):
    """Thumbnails by key, decoded on a thread pool, newest request first; bounded LRU cache of pixmaps,
    and with ``disk`` thumbnails kept on disk between sessions (``size`` must be at most 128 then)."""

    ready = Signal(object)  # key
    failed = Signal(object)
    drained = Signal()  # the last queued decode arrived

    def __init__(self, size: int = THUMBNAIL_SIZE, cache_limit: int = 1500, threads: int = 2, parent=None,
                 disk: ThumbnailDiskCache | None = None):
        super().__init__(parent)
        self.size = size
        self.disk = disk
        self.cache_limit = cache_limit
        self._cache: OrderedDict[object, QPixmap] = OrderedDict()
        self._pending: OrderedDict[object, None] = OrderedDict()  # queued decodes, oldest request first
        self._skip: set = set()  # queued decodes no longer wanted (read by the pool's threads)
        self._failed: set = set()
        self._generation = 0
        self._priority = itertools.count()
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._signals = _DecodeSignals()
        self._signals.decoded.connect(self._on_decoded)

    def thumbnail(self, key, path: Path) -> QPixmap | None:
        """The cached thumbnail, or None after queueing a decode (``ready`` follows)."""
        pixmap = self._cache.get(key)
        if pixmap is not None:
            self._cache.move_to_end(key)
            return pixmap
        if key not in self._pending and key not in self._failed:
            self._skip.discard(key)
            self._pending[key] = None
            job = _DecodeJob(self._signals, self._generation, key, path, self.size, self._skip, self.disk)
            # QThreadPool runs higher priorities first: the latest request is what is on screen now
            self._pool.start(job, min(next(self._priority), 2**31 - 1))
            if len(self._pending) > MAX_QUEUED:
                self._drop_stale_requests()
        return None

    def _drop_stale_requests(self) -> None:
        """After a fast scroll, skip the oldest queued decodes (rows long gone from the screen);
        a row that is painted again asks again."""
        while len(self._pending) > MAX_QUEUED // 2:
            key, _ = self._pending.popitem(last=False)
            self._skip.add(key)

    def has_failed(self, key) -> bool:
        return key in self._failed

    def reset(self) -> None:
        """Forget everything (a new folder): queued decodes are dropped, late results ignored."""
        self._generation += 1
        self._pool.clear()
        self._pending.clear()
        self._skip.clear()
        self._failed.clear()
        self._cache.clear()

    def wait(self, msecs: int = 5000) -> bool:
        return self._pool.waitForDone(msecs)

    def _on_decoded(self, generation: int, key, image: QImage) -> None:
        if generation != self._generation:
            return
        self._pending.pop(key, None)
        if image.isNull():
            self._failed.add(key)
            self.failed.emit(key)
        else:
            self._cache[key] = QPixmap.fromImage(image)
            while len(self._cache) > self.cache_limit:
                self._cache.popitem(last=False)
            self.ready.emit(key)
        if not self._pending:
            self.drained.emit()


class FullImageLoader(QObject):
    """Decodes the image the viewer shows; only the latest request's result is delivered."""

    loaded = Signal(object, QImage)  # key, image (null when unreadable)

    def __init__(self, max_side: int = VIEWER_MAX_SIDE, parent=None):
        super().__init__(parent)
        self.max_side = max_side
        self._generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._signals = _DecodeSignals()
        self._signals.decoded.connect(self._on_decoded)

    def load(self, key, path: Path) -> None:
        self._generation += 1
        self._pool.clear()
        self._pool.start(_DecodeJob(self._signals, self._generation, key, path, self.max_side))

    def wait(self, msecs: int = 5000) -> bool:
        return self._pool.waitForDone(msecs)

    def _on_decoded(self, generation: int, key, image: QImage) -> None:
        if generation == self._generation:
            self.loaded.emit(key, image)
