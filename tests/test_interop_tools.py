"""What exiftool and exiv2 (the engine of digiKam and darktable) read of the XMP sidecars written here.

Each test runs the real tool; where it is not installed (`apt-get install libimage-exiftool-perl exiv2`)
the test is skipped and says so.
"""

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from mlcnn_core import sidecars

needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None, reason="exiftool not installed (Debian: libimage-exiftool-perl)"
)
needs_exiv2 = pytest.mark.skipif(shutil.which("exiv2") is None, reason="exiv2 not installed (Debian: exiv2)")

KEYWORD_FIELDS = ("Subject", "HierarchicalSubject", "TagsList")

# As darktable 4 writes a sidecar: an XML declaration, its own history, and its own tags in
# lr:hierarchicalSubject but not in dc:subject.
DARKTABLE_XMP = textwrap.dedent(
    """\
    <?xml version="1.0" encoding="UTF-8"?>
    <x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
     <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
      <rdf:Description rdf:about=""
        xmlns:xmp="http://ns.adobe.com/xap/1.0/"
        xmlns:dc="http://purl.org/dc/elements/1.1/"
        xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
        xmlns:darktable="http://darktable.sf.net/"
       xmp:Rating="2"
       darktable:xmp_version="5"
       darktable:history_end="1">
       <dc:subject>
        <rdf:Bag>
         <rdf:li>holiday</rdf:li>
        </rdf:Bag>
       </dc:subject>
       <lr:hierarchicalSubject>
        <rdf:Bag>
         <rdf:li>darktable|format|jpg</rdf:li>
         <rdf:li>places|holiday</rdf:li>
        </rdf:Bag>
       </lr:hierarchicalSubject>
       <darktable:history>
        <rdf:Seq>
         <rdf:li darktable:num="0" darktable:operation="exposure" darktable:enabled="1"
          darktable:params="0000000000000000" darktable:multi_name=""/>
        </rdf:Seq>
       </darktable:history>
      </rdf:Description>
     </rdf:RDF>
    </x:xmpmeta>
    """
)


