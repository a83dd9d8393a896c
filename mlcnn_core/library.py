"""The per-folder library: review status, cached predictions and tags of the images in one folder.

State lives in SQLite at ``<folder>/.mlcnn-tagger/library.sqlite`` (WAL mode), the way digiKam keeps
its database beside the collection. When the folder cannot be written, the library falls back to a
file under the user data folder (``platformdirs.user_data_dir``) keyed by the folder's absolute path,
and :attr:`Library.fallback_reason` says why.

Tags are stored per image with their origin, so human and machine tags are always told apart:

* ``source="machine"``, ``state="predicted"``: proposed by a model (with its confidence);
* ``source="human"``, ``state="confirmed"`` (a proposal a person accepted), ``"added"`` (a tag a
  person typed) or ``"rejected"`` (a proposal a person turned down; kept so it is not re-proposed);
* ``source="sidecar"``, ``state="imported"``: found in a sidecar when the folder was opened, or
  among the keywords embedded in the image file (or ``human``/``confirmed`` when the import is
  told to trust sidecars).

Embedded keywords are read after the scan (:meth:`Library.import_embedded_keywords`), once per
version of a file: the keywords read are kept with the file's size and modification time, so a
scan opens no image and a later opening reads only the files that are new or changed.

An image's status is ``untagged`` (no prediction, no tags), ``predicted`` (a model proposed tags
that a person has not all decided on) or ``confirmed`` (a person decided on every tag).

Uncertainty (for "least certain first"): with ``s`` the per-label scores of the last prediction,
``P`` the predicted labels and ``N`` the others, the margin is
``(min_{P} s - max_{N} s) / max(s)`` (a missing side counts as 0) and
``uncertainty = 1 - clip(margin, 0, 1)``: 1 when the weakest accepted label is no stronger than the
strongest rejected one, 0 when the decision is clear-cut. Images without a prediction sort last.

Thread safety: every thread gets its own connection, kept for the thread's life and keyed by its
native id (``threading.get_ident``), not ``threading.local``: PySide runs each slot of a QThread
worker under a fresh Python thread state, so a thread-local connection would be opened anew, and
leaked, on every slot call. Writes are short transactions, and SQLite's busy timeout serialises
writers.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import posixpath
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlcnn_core import embedded_keywords, sidecars
from mlcnn_core.tag_rules import NO_RULES, TagRules, display_confidences

LIBRARY_DIRNAME = ".mlcnn-tagger"
LIBRARY_FILENAME = "library.sqlite"
# The keywords embedded in each image file as last read, with the size and time of the file read.
_EMBEDDED_KEYWORDS_TABLE = """CREATE TABLE IF NOT EXISTS embedded_keywords (
    image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    keywords TEXT NOT NULL,
    problem TEXT
)"""
# MIGRATIONS[n - 1]: the SQL statements that turn a version-n library into version n + 1, applied in order
# on open; an older program refuses a newer library instead of misreading it.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    ("ALTER TABLE tags ADD COLUMN rank INTEGER",),  # 2: a person's order of an image's first tags
    (_EMBEDDED_KEYWORDS_TABLE,),  # 3: an older program would drop embedded keywords as stale sidecar tags
)
SCHEMA_VERSION = 1 + len(MIGRATIONS)
STATUSES = ("untagged", "predicted", "confirmed")
HUMAN_POSITIVE = ("confirmed", "added")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'untagged',
    uncertainty REAL,
    reviewed INTEGER NOT NULL DEFAULT 0,
    present INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS predictions (
    image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    model_id TEXT, model_name TEXT, model_hash TEXT,
    created REAL NOT NULL,
    scores TEXT NOT NULL,
    labels TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    confidence REAL,
    updated REAL NOT NULL,
    rank INTEGER,
    PRIMARY KEY (image_id, tag)
);
CREATE INDEX IF NOT EXISTS tags_by_tag ON tags(tag);
CREATE TABLE IF NOT EXISTS sidecars (
    image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    pending INTEGER NOT NULL DEFAULT 0,
    content TEXT,
    error TEXT,
    written REAL,
    imported_mtime REAL
);
CREATE TABLE IF NOT EXISTS sidecar_files (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    sha256 TEXT,
    PRIMARY KEY (image_id, path)
);
""" + _EMBEDDED_KEYWORDS_TABLE + ";\n"


_TAG_COLUMNS = "image_id, tag, source, state, confidence, updated"
_RECORD_COLUMNS = "tag, source, state, confidence, rank"
_TAG_ORDER = "rank IS NULL, rank, source = 'machine', confidence IS NULL, -confidence, tag"
_IDS = "SELECT value FROM json_each(?)"  # a JSON array of image ids, for a statement over a selection
# An image's status (module docstring): proposals nobody decided on make it predicted; a person's tag
# or review confirmed; a prediction that proposed nothing predicted.
_STATUS = """CASE
    WHEN EXISTS (SELECT 1 FROM tags t WHERE t.image_id = images.id AND t.source = 'machine') THEN 'predicted'
    WHEN images.reviewed OR EXISTS (SELECT 1 FROM tags t WHERE t.image_id = images.id AND t.source = 'human')
        THEN 'confirmed'
    WHEN EXISTS (SELECT 1 FROM predictions p WHERE p.image_id = images.id) THEN 'predicted'
    ELSE 'untagged' END"""


# An image's tag rows (_RECORD_COLUMNS) and review mark, as an undo restores them.
Snapshot = tuple[list[tuple], bool]


class LibraryError(Exception):
    """The library cannot be opened or a query is malformed; the message says why."""


class TagExpressionError(LibraryError):
    """A tag filter expression cannot be parsed."""


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: str  # relative to the library root, '/'-separated
    size: int
    mtime: float
    status: str
    uncertainty: float | None


@dataclass(frozen=True)
class TagRecord:
    tag: str
    source: str  # "machine" | "human" | "sidecar"
    state: str  # "predicted" | "confirmed" | "added" | "rejected" | "imported"
    confidence: float | None
    rank: int | None = None  # set by "move to front": ranked tags lead the image's captions, lowest first

    @property
    def is_positive(self) -> bool:
        """The tag applies to the image (everything except a rejected proposal)."""
        return self.state != "rejected"


@dataclass(frozen=True)
class PredictionRecord:
    model_id: str | None
    model_name: str | None
    model_hash: str | None
    created: float
    scores: dict[str, float]
    labels: list[str]


@dataclass(frozen=True)
class ModelInfo:
    id: str | None = None
    name: str | None = None
    hash: str | None = None

    @classmethod
    def for_model(cls, model) -> ModelInfo:
        """Which model made a prediction: a loaded :class:`mlcnn_core.modelfile.TaggerModel`."""
        digest = hashlib.sha256(Path(model.path).read_bytes()).hexdigest()[:16] if model.path else None
        return cls(id=model.card.get("created") or digest, name=model.name, hash=digest)


@dataclass(frozen=True)
class ScanResult:
    total: int
    added: int
    removed: int
    changed: int
    seconds: float
    skipped: tuple[str, ...] = ()  # image files whose names are not valid UTF-8 (SQLite text cannot hold them)


@dataclass
class EmbeddedImport:
    """What :meth:`Library.import_embedded_keywords` did: the images whose tags changed, and messages
    (metadata that could not be read, sidecars that could not be read with it)."""

    changed: list[int]
    messages: list[str]


def uncertainty_of(scores: dict[str, float], labels: Sequence[str]) -> float:
    """See the module docstring: 1 - clipped normalised margin between accepted and rejected labels."""
    if not scores:
        return 1.0
    top = max(scores.values())
    if top <= 0:
        return 1.0
    chosen = set(labels)
    low_in = min((s for k, s in scores.items() if k in chosen), default=0.0)
    high_out = max((s for k, s in scores.items() if k not in chosen), default=0.0)
    margin = (low_in - high_out) / top
    return 1.0 - min(1.0, max(0.0, margin))


