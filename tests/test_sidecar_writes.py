"""Library.write_sidecars: a person's tags reach their files, and nothing else is lost on the way."""

from pathlib import Path

import pytest

from mlcnn_core import sidecars
from mlcnn_core.library import Library, LibraryError


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "a.jpg").write_bytes(b"not really an image")
    return tmp_path


def open_library(folder: Path, import_sidecars: bool = True) -> tuple[Library, int]:
    lib = Library.open(folder)
    lib.scan()
    if import_sidecars:
        assert lib.import_sidecars() == []
    return lib, lib.image_id("a.jpg")


def write(lib: Library, image_id: int, folder: Path, policy: str, formats=("txt",)):
    return lib.write_sidecars(image_id, formats=list(formats), txt_path=folder / "a.txt", policy=policy)


@pytest.mark.parametrize("policy", ["merge", "replace"])
def test_an_edit_by_another_program_is_not_undone(folder, policy):
    txt = folder / "a.txt"
    txt.write_text("office\n")
    lib, a = open_library(folder)
    lib.set_tag(a, "animal-bug", "added")
    txt.write_text("EXTERNAL-EDIT\n")  # the person replaces 'office' in another program
    written, notes = write(lib, a, folder, policy)
    assert written == [txt]
    assert txt.read_text() == "EXTERNAL-EDIT, animal-bug\n"
    assert "changed by another program" in notes[0]
    assert {t.tag for t in lib.tags(a)} == {"EXTERNAL-EDIT", "animal-bug"}
    lib.close()


def test_a_file_the_library_never_read_is_read_before_replace(folder):
    txt = folder / "a.txt"
    txt.write_bytes("café, naïve\n".encode("latin-1"))
    lib, a = open_library(folder, import_sidecars=False)
    lib.set_tag(a, "new", "added")
    lib.confirm_all(a)
    write(lib, a, folder, "replace")
    assert txt.read_text(encoding="utf-8") == "café, naïve, new\n"
    lib.close()


def test_rejected_and_removed_tags_leave_the_file_in_order(folder):
    txt = folder / "a.txt"
    txt.write_text("ohwx, cat, wrong_tag, solo, extra\n")
    lib, a = open_library(folder)
    lib.set_tag(a, "wrong_tag", "rejected")
    lib.remove_tag(a, "extra")
    lib.set_tag(a, "smile", "added")
    lib.confirm_all(a)
    for policy in ("merge", "replace"):
        _, notes = write(lib, a, folder, policy)
        assert txt.read_text() == "ohwx, cat, solo, smile\n", policy
        assert notes == []


def test_written_files_are_not_read_back_as_changed(folder):
    lib, a = open_library(folder)
    lib.set_tag(a, "cat", "added")
    written, _ = write(lib, a, folder, "merge", formats=("txt", "xmp"))
    assert written == [folder / "a.txt", folder / "a.jpg.xmp"]
    lib.set_tag(a, "dog", "added")
    _, notes = write(lib, a, folder, "replace", formats=("txt", "xmp"))
    assert notes == []
    assert sidecars.read_xmp(folder / "a.jpg.xmp") == ["cat", "dog"]
    assert lib.import_sidecars() == []
    assert {(t.tag, t.source) for t in lib.tags(a)} == {("cat", "human"), ("dog", "human")}


def test_a_malformed_xmp_is_never_replaced(folder):
    xmp = folder / "a.jpg.xmp"
    xmp.write_text("<x:xmpmeta><rdf:RDF>")
    lib, a = open_library(folder, import_sidecars=False)
    lib.set_tag(a, "cat", "added")
    with pytest.raises(sidecars.SidecarError, match="not well-formed"):
        write(lib, a, folder, "replace", formats=("xmp",))
    assert xmp.read_text() == "<x:xmpmeta><rdf:RDF>"
    assert lib.failed_sidecars()[0][0] == a


def test_control_characters_are_stripped_at_every_entry(folder):
    lib, a = open_library(folder)
    lib.store_prediction(a, ["label\x01x"], {"label\x01x": 0.9})
    lib.set_tag(a, "typed\x07tag", "added")
    assert {t.tag for t in lib.tags(a)} == {"typedtag", "labelx"}
    with pytest.raises(LibraryError, match="empty"):
        lib.set_tag(a, "\x00\x01", "added")
    lib.write_sidecars(a, formats=["xmp"], txt_path=None, policy="merge", content="machine")
    assert sorted(sidecars.read_xmp(folder / "a.jpg.xmp")) == ["labelx", "typedtag"]
