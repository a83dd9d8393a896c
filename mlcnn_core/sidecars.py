"""Tag sidecar files: ``.txt`` (kohya-ss / taggui convention) and XMP (``dc:subject``).

``.txt`` sidecars hold tags separated by ``", "`` in a file with the image's stem (``a.jpg`` ->
``a.txt``). When two images in one folder share a stem (``a.jpg`` and ``a.png``) they must not share
one file, so the full name (``a.jpg.txt``) is used instead; :func:`plan_txt_paths` decides per image
according to a naming policy:

* ``"stem"``: always ``a.txt``; images whose stem collides get no path (``None``) and are reported.
* ``"full"``: always ``a.jpg.txt``.
* ``"auto"``: ``a.txt`` unless the stem collides, then ``a.jpg.txt``.

XMP sidecars are ``a.jpg.xmp`` (the digiKam / darktable / exiftool convention); tags live in the
``dc:subject`` ``rdf:Bag``. Writing an existing XMP file keeps everything else in it.

Every write is atomic (temporary file in the same folder, fsync, ``os.replace``, fsync of the folder)
and needs an explicit policy: ``"merge"`` (existing tags kept, new ones appended) or ``"replace"``.
Any failure raises :class:`SidecarError` with a message naming the file; the old file is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

NamingPolicy = Literal["stem", "full", "auto"]
WritePolicy = Literal["merge", "replace"]
NAMING_POLICIES: tuple[str, ...] = ("stem", "full", "auto")
WRITE_POLICIES: tuple[str, ...] = ("merge", "replace")
TAG_SEPARATOR = ", "

NS_X = "adobe:ns:meta/"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_DIGIKAM = "http://www.digikam.org/ns/1.0/"
NS_LR = "http://ns.adobe.com/lightroom/1.0/"
_STANDARD_PREFIXES = {"x": NS_X, "rdf": NS_RDF, "dc": NS_DC, "digiKam": NS_DIGIKAM, "lr": NS_LR}

# ElementTree's namespace registry is process-global; serialise its use.
_XML_LOCK = threading.Lock()


class SidecarError(Exception):
    """A sidecar could not be read or written; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------- tags


def normalize_tags(tags: Iterable[str]) -> list[str]:
    """Strip whitespace, drop empty tags and duplicates; keep first-seen order."""
    seen: set[str] = set()
    out: list[str] = []
    for tag in tags:
        tag = " ".join(str(tag).split())
        if tag and tag not in seen:
            seen.add(tag)
            out.append(tag)
    return out


def merge_tags(existing: Sequence[str], new: Sequence[str], policy: WritePolicy) -> list[str]:
    """The tags a sidecar should hold after writing ``new`` over ``existing`` with ``policy``."""
    if policy == "merge":
        return normalize_tags([*existing, *new])
    if policy == "replace":
        return normalize_tags(new)
    raise ValueError(f"unknown write policy {policy!r} (expected one of {WRITE_POLICIES})")


def parse_tag_text(text: str) -> list[str]:
    """Tags of a ``.txt`` sidecar's text: commas or newlines separate; tolerant of BOM and blanks."""
    text = text.lstrip("\ufeff")
    return normalize_tags(re.split(r"[,\n\r]", text))


