"""Keywords embedded in an image file: its XMP packet and its IPTC-IIM Keywords (2:25).

Only the metadata is read, never the pixels, and only the parts that can hold keywords:

* JPEG: the segments before the image data (up to SOS): APP1 ``http://ns.adobe.com/xap/1.0/``
  (XMP) and APP13 ``Photoshop 3.0`` (image resources, IPTC in resource 0x0404);
* PNG: the chunks before the image data (up to IDAT): iTXt ``XML:com.adobe.xmp`` (XMP), and the
  ``Raw profile type xmp`` / ``iptc`` / ``8bim`` text chunks that ImageMagick and exiftool write;
* WebP: the RIFF ``XMP `` chunk (other chunks are skipped by their length, not read);
* TIFF: the first IFD's tags 700 (XMP), 33723 (IPTC) and 34377 (Photoshop image resources).

The XMP packet's tags are read by the sidecar rule (:func:`sidecars.xmp_packet_tags`:
``dc:subject``, else the leaves of ``digiKam:TagsList`` / ``lr:hierarchicalSubject``), then the
IPTC keywords are added. At most :data:`MAX_METADATA_BYTES` of metadata are read from a file and at
most :data:`MAX_BLOCKS` segments or chunks are looked at. A part that is damaged, too large or
hostile (an XMP packet with a DOCTYPE) gives no keywords and a reason in
:attr:`EmbeddedKeywords.problem`; the reader never raises for a file's content.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mlcnn_core import sidecars

MAX_METADATA_BYTES = 4 * 1024 * 1024  # XMP and IPTC read from one file, all parts together
MAX_BLOCKS = 4096  # segments, chunks or IFD entries looked at in one file
_READ_AHEAD = 64 * 1024  # one read holds the metadata of most files

_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_JPEG_PHOTOSHOP = b"Photoshop 3.0\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
_PNG_RAW_PROFILES = {b"Raw profile type xmp": "xmp", b"Raw profile type iptc": "iptc",
                     b"Raw profile type 8bim": "resources", b"Raw profile type APP1": "app1"}
_IRB_IPTC = 0x0404  # the Photoshop image resource holding IPTC-IIM
_IIM_KEYWORDS = (2, 25)
_IIM_CHARSET = (1, 90)
_IIM_UTF8 = (b"\x1b%G", b"\x1b%/G")
_TIFF_XMP, _TIFF_IPTC, _TIFF_PHOTOSHOP = 700, 33723, 34377
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


@dataclass(frozen=True)
class EmbeddedKeywords:
    """The keywords of one image file, and why some of its metadata could not be read (``None``: all was)."""

    keywords: tuple[str, ...] = ()
    problem: str | None = None


class _Damaged(Exception):
    """The file's metadata is not what its format says; the message says where."""


# what a parser checking every length may still meet in metadata no check foresaw
_UNFORESEEN = (struct.error, ValueError, IndexError, OverflowError)


@dataclass
class _Block:
    kind: str  # "xmp", "iptc" (IIM records), "resources" (Photoshop image resources)
    data: bytes
    where: str  # "APP1 segment", "iTXt chunk", ...


class _Budget:
    """Bytes of metadata and blocks a file may still make the reader read and look at."""

    def __init__(self):
        self.bytes = MAX_METADATA_BYTES
        self.blocks = MAX_BLOCKS

    def block(self) -> None:
        self.blocks -= 1
        if self.blocks < 0:
            raise _Damaged(f"more than {MAX_BLOCKS} segments or chunks before the image data")

    def read(self, fh: BinaryIO, size: int, where: str) -> bytes:
        if size > self.bytes:
            raise _Damaged(f"its {where} holds {size} bytes, over the {MAX_METADATA_BYTES}-byte limit")
        data = fh.read(size)
        if len(data) != size:
            raise _Damaged(f"the file ends inside its {where}")
        self.bytes -= size
        return data


