"""Keywords embedded in image files (XMP, IPTC): read back from what exiftool writes, never a crash
on damaged or hostile metadata, and imported into the library as a person's tags (issue 31.7)."""

import io
import json
import os
import shutil
import struct
import subprocess
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mlcnn_core import embedded_keywords
from mlcnn_core.embedded_keywords import read_embedded_keywords
from mlcnn_core.library import Library

needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None, reason="exiftool not installed (Debian: libimage-exiftool-perl)"
)

XMP_NS = b"http://ns.adobe.com/xap/1.0/\x00"


def xmp_packet(subjects=(), hierarchical=(), extra=""):
    def bag(name, items):
        lis = "".join(f"<rdf:li>{item}</rdf:li>" for item in items)
        return f"<{name}><rdf:Bag>{lis}</rdf:Bag></{name}>" if items else ""

    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        f"{extra}"
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:lr="http://ns.adobe.com/lightroom/1.0/">'
        f"{bag('dc:subject', subjects)}{bag('lr:hierarchicalSubject', hierarchical)}"
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def iptc_resources(keywords, utf8=True):
    """Photoshop image resources holding IPTC-IIM Keywords (2:25), as an APP13 segment carries them."""
    iim = b"\x1c\x01\x5a\x00\x03\x1b%G" if utf8 else b""
    for keyword in keywords:
        value = keyword.encode("utf-8" if utf8 else "cp1252")
        iim += struct.pack(">BBBH", 0x1C, 2, 25, len(value)) + value
    padded = iim + b"\x00" * (len(iim) & 1)
    return b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iim)) + padded


def segment(marker, payload):
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_with(*segments):
    """A real JPEG (Pillow's) with ``segments`` inserted after its SOI marker."""
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(out, "JPEG")
    data = out.getvalue()
    return data[:2] + b"".join(segments) + data[2:]


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with(*chunks):
    """A real PNG (Pillow's) with ``chunks`` inserted after IHDR."""
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(out, "PNG")
    data = out.getvalue()
    ihdr_end = 8 + 8 + 13 + 4
    return data[:ihdr_end] + b"".join(chunks) + data[ihdr_end:]


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------- written by exiftool


def exiftool(path, *assignments):
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-charset", "iptc=UTF8", *assignments, str(path)],
                   check=True, capture_output=True)


@needs_exiftool
@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tif"])
def test_keywords_exiftool_writes_are_read(tmp_path, ext):
    path = tmp_path / f"a.{ext}"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(path)
    exiftool(path, "-XMP-dc:Subject=cat", "-XMP-dc:Subject=black, white", "-XMP-dc:Subject=café",
             "-XMP-lr:HierarchicalSubject=animals|cat")
    assert read_embedded_keywords(path) == embedded_keywords.EmbeddedKeywords(("cat", "black, white", "café"))


@needs_exiftool
@pytest.mark.parametrize("ext", ["jpg", "png", "tif"])  # exiftool writes no IPTC into WebP
def test_iptc_keywords_exiftool_writes_are_read(tmp_path, ext):
    path = tmp_path / f"a.{ext}"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(path)
    exiftool(path, "-IPTC:Keywords=sunset", "-IPTC:Keywords=plage à Nice")
    assert read_embedded_keywords(path).keywords == ("sunset", "plage à Nice")
    exiftool(path, "-XMP-dc:Subject=sunset", "-XMP-dc:Subject=beach")
    assert read_embedded_keywords(path).keywords == ("sunset", "beach", "plage à Nice")


@needs_exiftool
@pytest.mark.parametrize("ext", ["jpg", "webp"])
def test_only_hierarchical_keywords_give_their_leaves(tmp_path, ext):
    path = tmp_path / f"a.{ext}"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(path)
    exiftool(path, "-XMP-lr:HierarchicalSubject=animals|bird", "-XMP-digiKam:TagsList=places/sea")
    assert read_embedded_keywords(path).keywords == ("sea",)  # digiKam's field first, as digiKam reads them
    exiftool(path, "-XMP-digiKam:TagsList=")
    assert read_embedded_keywords(path).keywords == ("bird",)


