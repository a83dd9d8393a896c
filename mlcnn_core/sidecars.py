"""Tag sidecar files: ``.txt`` (kohya-ss / taggui convention) and XMP (``dc:subject`` and friends).

``.txt`` sidecars hold tags separated by ``", "`` in a file with the image's stem (``a.jpg`` ->
``a.txt``). When two images in one folder share a stem (``a.jpg`` and ``a.png``) they must not share
one file, so the full name (``a.jpg.txt``) is used instead; :func:`plan_txt_paths` decides per image
according to a naming policy:

* ``"stem"``: always ``a.txt``; images whose stem collides get no path (``None``) and are reported.
* ``"full"``: always ``a.jpg.txt``.
* ``"auto"``: ``a.txt`` unless the stem collides, then ``a.jpg.txt``.

A ``.txt`` file keeps its shape when it is rewritten (see :class:`_TxtDocument`): each line of
comma-separated tags keeps its tags in their order, lines of prose (a natural-language caption) are
kept verbatim, and a file of one tag per line (gallery-dl, Hydrus) stays one tag per line. kohya's
``.caption`` files are read like ``.txt`` files, and the tags in gallery-dl's metadata
(``a.jpg.json``, from its ``--write-metadata``) are imported; those files are never written.

XMP sidecars are ``a.jpg.xmp`` (the digiKam / darktable / exiftool convention), or ``a.xmp`` where
another program already wrote one (exiftool ``%f.xmp``, Lightroom). Tags live in ``dc:subject``; a
file that also holds ``digiKam:TagsList``, ``lr:hierarchicalSubject`` or
``MicrosoftPhoto:LastKeywordXMP`` gets the same additions and removals there, since digiKam,
darktable and Immich read those first. Writing an existing XMP file keeps everything else in it.

Writing needs an explicit policy. Both keep the file's own order and append new tags at the end:
``"merge"`` keeps every tag already in the file except those named in ``removed``; ``"replace"``
keeps only the tags given. Every write is atomic (temporary file in the same folder, fsync,
``os.replace``, fsync of the folder), what is written is parsed back before it replaces anything,
and the file is replaced only if it still holds what was read (or, with ``expected``, what the
caller last saw). Any failure raises :class:`SidecarError` with a message naming the file; the old
file is left as it was.

Tag text is made safe at every entry point by :func:`normalize_tag`: runs of whitespace become one
space and characters XML cannot hold (control characters, lone surrogates, U+FFFE/U+FFFF) are
removed.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

NamingPolicy = Literal["stem", "full", "auto"]
WritePolicy = Literal["merge", "replace"]
NAMING_POLICIES: tuple[str, ...] = ("stem", "full", "auto")
WRITE_POLICIES: tuple[str, ...] = ("merge", "replace")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})  # images, by name
TAG_SEPARATOR = ", "
CAPTION_SUFFIXES: tuple[str, ...] = (".txt", ".caption")
GALLERY_DL_SUFFIX = ".json"  # gallery-dl's metadata post-processor: image.jpg.json, read, never written

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_DIGIKAM = "http://www.digikam.org/ns/1.0/"
NS_LR = "http://ns.adobe.com/lightroom/1.0/"
NS_MSPHOTO = "http://ns.microsoft.com/photo/1.0/"
_STANDARD_PREFIXES = {
    "x": NS_X,
    "rdf": NS_RDF,
    "dc": NS_DC,
    "digiKam": NS_DIGIKAM,
    "lr": NS_LR,
    "MicrosoftPhoto": NS_MSPHOTO,
}

EMPTY: Mapping[str, str] = MappingProxyType({})

# ElementTree's namespace registry is process-global; serialise its use.
_XML_LOCK = threading.Lock()


class SidecarError(Exception):
    """A sidecar could not be read or written; the message names the file and the problem."""


class SidecarChangedError(SidecarError):
    """A sidecar's content is not what the caller last read: another program changed it."""


# --------------------------------------------------------------------------------------------- tags

# Characters XML 1.0 cannot hold, and C1 controls that Exiv2 and others choke on.
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def normalize_tag(tag: str) -> str:
    """A tag as stored and written: unsafe characters removed, whitespace runs made one space.

    ``""`` means nothing is left: the tag is refused."""
    return " ".join(_UNSAFE_CHARS.sub("", str(tag)).split())


def normalize_tags(tags: Iterable[str]) -> list[str]:
    """Each tag through :func:`normalize_tag`; empty tags and duplicates dropped, first-seen order kept."""
    seen: set[str] = set()
    out: list[str] = []
    for tag in tags:
        tag = normalize_tag(tag)
        if tag and tag not in seen:
            seen.add(tag)
            out.append(tag)
    return out