def read_embedded_keywords(path: str | Path) -> EmbeddedKeywords:
    """The keywords embedded in the image at ``path`` (see the module docstring); a file that cannot
    be opened, or a format that holds none (BMP, GIF), gives none."""
    path = Path(path)
    blocks: list[_Block] = []
    problems: list[str] = []
    try:
        with open(path, "rb", buffering=_READ_AHEAD) as fh:
            _collect_blocks(fh, blocks, problems)
    except (_Damaged, *_UNFORESEEN) as exc:
        problems.append(f"its metadata is damaged ({exc})")
    except OSError as exc:
        return EmbeddedKeywords((), f"cannot read {path}: {exc.strerror or exc}")
    keywords: list[str] = []
    for block in sorted(blocks, key=lambda b: b.kind != "xmp"):  # XMP's keywords first, as exiftool lists them
        try:
            keywords += _block_keywords(block)
        except (_Damaged, *_UNFORESEEN) as exc:
            problems.append(f"its {block.where} cannot be read ({exc})")
        except sidecars.SidecarError as exc:  # it names the block
            problems.append(str(exc))
    problem = None
    if problems:
        problem = f"{path}: " + "; ".join(problems) + ("; its other keywords were read" if keywords else "")
    return EmbeddedKeywords(tuple(sidecars.normalize_tags(keywords)), problem)


def _collect_blocks(fh: BinaryIO, blocks: list[_Block], problems: list[str]) -> None:
    head = fh.read(12)
    fh.seek(0)
    if head.startswith(b"\xff\xd8"):
        _jpeg_blocks(fh, blocks)
    elif head.startswith(_PNG_SIGNATURE):
        _png_blocks(fh, blocks, problems)
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        _webp_blocks(fh, blocks)
    elif head.startswith((b"II*\x00", b"MM\x00*")):
        _tiff_blocks(fh, blocks)


def _unpack(fmt: str, data: bytes, where: str) -> tuple:
    if len(data) != struct.calcsize(fmt):
        raise _Damaged(f"the file ends inside its {where}")
    return struct.unpack(fmt, data)


# ------------------------------------------------------------------------------------------- JPEG


def _jpeg_blocks(fh: BinaryIO, blocks: list[_Block]) -> None:
    budget = _Budget()
    fh.seek(2)
    resources = b""
    while True:
        budget.block()
        head = fh.read(4)  # marker and length, in one read
        if not head.startswith(b"\xff"):
            raise _Damaged("a segment does not start with a marker" if head else "the file ends before its image data")
        if head[1:2] == b"\xff":  # fill bytes before the marker
            fh.seek(-3, 1)
            continue
        if len(head) < 2:
            raise _Damaged("the file ends before its image data")
        code = head[1]
        if code in (0xDA, 0xD9):  # start of scan, end of image: no metadata after
            break
        if code == 0x01 or 0xD0 <= code <= 0xD8:  # markers without a length
            fh.seek(-2, 1)
            continue
        (length,) = _unpack(">H", head[2:], "segment length")
        if length < 2:
            raise _Damaged(f"a segment (marker 0x{code:02X}) has the impossible length {length}")
        size = length - 2
        signature = {0xE1: _JPEG_XMP, 0xED: _JPEG_PHOTOSHOP}.get(code, b"")
        head = fh.read(min(size, len(signature)))
        if not signature or head != signature:
            fh.seek(size - len(head), 1)
            continue
        payload = budget.read(fh, size - len(head), f"APP{code - 0xE0} segment")
        if code == 0xE1:
            blocks.append(_Block("xmp", payload, "XMP (APP1 segment)"))
        else:
            resources += payload  # the resources may span several segments
    if resources:
        blocks.append(_Block("resources", resources, "IPTC (APP13 segment)"))


# -------------------------------------------------------------------------------------------- PNG