# --------------------------------------------------------------------------------- built by hand


def test_xmp_and_iptc_of_a_jpeg_are_read_without_exiftool(tmp_path):
    path = write(tmp_path, "a.jpg", jpeg_with(
        segment(0xE1, b"Exif\x00\x00" + b"\x00" * 40),
        segment(0xE1, XMP_NS + xmp_packet(["red", "sky"])),
        segment(0xED, b"Photoshop 3.0\x00" + iptc_resources(["sky", "Zürich"])),
    ))
    assert read_embedded_keywords(path) == embedded_keywords.EmbeddedKeywords(("red", "sky", "Zürich"))


def test_legacy_iptc_without_a_character_set_is_read_as_windows_1252(tmp_path):
    resources = iptc_resources(["café"], utf8=False)
    path = write(tmp_path, "a.jpg", jpeg_with(segment(0xED, b"Photoshop 3.0\x00" + resources)))
    assert read_embedded_keywords(path).keywords == ("café",)


def test_files_without_keywords_give_none_and_no_problem(tmp_path):
    for name in ("a.jpg", "a.png", "a.webp", "a.tif", "a.bmp", "a.gif"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
        assert read_embedded_keywords(tmp_path / name) == embedded_keywords.EmbeddedKeywords(), name


def test_a_missing_file_gives_a_reason(tmp_path):
    result = read_embedded_keywords(tmp_path / "gone.jpg")
    assert result.keywords == () and "cannot read" in result.problem


DAMAGED = {
    "an APP1 segment longer than the file": lambda: jpeg_with(segment(0xE1, XMP_NS + xmp_packet(["x"])))[:60],
    "a JPEG cut before its image data": lambda: b"\xff\xd8" + segment(0xE0, b"JFIF\x00" + b"\x00" * 9),
    "a segment of impossible length": lambda: b"\xff\xd8\xff\xe1\x00\x01" + b"\x00" * 64,
    "garbage where a marker should be": lambda: b"\xff\xd8" + b"\x17" * 200,
    "XMP that is not XML": lambda: jpeg_with(segment(0xE1, XMP_NS + b"<x:xmpmeta><rdf:li>cat</x:xmp")),
    "XMP that is not UTF-8": lambda: jpeg_with(segment(0xE1, XMP_NS + b"<a>\xff\xfe\xfd</a>")),
    "image resources that are not 8BIM": lambda: jpeg_with(segment(0xED, b"Photoshop 3.0\x00" + b"JUNK" * 8)),
    "an IPTC dataset longer than its block": lambda: jpeg_with(segment(
        0xED, b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00" + struct.pack(">I", 5) + b"\x1c\x02\x19\x7f\xff\x00")),
    "a PNG chunk longer than the file": lambda: png_with(png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00"
                                                                    + xmp_packet(["x"])))[:60],
    "a PNG chunk of impossible length": lambda: png_with(b"\xff\xff\xff\xfftEXt")[:80],
    "an iTXt chunk that is not zlib": lambda: png_with(
        png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00junk")),
    "a raw profile that is not hexadecimal": lambda: png_with(
        png_chunk(b"tEXt", b"Raw profile type iptc\x00\niptc\n  4\nzzzz\n")),
    "a TIFF whose IFD is past its end": lambda: b"II*\x00" + struct.pack("<I", 10_000) + b"\x00" * 8,
    "a TIFF XMP tag pointing past its end": lambda: b"II*\x00" + struct.pack("<IH", 8, 1)
    + struct.pack("<HHII", 700, 7, 5000, 1_000_000) + b"\x00\x00\x00\x00",
    "a WebP chunk cut short": lambda: b"RIFF\x00\x10\x00\x00WEBPXMP " + struct.pack("<I", 4000) + b"<x:xmpmeta",
}


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_metadata_gives_no_keywords_and_a_reason(tmp_path, name):
    path = write(tmp_path, "damaged.img", DAMAGED[name]())
    result = read_embedded_keywords(path)
    assert result.keywords == ()
    assert result.problem and str(path) in result.problem


def test_an_xmp_packet_with_entities_is_refused(tmp_path):
    laughs = '<!DOCTYPE x [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    packet = xmp_packet(["&b;"], extra=laughs)
    path = write(tmp_path, "a.jpg", jpeg_with(segment(0xE1, XMP_NS + packet)))
    result = read_embedded_keywords(path)
    assert result.keywords == () and "DOCTYPE" in result.problem


def test_a_compressed_chunk_that_inflates_past_the_limit_is_not_inflated(tmp_path):
    bomb = zlib.compress(b" " * (embedded_keywords.MAX_METADATA_BYTES + 1), 9)
    path = write(tmp_path, "a.png", png_with(png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + bomb)))
    result = read_embedded_keywords(path)
    assert result.keywords == () and "limit" in result.problem


def test_a_damaged_part_does_not_hide_an_intact_one(tmp_path):
    path = write(tmp_path, "a.jpg", jpeg_with(
        segment(0xE1, XMP_NS + xmp_packet(["kept"])),
        segment(0xED, b"Photoshop 3.0\x00" + b"JUNK" * 8),
    ))
    result = read_embedded_keywords(path)
    assert result.keywords == ("kept",) and "APP13" in result.problem


def test_pixels_after_the_metadata_are_not_read(tmp_path, monkeypatch):
    """Only the segments before the image data are read: a keyword-sized read, not the file."""
    big = io.BytesIO()
    Image.effect_noise((1500, 1500), 64).convert("RGB").save(big, "JPEG", quality=95)
    data = big.getvalue()
    path = write(tmp_path, "a.jpg", data[:2] + segment(0xE1, XMP_NS + xmp_packet(["x"])) + data[2:])
    assert os.path.getsize(path) > 10 * embedded_keywords._READ_AHEAD
    read = [0]

    class CountingFile(io.FileIO):
        def readinto(self, buffer):
            n = super().readinto(buffer)
            read[0] += n or 0
            return n

    def counting_open(file, mode="rb", buffering=-1):
        return io.BufferedReader(CountingFile(file, mode), buffer_size=max(buffering, io.DEFAULT_BUFFER_SIZE))

    monkeypatch.setattr(embedded_keywords, "open", counting_open, raising=False)
    assert read_embedded_keywords(path).keywords == ("x",)
    assert 0 < read[0] <= 2 * embedded_keywords._READ_AHEAD


def tiff_with_xmp(packet):
    """A little-endian TIFF whose first IFD holds only tag 700 (XMP), the packet after it."""
    return b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 700, 7, len(packet), 26) + b"\x00" * 4 + packet


def webp_with_xmp(packet):
    body = b"WEBP" + b"VP8 " + struct.pack("<I", 3) + b"abc\x00" + b"XMP " + struct.pack("<I", len(packet)) + packet
    return b"RIFF" + struct.pack("<I", len(body)) + body


INTACT = {
    "jpeg": lambda: jpeg_with(segment(0xE1, XMP_NS + xmp_packet(["red"], ["a|b"])),
                              segment(0xED, b"Photoshop 3.0\x00" + iptc_resources(["sky"]))),
    "png": lambda: png_with(
        png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(xmp_packet(["red"]))),
        png_chunk(b"zTXt", b"Raw profile type iptc\x00\x00" + zlib.compress(
            b"\niptc\n%d\n" % len(iptc_resources(["sky"])) + iptc_resources(["sky"]).hex().encode()))),
    "tiff": lambda: tiff_with_xmp(xmp_packet(["red"])),
    "webp": lambda: webp_with_xmp(xmp_packet(["red"])),
}