def format_tag_text(tags: Iterable[str]) -> str:
    # A comma inside a tag would split it on the next read; no escape exists in this convention.
    return TAG_SEPARATOR.join(t.replace(",", " ") for t in normalize_tags(tags))


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
    return Path(image).with_name(Path(image).name + ".xmp")


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
    """The ``.txt`` sidecar to read for ``image``, if any.

    ``a.jpg.txt`` is preferred; ``a.txt`` is used only when no other image shares the stem, since
    a shared ``a.txt`` cannot be attributed to one image.
    """
    full = full_txt_path(image)
    if full.is_file():
        return full
    stem = stem_txt_path(image)
    if not collides and stem.is_file():
        return stem
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; on failure the old file is untouched."""
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


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SidecarError(f"sidecar {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise SidecarError(f"cannot read sidecar {path}: {exc.strerror or exc}") from exc


# ----------------------------------------------------------------------------------------- .txt


def read_txt(path: Path) -> list[str]:
    return parse_tag_text(_read_text(path))


def write_txt(path: Path, tags: Sequence[str], policy: WritePolicy) -> list[str]:
    """Write ``tags`` to a ``.txt`` sidecar with ``policy``; return the tags now in the file."""
    path = Path(path)
    existing = read_txt(path) if policy == "merge" and path.exists() else []
    final = merge_tags(existing, tags, policy)
    atomic_write_bytes(path, (format_tag_text(final) + "\n").encode("utf-8"))
    return final


# ------------------------------------------------------------------------------------------ XMP

_NEW_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="MLCNN Tagger">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    '  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
    "  </rdf:Description>\n"
    " </rdf:RDF>\n"
    "</x:xmpmeta>\n"
    '<?xpacket end="w"?>\n'
)


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


class _XmpDocument:
    """An XMP file split into the text before the root element, the root, and the text after it.

    ElementTree drops processing instructions outside the root (the ``<?xpacket`` lines); keeping
    the surrounding text verbatim preserves them.
    """

    def __init__(self, path: Path, text: str):
        self.path = path
        self.namespaces: dict[str, str] = {}
        body = text.lstrip("\ufeff")
        try:
            for _event, (prefix, uri) in ET.iterparse(_StringSource(body), events=("start-ns",)):
                self.namespaces.setdefault(prefix, uri)
            parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
            parser.feed(body)
            self.root = parser.close()
        except ET.ParseError as exc:
            raise SidecarError(f"XMP sidecar {path} is not well-formed XML: {exc}") from exc
        root_prefix = self._root_prefix(body)
        start = body.find(f"<{root_prefix}")
        end_tag = f"</{root_prefix}"
        end = body.rfind(end_tag)
        if start < 0:
            raise SidecarError(f"XMP sidecar {path} has no root element")
        if end < 0:  # self-closing root
            end = body.find("/>", start) + 2
        else:
            end = body.find(">", end) + 1
        self.before, self.after = body[:start], body[end:]

    def _root_prefix(self, body: str) -> str:
        m = re.search(r"<([A-Za-z_][\w.\-]*(?::[\w.\-]+)?)[\s/>]", _strip_prolog(body))
        if not m:
            raise SidecarError(f"XMP sidecar {self.path} has no root element")
        return m.group(1)

    def rdf(self) -> ET.Element:
        if self.root.tag == _q(NS_RDF, "RDF"):
            return self.root
        rdf = self.root.find(f".//{_q(NS_RDF, 'RDF')}")
        if rdf is None:
            raise SidecarError(f"XMP sidecar {self.path} has no rdf:RDF element")
        return rdf

    def bag_items(self, ns: str, local: str) -> list[str]:
        items: list[str] = []
        for prop in self.rdf().iter(_q(ns, local)):
            for li in prop.iter(_q(NS_RDF, "li")):
                items.append("".join(li.itertext()))
        return items

    def set_subject(self, tags: Sequence[str]) -> None:
        rdf = self.rdf()
        subjects = list(rdf.iter(_q(NS_DC, "subject")))
        if subjects:
            subject = subjects[0]
            for extra in subjects[1:]:
                for parent in rdf.iter():
                    if extra in list(parent):
                        parent.remove(extra)
        else:
            desc = rdf.find(_q(NS_RDF, "Description"))
            if desc is None:
                desc = ET.SubElement(rdf, _q(NS_RDF, "Description"), {_q(NS_RDF, "about"): ""})
            subject = ET.SubElement(desc, _q(NS_DC, "subject"))
        indent = "\n" + " " * 4
        for child in list(subject):
            subject.remove(child)
        subject.text = indent
        bag = ET.SubElement(subject, _q(NS_RDF, "Bag"))
        bag.text = indent + "  "
        for i, tag in enumerate(tags):
            li = ET.SubElement(bag, _q(NS_RDF, "li"))
            li.text = tag
            li.tail = indent + ("  " if i < len(tags) - 1 else "")
        if not tags:
            bag.text = None
        bag.tail = indent[:-1]

    def serialize(self) -> str:
        with _XML_LOCK:
            for prefix, uri in {**_STANDARD_PREFIXES, **self.namespaces}.items():
                if prefix and not re.fullmatch(r"ns\d+", prefix):
                    with contextlib.suppress(ValueError):
                        ET.register_namespace(prefix, uri)
            xml = ET.tostring(self.root, encoding="unicode")
        return self.before + xml + self.after


def _strip_prolog(body: str) -> str:
    # skip <?...?> instructions, comments and doctype before the root element
    return re.sub(r"^(\s*(<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>))*", "", body, flags=re.S)


class _StringSource:
    """A minimal file-like object for ``ET.iterparse`` over a string."""

    def __init__(self, text: str):
        self._data = text.encode("utf-8")
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self._data) - self._pos
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk


def read_xmp(path: Path, include_hierarchical: bool = False) -> list[str]:
    """Tags in an XMP sidecar's ``dc:subject``.

    With ``include_hierarchical``, ``digiKam:TagsList`` (``a/b``) and ``lr:hierarchicalSubject``
    (``a|b``) entries are added as ``a/b`` paths.
    """
    doc = _XmpDocument(Path(path), _read_text(path))
    tags = doc.bag_items(NS_DC, "subject")
    if include_hierarchical:
        tags += doc.bag_items(NS_DIGIKAM, "TagsList")
        tags += [t.replace("|", "/") for t in doc.bag_items(NS_LR, "hierarchicalSubject")]
    return normalize_tags(tags)


def write_xmp(path: Path, tags: Sequence[str], policy: WritePolicy) -> list[str]:
    """Write ``tags`` into an XMP sidecar's ``dc:subject`` with ``policy``, keeping all else.

    A malformed existing file raises :class:`SidecarError` and is left untouched.
    """
    path = Path(path)
    text = _read_text(path) if path.exists() else _NEW_XMP
    doc = _XmpDocument(path, text)
    existing = doc.bag_items(NS_DC, "subject") if policy == "merge" else []
    final = merge_tags(existing, tags, policy)
    doc.set_subject(final)
    atomic_write_bytes(path, doc.serialize().encode("utf-8"))
    return final


# ---------------------------------------------------------------------------------- per image


def read_image_sidecars(image: Path, collides: bool = False, include_hierarchical: bool = False) -> list[str]:
    """All tags in an image's existing sidecars (``.txt`` and XMP), merged; ``[]`` if none.

    Raises :class:`SidecarError` for an unreadable or malformed sidecar.
    """
    image = Path(image)
    tags: list[str] = []
    txt = existing_txt_sidecar(image, collides)
    if txt is not None:
        tags += read_txt(txt)
    xmp = xmp_sidecar_path(image)
    if xmp.is_file():
        tags += read_xmp(xmp, include_hierarchical=include_hierarchical)
    return normalize_tags(tags)


def write_image_sidecars(
    image: Path,
    tags: Sequence[str],
    *,
    formats: Iterable[str],
    txt_path: Path | None,
    policy: WritePolicy,
) -> list[Path]:
    """Write ``tags`` for ``image`` in each of ``formats`` (``"txt"``, ``"xmp"``); return files written.

    ``txt_path`` comes from :func:`plan_txt_paths`; ``None`` (a stem collision under the ``"stem"``
    policy) makes a ``.txt`` write fail with :class:`SidecarError` rather than share a file.
    All formats are attempted; the first error is raised after the others were tried.
    """
    written: list[Path] = []
    errors: list[SidecarError] = []
    for fmt in formats:
        try:
            if fmt == "txt":
                if txt_path is None:
                    raise SidecarError(
                        f"no .txt sidecar for {image}: another image shares its stem "
                        "(choose the 'auto' or 'full' naming policy)"
                    )
                write_txt(txt_path, tags, policy)
                written.append(Path(txt_path))
            elif fmt == "xmp":
                target = xmp_sidecar_path(image)
                write_xmp(target, tags, policy)
                written.append(target)
            else:
                raise ValueError(f"unknown sidecar format {fmt!r}")
        except SidecarError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    return written