def _png_blocks(fh: BinaryIO, blocks: list[_Block], problems: list[str]) -> None:
    budget = _Budget()
    fh.seek(len(_PNG_SIGNATURE))
    while True:
        budget.block()
        header = fh.read(8)
        if not header:
            raise _Damaged("the file ends before its image data")
        length, kind = _unpack(">I4s", header, "chunk header")
        if kind in (b"IDAT", b"IEND"):
            break
        if length > 0x7FFFFFFF:
            raise _Damaged(f"a {kind.decode('latin-1')} chunk has the impossible length {length}")
        head = fh.read(min(length, 80)) if kind in (b"iTXt", b"zTXt", b"tEXt") else b""
        keyword = head.partition(b"\x00")[0]
        if not (keyword in _PNG_RAW_PROFILES or (kind == b"iTXt" and keyword == _PNG_XMP_KEYWORD)):
            fh.seek(length - len(head) + 4, 1)  # data and CRC
            continue
        where = f"{kind.decode('ascii')} chunk"
        data = head + budget.read(fh, length - len(head), where)
        fh.seek(4, 1)
        try:
            text = _png_text(kind, data[len(keyword) + 1 :], budget, where)
            if keyword == _PNG_XMP_KEYWORD:
                blocks.append(_Block("xmp", text, f"XMP ({where})"))
                continue
            kind_of = _PNG_RAW_PROFILES[keyword]
            profile = _raw_profile(text, where)
        except _Damaged as exc:  # it names the chunk
            problems.append(str(exc))
            continue
        if kind_of == "app1":  # a JPEG APP1 payload, XMP when it says so
            if profile.startswith(_JPEG_XMP):
                blocks.append(_Block("xmp", profile[len(_JPEG_XMP) :], f"XMP ({where})"))
        else:
            blocks.append(_Block(kind_of, profile, f"{'XMP' if kind_of == 'xmp' else 'IPTC'} ({where})"))


def _png_text(kind: bytes, rest: bytes, budget: _Budget, where: str) -> bytes:
    """The text of a tEXt, zTXt or iTXt chunk, after its keyword."""
    if kind == b"tEXt":
        return rest
    if kind == b"zTXt":
        return _png_inflate(rest[1:], budget, where)
    return _png_itxt_text(rest, budget, where)


def _png_itxt_text(rest: bytes, budget: _Budget, where: str) -> bytes:
    """The text of an iTXt chunk after its keyword: compression flag and method, language, translated
    keyword, then the (maybe compressed) UTF-8 text."""
    if len(rest) < 2:
        raise _Damaged(f"its {where} is shorter than its header")
    compressed, method = rest[0], rest[1]
    _language, _, rest = rest[2:].partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    if compressed:
        if method != 0:
            raise _Damaged(f"its {where} uses the unknown compression method {method}")
        return _png_inflate(text, budget, where)
    return text