@pytest.mark.parametrize("kind", INTACT)
def test_the_hand_built_files_are_read(tmp_path, kind):
    expected = ("red", "sky") if kind in ("jpeg", "png") else ("red",)
    assert read_embedded_keywords(write(tmp_path, "f", INTACT[kind]())) == embedded_keywords.EmbeddedKeywords(expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(INTACT)), data=st.data())
def test_mutated_metadata_never_raises(tmp_path, kind, data):
    original = INTACT[kind]()
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(2, min(len(mutated), 700) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(2, len(original)))
    result = read_embedded_keywords(write(tmp_path, "m", bytes(mutated[:cut])))
    assert isinstance(result.keywords, tuple)


# ------------------------------------------------------------------------------------ the library


def tagged_jpeg(path, subjects):
    path.write_bytes(jpeg_with(segment(0xE1, XMP_NS + xmp_packet(subjects))))


def open_and_import(folder, as_confirmed=False):
    library = Library.open(folder)
    library.scan()
    library.import_sidecars(as_confirmed=as_confirmed)
    return library, library.import_embedded_keywords(as_confirmed=as_confirmed)


def tag_sources(library, name):
    return {t.tag: (t.source, t.state) for t in library.tags(library.image_id(name))}


def test_a_scan_shows_embedded_keywords_as_the_persons_imported_tags(tmp_path):
    tagged_jpeg(tmp_path / "a.jpg", ["red", "sky"])
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    library, result = open_and_import(tmp_path)
    assert tag_sources(library, "a.jpg") == {"red": ("sidecar", "imported"), "sky": ("sidecar", "imported")}
    assert tag_sources(library, "b.png") == {}
    assert result.changed == [library.image_id("a.jpg")] and result.messages == []
    assert library.pending_embedded_keywords() == []
    library.close()