def merge_tags(
    existing: Sequence[str], new: Sequence[str], policy: WritePolicy, removed: Iterable[str] = ()
) -> list[str]:
    """The tags a sidecar should hold after writing ``new`` over ``existing`` with ``policy``.

    The existing order is kept and new tags are appended. ``"merge"`` keeps existing tags that are
    not in ``removed``; ``"replace"`` keeps only the tags in ``new``."""
    if policy not in WRITE_POLICIES:
        raise ValueError(f"unknown write policy {policy!r} (expected one of {WRITE_POLICIES})")
    existing, new = normalize_tags(existing), normalize_tags(new)
    wanted = set(new)
    dropped = set(normalize_tags(removed)) - wanted
    if policy == "merge":
        kept = [t for t in existing if t not in dropped]
    else:
        kept = [t for t in existing if t in wanted]
    have = set(kept)
    return kept + [t for t in new if t not in have and t not in dropped]


def parse_tag_text(text: str) -> list[str]:
    """Tags of a ``.txt`` sidecar's text (see :class:`_TxtDocument`)."""
    return _TxtDocument(text).tags()


def format_tag_text(tags: Iterable[str]) -> str:
    """One line of comma-separated tags; a tag with a comma cannot be written this way."""
    tags = normalize_tags(tags)
    for tag in tags:
        if "," in tag:
            raise ValueError(f"the tag {tag!r} holds a comma, which a comma-separated caption cannot hold")
    return TAG_SEPARATOR.join(tags)


class _TxtDocument:
    """A caption file as lines, each a line of comma-separated tags or one of prose.

    A line is prose when it ends like a sentence (``.``, ``!``, ``?``) or holds an item of more
    than :attr:`PROSE_WORDS` words; prose is kept verbatim and holds no tags. A file of two or more
    lines none of which is prose or has a comma followed by a space is one tag per line, and a tag
    there may hold a comma.
    """

    PROSE_WORDS = 6

    def __init__(self, text: str):
        text = text.lstrip("\ufeff")
        self.lines = [line.strip() for line in text.splitlines()]
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        filled = [line for line in self.lines if line]
        self.one_per_line = len(filled) >= 2 and not any(
            re.search(r",\s", line) or self.is_prose(line) for line in filled
        )

    @classmethod
    def is_prose(cls, line: str) -> bool:
        if line.endswith((".", "!", "?", "。")):
            return True
        return any(len(item.split()) > cls.PROSE_WORDS for item in line.split(","))

    def _line_tags(self, line: str) -> list[str]:
        if not line or (not self.one_per_line and self.is_prose(line)):
            return []
        return [line] if self.one_per_line else line.split(",")

    def tags(self) -> list[str]:
        return normalize_tags(t for line in self.lines for t in self._line_tags(line))

    def tags_renamed(self, renamed: Mapping[str, str]) -> list[str]:
        return normalize_tags(renamed.get(t, t) for t in self.tags())

    def render(self, final: Sequence[str], first: Sequence[str] = (), renamed: Mapping[str, str] = EMPTY) -> str:
        """The file's text holding exactly ``final`` (normalised), in the file's shape: tags that
        stay keep their line and place, new ones go to the end of the first tag line (or one line
        each in a one-per-line file), prose lines stay as they are. The tags of ``first`` that are
        in ``final`` lead the first tag line (or are the first lines), in that order. A tag in
        ``renamed`` is written as its new name in its place."""
        keep, present = set(final), set(self.tags_renamed(renamed))
        lead = [t for t in normalize_tags(first) if t in keep]
        leading = set(lead)
        added = [t for t in final if t not in present and t not in leading]
        lines: list[str | list[str]] = []
        tag_rows: list[int] = []
        for line in self.lines:
            items = self._line_tags(line)
            if not items:
                lines.append(line)
                continue
            tag_rows.append(len(lines))
            items = normalize_tags(renamed.get(t, t) for t in normalize_tags(items))
            lines.append([t for t in items if t in keep and t not in leading])
        if self.one_per_line:
            at = tag_rows[0] if tag_rows else len(lines)
            lines[at:at] = [[t] for t in lead]
            lines += [[t] for t in added]
        else:
            target = next((i for i in tag_rows if lines[i]), None)
            if target is not None:
                lines[target] = [*lead, *lines[target], *added]
            elif lead or added:
                lines.append([*lead, *added])
        text = []
        for line in lines:
            if isinstance(line, str):
                text.append(line)
            elif not line:
                continue  # every tag of the line was removed
            elif self.one_per_line:
                text.append(line[0])
            else:
                text.append(format_tag_text(line))
        return "\n".join(text) + "\n"


