import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlcnn_core import sidecars
from mlcnn_core.sidecars import (
    SidecarError,
    find_stem_collisions,
    parse_tag_text,
    plan_txt_paths,
    read_image_sidecars,
    read_txt,
    read_xmp,
    write_image_sidecars,
    write_txt,
    write_xmp,
)

DIGIKAM_XMP = textwrap.dedent(
    """\
    <?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
    <x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
     <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
      <rdf:Description rdf:about=""
        xmlns:xmp="http://ns.adobe.com/xap/1.0/"
        xmlns:dc="http://purl.org/dc/elements/1.1/"
        xmlns:digiKam="http://www.digikam.org/ns/1.0/"
        xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
       xmp:Rating="4">
       <!-- a comment to keep -->
       <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Sunset</rdf:li></rdf:Alt></dc:title>
       <dc:subject>
        <rdf:Bag>
         <rdf:li>cat</rdf:li>
         <rdf:li>sky</rdf:li>
        </rdf:Bag>
       </dc:subject>
       <digiKam:TagsList><rdf:Seq><rdf:li>Animals/cat</rdf:li></rdf:Seq></digiKam:TagsList>
       <lr:hierarchicalSubject><rdf:Bag><rdf:li>Places|beach</rdf:li></rdf:Bag></lr:hierarchicalSubject>
      </rdf:Description>
     </rdf:RDF>
    </x:xmpmeta>
    <?xpacket end="w"?>
    """
)


def test_parse_tolerates_bom_newlines_spaces_duplicates_trailing_commas():
    text = "\ufeff cat,  dog ,\n\nblue  sky,cat, ,\r\n"
    assert parse_tag_text(text) == ["cat", "dog", "blue sky"]


def test_txt_round_trip(tmp_path):
    path = tmp_path / "a.txt"
    write_txt(path, ["cat", "blue sky", "cat"], policy="replace")
    assert path.read_text() == "cat, blue sky\n"
    assert read_txt(path) == ["cat", "blue sky"]


def test_txt_merge_and_replace(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old, cat")
    assert write_txt(path, ["cat", "new"], policy="merge") == ["old", "cat", "new"]
    assert write_txt(path, ["only"], policy="replace") == ["only"]
    assert read_txt(path) == ["only"]


def test_unknown_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError):
        write_txt(tmp_path / "a.txt", ["x"], policy="overwrite")  # type: ignore[arg-type]


def test_collisions_never_share_a_file(tmp_path):
    images = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "sub" / "a.gif"]
    assert find_stem_collisions(images) == [[tmp_path / "a.jpg", tmp_path / "a.png"]]

    auto = plan_txt_paths(images, "auto")
    assert auto[tmp_path / "a.jpg"] == tmp_path / "a.jpg.txt"
    assert auto[tmp_path / "a.png"] == tmp_path / "a.png.txt"
    assert auto[tmp_path / "b.jpg"] == tmp_path / "b.txt"
    assert auto[tmp_path / "sub" / "a.gif"] == tmp_path / "sub" / "a.txt"

    full = plan_txt_paths(images, "full")
    assert full[tmp_path / "b.jpg"] == tmp_path / "b.jpg.txt"

    stem = plan_txt_paths(images, "stem")
    assert stem[tmp_path / "a.jpg"] is None and stem[tmp_path / "a.png"] is None
    assert stem[tmp_path / "b.jpg"] == tmp_path / "b.txt"
    paths = [p for p in stem.values() if p is not None]
    assert len(paths) == len(set(paths))

    with pytest.raises(SidecarError, match="shares its stem"):
        write_image_sidecars(tmp_path / "a.jpg", ["x"], formats=["txt"], txt_path=None, policy="merge")


def test_shared_stem_txt_is_not_attributed_to_colliding_images(tmp_path):
    (tmp_path / "a.txt").write_text("shared")
    (tmp_path / "a.png.txt").write_text("own")
    assert read_image_sidecars(tmp_path / "a.jpg", collides=True) == []
    assert read_image_sidecars(tmp_path / "a.png", collides=True) == ["own"]
    assert read_image_sidecars(tmp_path / "a.jpg", collides=False) == ["shared"]