def _png_inflate(data: bytes, budget: _Budget, where: str) -> bytes:
    """zlib-inflated ``data``, at most what the budget allows (a small chunk may inflate to gigabytes)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, budget.bytes + 1)
    except zlib.error as exc:
        raise _Damaged(f"its {where} is not valid zlib data ({exc})") from None
    if len(text) > budget.bytes:
        raise _Damaged(f"its {where} inflates past the {MAX_METADATA_BYTES}-byte limit")
    budget.bytes -= len(text)
    return text


def _raw_profile(text: bytes, where: str) -> bytes:
    """The bytes of an ImageMagick raw profile: ``\\n<name>\\n<length>\\n<hex digits, in lines>``."""
    parts = text.lstrip(b"\n").split(b"\n", 2)
    if len(parts) != 3 or not parts[1].strip().isdigit():
        raise _Damaged(f"its {where} is not a raw profile")
    declared = int(parts[1])
    try:
        data = binascii.unhexlify(b"".join(parts[2].split()))
    except (binascii.Error, ValueError) as exc:
        raise _Damaged(f"its {where} is not hexadecimal ({exc})") from None
    if len(data) != declared:
        raise _Damaged(f"its {where} holds {len(data)} bytes where it declares {declared}")
    return data


# ------------------------------------------------------------------------------------------- WebP


def _webp_blocks(fh: BinaryIO, blocks: list[_Block]) -> None:
    budget = _Budget()
    fh.seek(12)
    while True:
        budget.block()
        header = fh.read(8)
        if not header:
            return
        kind, length = _unpack("<4sI", header, "chunk header")
        if kind != b"XMP ":
            fh.seek(length + (length & 1), 1)
            continue
        blocks.append(_Block("xmp", budget.read(fh, length, "XMP chunk"), "XMP (RIFF chunk)"))
        return


# ------------------------------------------------------------------------------------------- TIFF


def _tiff_blocks(fh: BinaryIO, blocks: list[_Block]) -> None:
    budget = _Budget()
    order = "<" if fh.read(2) == b"II" else ">"
    fh.seek(4)
    (ifd,) = _unpack(order + "I", fh.read(4), "header")
    fh.seek(ifd)
    (count,) = _unpack(order + "H", fh.read(2), "first IFD")
    if count > MAX_BLOCKS:
        raise _Damaged(f"its first IFD claims {count} entries")
    entries = fh.read(12 * count)
    if len(entries) != 12 * count:
        raise _Damaged("the file ends inside its first IFD")
    wanted = {_TIFF_XMP: ("xmp", "XMP (tag 700)"), _TIFF_IPTC: ("iptc", "IPTC (tag 33723)"),
              _TIFF_PHOTOSHOP: ("resources", "IPTC (tag 34377)")}
    for i in range(count):
        tag, kind, n, value = struct.unpack(order + "HHI4s", entries[12 * i : 12 * i + 12])
        if tag not in wanted:
            continue
        size = n * _TIFF_TYPE_SIZES.get(kind, 1)
        if size <= 4:
            data = value[:size]
        else:
            fh.seek(struct.unpack(order + "I", value)[0])
            data = budget.read(fh, size, wanted[tag][1])
        blocks.append(_Block(wanted[tag][0], data, wanted[tag][1]))


# ------------------------------------------------------------------------------------- the blocks


def _block_keywords(block: _Block) -> list[str]:
    if block.kind == "xmp":
        packet = block.data.rstrip(b"\x00 \t\r\n")
        return sidecars.xmp_packet_tags(packet, f"its {block.where}")
    if block.kind == "resources" or block.data.startswith(b"8BIM"):  # exiftool's PNG "iptc" profile is resources
        iim = _photoshop_iptc(block.data)
        return _iim_keywords(iim) if iim is not None else []
    return _iim_keywords(block.data)


def _photoshop_iptc(data: bytes) -> bytes | None:
    """The IPTC-IIM data in Photoshop image resources (``8BIM``, id, padded Pascal name, size, data)."""
    at = 0
    while at + 12 <= len(data):
        signature, resource = struct.unpack_from(">4sH", data, at)
        if signature != b"8BIM":
            raise _Damaged(f"an image resource starts with {signature!r}, not '8BIM'")
        name_length = data[at + 6]
        at += 6 + ((name_length + 2) & ~1)  # length byte and name, padded to an even size
        if at + 4 > len(data):
            break
        (size,) = struct.unpack_from(">I", data, at)
        at += 4
        if at + size > len(data):
            raise _Damaged(f"image resource 0x{resource:04X} runs past the end of the resources")
        if resource == _IRB_IPTC:
            return data[at : at + size]
        at += size + (size & 1)
    return None


def _iim_keywords(data: bytes) -> list[str]:
    """The Keywords (2:25) of IPTC-IIM records (``0x1C``, record, dataset, size, data), decoded as
    UTF-8 when the Coded Character Set (1:90) says so or when they are valid UTF-8, else as
    Windows-1252 (exiftool's and Photoshop's default)."""
    raw: list[bytes] = []
    utf8 = False
    at = 0
    while at + 5 <= len(data) and data[at] == 0x1C:
        record, dataset, size = struct.unpack_from(">BBH", data, at + 1)
        at += 5
        if size & 0x8000:  # an extended dataset: the size's own length follows
            length = size & 0x7FFF
            if length > 4 or at + length > len(data):
                raise _Damaged("an IPTC dataset has an impossible extended size")
            size = int.from_bytes(data[at : at + length], "big")
            at += length
        if at + size > len(data):
            raise _Damaged(f"IPTC dataset {record}:{dataset} runs past the end of the IPTC data")
        value = data[at : at + size]
        at += size
        if (record, dataset) == _IIM_KEYWORDS:
            raw.append(value)
        elif (record, dataset) == _IIM_CHARSET:
            utf8 = value in _IIM_UTF8
    return [_iim_text(value, utf8) for value in raw]


def _iim_text(value: bytes, utf8: bool) -> str:
    if utf8:
        return value.decode("utf-8", errors="replace")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", errors="replace")