# ----------------------------------------------------------------------------------------- naming


def _stem_key(image: Path) -> tuple[str, str]:
    # casefold: on case-insensitive file systems a.JPG and A.png would share A.txt too
    return (str(image.parent), image.stem.casefold())


def find_stem_collisions(images: Iterable[Path]) -> list[list[Path]]:
    """Groups of images (two or more) in one folder that share a stem, sorted."""
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for image in images:
        image = image if isinstance(image, Path) else Path(image)
        groups[_stem_key(image)].append(image)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def stem_txt_path(image: Path) -> Path:
    return image.with_name(image.stem + ".txt")


def full_txt_path(image: Path) -> Path:
    return image.with_name(image.name + ".txt")


def xmp_sidecar_path(image: Path) -> Path:
    """The XMP sidecar a new file gets: ``a.jpg.xmp``."""
    return Path(image).with_name(Path(image).name + ".xmp")


def stem_xmp_path(image: Path) -> Path:
    """``a.xmp``: exiftool's ``%f.xmp``, Lightroom's and digiKam's "commercial" naming."""
    return Path(image).with_name(Path(image).stem + ".xmp")


def xmp_target(image: Path, collides: bool = False) -> Path:
    """The XMP sidecar to write for ``image``: ``a.jpg.xmp``, or an existing ``a.xmp`` when there is
    no ``a.jpg.xmp`` and no other image shares the stem."""
    full = xmp_sidecar_path(image)
    stem = stem_xmp_path(image)
    if not full.is_file() and not collides and stem.is_file():
        return stem
    return full


def sidecar_names(image_name: str, collides: bool) -> list[str]:
    """File names that may hold ``image_name``'s tags, in reading order (``.txt`` and ``.caption``
    by full name, then by stem; then XMP by full name, then by stem; then gallery-dl's metadata,
    ``image.jpg.json``). A shared stem is not read when another image in the folder shares it."""
    stem = os.path.splitext(image_name)[0]
    names = [image_name + s for s in CAPTION_SUFFIXES]
    if not collides:
        names += [stem + s for s in CAPTION_SUFFIXES]
    names.append(image_name + ".xmp")
    if not collides:
        names.append(stem + ".xmp")
    names.append(image_name + GALLERY_DL_SUFFIX)
    return names


def plan_txt_paths(images: Iterable[Path], naming: NamingPolicy = "auto") -> dict[Path, Path | None]:
    """The ``.txt`` sidecar path of each image under ``naming``.

    With ``"stem"``, images whose stem collides map to ``None``: they have no file of their own.
    """
    if naming not in NAMING_POLICIES:
        raise ValueError(f"unknown naming policy {naming!r} (expected one of {NAMING_POLICIES})")
    images = [Path(p) for p in images]
    collided = {p for group in find_stem_collisions(images) for p in group}
    plan: dict[Path, Path | None] = {}
    for image in images:
        if naming == "full" or (naming == "auto" and image in collided):
            plan[image] = full_txt_path(image)
        elif image in collided:
            plan[image] = None
        else:
            plan[image] = stem_txt_path(image)
    return plan


def existing_txt_sidecar(image: Path, collides: bool) -> Path | None:
    """The caption file to read for ``image``, if any: ``a.jpg.txt``, ``a.jpg.caption``, then
    ``a.txt``, ``a.caption`` (those only when no other image shares the stem, since a shared file
    cannot be attributed to one image)."""
    for name in sidecar_names(Path(image).name, collides):
        if name.endswith(CAPTION_SUFFIXES):
            path = Path(image).with_name(name)
            if path.is_file():
                return path
    return None


def existing_xmp_sidecar(image: Path, collides: bool) -> Path | None:
    """The XMP sidecar to read for ``image``, if any: ``a.jpg.xmp``, then ``a.xmp``."""
    for name in sidecar_names(Path(image).name, collides):
        if name.endswith(".xmp"):
            path = Path(image).with_name(name)
            if path.is_file():
                return path
    return None


# -------------------------------------------------------------------------------------- atomic I/O


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_ANY = object()  # atomic_write_bytes(expected=_ANY): replace whatever is there