def make_jpeg(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(path)
    return path


def exiftool_fields(path: Path) -> dict:
    out = subprocess.run(
        ["exiftool", "-j", "-struct", "-XMP:all", str(path)], capture_output=True, text=True, check=True
    ).stdout
    fields = json.loads(out)[0]
    return {k: (v if isinstance(v, list) else [v]) if k in KEYWORD_FIELDS else v for k, v in fields.items()}


def exiftool_validates(path: Path) -> None:
    out = subprocess.run(["exiftool", "-validate", "-warning", "-a", str(path)], capture_output=True, text=True)
    assert "Validate                        : OK" in out.stdout, out.stdout + out.stderr


def exiv2_keys(path: Path) -> dict[str, str]:
    out = subprocess.run(["exiv2", "-px", str(path)], capture_output=True, text=True, check=True).stdout
    keys = {}
    for line in out.splitlines():
        parts = line.split(None, 3)
        keys[parts[0]] = parts[3] if len(parts) > 3 else ""
    return keys


@needs_exiftool
def test_exiftool_file_with_hierarchical_fields_gets_our_edits_in_every_field(tmp_path):
    image = make_jpeg(tmp_path / "x.jpg")
    xmp = tmp_path / "x.jpg.xmp"
    fields = [
        "-XMP-dc:Subject=cat",
        "-XMP-dc:Subject=sky",
        "-XMP-lr:HierarchicalSubject=Animals|cat",
        "-XMP-digiKam:TagsList=Animals/cat",
        "-XMP-xmp:Rating=3",
        "-XMP-dc:Title=Sunset",
        "-XMP-dc:Creator=Ann",
    ]
    subprocess.run(["exiftool", "-q", *fields, "-o", str(xmp), str(image)], check=True)
    sidecars.write_xmp(xmp, ["cat-face"], policy="merge")
    fields = exiftool_fields(xmp)
    assert fields["Subject"] == ["cat", "sky", "cat-face"]
    assert fields["TagsList"] == ["Animals/cat", "sky", "cat-face"]
    assert fields["HierarchicalSubject"] == ["Animals|cat", "sky", "cat-face"]
    assert (fields["Rating"], fields["Title"], fields["Creator"]) == (3, "Sunset", ["Ann"])
    exiftool_validates(xmp)

    sidecars.write_xmp(xmp, ["sky", "cat-face"], policy="replace")  # the person removed "cat"
    fields = exiftool_fields(xmp)
    assert fields["Subject"] == fields["TagsList"] == fields["HierarchicalSubject"] == ["sky", "cat-face"]
    assert fields["Rating"] == 3
    exiftool_validates(xmp)


@needs_exiftool
@needs_exiv2
def test_a_new_sidecar_reads_the_same_in_both_tools(tmp_path):
    xmp = tmp_path / "x.jpg.xmp"
    tags = ["a & b", "<tag>", "naïve", "日本語", "emoji 🐱", "\u202eright-to-left", "it's \"quoted\""]
    sidecars.write_xmp(xmp, tags + ["ctl\x01char"], policy="merge")
    expected = tags + ["ctlchar"]
    fields = exiftool_fields(xmp)
    assert fields["Subject"] == fields["HierarchicalSubject"] == expected
    exiftool_validates(xmp)
    keys = exiv2_keys(xmp)
    assert keys["Xmp.dc.subject"] == ", ".join(expected)
    assert keys["Xmp.lr.hierarchicalSubject"] == ", ".join(expected)


@needs_exiv2
def test_darktable_sidecar_keeps_its_history_and_shows_our_tags(tmp_path):
    xmp = tmp_path / "x.jpg.xmp"
    xmp.write_text(DARKTABLE_XMP)
    before = exiv2_keys(xmp)
    sidecars.write_xmp(xmp, ["person-gesture"], policy="merge")
    after = exiv2_keys(xmp)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {"Xmp.dc.subject", "Xmp.lr.hierarchicalSubject"}
    assert after["Xmp.lr.hierarchicalSubject"] == "darktable|format|jpg, places|holiday, person-gesture"
    assert after["Xmp.dc.subject"] == "holiday, person-gesture"
    assert "Xmp.darktable.history[1]/darktable:operation" in after


@needs_exiftool
def test_exiftool_percent_f_xmp_is_the_file_written(tmp_path):
    image = make_jpeg(tmp_path / "x.jpg")
    subprocess.run(
        ["exiftool", "-q", "-XMP-dc:Subject=kept", "-o", str(tmp_path / "%f.xmp"), str(image)], check=True
    )
    assert sidecars.read_image_sidecars(image) == ["kept"]
    written = sidecars.write_image_sidecars(image, ["new"], formats=["xmp"], txt_path=None, policy="merge")
    assert written == [tmp_path / "x.xmp"]
    assert exiftool_fields(tmp_path / "x.xmp")["Subject"] == ["kept", "new"]


def kohya_read_caption(path: Path) -> list[str]:
    """kohya-ss sd-scripts' caption rule (train_util.read_caption without wildcards): the first line,
    split on commas, each part stripped."""
    with open(path, encoding="utf-8") as f:
        first = f.readlines()[0].strip()
    return [t.strip() for t in first.split(",")]


def test_kohya_reads_our_txt_with_the_trigger_word_first(tmp_path):
    txt = tmp_path / "x.txt"
    txt.write_text("ohwx, 1girl, solo\nA second caption line, kept.\n")
    sidecars.write_txt(txt, ["1girl", "ohwx", "smile"], policy="replace")
    assert kohya_read_caption(txt) == ["ohwx", "1girl", "smile"]


def test_kohya_reads_the_caption_prefix_first(tmp_path):
    from mlcnn_core.library import Library
    from mlcnn_core.tag_rules import TagRules

    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "x.txt").write_text("1girl, ohwx, long_hair\nA second caption line, kept.\n")
    library = Library.open(tmp_path)
    library.scan()
    library.import_sidecars()
    image_id = library.image_id("x.jpg")
    library.set_tag(image_id, "smile", "added")
    library.write_sidecars(image_id, formats=["txt"], txt_path=tmp_path / "x.txt", policy="merge",
                           rules=TagRules(prefix=["ohwx"], word_separator="space"))
    library.close()
    assert kohya_read_caption(tmp_path / "x.txt") == ["ohwx", "1girl", "long hair", "smile"]


def test_taggui_reads_our_txt(tmp_path):
    """taggui's rule: the image's path with the suffix .txt, split on ", ", each part stripped."""
    image = tmp_path / "x.png"
    sidecars.write_image_sidecars(image, ["1girl", "blue sky", "(masterpiece:1.2)"], formats=["txt"],
                                  txt_path=sidecars.stem_txt_path(image), policy="merge")
    text = image.with_suffix(".txt").read_text(encoding="utf-8")
    assert [t.strip() for t in text.split(", ")] == ["1girl", "blue sky", "(masterpiece:1.2)"]
