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


def test_xmp_with_a_doctype_is_refused_and_untouched(tmp_path):
    """XMP allows no DTD; its entities could expand without bound (and a rewrite would expand them)."""
    path = tmp_path / "a.jpg.xmp"
    hostile = (
        '<!DOCTYPE x [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>&b;</rdf:li>'
        "</rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    path.write_text(hostile)
    with pytest.raises(SidecarError, match="DOCTYPE"):
        read_xmp(path)
    with pytest.raises(SidecarError, match="DOCTYPE"):
        write_xmp(path, ["cat"], policy="merge")
    assert path.read_text() == hostile


def test_broken_utf16_txt_is_a_clear_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(SidecarError, match="UTF-16"):
        read_txt(path)


def test_unwritable_folder_is_a_sidecar_error(tmp_path):
    parent_is_a_file = tmp_path / "file"
    parent_is_a_file.write_text("x")
    with pytest.raises(SidecarError, match="cannot (read|write) sidecar"):
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


# ---- tag text that would break a file (issue 29.1)


def _parses(path: Path) -> None:
    import xml.etree.ElementTree as ET

    ET.parse(path)  # raises on a file that is not well-formed


@pytest.mark.parametrize("bad", ["ctl\x01x", "bell\x07", "nul\x00l", "c1\x85x", "rev\ufffe"])
def test_control_characters_never_reach_an_xmp(tmp_path, bad):
    path = tmp_path / "a.jpg.xmp"
    path.write_text(DIGIKAM_XMP, encoding="utf-8")
    final = write_xmp(path, [bad], policy="merge")
    _parses(path)
    assert read_xmp(path) == final
    assert all(sidecars.normalize_tag(t) == t for t in final)
    assert 'xmp:Rating="4"' in path.read_text(encoding="utf-8")


def test_control_characters_in_a_txt_are_stripped_on_import(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"ctl\x01x, n\x00ul, ok")
    assert read_image_sidecars(tmp_path / "a.jpg") == ["ctlx", "nul", "ok"]
    write_xmp(tmp_path / "a.jpg.xmp", read_txt(tmp_path / "a.txt"), policy="merge")
    _parses(tmp_path / "a.jpg.xmp")


def test_a_tag_with_a_comma_is_refused_for_a_comma_separated_txt(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("cat\n")
    with pytest.raises(SidecarError, match="comma"):
        write_txt(path, ["hello, world"], policy="merge")
    assert path.read_text() == "cat\n"


# ---- the XMP root found by the parser (issue 29.5)


@pytest.mark.parametrize(
    "text",
    [
        '<!-- before <x:xmpmeta xmlns:x="adobe:ns:meta/"> -->\n' + DIGIKAM_XMP,
        DIGIKAM_XMP + "<!-- after </x:xmpmeta> -->\n",
        '<?xml version="1.0"?>\n<!-- <x:xmpmeta --><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta><!-- </x:xmpmeta> -->',
    ],
)
def test_comments_naming_the_root_do_not_split_the_file(tmp_path, text):
    path = tmp_path / "a.jpg.xmp"
    path.write_text(text, encoding="utf-8")
    write_xmp(path, ["dog"], policy="merge")
    _parses(path)
    assert "dog" in read_xmp(path)
    written = path.read_text(encoding="utf-8")
    for comment in [c for c in ("<!-- before <x:xmpmeta", "<!-- after </x:xmpmeta> -->") if c in text]:
        assert written.count(comment) == 1


# ---- legacy encodings (issue 29.4)


def test_latin1_txt_is_read_with_a_note_and_rewritten_as_utf8(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("café, naïve, übel\n".encode("latin-1"))
    notes: list[str] = []
    assert read_txt(path, notes) == ["café", "naïve", "übel"]
    assert "not UTF-8" in notes[0] and str(path) in notes[0]
    assert write_txt(path, ["naïve", "new"], policy="replace") == ["naïve", "new"]
    assert path.read_bytes().decode("utf-8") == "naïve, new\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_bom_txt_is_read(tmp_path, encoding):
    path = tmp_path / "a.txt"
    path.write_bytes("日本語, cat\n".encode(encoding))
    assert read_txt(path) == ["日本語", "cat"]


@pytest.mark.parametrize("encoding", ["utf-16", "iso-8859-1"])
def test_xmp_keeps_its_declared_encoding(tmp_path, encoding):
    path = tmp_path / "a.jpg.xmp"
    text = f'<?xml version="1.0" encoding="{encoding}"?>\n' + DIGIKAM_XMP.split("\n", 1)[1].replace("Sunset", "Café")
    path.write_bytes(text.encode(encoding))
    write_xmp(path, ["日本"], policy="merge")
    assert read_xmp(path) == ["cat", "sky", "日本"]
    assert path.read_bytes().decode(encoding).count("Café") == 1


# ---- the person's order and the file's shape (issue 31.2)


def test_replace_keeps_the_files_order_and_appends(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("ohwx, 1girl, wrong_tag, solo, smile\n")
    write_txt(path, ["1girl", "new", "ohwx", "smile", "solo"], policy="replace")
    assert path.read_text() == "ohwx, 1girl, solo, smile, new\n"


def test_merge_drops_removed_tags_and_keeps_order(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("ohwx, cat, wrong_tag, solo\n")
    write_txt(path, ["cat"], policy="merge", removed=["wrong_tag"])
    assert path.read_text() == "ohwx, cat, solo\n"


def test_multi_line_and_prose_captions_are_kept(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("photo of sks cat, outdoors\nsks cat sitting, close-up\nA cat sits on a mat in the sun.\n")
    assert read_txt(path) == ["photo of sks cat", "outdoors", "sks cat sitting", "close-up"]
    write_txt(path, ["cat-face"], policy="merge", removed=["close-up"])
    assert path.read_text() == (
        "photo of sks cat, outdoors, cat-face\nsks cat sitting\nA cat sits on a mat in the sun.\n"
    )
    prose = tmp_path / "b.txt"
    prose.write_text("A watercolour of a fox, painted at dusk.\n")
    write_txt(prose, ["fox"], policy="replace")
    assert prose.read_text() == "A watercolour of a fox, painted at dusk.\nfox\n"


def test_one_tag_per_line_files_keep_commas_and_shape(tmp_path):
    path = tmp_path / "a.jpg.txt"
    path.write_text("hello,_world\nblue sky\nsolo\n")
    assert read_txt(path) == ["hello,_world", "blue sky", "solo"]
    write_txt(path, ["x"], policy="merge", removed=["solo"])
    assert path.read_text() == "hello,_world\nblue sky\nx\n"


# ---- every keyword field (issue 31.3)


def test_hierarchical_fields_get_additions_and_removals(tmp_path):
    path = tmp_path / "a.jpg.xmp"
    path.write_text(DIGIKAM_XMP, encoding="utf-8")
    write_xmp(path, ["dog"], policy="merge")
    assert read_xmp(path, include_hierarchical=True) == ["cat", "sky", "dog", "Animals/cat", "Places/beach"]
    write_xmp(path, ["sky", "dog"], policy="replace")  # the person removed "cat"
    hier = read_xmp(path, include_hierarchical=True)
    assert hier == ["sky", "dog", "Places/beach"]  # Animals/cat went from TagsList, sky/dog are in both
    text = path.read_text(encoding="utf-8")
    assert "<digiKam:TagsList>\n    <rdf:Seq>" in text  # the container kind is kept
    assert "Animals/cat" not in text


def test_new_xmp_has_hierarchical_subject(tmp_path):
    path = tmp_path / "a.jpg.xmp"
    write_xmp(path, ["cat", "b & c"], policy="merge")
    assert read_xmp(path, include_hierarchical=True) == ["cat", "b & c"]
    assert "lr:hierarchicalSubject" in path.read_text(encoding="utf-8")


def test_xmp_with_only_hierarchical_tags_is_imported(tmp_path):
    path = tmp_path / "a.jpg.xmp"
    path.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:lr="http://ns.adobe.com/lightroom/1.0/">'
        "<lr:hierarchicalSubject><rdf:Bag><rdf:li>Places|Paris</rdf:li><rdf:li>darktable|format|jpg</rdf:li>"
        "<rdf:li>Animals|Cat</rdf:li></rdf:Bag></lr:hierarchicalSubject>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    assert read_xmp(path) == ["Paris", "Cat"]
    write_xmp(path, ["Paris"], policy="replace")
    assert read_xmp(path) == ["Paris"]
    assert "darktable|format|jpg" in path.read_text() and "Animals|Cat" not in path.read_text()


# ---- other tools' file names (issue 31.7)


def test_stem_xmp_and_caption_files_are_read_and_written(tmp_path):
    image = tmp_path / "a.jpg"
    (tmp_path / "a.xmp").write_text(DIGIKAM_XMP, encoding="utf-8")
    (tmp_path / "a.caption").write_text("fox, night\n")
    assert read_image_sidecars(image) == ["fox", "night", "cat", "sky"]
    assert read_image_sidecars(image, collides=True) == []  # a shared stem is nobody's
    written = write_image_sidecars(image, ["owl"], formats=["xmp"], txt_path=None, policy="merge")
    assert written == [tmp_path / "a.xmp"] and not (tmp_path / "a.jpg.xmp").exists()


# ---- a file another program changed (issue 29.2, sidecar level)


def test_expected_content_guards_the_replace(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("office\n")
    seen = sidecars.file_hash(path)
    path.write_text("EXTERNAL-EDIT\n")
    with pytest.raises(sidecars.SidecarChangedError, match="changed"):
        write_txt(path, ["office", "animal-bug"], policy="replace", expected=seen)
    assert path.read_text() == "EXTERNAL-EDIT\n"
    appeared = tmp_path / "b.jpg.xmp"
    appeared.write_text(DIGIKAM_XMP)  # the caller saw no file there
    with pytest.raises(sidecars.SidecarChangedError, match="appeared"):
        write_xmp(appeared, ["x"], policy="replace", expected=None)
    assert appeared.read_text() == DIGIKAM_XMP


def test_a_change_during_the_write_is_not_overwritten(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("office\n")
    real_mkstemp = sidecars.tempfile.mkstemp

    def edit_then_mkstemp(*args, **kwargs):
        path.write_text("EXTERNAL-EDIT\n")  # another program writes while the temp file is made
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(sidecars.tempfile, "mkstemp", edit_then_mkstemp)
    with pytest.raises(sidecars.SidecarChangedError):
        write_txt(path, ["animal-bug"], policy="merge")
    assert path.read_text() == "EXTERNAL-EDIT\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_caption_whose_tags_all_go_keeps_its_prose_apart(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("ohwx, 1girl\nA caption line that must stay.\n")
    assert write_txt(path, ["cat"], policy="replace") == ["cat"]
    assert path.read_text() == "A caption line that must stay.\ncat\n"
    assert read_txt(path) == ["cat"]


@pytest.mark.parametrize("meta,tags", [
    ({"category": "danbooru", "tag_string": "1girl long_hair smile"}, ["1girl", "long_hair", "smile"]),
    ({"category": "gelbooru", "tags": "1girl solo"}, ["1girl", "solo"]),
    ({"category": "e621", "tags": {"general": ["fur", "smile"], "species": ["fox"]}}, ["fur", "smile", "fox"]),
    ({"category": "pixiv", "tags": [{"name": "猫", "translated_name": "cat"}, {"name": "x", "translated_name": None}]},
     ["猫", "cat", "x"]),
    ({"category": "site", "tags": ["hello, world", "sky"]}, ["hello, world", "sky"]),  # one tag each
    ({"category": "twitter", "content": "no tags here"}, []),
])
def test_gallery_dl_metadata_tags_are_imported(tmp_path, meta, tags):
    import json

    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    (tmp_path / "a.jpg.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    content = sidecars.read_image_content(image)
    assert content.tags == tags
    assert tmp_path / "a.jpg.json" in content.hashes
    assert sidecars.existing_txt_sidecar(image, False) is None  # metadata is no caption to write into


def test_metadata_that_is_not_json_does_not_stop_the_caption(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    (tmp_path / "a.txt").write_text("cat, dog\n", encoding="utf-8")
    (tmp_path / "a.jpg.json").write_text("{not json", encoding="utf-8")
    content = sidecars.read_image_content(image)
    assert content.tags == ["cat", "dog"]
    assert "not JSON" in content.notes[0]