def _read_bytes_or_none(path: Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SidecarError(f"cannot read sidecar {path}: {exc.strerror or exc}") from exc


def content_hash(data: bytes | None) -> str | None:
    """The fingerprint of a sidecar's content (``None``: no file)."""
    return None if data is None else hashlib.sha256(data).hexdigest()


def file_hash(path: Path) -> str | None:
    """:func:`content_hash` of the file at ``path`` (``None`` if there is none)."""
    return content_hash(_read_bytes_or_none(path))


def atomic_write_bytes(path: Path, data: bytes, expected: bytes | None | object = _ANY) -> None:
    """Replace ``path`` with ``data`` atomically; on failure the old file is untouched.

    With ``expected`` (the old content, ``None`` for no file), the file is replaced only if it
    still holds that, checked just before the rename; otherwise :class:`SidecarChangedError`."""
    path = Path(path)
    folder = path.parent
    tmp_name: str | None = None
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        if expected is not _ANY and _read_bytes_or_none(path) != expected:
            raise SidecarChangedError(f"sidecar {path} was changed by another program while it was being written")
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SidecarError(f"cannot write sidecar {path}: {reason}") from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


# atomic_write_bytes's temporary files: ".<name>.<8 random characters>.tmp"
_TEMP_FILE = re.compile(r"^\.(.+)\.[A-Za-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(folder: Path, names: Iterable[str], older_than_s: float = 600.0) -> list[Path]:
    """Delete the temporary files of sidecar writes that never finished (the process was killed,
    the power went) among ``names`` in ``folder``; a younger one may be a write under way."""
    removed = []
    now = time.time()
    for name in names:
        m = _TEMP_FILE.match(name)
        if not m or not m.group(1).lower().endswith((".xmp", *CAPTION_SUFFIXES)):
            continue
        path = Path(folder) / name
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime >= older_than_s:
                path.unlink()
                removed.append(path)
    return removed


def _decode_text(path: Path, data: bytes, notes: list[str] | None) -> tuple[str, str]:
    """Text of a caption file and the encoding it was read with: UTF-8 (with or without BOM),
    UTF-16 with a BOM, else Windows-1252 / Latin-1 (with a note: it is rewritten as UTF-8)."""
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), "utf-8"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise SidecarError(f"sidecar {path} starts like UTF-16 but is not: {exc}") from exc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for legacy in ("cp1252", "latin-1"):
        try:
            text = data.decode(legacy)
        except UnicodeDecodeError:
            continue
        if notes is not None:
            notes.append(f"sidecar {path} is not UTF-8; read it as {legacy} (it is written back as UTF-8)")
        return text, legacy
    raise AssertionError("latin-1 decodes every byte")


def _read_text(path: Path, notes: list[str] | None = None) -> str:
    data = _read_bytes_or_none(path)
    if data is None:
        raise SidecarError(f"cannot read sidecar {path}: no such file")
    return _decode_text(path, data, notes)[0]


def _content_before_write(path: Path, expected: str | None | object) -> bytes | None:
    """The file's current bytes (``None``: no file), if they are what the caller ``expected``."""
    old = _read_bytes_or_none(path)
    if expected is not _ANY and content_hash(old) != expected:
        what = "appeared" if expected is None else "was removed" if old is None else "was changed"
        raise SidecarChangedError(f"sidecar {path} {what} since its tags were last read (by another program?)")
    return old


# ----------------------------------------------------------------------------------------- .txt


def read_txt(path: Path, notes: list[str] | None = None) -> list[str]:
    """Tags of a ``.txt`` or ``.caption`` file; ``notes`` collects warnings (e.g. a legacy encoding)."""
    return parse_tag_text(_read_text(path, notes))


def write_txt(
    path: Path,
    tags: Sequence[str],
    policy: WritePolicy,
    *,
    removed: Iterable[str] = (),
    expected: str | None | object = _ANY,
    first: Sequence[str] = (),
    renamed: Mapping[str, str] = EMPTY,
) -> list[str]:
    """Write ``tags`` to a ``.txt`` sidecar with ``policy``; return the tags now in the file.

    ``expected``: the :func:`content_hash` the caller last saw (``None``: no file); a file that
    differs raises :class:`SidecarChangedError` and is left alone. ``first``: tags written
    first, in that order (a trigger word); ``renamed``: tags of the file written under a new name
    in their place (see :meth:`_TxtDocument.render`)."""
    path = Path(path)
    old = _content_before_write(path, expected)
    doc = _TxtDocument(_decode_text(path, old, None)[0] if old is not None else "")
    final = merge_tags(doc.tags_renamed(renamed), tags, policy, removed)
    try:
        data = doc.render(final, first, renamed).encode("utf-8")
    except ValueError as exc:
        raise SidecarError(f"cannot write sidecar {path}: {exc}") from None
    written = _TxtDocument(data.decode("utf-8")).tags()  # in the file's order, line by line
    if set(written) != set(final):
        raise SidecarError(f"cannot write sidecar {path}: the tags would not read back as written")
    atomic_write_bytes(path, data, expected=old)
    return written


# ------------------------------------------------------------------------------------------ XMP

_NEW_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="MLCNN Tagger">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    '  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
    ' xmlns:lr="http://ns.adobe.com/lightroom/1.0/">\n'
    "  </rdf:Description>\n"
    " </rdf:RDF>\n"
    "</x:xmpmeta>\n"
    '<?xpacket end="w"?>\n'
)