def test_xmp_read_subject_and_hierarchical(tmp_path):
    path = tmp_path / "a.jpg.xmp"
    path.write_text(DIGIKAM_XMP, encoding="utf-8")
    assert read_xmp(path) == ["cat", "sky"]
    assert read_xmp(path, include_hierarchical=True) == ["cat", "sky", "Animals/cat", "Places/beach"]


def test_xmp_write_preserves_other_content(tmp_path):
    path = tmp_path / "a.jpg.xmp"
    path.write_text(DIGIKAM_XMP, encoding="utf-8")
    assert write_xmp(path, ["dog"], policy="merge") == ["cat", "sky", "dog"]
    text = path.read_text(encoding="utf-8")
    assert text.startswith('<?xpacket begin="\ufeff"')
    assert text.rstrip().endswith('<?xpacket end="w"?>')
    for kept in [
        'xmp:Rating="4"',
        "a comment to keep",
        "Sunset",
        "digiKam:TagsList",
        "Places|beach",
        'x:xmptk="XMP Core 4.4.0-Exiv2"',
        "<dc:subject>",
        "<rdf:Bag>",
    ]:
        assert kept in text, kept
    assert "ns0:" not in text
    assert read_xmp(path) == ["cat", "sky", "dog"]
    write_xmp(path, ["bird"], policy="replace")
    assert read_xmp(path) == ["bird"]
    assert 'xmp:Rating="4"' in path.read_text(encoding="utf-8")


def test_xmp_created_when_missing_and_readable(tmp_path):
    path = tmp_path / "new.png.xmp"
    write_xmp(path, ["a", "b & c", "<d>"], policy="merge")
    assert read_xmp(path) == ["a", "b & c", "<d>"]
    assert "<?xpacket" in path.read_text(encoding="utf-8")


def test_xmp_without_subject_gets_one(tmp_path):
    path = tmp_path / "a.jpg.xmp"
    path.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="2"/>'
        "</rdf:RDF></x:xmpmeta>"
    )
    write_xmp(path, ["cat"], policy="merge")
    assert read_xmp(path) == ["cat"]
    assert 'xmp:Rating="2"' in path.read_text()


def test_malformed_xmp_raises_and_is_untouched(tmp_path):
    path = tmp_path / "a.jpg.xmp"
    broken = "<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>"
    path.write_text(broken)
    with pytest.raises(SidecarError, match="not well-formed"):
        read_xmp(path)
    with pytest.raises(SidecarError, match=str(path).replace("\\", "\\\\")):
        write_xmp(path, ["cat"], policy="merge")
    assert path.read_text() == broken


def test_non_utf8_txt_is_a_clear_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(SidecarError, match="UTF-8"):
        read_txt(path)


def test_unwritable_folder_is_a_sidecar_error(tmp_path):
    parent_is_a_file = tmp_path / "file"
    parent_is_a_file.write_text("x")
    with pytest.raises(SidecarError, match="cannot write sidecar"):
        write_txt(parent_is_a_file / "a.txt", ["cat"], policy="replace")


def test_full_disk_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sidecars.os, "replace", no_space)
    with pytest.raises(SidecarError, match="No space left"):
        write_txt(path, ["new"], policy="replace")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_killed_mid_write_leaves_old_file_intact(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old, tags")
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from mlcnn_core import sidecars
        def die(*a, **k):
            os._exit(9)
        sidecars.os.replace = die
        sidecars.write_txt({str(path)!r}, ["new"], policy="replace")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == 9
    assert path.read_text() == "old, tags"
    assert read_txt(path) == ["old", "tags"]


def test_write_image_sidecars_both_formats(tmp_path):
    image = tmp_path / "a.jpg"
    written = write_image_sidecars(
        image, ["cat", "dog"], formats=["txt", "xmp"], txt_path=tmp_path / "a.txt", policy="merge"
    )
    assert written == [tmp_path / "a.txt", tmp_path / "a.jpg.xmp"]
    assert read_image_sidecars(image) == ["cat", "dog"]


def test_written_file_mode_is_readable(tmp_path):
    path = tmp_path / "a.txt"
    write_txt(path, ["x"], policy="replace")
    assert os.stat(path).st_mode & 0o444 == 0o444