def test_the_scan_itself_opens_no_image(tmp_path, monkeypatch):
    tagged_jpeg(tmp_path / "a.jpg", ["red"])

    def refuse(path):
        raise AssertionError(f"{path} was opened")

    monkeypatch.setattr(embedded_keywords, "read_embedded_keywords", refuse)
    library = Library.open(tmp_path)
    library.scan()
    library.import_sidecars()
    assert library.pending_embedded_keywords() == [library.image_id("a.jpg")]
    library.close()


def test_only_new_and_changed_files_are_read_again(tmp_path, monkeypatch):
    tagged_jpeg(tmp_path / "a.jpg", ["red"])
    tagged_jpeg(tmp_path / "b.jpg", ["blue"])
    library, _ = open_and_import(tmp_path)
    read = []
    real = embedded_keywords.read_embedded_keywords
    monkeypatch.setattr(embedded_keywords, "read_embedded_keywords", lambda p: read.append(p.name) or real(p))
    library.scan()
    assert library.import_embedded_keywords().changed == [] and read == []

    tagged_jpeg(tmp_path / "a.jpg", ["green"])  # another program replaced the keywords
    later = time.time() + 2
    os.utime(tmp_path / "a.jpg", (later, later))  # the tests' clock may not move between two writes
    library.scan()
    assert library.import_embedded_keywords().changed == [library.image_id("a.jpg")]
    assert read == ["a.jpg"]
    assert tag_sources(library, "a.jpg") == {"green": ("sidecar", "imported")}
    library.close()


def captioned_photo(folder, keywords):
    """``a.jpg`` holding ``keywords`` and its caption ``a.txt``, both imported; the library and the caption."""
    tagged_jpeg(folder / "a.jpg", keywords)
    txt = folder / "a.txt"
    txt.write_text("from-caption\n")
    return open_and_import(folder)[0], txt


def edit_elsewhere(path, text):
    """``path`` rewritten by another program, with a later modification time."""
    path.write_text(text)
    later = time.time() + 2
    os.utime(path, (later, later))


def test_sidecar_and_embedded_tags_live_side_by_side(tmp_path):
    library, txt = captioned_photo(tmp_path, ["from-image"])
    assert set(tag_sources(library, "a.jpg")) == {"from-caption", "from-image"}
    edit_elsewhere(txt, "edited-caption\n")  # a caption changed: the image's own keywords stay
    library.import_sidecars()
    assert set(tag_sources(library, "a.jpg")) == {"edited-caption", "from-image"}
    library.close()