@dataclass(frozen=True)
class _KeywordField:
    ns: str
    local: str
    separator: str | None  # hierarchy separator of a path-valued field; None: flat keywords
    container: str  # the rdf container a new one gets

    def leaf(self, entry: str) -> str:
        return entry.rsplit(self.separator, 1)[-1].strip() if self.separator else entry


DC_SUBJECT = _KeywordField(NS_DC, "subject", None, "Bag")
# digiKam's reading order after dc:subject's place is taken into account: digiKam reads TagsList, then
# LastKeywordXMP, then hierarchicalSubject, then dc:subject; darktable and Immich hierarchicalSubject first.
HIERARCHICAL_FIELDS = (
    _KeywordField(NS_DIGIKAM, "TagsList", "/", "Seq"),
    _KeywordField(NS_MSPHOTO, "LastKeywordXMP", "/", "Bag"),
    _KeywordField(NS_LR, "hierarchicalSubject", "|", "Bag"),
)
LR_HIERARCHICAL = HIERARCHICAL_FIELDS[2]
# darktable keeps its own bookkeeping tags (darktable|format|jpg, darktable|changed) in hierarchicalSubject
_TOOL_TAG_PREFIXES = ("darktable|",)


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


_XML_DECLARATION = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _decode_xmp(what: str, data: bytes) -> tuple[str, str]:
    """Text of an XMP packet (``what`` names it in errors) and the encoding to write it back in: its BOM's, else its XML
    declaration's, else UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        m = _XML_DECLARATION.match(data)
        encoding = m.group(1).decode("ascii") if m else "utf-8"
    try:
        codecs.lookup(encoding)
        return data.decode(encoding), encoding
    except LookupError:
        raise SidecarError(f"{what} declares an unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        raise SidecarError(f"{what} is not {encoding} text: {exc}") from exc


def _root_span(text: str) -> tuple[int, int]:
    """Start and end (UTF-8 byte offsets) of the root element, as the XML parser sees it."""
    parser = xml.parsers.expat.ParserCreate()
    depth = 0
    span: list[int] = []

    def start(name, attrs):
        nonlocal depth
        if depth == 0:
            span.append(parser.CurrentByteIndex)
        depth += 1

    def end(name):
        nonlocal depth
        depth -= 1
        if depth == 0:
            span.append(parser.CurrentByteIndex)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(text, True)
    start_at, end_at = span[0], span[1]
    data = text.encode("utf-8")
    if data.startswith(b"</", end_at):  # an end tag holds no '>' before its own
        end_at = data.index(b">", end_at) + 1
    return start_at, end_at  # an empty root: expat reports its end just after "/>"


class _XmpDocument:
    """An XMP file split into the text before the root element, the root, and the text after it.

    ElementTree drops processing instructions outside the root (the ``<?xpacket`` lines); keeping
    the surrounding text verbatim preserves them. The split comes from the parser's own offsets,
    so a comment that mentions the root's name cannot mislead it. A document only read
    (``editable=False``) is parsed once, without the split and the namespace prefixes.
    """

    def __init__(self, what: str, text: str, encoding: str = "utf-8", editable: bool = True):
        self.what = what
        self.encoding = encoding
        self.namespaces: dict[str, str] = {}
        body = text.lstrip("\ufeff")
        if "<!DOCTYPE" in body:  # XMP allows none; its entities could expand without bound
            raise SidecarError(f"{what} has a DOCTYPE, which XMP does not allow; it was not read")
        try:
            # fed as text, expat reads it as decoded, whatever encoding the declaration names
            if editable:
                namespaces = ET.XMLPullParser(events=("start-ns",))
                namespaces.feed(body)
                namespaces.close()
                for _event, (prefix, uri) in namespaces.read_events():
                    self.namespaces.setdefault(prefix, uri)
            parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
            parser.feed(body)
            self.root = parser.close()
            start, end = _root_span(body) if editable else (0, 0)
        except (ET.ParseError, xml.parsers.expat.ExpatError) as exc:
            raise SidecarError(f"{what} is not well-formed XML: {exc}") from exc
        data = body.encode("utf-8")
        self.before, self.after = data[:start].decode("utf-8"), data[end:].decode("utf-8")

    def rdf(self) -> ET.Element:
        if self.root.tag == _q(NS_RDF, "RDF"):
            return self.root
        rdf = self.root.find(f".//{_q(NS_RDF, 'RDF')}")
        if rdf is None:
            raise SidecarError(f"{self.what} has no rdf:RDF element")
        return rdf

    def bag_items(self, ns: str, local: str) -> list[str]:
        items: list[str] = []
        for prop in self.rdf().iter(_q(ns, local)):
            for li in prop.iter(_q(NS_RDF, "li")):
                items.append("".join(li.itertext()))
        return items

    def has(self, kf: _KeywordField) -> bool:
        return next(self.rdf().iter(_q(kf.ns, kf.local)), None) is not None

    def tags(self) -> list[str]:
        """The image's tags: ``dc:subject``; in a file without one, the leaves of the first
        hierarchical field that has entries (a file digiKam or darktable wrote without it)."""
        if self.has(DC_SUBJECT):
            return normalize_tags(self.bag_items(NS_DC, "subject"))
        for kf in HIERARCHICAL_FIELDS:
            entries = [e for e in self.bag_items(kf.ns, kf.local) if not e.startswith(_TOOL_TAG_PREFIXES)]
            if entries:
                return normalize_tags(kf.leaf(e) for e in entries)
        return []

    def set_keywords(self, final: Sequence[str], dropped: set[str], hierarchical_too: bool) -> None:
        """``dc:subject`` becomes ``final``; each hierarchical field present (and
        ``lr:hierarchicalSubject`` when ``hierarchical_too``) loses the entries whose path or leaf
        is a ``dropped`` tag and gains a top-level entry for each tag it lacks."""
        self._set_list(DC_SUBJECT, list(final))
        for kf in HIERARCHICAL_FIELDS:
            if not (self.has(kf) or (hierarchical_too and kf is LR_HIERARCHICAL)):
                continue
            entries = [
                e
                for e in self.bag_items(kf.ns, kf.local)
                if normalize_tag(e) not in dropped and normalize_tag(kf.leaf(e)) not in dropped
            ]
            known = {normalize_tag(e) for e in entries} | {normalize_tag(kf.leaf(e)) for e in entries}
            self._set_list(kf, entries + [t for t in final if t not in known])

    def _set_list(self, kf: _KeywordField, items: list[str]) -> None:
        rdf = self.rdf()
        props = list(rdf.iter(_q(kf.ns, kf.local)))
        if props:
            prop = props[0]
            for extra in props[1:]:
                for parent in rdf.iter():
                    if extra in list(parent):
                        parent.remove(extra)
        else:
            desc = rdf.find(_q(NS_RDF, "Description"))
            if desc is None:
                desc = ET.SubElement(rdf, _q(NS_RDF, "Description"), {_q(NS_RDF, "about"): ""})
            if len(desc):
                desc[-1].tail = "\n   "
            else:
                desc.text = "\n   "
            prop = ET.SubElement(desc, _q(kf.ns, kf.local))
            prop.tail = "\n  "
        old = next((c for c in prop if c.tag in (_q(NS_RDF, "Bag"), _q(NS_RDF, "Seq"))), None)
        container = old.tag if old is not None else _q(NS_RDF, kf.container)
        indent = "\n" + " " * 4
        for child in list(prop):
            prop.remove(child)
        prop.text = indent
        bag = ET.SubElement(prop, container)
        bag.text = indent + "  " if items else None
        for i, tag in enumerate(items):
            li = ET.SubElement(bag, _q(NS_RDF, "li"))
            li.text = tag
            li.tail = indent + ("  " if i < len(items) - 1 else "")
        bag.tail = indent[:-1]

    def serialize(self) -> str:
        with _XML_LOCK:
            for prefix, uri in {**_STANDARD_PREFIXES, **self.namespaces}.items():
                if prefix and not re.fullmatch(r"ns\d+", prefix):
                    with contextlib.suppress(ValueError):
                        ET.register_namespace(prefix, uri)
            xml_text = ET.tostring(self.root, encoding="unicode")
        return self.before + xml_text + self.after

    def encode(self) -> bytes:
        # a tag the file's encoding cannot hold becomes a character reference, which XML reads back
        return self.serialize().encode(self.encoding, errors="xmlcharrefreplace")


def _load_xmp(path: Path, data: bytes, editable: bool = True) -> _XmpDocument:
    return _parse_xmp(f"XMP sidecar {path}", data, editable)


def _parse_xmp(what: str, data: bytes, editable: bool = True) -> _XmpDocument:
    text, encoding = _decode_xmp(what, data)
    return _XmpDocument(what, text, encoding, editable)


def xmp_packet_tags(data: bytes, what: str) -> list[str]:
    """The tags of an XMP packet's bytes (one embedded in an image, say) by :meth:`_XmpDocument.tags`'s
    rule; ``what`` names the packet in the :class:`SidecarError` a malformed one raises."""
    return _parse_xmp(what, data, editable=False).tags()


def read_xmp(path: Path, include_hierarchical: bool = False) -> list[str]:
    """Tags in an XMP sidecar: ``dc:subject`` (or, where there is none, the leaves of a hierarchical field).

    With ``include_hierarchical``, ``digiKam:TagsList`` (``a/b``) and ``lr:hierarchicalSubject``
    (``a|b``) entries are added as ``a/b`` paths.
    """
    path = Path(path)
    data = _read_bytes_or_none(path)
    if data is None:
        raise SidecarError(f"cannot read sidecar {path}: no such file")
    doc = _load_xmp(path, data, editable=False)
    tags = doc.tags()
    if include_hierarchical:
        tags += doc.bag_items(NS_DIGIKAM, "TagsList")
        tags += [t.replace("|", "/") for t in doc.bag_items(NS_LR, "hierarchicalSubject")]
    return normalize_tags(tags)


def write_xmp(
    path: Path,
    tags: Sequence[str],
    policy: WritePolicy,
    *,
    removed: Iterable[str] = (),
    expected: str | None | object = _ANY,
) -> list[str]:
    """Write ``tags`` into an XMP sidecar's keyword fields with ``policy``, keeping all else.

    A malformed existing file raises :class:`SidecarError` and is left untouched; ``expected``
    as in :func:`write_txt`.
    """
    path = Path(path)
    old = _content_before_write(path, expected)
    doc = _load_xmp(path, old) if old is not None else _XmpDocument(f"XMP sidecar {path}", _NEW_XMP)
    existing = doc.tags()
    final = merge_tags(existing, tags, policy, removed)
    doc.set_keywords(final, set(existing) - set(final), hierarchical_too=old is None)
    data = doc.encode()
    try:
        written = _load_xmp(path, data).tags()
    except SidecarError as exc:
        raise SidecarError(f"cannot write sidecar {path}: the result would not parse ({exc})") from exc
    if written != final:
        raise SidecarError(f"cannot write sidecar {path}: the tags would not read back as written")
    atomic_write_bytes(path, data, expected=old)
    return final


# ---------------------------------------------------------------------------------- per image


@dataclass
class SidecarContent:
    """What an image's sidecars hold: the tags, the fingerprint of each file read, and warnings."""

    tags: list[str] = field(default_factory=list)
    hashes: dict[Path, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_sidecar_file(path: Path, notes: list[str] | None = None) -> tuple[list[str], str]:
    """Tags of one sidecar (caption, XMP or gallery-dl metadata, by its suffix) and its
    :func:`content_hash`."""
    path = Path(path)
    data = _read_bytes_or_none(path)
    if data is None:
        raise SidecarError(f"cannot read sidecar {path}: no such file")
    if is_xmp(path):
        tags = _load_xmp(path, data, editable=False).tags()
    elif path.name.endswith(GALLERY_DL_SUFFIX):
        tags = _gallery_dl_tags(path, data, notes)
    else:
        tags = _TxtDocument(_decode_text(path, data, notes)[0]).tags()
    return tags, content_hash(data)


def _gallery_dl_tags(path: Path, data: bytes, notes: list[str] | None) -> list[str]:
    """The tags in gallery-dl's metadata of one file, where its own ``mode: tags`` finds them:
    ``tags``, else ``tag_string``; a string is split at ", " if it has one, else at spaces (a
    booru's ``1girl long_hair smile``: booru tags hold no spaces); a dict (e621's categories) gives
    all its lists; a list of dicts (pixiv's translated tags) all their values. Metadata without
    tags (most sites) gives none; a file that is not JSON gives none and a note, and never stops the
    image's other sidecars from being read."""
    try:
        meta = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        if notes is not None:
            notes.append(f"{path} is not JSON metadata ({exc}); its tags were not read")
        return []
    tags = (meta.get("tags") or meta.get("tag_string")) if isinstance(meta, dict) else None
    if isinstance(tags, str):
        tags = tags.split(", ") if ", " in tags else tags.split()
    elif isinstance(tags, dict):
        tags = [t for values in tags.values() if isinstance(values, list) for t in values]
    elif isinstance(tags, list):
        tags = [v for t in tags for v in (t.values() if isinstance(t, dict) else [t])]
    else:
        return []
    return normalize_tags(t for t in tags if isinstance(t, str))


def existing_gallery_dl_sidecar(image: Path) -> Path | None:
    path = Path(image).with_name(Path(image).name + GALLERY_DL_SUFFIX)
    return path if path.is_file() else None


def read_image_content(image: Path, collides: bool = False) -> SidecarContent:
    """Everything :func:`read_image_sidecars` reads (and gallery-dl's metadata), with the
    fingerprints of the files."""
    image = Path(image)
    content = SidecarContent()
    tags: list[str] = []
    for path in (existing_txt_sidecar(image, collides), existing_xmp_sidecar(image, collides),
                 existing_gallery_dl_sidecar(image)):
        if path is not None:
            file_tags, digest = read_sidecar_file(path, content.notes)
            tags += file_tags
            content.hashes[path] = digest
    content.tags = normalize_tags(tags)
    return content


def read_image_sidecars(image: Path, collides: bool = False, include_hierarchical: bool = False) -> list[str]:
    """All tags in an image's existing sidecars (caption file, XMP, gallery-dl metadata), merged;
    ``[]`` if none.

    Raises :class:`SidecarError` for an unreadable or malformed sidecar.
    """
    image = Path(image)
    tags: list[str] = []
    txt = existing_txt_sidecar(image, collides)
    if txt is not None:
        tags += read_txt(txt)
    xmp = existing_xmp_sidecar(image, collides)
    if xmp is not None:
        tags += read_xmp(xmp, include_hierarchical=include_hierarchical)
    metadata = existing_gallery_dl_sidecar(image)
    if metadata is not None:
        tags += read_sidecar_file(metadata)[0]
    return normalize_tags(tags)


def write_sidecar_file(
    path: Path,
    tags: Sequence[str],
    policy: WritePolicy,
    *,
    removed: Iterable[str] = (),
    expected: str | None | object = _ANY,
    first: Sequence[str] = (),
    renamed: Mapping[str, str] = EMPTY,
) -> list[str]:
    """:func:`write_xmp` for an ``.xmp`` path, else :func:`write_txt` (``first`` and ``renamed`` as
    there; XMP keywords have no order, so a renamed keyword is removed and its new name added)."""
    if is_xmp(path):
        return write_xmp(path, tags, policy, removed=[*removed, *renamed], expected=expected)
    return write_txt(path, tags, policy, removed=removed, expected=expected, first=first, renamed=renamed)


def is_xmp(path: Path) -> bool:
    return Path(path).suffix.lower() == ".xmp"


def sidecar_targets(image: Path, formats: Iterable[str], txt_path: Path | None, collides: bool = False) -> list[Path]:
    """The files ``formats`` (``"txt"``, ``"xmp"``) write for ``image``; ``txt_path`` comes from
    :func:`plan_txt_paths`, and ``None`` (a stem collision under the ``"stem"`` policy) is an error."""
    targets = []
    for fmt in formats:
        if fmt == "txt":
            if txt_path is None:
                raise SidecarError(
                    f"no .txt sidecar for {image}: another image shares its stem "
                    "(choose the 'auto' or 'full' naming policy)"
                )
            targets.append(Path(txt_path))
        elif fmt == "xmp":
            targets.append(xmp_target(Path(image), collides))
        else:
            raise ValueError(f"unknown sidecar format {fmt!r}")
    return targets


def write_image_sidecars(
    image: Path,
    tags: Sequence[str],
    *,
    formats: Iterable[str],
    txt_path: Path | None,
    policy: WritePolicy,
    removed: Iterable[str] = (),
) -> list[Path]:
    """Write ``tags`` for ``image`` in each of ``formats`` (``"txt"``, ``"xmp"``); return files written.

    ``txt_path`` as in :func:`sidecar_targets`. All formats are attempted; the first error is
    raised after the others were tried.
    """
    written: list[Path] = []
    errors: list[SidecarError] = []
    removed = list(removed)
    for fmt in formats:
        try:
            (target,) = sidecar_targets(image, [fmt], txt_path)
            write_sidecar_file(target, tags, policy, removed=removed)
            written.append(target)
        except SidecarError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    return written