# -------------------------------------------------------------------------------- tag expressions

_TOKEN = re.compile(r'\s*(?:(\()|(\))|(&&?|\bAND\b)|(\|\|?|\bOR\b)|(!|\bNOT\b)|"([^"]*)"|([^\s()&|!"]+))')


def compile_tag_expression(expression: str) -> Callable[[Iterable[str]], bool]:
    """Compile a tag filter into a predicate over an image's tags.

    Grammar: ``OR`` (or ``|``) binds loosest, then ``AND`` (or ``&``), then ``NOT`` (or ``!``);
    parentheses group; ``*`` and ``?`` are wildcards; matching ignores case. Consecutive bare words
    form one tag (``blue sky AND NOT cat``), and ``"quoted text"`` is one tag verbatim.
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = expression.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TagExpressionError(f"cannot read the tag filter at {text[pos:]!r}")
        pos = m.end()
        lpar, rpar, and_, or_, not_, quoted, word = m.groups()
        if lpar:
            tokens.append(("(", lpar))
        elif rpar:
            tokens.append((")", rpar))
        elif and_:
            tokens.append(("AND", and_))
        elif or_:
            tokens.append(("OR", or_))
        elif not_:
            tokens.append(("NOT", not_))
        elif quoted is not None:
            tokens.append(("TAG", quoted))
        elif word:
            if tokens and tokens[-1][0] == "TAG" and not tokens[-1][1].startswith('"'):
                tokens[-1] = ("TAG", tokens[-1][1] + " " + word)
            else:
                tokens.append(("TAG", word))
    if not tokens:
        return lambda tags: True

    index = 0

    def peek() -> str | None:
        return tokens[index][0] if index < len(tokens) else None

    def take(kind: str) -> str:
        nonlocal index
        if peek() != kind:
            found = tokens[index][1] if index < len(tokens) else "the end"
            raise TagExpressionError(f"tag filter {expression!r}: expected {kind.lower()}, found {found!r}")
        index += 1
        return tokens[index - 1][1]

    def parse_or():
        terms = [parse_and()]
        while peek() == "OR":
            take("OR")
            terms.append(parse_and())
        return terms[0] if len(terms) == 1 else (lambda tags, ts=terms: any(t(tags) for t in ts))

    def parse_and():
        terms = [parse_not()]
        while peek() in ("AND", "NOT", "(", "TAG"):
            if peek() == "AND":
                take("AND")
            terms.append(parse_not())
        return terms[0] if len(terms) == 1 else (lambda tags, ts=terms: all(t(tags) for t in ts))

    def parse_not():
        if peek() == "NOT":
            take("NOT")
            inner = parse_not()
            return lambda tags: not inner(tags)
        return parse_atom()

    def parse_atom():
        if peek() == "(":
            take("(")
            inner = parse_or()
            take(")")
            return inner
        pattern = take("TAG").strip().casefold()
        if any(c in pattern for c in "*?["):
            regex = re.compile(fnmatch.translate(pattern))
            return lambda tags: any(regex.match(t) for t in tags)
        return lambda tags: pattern in tags

    predicate = parse_or()
    if index != len(tokens):
        raise TagExpressionError(f"tag filter {expression!r}: unexpected {tokens[index][1]!r}")
    return lambda tags: predicate({t.casefold() for t in tags})


# ------------------------------------------------------------------------------------- the library


def _stem_key(rel: str) -> tuple[str, str]:
    """Folder and case-folded stem of a library path: images sharing it cannot share a sidecar."""
    folder, name = posixpath.split(rel)
    return folder, posixpath.splitext(name)[0].casefold()


def _is_utf8(name: str) -> bool:
    """False for a file name whose bytes are not UTF-8 (Python holds them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _listing(folder: Path) -> set[str]:
    """The names in ``folder`` (none if it cannot be listed)."""
    try:
        return {entry.name for entry in os.scandir(folder)}
    except OSError:
        return set()


def user_data_dir() -> Path:
    """The program's per-user data folder (platformdirs): fallback libraries, the app's kept models,
    training runs and demo copy."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mlcnn-tagger", appauthor=False))


def fallback_library_path(folder: Path, data_dir: Path | None = None) -> Path:
    """Where the library of an unwritable ``folder`` lives: the user data folder, keyed by its path."""
    if data_dir is None:
        data_dir = user_data_dir()
    key = hashlib.sha1(str(Path(folder).resolve()).encode("utf-8")).hexdigest()[:16]
    slug = re.sub(r"[^\w.-]+", "_", Path(folder).resolve().name)[:40] or "root"
    return data_dir / "libraries" / f"{slug}-{key}" / LIBRARY_FILENAME


def _sqlite_failure(exc: sqlite3.Error) -> str:
    """``"locked"`` (another program's transaction), ``"damaged"`` (not a database, corrupt pages) or
    ``"unwritable"`` (read-only, full disk, I/O error, ...)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc):
        return "locked"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or not isinstance(exc, sqlite3.OperationalError):
        return "damaged"
    return "unwritable"


def _set_aside(db_path: Path, why: str) -> Path:
    """Rename a library and its WAL files to ``<name>.<why>-<time>``; returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = db_path.with_name(f"{db_path.name}.{why}-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = db_path.with_name(db_path.name + suffix)
        if part.exists():
            os.replace(part, target.with_name(target.name + suffix))
    return target


def _copy_library(source: Path, dest: Path) -> bool:
    """Copy a library that may sit on read-only media into ``dest``; False if it cannot be read."""
    for options in ("mode=ro", "immutable=1"):
        try:
            src = sqlite3.connect(f"file:{source}?{options}", uri=True)
            try:
                src.execute("SELECT COUNT(*) FROM images").fetchone()
                dst = sqlite3.connect(dest)
                try:
                    src.backup(dst)
                finally:
                    dst.close()
                return True
            finally:
                src.close()
        except sqlite3.Error:
            with contextlib.suppress(OSError):
                dest.unlink()
    return False


class Library:
    """The state of one folder of images. Open with :meth:`open`; use from any thread."""

    busy_timeout_s = 30.0  # how long a write waits for another program's transaction
    stale_temp_age_s = 600.0  # a sidecar's temporary file this old is left from a write that never finished

    def __init__(self, root: Path, db_path: Path, fallback_reason: str | None = None):
        self.root = Path(root).resolve()
        self.db_path = Path(db_path)
        self.fallback_reason = fallback_reason
        self.notices: list[str] = []  # what else happened on opening (a damaged library rebuilt, ...)
        self._connections: dict[int, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    @property
    def notice(self) -> str | None:
        """Everything a person should be told about this library on opening, or ``None``."""
        return " ".join(m for m in (self.fallback_reason, *self.notices) if m) or None

    # ---- opening

    @classmethod
    def open(cls, folder: str | os.PathLike, data_dir: Path | None = None) -> Library:
        """Open (creating if needed) the library of ``folder``.

        * The folder cannot be written (read-only, full disk): the library lives in the user data
          folder instead, seeded with a copy of the folder's own library, and
          :attr:`fallback_reason` says so. Once the folder can be written again, opening it merges
          the edits made meanwhile back (see :attr:`notices`).
        * The library is damaged: it is set aside (``library.sqlite.damaged-<time>``) and a new one
          is made, which the folder's sidecars fill again on import (see :attr:`notices`).
        * Another program holds it locked for :attr:`busy_timeout_s`: :class:`LibraryError`, since a
          second library would split the folder's state in two.
        """
        root = Path(folder).resolve()
        if not root.is_dir():
            raise LibraryError(f"{root} is not a folder")
        primary = root / LIBRARY_DIRNAME / LIBRARY_FILENAME
        try:
            primary.parent.mkdir(exist_ok=True)
            if not os.access(primary.parent, os.W_OK):
                raise PermissionError(f"{primary.parent} is read-only")
        except OSError as exc:
            return cls._open_fallback(root, primary, data_dir, f"The folder {root} cannot be written ({exc})")
        lib = cls(root, primary)
        try:
            lib._init_schema()
        except sqlite3.Error as exc:
            lib.close()
            kind = _sqlite_failure(exc)
            if kind == "locked":
                raise LibraryError(
                    f"The library of {root} is in use by another program (still locked after "
                    f"{cls.busy_timeout_s:g} s): close the other MLCNN Tagger or `mlcnn tag` working on "
                    "this folder and open it again."
                ) from exc
            if kind != "damaged":
                return cls._open_fallback(root, primary, data_dir, f"The library of {root} cannot be written ({exc})")
            backup = _set_aside(primary, "damaged")
            lib = cls(root, primary)
            try:
                lib._init_schema()
            except sqlite3.Error as again:
                raise LibraryError(f"cannot make a new library for {root}: {again}") from again
            lib.notices.append(
                f"The library of {root} was damaged ({exc}). It was moved to {backup.name} and a new one "
                "was started: tags in sidecars are read again, but predictions, review marks and tags "
                "that were only in the library are not."
            )
        lib._merge_fallback_back(data_dir)
        return lib

    @classmethod
    def _open_fallback(cls, root: Path, primary: Path, data_dir: Path | None, why: str) -> Library:
        fallback = fallback_library_path(root, data_dir)
        copied = False
        try:
            fallback.parent.mkdir(parents=True, exist_ok=True)
            if not fallback.exists() and primary.is_file():
                copied = _copy_library(primary, fallback)
            reason = (
                f"{why}; its state is kept in your user data folder instead ({fallback})"
                + (", starting from a copy of the folder's own library" if copied else "")
                + ". Sidecars may not be writable either. Open the folder again once it can be written, "
                "and these edits are merged back into its library."
            )
            lib = cls(root, fallback, fallback_reason=reason)
            lib._init_schema()
            lib.conn.execute("INSERT OR REPLACE INTO meta VALUES ('fallback_of', ?)", (str(lib.root),))
        except (OSError, sqlite3.Error) as exc:
            raise LibraryError(f"cannot open a library for {root}: {exc}") from exc
        return lib

    def _merge_fallback_back(self, data_dir: Path | None) -> None:
        """Carry a person's decisions made in the fallback library (while the folder could not be
        written) into this one, then set the fallback aside."""
        fallback = fallback_library_path(self.root, data_dir)
        if not fallback.is_file():
            return
        try:
            src = sqlite3.connect(f"file:{fallback}?mode=ro", uri=True, timeout=self.busy_timeout_s)
            try:
                images = {r[0]: r[1:] for r in src.execute("SELECT id, path, size, mtime, reviewed FROM images")}
                tags = src.execute(
                    "SELECT image_id, tag, source, state, confidence, updated FROM tags WHERE source = 'human'"
                ).fetchall()
            finally:
                src.close()
        except sqlite3.Error as exc:
            self.notices.append(f"The edits kept in {fallback} could not be read back ({exc}); they are left there.")
            return
        touched: set[int] = set()
        with self._tx() as conn:
            ids = {}
            for fid, (path, size, mtime, reviewed) in images.items():
                conn.execute("INSERT OR IGNORE INTO images (path, size, mtime) VALUES (?, ?, ?)", (path, size, mtime))
                (ids[fid], was_reviewed) = conn.execute(
                    "SELECT id, reviewed FROM images WHERE path = ?", (path,)
                ).fetchone()
                if reviewed and not was_reviewed:
                    conn.execute("UPDATE images SET reviewed = 1 WHERE id = ?", (ids[fid],))
                    touched.add(ids[fid])
            for fid, tag, source, state, confidence, updated in tags:
                image_id = ids[fid]
                row = conn.execute(
                    "SELECT source, updated FROM tags WHERE image_id = ? AND tag = ?", (image_id, tag)
                ).fetchone()
                if row is None or row[0] != "human" or row[1] < updated:
                    conn.execute(
                        f"INSERT OR REPLACE INTO tags ({_TAG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                        (image_id, tag, source, state, confidence, updated),
                    )
                    touched.add(image_id)
            for image_id in touched:
                self._mark_pending(conn, image_id)
                self._refresh_status(conn, image_id)
        backup = _set_aside(fallback, "merged")
        if touched:
            self.notices.append(
                f"Edits made while {self.root} could not be written ({len(touched)} images) were merged back "
                f"into its library (the copy they were kept in is now {backup}); their sidecars are pending."
            )

    @property
    def conn(self) -> sqlite3.Connection:
        """The calling thread's connection, opened on its first use."""
        ident = threading.get_ident()
        conn = self._connections.get(ident)
        if conn is None:
            conn = sqlite3.connect(
                self.db_path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            with self._lock:
                self._connections[ident] = conn
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def connection_count(self) -> int:
        """How many connections are open (one per thread that has used the library)."""
        with self._lock:
            return len(self._connections)

    def _init_schema(self) -> None:
        conn = self.conn
        (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            conn.execute("PRAGMA journal_mode = DELETE")
        conn.executescript(_SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        (stored,) = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = int(stored) if str(stored).isdigit() else 0
        if not 1 <= version <= SCHEMA_VERSION:
            raise LibraryError(f"{self.db_path} is a library of version {stored}, which this program "
                               f"(version {SCHEMA_VERSION}) cannot read; update MLCNN Tagger to open it")
        if version < SCHEMA_VERSION:
            with self._tx() as tx:
                for statements in MIGRATIONS[version - 1:]:
                    for statement in statements:
                        tx.execute(statement)
                tx.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
        if conn.execute("SELECT 1 FROM meta WHERE key = 'confidences'").fetchone() is None:
            self._rescale_raw_scores()
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('root', ?)", (str(self.root),))

    def close_connection(self) -> None:
        """Close the calling thread's connection, if it has one: what a thread done with the library
        calls. A connection closed by another thread while it runs a query can crash the process."""
        with self._lock:
            conn = self._connections.pop(threading.get_ident(), None)
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _rescale_raw_scores(self) -> None:
        """Put the predictions that ``mlcnn tag`` stored before it stored the app's confidences on the
        app's 0-1 scale, once per library (meta ``confidences``), and the tags' confidences copied from
        them. Those were the core's per-label scores, summed maps (43.9, or below 0 for a card reading
        raw outputs): the tag panel showed them as they were, with a full bar. Only a card without
        rescoring gives scores outside 0-1, and for one the app stores each label's share of the
        image's evidence (tag_rules.display_confidences), which the stored scores alone give."""
        with self._tx() as tx:
            raw = tx.execute(
                "SELECT image_id, scores, labels FROM predictions p WHERE CASE WHEN json_valid(p.scores) "
                "THEN EXISTS (SELECT 1 FROM json_each(p.scores) s WHERE s.value < 0 OR s.value > 1) ELSE 0 END"
            ).fetchall()
            rescaled = {}
            for image_id, scores, labels in raw:
                rescaled[image_id] = shares = display_confidences(json.loads(scores), rescored=False)
                tx.execute("UPDATE predictions SET scores = ? WHERE image_id = ?", (json.dumps(shares), image_id))
                tx.execute("UPDATE images SET uncertainty = ? WHERE id = ?",
                           (uncertainty_of(shares, json.loads(labels)), image_id))
            # a tag's own confidence (a proposal's, kept when a person confirmed it) is its image's share;
            # where that prediction has since been replaced, none: the panel shows the current one's
            tx.executemany(
                "UPDATE tags SET confidence = ? WHERE image_id = ? AND tag = ?",
                [(rescaled.get(image_id, {}).get(tag), image_id, tag) for image_id, tag in
                 tx.execute("SELECT image_id, tag FROM tags WHERE confidence < 0 OR confidence > 1").fetchall()],
            )
            tx.execute("INSERT INTO meta VALUES ('confidences', '0-1')")

    def close(self) -> None:
        """Close every thread's connection (call once no thread uses the library any more)."""
        with self._lock:
            for conn in self._connections.values():
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()

    def _tx(self):
        return _Transaction(self.conn)

    # ---- paths

    def abspath(self, rel: str) -> Path:
        return self.root / rel

    def relpath(self, path: str | os.PathLike) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    # ---- scanning

    def scan(self) -> ScanResult:
        """Find the images under the root (recursive; hidden folders and the library folder skipped)
        and bring the table in line in one transaction. Returns counts and the time it took."""
        start = time.perf_counter()
        found: dict[str, tuple[int, float]] = {}
        skipped: list[str] = []
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif os.path.splitext(name)[1].lower() in sidecars.IMAGE_EXTENSIONS and entry.is_file():
                        st = entry.stat()
                        rel = os.path.relpath(entry.path, self.root).replace(os.sep, "/")
                        if not rel.isascii() and not _is_utf8(rel):
                            skipped.append(entry.path)
                            continue
                        found[rel] = (st.st_size, st.st_mtime)
                except OSError:
                    continue
        added = removed = changed = 0
        with self._tx() as conn:
            known = {row[0]: row[1:] for row in conn.execute("SELECT path, id, size, mtime, present FROM images")}
            new_rows = []
            for rel, (size, mtime) in found.items():
                old = known.get(rel)
                if old is None:
                    new_rows.append((rel, size, mtime))
                    continue
                image_id, old_size, old_mtime, present = old
                if old_size != size or abs(old_mtime - mtime) > 1e-6:
                    changed += 1
                    conn.execute("DELETE FROM predictions WHERE image_id = ?", (image_id,))
                    conn.execute("DELETE FROM tags WHERE image_id = ? AND source = 'machine'", (image_id,))
                    conn.execute(
                        "UPDATE images SET size = ?, mtime = ?, present = 1, uncertainty = NULL WHERE id = ?",
                        (size, mtime, image_id),
                    )
                    self._refresh_status(conn, image_id)
                elif not present:
                    conn.execute("UPDATE images SET present = 1 WHERE id = ?", (image_id,))
            conn.executemany("INSERT INTO images (path, size, mtime) VALUES (?, ?, ?)", new_rows)
            added = len(new_rows)
            gone = [(v[0],) for rel, v in known.items() if rel not in found and v[3]]
            # rows of vanished files are kept (present = 0) so a person's tags survive a move back
            conn.executemany("UPDATE images SET present = 0 WHERE id = ?", gone)
            removed = len(gone)
        return ScanResult(len(found), added, removed, changed, time.perf_counter() - start, tuple(sorted(skipped)))

    def import_sidecars(self, as_confirmed: bool = False, include_hierarchical: bool = False) -> list[str]:
        """Read existing sidecars (caption files and XMP, see :func:`sidecars.sidecar_names`) into the
        library; only files changed since the last import are read, and temporary files of writes that
        never finished are deleted (:func:`sidecars.remove_stale_temp_files`). Tags become ``sidecar``/``imported``,
        or ``human``/``confirmed`` with ``as_confirmed`` (then the image counts as confirmed); imported
        tags a file no longer holds are dropped. Returns messages: sidecars that could not be read
        (those images are skipped) and warnings (a legacy encoding)."""
        images = self.images()
        collisions = self._stem_collisions(images)
        imported_mtime = dict(self.conn.execute("SELECT image_id, imported_mtime FROM sidecars"))
        embedded = self._embedded_keywords()
        messages: list[str] = []
        updates: list[tuple[int, sidecars.SidecarContent, float]] = []
        # one directory listing per folder instead of several stat calls per image
        listings: dict[str, set[str]] = {}
        for folder in {posixpath.dirname(r.path) for r in images}:
            listings[folder] = _listing(self.root / folder)
            sidecars.remove_stale_temp_files(self.root / folder, listings[folder], self.stale_temp_age_s)
        for record in images:
            folder, name = posixpath.split(record.path)
            collides = record.id in collisions
            present = [n for n in sidecars.sidecar_names(name, collides) if n in listings[folder]]
            if not present:
                continue
            image = self.abspath(record.path)
            try:
                newest = max((image.parent / n).stat().st_mtime for n in present)
            except OSError:
                continue
            if imported_mtime.get(record.id) is not None and imported_mtime[record.id] >= newest:
                continue
            try:
                content = sidecars.read_image_content(image, collides=collides)
                if include_hierarchical:
                    content.tags = sidecars.read_image_sidecars(image, collides, include_hierarchical=True)
            except sidecars.SidecarError as exc:
                messages.append(str(exc))
                continue
            messages += content.notes
            updates.append((record.id, content, newest))
        with self._tx() as conn:
            for image_id, content, newest in updates:
                self._apply_import(conn, image_id, content, newest, as_confirmed, keep=embedded.get(image_id, ()))
            if as_confirmed:  # tags imported earlier without trust become confirmed too
                earlier = [r[0] for r in conn.execute("SELECT DISTINCT image_id FROM tags WHERE source = 'sidecar'")]
                conn.execute("UPDATE tags SET source = 'human', state = 'confirmed' WHERE source = 'sidecar'")
                for image_id in earlier:
                    self._refresh_status(conn, image_id)
        return messages

    def _embedded_keywords(self, image_id: int | None = None) -> dict[int, list[str]]:
        """The embedded keywords last read of each image (or of ``image_id``) that has some."""
        sql = "SELECT image_id, keywords FROM embedded_keywords WHERE keywords != '[]'"
        rows = self.conn.execute(sql, ()) if image_id is None else self.conn.execute(
            sql + " AND image_id = ?", (image_id,))
        return {i: json.loads(k) for i, k in rows}

    def pending_embedded_keywords(self) -> list[int]:
        """Present images whose embedded keywords were not read from the file as it is now (its size
        and modification time as the last scan found them), by path."""
        rows = self.conn.execute(
            "SELECT i.id FROM images i LEFT JOIN embedded_keywords e ON e.image_id = i.id WHERE i.present = 1 "
            "AND (e.image_id IS NULL OR e.size != i.size OR e.mtime != i.mtime) ORDER BY i.path"
        )
        return [r[0] for r in rows]

    def import_embedded_keywords(
        self, image_ids: Iterable[int] | None = None, as_confirmed: bool = False
    ) -> EmbeddedImport:
        """Read the keywords embedded in image files (:mod:`mlcnn_core.embedded_keywords`) into the
        library, as tags found in sidecars are (see :meth:`import_sidecars`): those of ``image_ids``,
        or of every image :meth:`pending_embedded_keywords` names. A file already read as it is now
        is not read again. An image whose keywords changed gets the tags its sidecars and its
        keywords hold together; while one of its sidecars cannot be read, its keywords wait (the
        file is read again at the next import), since that sidecar's tags would otherwise be lost."""
        ids = self.pending_embedded_keywords() if image_ids is None else list(image_ids)
        rows = self.conn.execute(
            "SELECT i.id, i.path, i.size, i.mtime, e.size, e.mtime, e.keywords FROM images i "
            f"LEFT JOIN embedded_keywords e ON e.image_id = i.id WHERE i.present = 1 AND i.id IN ({_IDS})",
            (json.dumps(ids),),
        ).fetchall()
        messages: list[str] = []
        read: dict[int, tuple] = {}
        keywords: dict[int, tuple[str, list[str]]] = {}  # the images whose keywords changed: path, keywords
        for image_id, rel, size, mtime, read_size, read_mtime, read_keywords in rows:
            if (read_size, read_mtime) == (size, mtime):
                continue
            found = embedded_keywords.read_embedded_keywords(self.abspath(rel))
            if found.problem:
                messages.append(found.problem)
            read[image_id] = (image_id, size, mtime, json.dumps(found.keywords), found.problem)
            if list(found.keywords) != json.loads(read_keywords or "[]"):
                keywords[image_id] = (rel, list(found.keywords))
        contents: dict[int, sidecars.SidecarContent] = {}
        listings: dict[str, set[str]] = {}
        collisions: set[int] | None = None
        for image_id, (rel, found_keywords) in keywords.items():
            folder, name = posixpath.split(rel)
            if folder not in listings:
                listings[folder] = _listing(self.root / folder)
            content = sidecars.SidecarContent()
            if any(n in listings[folder] for n in sidecars.sidecar_names(name, collides=False)):
                collisions = self._stem_collisions(self.images()) if collisions is None else collisions
                try:
                    content = sidecars.read_image_content(self.abspath(rel), collides=image_id in collisions)
                except sidecars.SidecarError:
                    del read[image_id]  # import_sidecars reports the sidecar
                    continue
            messages += content.notes
            content.tags = sidecars.normalize_tags([*content.tags, *found_keywords])
            contents[image_id] = content
        with self._tx() as conn:
            conn.executemany("INSERT OR REPLACE INTO embedded_keywords VALUES (?, ?, ?, ?, ?)", list(read.values()))
            changed = [i for i, content in contents.items() if self._apply_import(conn, i, content, None, as_confirmed)]
        return EmbeddedImport(changed, messages)

    def _stem_collisions(self, images: Iterable[ImageRecord]) -> set[int]:
        """Ids of images sharing a folder and a stem (a.jpg, a.png): they cannot claim a.txt or a.xmp
        (see :func:`sidecars.plan_txt_paths`)."""
        groups: dict[tuple[str, str], list[int]] = {}
        for r in images:
            groups.setdefault(_stem_key(r.path), []).append(r.id)
        return {i for ids in groups.values() if len(ids) > 1 for i in ids}

    def _apply_import(
        self,
        conn: sqlite3.Connection,
        image_id: int,
        content: sidecars.SidecarContent,
        newest: float | None,
        as_confirmed: bool = False,
        keep: Iterable[str] = (),
    ) -> bool:
        """Bring an image's tags in line with what its sidecars hold (``content``, with its embedded
        keywords where they were read again); True if any tag changed. ``keep``: the embedded
        keywords read before, which stay (a tag only they vouch for is not dropped) but are not
        added again (a person removed it)."""
        source, state = ("human", "confirmed") if as_confirmed else ("sidecar", "imported")
        now = time.time()
        existing = {
            row[0]: row[1] for row in conn.execute("SELECT tag, source FROM tags WHERE image_id = ?", (image_id,))
        }
        added = [t for t in content.tags if existing.get(t) in (None, "machine")]
        conn.executemany(
            f"INSERT OR REPLACE INTO tags ({_TAG_COLUMNS}) VALUES (?, ?, ?, ?, NULL, ?)",
            [(image_id, tag, source, state, now) for tag in added],
        )
        # a tag only a sidecar vouched for goes when the sidecar no longer holds it
        held = {*content.tags, *keep}
        stale = [t for t, src in existing.items() if src == "sidecar" and t not in held]
        conn.executemany("DELETE FROM tags WHERE image_id = ? AND tag = ?", [(image_id, t) for t in stale])
        conn.execute(
            "INSERT INTO sidecars (image_id, imported_mtime) VALUES (?, ?) "
            "ON CONFLICT(image_id) DO UPDATE SET imported_mtime = COALESCE(excluded.imported_mtime, imported_mtime)",
            (image_id, newest),
        )
        conn.execute("DELETE FROM sidecar_files WHERE image_id = ?", (image_id,))
        conn.executemany(
            "INSERT INTO sidecar_files VALUES (?, ?, ?)",
            [(image_id, self._file_key(path), digest) for path, digest in content.hashes.items()],
        )
        self._refresh_status(conn, image_id)
        return bool(added or stale)

    def _file_key(self, path: Path) -> str:
        return os.path.relpath(Path(path), self.root).replace(os.sep, "/")

    def known_sidecar_hash(self, image_id: int, path: Path) -> str | None:
        """The :func:`sidecars.content_hash` of ``path`` as the library last read or wrote it
        (``None``: the library has never seen that file)."""
        row = self.conn.execute(
            "SELECT sha256 FROM sidecar_files WHERE image_id = ? AND path = ?", (image_id, self._file_key(path))
        ).fetchone()
        return row[0] if row else None

    def _collides(self, record: ImageRecord) -> bool:
        """Whether another present image shares ``record``'s folder and stem."""
        prefix = posixpath.splitext(record.path)[0]
        like = re.sub(r"([\\%_])", r"\\\1", prefix) + ".%"
        rows = self.conn.execute(
            "SELECT id, path FROM images WHERE present = 1 AND path LIKE ? ESCAPE '\\'", (like,)
        ).fetchall()
        return any(r[0] != record.id and _stem_key(r[1]) == _stem_key(record.path) for r in rows)

    def reimport_image_sidecars(self, image_id: int) -> bool:
        """Read one image's sidecars again, whatever their times; True if its tags changed."""
        record = self.image(image_id)
        collides = self._collides(record)
        content = sidecars.read_image_content(self.abspath(record.path), collides=collides)
        embedded = self._embedded_keywords(image_id).get(image_id, ())
        with self._tx() as conn:
            return self._apply_import(conn, image_id, content, None, keep=embedded)

    def write_sidecars(
        self,
        image_id: int,
        *,
        formats: Iterable[str],
        txt_path: Path | None,
        policy: str,
        content: str = "human",
        rules: TagRules = NO_RULES,
    ) -> tuple[list[Path], list[str]]:
        """Write an image's tags to its sidecars and record them: :meth:`sidecar_tags` (``content``
        ``"human"``) or :meth:`positive_tags` (``"machine"``), as ``rules`` write them (excluded
        tags left out, words separated as asked, the prefix and then the tags moved to the front
        leading a ``.txt`` caption). Returns the files written and notes.

        A file is replaced only if it still holds what the library last read or wrote; one that
        another program changed (or that the library never read) is read again first, so its tags
        are merged, not lost. Rejected tags, and tags a person removed, leave the file under either
        policy. Raises :class:`sidecars.SidecarError` (after trying every format); the image's
        sidecars then stay pending with the error.
        """
        record = self.image(image_id)
        image = self.abspath(record.path)
        collides = self._collides(record)
        written_from = self.tags(image_id)
        written: list[Path] = []
        notes: list[str] = []
        errors: list[sidecars.SidecarError] = []
        try:
            targets = sidecars.sidecar_targets(image, formats, txt_path, collides)
        except sidecars.SidecarError as exc:
            self._mark_failed_if_possible(image_id, str(exc))
            raise
        for target in targets:
            try:
                self._write_sidecar_file(image_id, target, policy, content, rules, notes)
                written.append(target)
            except sidecars.SidecarError as exc:
                errors.append(exc)
        if written:
            self.mark_sidecar_written(image_id, content, written, written_from=written_from)
        if errors:
            self._mark_failed_if_possible(image_id, str(errors[0]))
            raise errors[0]
        return written, notes

    def _mark_failed_if_possible(self, image_id: int, error: str) -> None:
        try:
            self.mark_sidecar_failed(image_id, error)
        except sqlite3.Error:
            pass  # the library itself cannot be written; the sidecar error is the one to report

    def _write_sidecar_file(
        self, image_id: int, target: Path, policy: str, content: str, rules: TagRules, notes: list[str]
    ) -> None:
        for attempt in range(2):
            records = self.tags(image_id)
            wanted = [t for t in records if t.is_positive and (content == "machine" or t.source != "machine")]
            tags = rules.written(t.tag for t in wanted)
            first = rules.written(t.tag for t in wanted if t.rank is not None)
            if not sidecars.is_xmp(target):
                tags, first = [*rules.prefix, *tags], [*rules.prefix, *first]
            known = {t.tag for t in records} | {rules.word_form(t.tag) for t in records}
            on_disk = sidecars.read_sidecar_file(target)[0] if target.exists() else []
            # with the file as the library knows it, a tag in it without a row was removed by a person
            removed = [form for t in records if t.state == "rejected" for form in (t.tag, rules.word_form(t.tag))]
            removed += [t for t in on_disk if t not in known]
            # long_hair on disk is the long hair written with spaces: rewritten in its place
            renamed = {t: rules.word_form(t) for t in on_disk if rules.word_form(t) != t and rules.word_form(t) in tags}
            try:
                sidecars.write_sidecar_file(
                    target, tags, policy, removed=removed, expected=self.known_sidecar_hash(image_id, target),
                    first=first, renamed=renamed,
                )
                return
            except sidecars.SidecarChangedError:
                if attempt:
                    raise
                if self.reimport_image_sidecars(image_id):
                    notes.append(
                        f"{target} was changed by another program since it was read; "
                        "its tags were read again and kept"
                    )

    # ---- reading

    def _record(self, row) -> ImageRecord:
        return ImageRecord(*row)

    def images(self, statuses: Iterable[str] | None = None) -> list[ImageRecord]:
        """Present images sorted by path, optionally only those with one of ``statuses``."""
        sql = "SELECT id, path, size, mtime, status, uncertainty FROM images WHERE present = 1"
        args: list = []
        if statuses is not None:
            statuses = list(statuses)
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        return [self._record(r) for r in self.conn.execute(sql + " ORDER BY path", args)]

    def image(self, image_id: int) -> ImageRecord:
        row = self.conn.execute(
            "SELECT id, path, size, mtime, status, uncertainty FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        if row is None:
            raise LibraryError(f"no image with id {image_id}")
        return self._record(row)

    def image_id(self, path: str | os.PathLike) -> int | None:
        rel = path if isinstance(path, str) and not os.path.isabs(path) else self.relpath(path)
        row = self.conn.execute("SELECT id FROM images WHERE path = ?", (rel,)).fetchone()
        return row[0] if row else None

    def tags(self, image_id: int) -> list[TagRecord]:
        """An image's tags: those moved to the front first (by rank), then a person's, then by
        confidence (highest first), then by name."""
        rows = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM tags WHERE image_id = ? ORDER BY {_TAG_ORDER}", (image_id,)
        )
        return [TagRecord(*r) for r in rows]

    def positive_tags(self, image_id: int) -> list[str]:
        return [t.tag for t in self.tags(image_id) if t.is_positive]

    def human_tags(self, image_id: int) -> list[str]:
        """Tags a person confirmed or added."""
        return [t.tag for t in self.tags(image_id) if t.source == "human" and t.state in HUMAN_POSITIVE]

    def sidecar_tags(self, image_id: int) -> list[str]:
        """What a confirmed image's sidecar should hold: every tag except rejected and machine ones."""
        return [t.tag for t in self.tags(image_id) if t.is_positive and t.source != "machine"]

    def prediction(self, image_id: int) -> PredictionRecord | None:
        row = self.conn.execute(
            "SELECT model_id, model_name, model_hash, created, scores, labels FROM predictions WHERE image_id = ?",
            (image_id,),
        ).fetchone()
        if row is None:
            return None
        return PredictionRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), json.loads(row[5]))

    def all_tags(self) -> list[tuple[str, int]]:
        """Every tag that applies to some present image, with the number of images, most used first."""
        rows = self.conn.execute(
            "SELECT t.tag, COUNT(*) FROM tags t JOIN images i ON i.id = t.image_id "
            "WHERE t.state != 'rejected' AND i.present = 1 GROUP BY t.tag ORDER BY COUNT(*) DESC, t.tag"
        )
        return [(r[0], r[1]) for r in rows]

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(self.conn.execute("SELECT status, COUNT(*) FROM images WHERE present = 1 GROUP BY status"))
        return counts

    def tag_records_by_image(self) -> dict[int, list[TagRecord]]:
        """Every image's tags (rejected ones included), in :meth:`tags` order."""
        out: dict[int, list[TagRecord]] = {}
        rows = self.conn.execute(
            f"SELECT image_id, {_RECORD_COLUMNS} FROM tags ORDER BY image_id, {_TAG_ORDER}"
        )
        for image_id, *rest in rows:
            out.setdefault(image_id, []).append(TagRecord(*rest))
        return out

    def tags_by_image(self) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        for image_id, tag in self.conn.execute("SELECT image_id, tag FROM tags WHERE state != 'rejected'"):
            out.setdefault(image_id, set()).add(tag)
        return out

    # ---- writing

    def _refresh_status(self, conn: sqlite3.Connection, image_id: int) -> str:
        conn.execute(f"UPDATE images SET status = {_STATUS} WHERE id = ?", (image_id,))
        return conn.execute("SELECT status FROM images WHERE id = ?", (image_id,)).fetchone()[0]

    def _refresh_statuses(self, conn: sqlite3.Connection, image_ids: Sequence[int]) -> None:
        conn.execute(f"UPDATE images SET status = {_STATUS} WHERE id IN ({_IDS})", (json.dumps(list(image_ids)),))

    def store_prediction(
        self,
        image_id: int,
        labels: Sequence[str],
        scores: dict[str, float],
        model: ModelInfo | None = None,
    ) -> str:
        """Record a model's prediction: replaces earlier machine tags; a person's decisions stay, and
        a confirmed image gets no new proposals (only the scores are kept). ``scores`` are the
        confidences from 0 to 1 the app draws (tag_rules.display_confidences), whoever predicted.
        Returns the new status."""
        model = model or ModelInfo()
        # a model's label is tag text like any other: no control characters reach a sidecar
        scores = {sidecars.normalize_tag(k): float(v) for k, v in scores.items()}
        labels = sidecars.normalize_tags(labels)
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    image_id,
                    model.id,
                    model.name,
                    model.hash,
                    now,
                    json.dumps(scores),
                    json.dumps(list(labels)),
                ),
            )
            conn.execute("DELETE FROM tags WHERE image_id = ? AND source = 'machine'", (image_id,))
            (status,) = conn.execute("SELECT status FROM images WHERE id = ?", (image_id,)).fetchone()
            # a person has decided on a confirmed image: record the scores, propose nothing
            proposals = [] if status == "confirmed" else list(labels)
            decided = {
                r[0]
                for r in conn.execute("SELECT tag FROM tags WHERE image_id = ? AND source != 'machine'", (image_id,))
            }
            conn.executemany(
                f"INSERT INTO tags ({_TAG_COLUMNS}) VALUES (?, ?, 'machine', 'predicted', ?, ?)",
                [(image_id, lab, scores.get(lab), now) for lab in proposals if lab not in decided],
            )
            conn.execute("UPDATE images SET uncertainty = ? WHERE id = ?", (uncertainty_of(scores, labels), image_id))
            return self._refresh_status(conn, image_id)

    def set_tag(self, image_id: int, tag: str, state: str, confidence: float | None = None) -> str:
        """A person's decision on one tag: ``confirmed``, ``added`` or ``rejected``. Returns the status."""
        if state not in ("confirmed", "added", "rejected"):
            raise LibraryError(f"unknown tag state {state!r}")
        tag = sidecars.normalize_tag(tag)
        if not tag:
            raise LibraryError("a tag cannot be empty (control characters are not kept)")
        with self._tx() as conn:
            self._set_tag(conn, image_id, tag, state, confidence)
            self._mark_pending(conn, image_id)
            return self._refresh_status(conn, image_id)

    def _set_tag(
        self, conn: sqlite3.Connection, image_id: int, tag: str, state: str, confidence: float | None = None
    ) -> None:
        row = conn.execute(
            "SELECT confidence, rank FROM tags WHERE image_id = ? AND tag = ?", (image_id, tag)
        ).fetchone()
        if confidence is None and row:
            confidence = row[0]
        conn.execute(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, 'human', ?, ?, ?, ?)",
            (image_id, tag, state, confidence, time.time(), row[1] if row else None),
        )

    def tag_record(self, image_id: int, tag: str) -> TagRecord | None:
        row = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM tags WHERE image_id = ? AND tag = ?", (image_id, tag)
        ).fetchone()
        return TagRecord(*row) if row else None

    def confirm_all(self, image_id: int) -> str:
        """Confirm every proposal and imported tag of an image; the image becomes confirmed."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE tags SET source = 'human', state = 'confirmed', updated = ? "
                "WHERE image_id = ? AND source IN ('machine', 'sidecar')",
                (time.time(), image_id),
            )
            conn.execute("UPDATE images SET reviewed = 1 WHERE id = ?", (image_id,))
            self._mark_pending(conn, image_id)
            return self._refresh_status(conn, image_id)

    def remove_tag(self, image_id: int, tag: str) -> str:
        with self._tx() as conn:
            conn.execute("DELETE FROM tags WHERE image_id = ? AND tag = ?", (image_id, tag))
            self._mark_pending(conn, image_id)
            return self._refresh_status(conn, image_id)

    def rename_tag(self, old: str, new: str) -> list[int]:
        """Rename a tag on every image (a person's row wins over a machine row on a clash).
        Returns the ids of the images touched; their sidecars become pending."""
        new = sidecars.normalize_tag(new)
        if not new:
            raise LibraryError("a tag cannot be renamed to nothing (control characters are not kept)")
        with self._tx() as conn:
            ids = [r[0] for r in conn.execute("SELECT image_id FROM tags WHERE tag = ?", (old,))]
            for image_id in ids:
                self._rename_in_image(conn, image_id, old, new)
            self._after_selection_edit(conn, ids)
        return ids

    def _rename_in_image(self, conn: sqlite3.Connection, image_id: int, old: str, new: str) -> None:
        """One image's ``old`` row becomes ``new`` (a person's row wins over another on a clash)."""
        source, state, confidence, rank = conn.execute(
            "SELECT source, state, confidence, rank FROM tags WHERE image_id = ? AND tag = ?", (image_id, old)
        ).fetchone()
        clash = conn.execute("SELECT source FROM tags WHERE image_id = ? AND tag = ?", (image_id, new)).fetchone()
        conn.execute("DELETE FROM tags WHERE image_id = ? AND tag = ?", (image_id, old))
        if clash is None or (clash[0] != "human" and source == "human"):
            conn.execute(
                "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?, ?, ?)",
                (image_id, new, source, state, confidence, time.time(), rank),
            )

    def delete_tag(self, tag: str) -> list[int]:
        """Remove a tag from every image; returns the ids touched (their sidecars become pending)."""
        with self._tx() as conn:
            ids = [r[0] for r in conn.execute("SELECT image_id FROM tags WHERE tag = ?", (tag,))]
            conn.execute("DELETE FROM tags WHERE tag = ?", (tag,))
            self._after_selection_edit(conn, ids)
        return ids

    def snapshot_tags(self, image_id: int) -> Snapshot:
        """Everything :meth:`restore_snapshot` needs to undo a multi-tag edit of one image."""
        return self.snapshot_images([image_id])[image_id]

    def restore_snapshot(self, image_id: int, snapshot: Snapshot) -> str:
        self.restore_snapshots({image_id: snapshot})
        return self.image(image_id).status

    def snapshot_images(self, image_ids: Iterable[int]) -> dict[int, Snapshot]:
        """:meth:`snapshot_tags` of many images (two queries), for undoing an edit of a selection."""
        ids = json.dumps(list(image_ids))
        out = {i: ([], bool(r)) for i, r in self.conn.execute(f"SELECT id, reviewed FROM images WHERE id IN ({_IDS})",
                                                               (ids,))}
        for image_id, *row in self.conn.execute(
            f"SELECT image_id, {_RECORD_COLUMNS} FROM tags WHERE image_id IN ({_IDS})", (ids,)
        ):
            out[image_id][0].append(tuple(row))
        return out

    def restore_snapshots(self, snapshots: dict[int, Snapshot]) -> None:
        """:meth:`restore_snapshot` of many images, in one transaction."""
        ids = list(snapshots)
        now = time.time()
        with self._tx() as conn:
            conn.execute(f"DELETE FROM tags WHERE image_id IN ({_IDS})", (json.dumps(ids),))
            conn.executemany(
                f"INSERT INTO tags (image_id, {_RECORD_COLUMNS}, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(i, *row, now) for i, (rows, _) in snapshots.items() for row in rows],
            )
            conn.executemany("UPDATE images SET reviewed = ? WHERE id = ?",
                             [(int(reviewed), i) for i, (_, reviewed) in snapshots.items()])
            self._after_selection_edit(conn, ids)

    def _after_selection_edit(self, conn: sqlite3.Connection, image_ids: Sequence[int]) -> None:
        """The edited images' sidecars become pending and their statuses follow their tags."""
        ids = json.dumps(list(image_ids))
        conn.execute(
            "INSERT INTO sidecars (image_id, pending) SELECT value, 1 FROM json_each(?) WHERE 1 "
            "ON CONFLICT(image_id) DO UPDATE SET pending = 1",
            (ids,),
        )
        self._refresh_statuses(conn, image_ids)

    def _rows_of_tag(self, conn: sqlite3.Connection, image_ids: Iterable[int], tag: str) -> list[tuple]:
        """(image id, source, state, confidence, rank) of ``tag`` on each image, ``None``s where it has none."""
        return conn.execute(
            "SELECT s.value, t.source, t.state, t.confidence, t.rank FROM json_each(?) s "
            "LEFT JOIN tags t ON t.image_id = s.value AND t.tag = ?",
            (json.dumps(list(image_ids)), tag),
        ).fetchall()

    # ---- edits of a selection (one transaction and a few statements each, whatever its size)

    def add_tag_to_images(self, image_ids: Iterable[int], tag: str) -> list[int]:
        """A person's tag on each image: ``added``, or ``confirmed`` where it was proposed or imported
        (as adding it to one image does). Returns the images that changed."""
        tag = sidecars.normalize_tag(tag)
        if not tag:
            raise LibraryError("a tag cannot be empty (control characters are not kept)")
        now = time.time()
        with self._tx() as conn:
            rows = [r for r in self._rows_of_tag(conn, image_ids, tag)
                    if not (r[1] == "human" and r[2] in HUMAN_POSITIVE)]
            conn.executemany(
                "INSERT OR REPLACE INTO tags VALUES (?, ?, 'human', ?, ?, ?, ?)",
                [(i, tag, "added" if state in (None, "rejected") else "confirmed", confidence, now, rank)
                 for i, _source, state, confidence, rank in rows],
            )
            touched = [r[0] for r in rows]
            self._after_selection_edit(conn, touched)
        return touched

    def remove_tag_from_images(self, image_ids: Iterable[int], tag: str) -> list[int]:
        """The tag no longer applies to each image: a tag a person added is deleted, any other
        (a proposal, an imported or confirmed tag) is rejected, so it is not proposed again and
        leaves the sidecars. Returns the images that changed."""
        with self._tx() as conn:
            rows = [r for r in self._rows_of_tag(conn, image_ids, tag) if r[2] not in (None, "rejected")]
            added = [(r[0], tag) for r in rows if r[1:3] == ("human", "added")]
            conn.executemany("DELETE FROM tags WHERE image_id = ? AND tag = ?", added)
            conn.executemany(
                "UPDATE tags SET source = 'human', state = 'rejected', updated = ? WHERE image_id = ? AND tag = ?",
                [(time.time(), r[0], tag) for r in rows if r[1:3] != ("human", "added")],
            )
            touched = [r[0] for r in rows]
            self._after_selection_edit(conn, touched)
        return touched

    def replace_in_tags(self, image_ids: Iterable[int], find: str, replacement: str, whole: bool = False) -> list[int]:
        """Find and replace in the tags of each image: every tag holding ``find`` (``whole``: every
        tag equal to it) gets it replaced by ``replacement``; a tag left empty is removed. Merging
        into a tag the image has keeps a person's row, as :meth:`rename_tag` does. Returns the
        images that changed."""
        if not find:
            raise LibraryError("give the text to find")
        touched: dict[int, None] = {}
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT image_id, tag FROM tags WHERE image_id IN ({_IDS}) AND "
                + ("tag = ?" if whole else "instr(tag, ?) > 0") + " ORDER BY image_id, tag",
                (json.dumps(list(image_ids)), find),
            ).fetchall()
            for image_id, tag in rows:
                new = sidecars.normalize_tag(replacement if whole else tag.replace(find, replacement))
                if new == tag:
                    continue
                if new:
                    self._rename_in_image(conn, image_id, tag, new)
                else:
                    conn.execute("DELETE FROM tags WHERE image_id = ? AND tag = ?", (image_id, tag))
                touched[image_id] = None
            self._after_selection_edit(conn, list(touched))
        return list(touched)

    def move_to_front(self, image_ids: Iterable[int], tag: str) -> list[int]:
        """``tag`` becomes the first of each image's tags that has it: it leads the tag list and the
        image's ``.txt`` captions (after a caption prefix), whatever their order on disk. Returns
        the images that changed."""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT image_id, tag, rank FROM tags WHERE image_id IN ({_IDS}) AND state != 'rejected' "
                f"ORDER BY image_id, {_TAG_ORDER}",
                (json.dumps(list(image_ids)),),
            ).fetchall()
            leader: dict[int, str] = {}
            lowest: dict[int, int] = {}
            has: set[int] = set()
            for image_id, name, rank in rows:
                leader.setdefault(image_id, name)
                lowest[image_id] = min(lowest.get(image_id, 0), rank if rank is not None else 0)
                has.update([image_id] if name == tag else [])
            touched = [i for i in leader if i in has and leader[i] != tag]
            conn.executemany("UPDATE tags SET rank = ? WHERE image_id = ? AND tag = ?",
                             [(lowest[i] - 1, i, tag) for i in touched])
            self._after_selection_edit(conn, touched)
        return touched

    def records(self, image_ids: Iterable[int]) -> list[ImageRecord]:
        """The records of ``image_ids`` (one query)."""
        return [self._record(r) for r in self.conn.execute(
            f"SELECT id, path, size, mtime, status, uncertainty FROM images WHERE id IN ({_IDS})",
            (json.dumps(list(image_ids)),),
        )]

    def positive_tag_sets(self, image_ids: Iterable[int]) -> dict[int, set[str]]:
        """The tags that apply to each of ``image_ids`` (one query)."""
        ids = list(image_ids)
        out: dict[int, set[str]] = {i: set() for i in ids}
        for image_id, tag in self.conn.execute(
            f"SELECT image_id, tag FROM tags WHERE image_id IN ({_IDS}) AND state != 'rejected'", (json.dumps(ids),)
        ):
            out[image_id].add(tag)
        return out

    # ---- sidecar bookkeeping

    def _mark_pending(self, conn: sqlite3.Connection, image_id: int) -> None:
        conn.execute(
            "INSERT INTO sidecars (image_id, pending) VALUES (?, 1) ON CONFLICT(image_id) DO UPDATE SET pending = 1",
            (image_id,),
        )

    def mark_sidecar_written(self, image_id: int, content: str = "human", files: Sequence[Path] = (),
                             written_from: list[TagRecord] | None = None) -> None:
        """``content``: ``"human"`` (a person's tags) or ``"machine"`` (a batch of predictions).
        ``files``: the sidecars written; they count as imported, so the next open does not read our
        own tags back as tags found in sidecars, and their content is what a later write expects.
        ``written_from``: the image's tags when the write began; an edit made since (on another
        thread or process) keeps the sidecars pending, so it is written too."""
        mtimes = []
        hashes = []
        for path in files:
            try:
                mtimes.append(Path(path).stat().st_mtime)
                hashes.append((image_id, self._file_key(path), sidecars.file_hash(Path(path))))
            except (OSError, sidecars.SidecarError):
                pass
        with self._tx() as conn:
            edited_since = written_from is not None and self.tags(image_id) != written_from
            conn.execute(
                "INSERT INTO sidecars (image_id, pending, content, error, written, imported_mtime) "
                "VALUES (?, ?, ?, NULL, ?, ?) "
                "ON CONFLICT(image_id) DO UPDATE SET pending = excluded.pending, content = excluded.content, "
                "error = NULL, written = excluded.written, "
                "imported_mtime = COALESCE(excluded.imported_mtime, imported_mtime)",
                (image_id, int(edited_since), content, time.time(), max(mtimes) if mtimes else None),
            )
            conn.executemany("INSERT OR REPLACE INTO sidecar_files VALUES (?, ?, ?)", hashes)

    def mark_sidecar_failed(self, image_id: int, error: str) -> None:
        self.mark_sidecars_failed([image_id], error)

    def mark_sidecars_failed(self, image_ids: Iterable[int], error: str) -> None:
        """Record that the images' sidecars were not written, with ``error`` (one transaction)."""
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO sidecars (image_id, pending, error) VALUES (?, 1, ?) "
                "ON CONFLICT(image_id) DO UPDATE SET pending = 1, error = excluded.error",
                [(image_id, error) for image_id in image_ids],
            )

    def pending_sidecars(self) -> list[tuple[int, str | None]]:
        """Images whose sidecars are out of date (edited, or a write failed), with the last error."""
        return [
            (r[0], r[1])
            for r in self.conn.execute(
                "SELECT s.image_id, s.error FROM sidecars s JOIN images i ON i.id = s.image_id "
                "WHERE s.pending = 1 AND i.present = 1 ORDER BY i.path"
            )
        ]

    def failed_sidecars(self) -> list[tuple[int, str]]:
        return [(i, e) for i, e in self.pending_sidecars() if e]

    def sidecar_content(self, image_id: int) -> str | None:
        row = self.conn.execute("SELECT content FROM sidecars WHERE image_id = ?", (image_id,)).fetchone()
        return row[0] if row else None

    # ---- training export

    def confirmed_images(self) -> list[tuple[Path, list[str]]]:
        """Confirmed images with a person's tags (absolute path, tags in :meth:`tags`' order) — the
        training set. One query: it runs while a person waits for Fine-tune to start."""
        rows = self.conn.execute(
            "SELECT i.path, t.tag FROM images i JOIN tags t ON t.image_id = i.id "
            "WHERE i.present = 1 AND i.status = 'confirmed' AND t.source = 'human' "
            f"AND t.state IN ({','.join('?' * len(HUMAN_POSITIVE))}) "
            f"ORDER BY i.path, {_TAG_ORDER}",  # its columns are the tags table's alone
            HUMAN_POSITIVE)
        out: list[tuple[Path, list[str]]] = []
        for path, tag in rows:
            if not out or out[-1][0] != path:
                out.append((path, []))
            out[-1][1].append(tag)
        return [(self.abspath(path), tags) for path, tags in out]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` / ``ROLLBACK`` on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