def test_a_keyword_a_person_removed_stays_removed_when_the_caption_changes(tmp_path):
    library, txt = captioned_photo(tmp_path, ["from-image", "unwanted"])
    library.remove_tag(library.image_id("a.jpg"), "unwanted")
    edit_elsewhere(txt, "from-caption, edited-outside\n")
    library.import_sidecars()
    assert set(tag_sources(library, "a.jpg")) == {"from-image", "from-caption", "edited-outside"}
    library.close()


def test_a_write_that_meets_an_edited_caption_keeps_the_embedded_keywords(tmp_path):
    library, txt = captioned_photo(tmp_path, ["from-image"])
    image_id = library.image_id("a.jpg")
    library.set_tag(image_id, "added-here", "added")
    txt.write_text("from-caption, edited-outside\n")  # another program, since the library read it
    library.write_sidecars(image_id, formats=["txt"], txt_path=txt, policy="merge")
    assert set(tag_sources(library, "a.jpg")) == {"from-image", "from-caption", "edited-outside", "added-here"}
    library.close()


def test_a_persons_decisions_stand_and_trust_is_as_for_sidecars(tmp_path):
    tagged_jpeg(tmp_path / "a.jpg", ["red", "sky"])
    library, _ = open_and_import(tmp_path, as_confirmed=True)
    assert tag_sources(library, "a.jpg") == {"red": ("human", "confirmed"), "sky": ("human", "confirmed")}
    assert library.image(library.image_id("a.jpg")).status == "confirmed"
    library.close()

    other = tmp_path / "other"
    other.mkdir()
    tagged_jpeg(other / "a.jpg", ["red", "sky"])
    library = Library.open(other)
    library.scan()
    image_id = library.image_id("a.jpg")
    library.set_tag(image_id, "red", "rejected")
    library.import_embedded_keywords()
    assert tag_sources(library, "a.jpg") == {"red": ("human", "rejected"), "sky": ("sidecar", "imported")}
    library.close()


def test_damaged_metadata_is_reported_once_and_the_scan_goes_on(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(DAMAGED["an APP1 segment longer than the file"]())
    tagged_jpeg(tmp_path / "good.jpg", ["ok"])
    library, result = open_and_import(tmp_path)
    assert len(result.messages) == 1 and "bad.jpg" in result.messages[0]
    assert set(tag_sources(library, "good.jpg")) == {"ok"}
    assert library.import_embedded_keywords().messages == []  # the same file is not read again
    library.close()


def test_an_old_library_gets_the_table_and_a_newer_one_is_refused(tmp_path):
    import sqlite3

    from mlcnn_core import library as library_module

    library = Library.open(tmp_path)
    library.close()
    db = tmp_path / ".mlcnn-tagger" / "library.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE embedded_keywords")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    tagged_jpeg(tmp_path / "a.jpg", ["red"])
    library, _ = open_and_import(tmp_path)
    assert set(tag_sources(library, "a.jpg")) == {"red"}
    version = library.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
    assert version == str(library_module.SCHEMA_VERSION) == "3"
    library.close()


def test_the_cli_counts_images_with_embedded_keywords_as_tagged(tmp_path, capsys):
    from mlcnn_core.cli import EXIT_OK, main
    from mlcnn_core.modelfile import new_model, save_model

    model = tmp_path / "tiny.safetensors"
    save_model(new_model("tiny", labels=["circle", "square"]), model)
    folder = tmp_path / "photos"
    folder.mkdir()
    tagged_jpeg(folder / "a.jpg", ["holiday"])
    Image.new("RGB", (32, 32), (1, 2, 3)).save(folder / "b.jpg")
    assert main(["tag", str(folder), "--model", str(model)]) == EXIT_OK
    proposed = [json.loads(line)["image"] for line in capsys.readouterr().out.splitlines()]
    assert proposed == [str(folder / "b.jpg")]
    library = Library.open(folder)
    assert tag_sources(library, "a.jpg") == {"holiday": ("sidecar", "imported")}
    library.close()
