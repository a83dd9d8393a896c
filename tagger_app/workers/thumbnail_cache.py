"""Thumbnails kept on disk in the freedesktop.org layout, shared with file managers.

The Thumbnail Managing Standard: ``$XDG_CACHE_HOME/thumbnails/normal/<md5 of the file's URI>.png``
(``~/.cache/thumbnails`` by default), at most 128 × 128 pixels, with the PNG text keys ``Thumb::URI``
and ``Thumb::MTime`` (the file's modification time in whole seconds). A thumbnail whose URI or
time does not match its file is stale and made again. Files are written to a temporary name and
renamed, readable by their owner only, in a folder only the owner can enter. Reads and writes
happen on the decoding threads; a cache that cannot be read or written is simply not used.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from PySide6.QtGui import QImage, QImageReader

NORMAL_SIZE = 128


def default_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "thumbnails"


class ThumbnailDiskCache:
    """Thumbnails of up to 128 px in ``root``/normal (thread-safe: every call stands alone)."""

    def __init__(self, root: Path | None = None):
        self.folder = (root or default_cache_root()) / "normal"

    @staticmethod
    def _uri(path: Path) -> str:
        return path.absolute().as_uri()

    def _entry(self, uri: str) -> Path:
        return self.folder / (hashlib.md5(uri.encode()).hexdigest() + ".png")

    def read(self, path: Path) -> QImage | None:
        """The cached thumbnail of ``path``, or None when there is none or it is stale."""
        try:
            mtime = int(path.stat().st_mtime)
            uri = self._uri(path)
            entry = self._entry(uri)
            if not entry.is_file():
                return None
        except (OSError, ValueError):
            return None
        image = QImageReader(str(entry)).read()
        if image.isNull() or image.text("Thumb::URI") != uri or image.text("Thumb::MTime") != str(mtime):
            return None
        return image

    def write(self, path: Path, image: QImage) -> None:
        """Keep ``image`` (at most 128 px) as the thumbnail of ``path``; failures are ignored."""
        if image.isNull() or max(image.width(), image.height()) > NORMAL_SIZE:
            return
        try:
            mtime = int(path.stat().st_mtime)
            uri = self._uri(path)
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            entry = self._entry(uri)
            tagged = QImage(image)
            tagged.setText("Thumb::URI", uri)
            tagged.setText("Thumb::MTime", str(mtime))
            tagged.setText("Software", "MLCNN Tagger")
            partial = entry.with_name(f".{entry.stem}.{os.getpid()}.{threading.get_ident()}.png")
            if tagged.save(str(partial), "PNG"):
                os.chmod(partial, 0o600)
                os.replace(partial, entry)
            else:
                partial.unlink(missing_ok=True)
        except (OSError, ValueError):
            return
