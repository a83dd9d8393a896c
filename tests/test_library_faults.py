"""A library that is damaged, locked or unwritable: said clearly, nothing silently split or lost."""

import os
import sqlite3
from pathlib import Path

import pytest

from mlcnn_core import library as library_module
from mlcnn_core.library import Library, LibraryError


def make_tagged_folder(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"img{i:04d}.jpg").write_bytes(b"not really an image")
    (folder / "img0000.txt").write_text("from-sidecar\n")
    lib = Library.open(folder)
    lib.scan()
    lib.import_sidecars()
    lib.set_tag(lib.image_id("img0001.jpg"), "only-in-library", "added")
    lib.close()
    return folder


def test_damaged_header_is_set_aside_and_rebuilt_from_sidecars(tmp_path):
    folder = make_tagged_folder(tmp_path / "f")
    db = folder / ".mlcnn-tagger" / "library.sqlite"
    with open(db, "r+b") as fh:
        fh.write(os.urandom(100))
    lib = Library.open(folder, data_dir=tmp_path / "data")
    assert lib.db_path == db and lib.fallback_reason is None
    assert "damaged" in lib.notice and "library.sqlite.damaged-" in lib.notice
    assert [p.name for p in db.parent.glob("library.sqlite.damaged-*")]
    lib.scan()
    lib.import_sidecars()
    assert [t.tag for t in lib.tags(lib.image_id("img0000.jpg"))] == ["from-sidecar"]
    assert lib.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    lib.close()


def test_damaged_page_in_the_middle_is_no_traceback(tmp_path):
    folder = make_tagged_folder(tmp_path / "f", n=1500)
    db = folder / ".mlcnn-tagger" / "library.sqlite"
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    assert db.stat().st_size > 8 * page
    with open(db, "r+b") as fh:
        fh.seek(4 * page)
        fh.write(b"\xff" * page)
    lib = Library.open(folder, data_dir=tmp_path / "data")
    assert "damaged" in lib.notice
    lib.scan()
    assert lib.import_sidecars() == []
    assert len(lib.images()) == 1500
    lib.close()


def test_a_locked_library_is_an_error_not_a_second_library(tmp_path, monkeypatch):
    folder = make_tagged_folder(tmp_path / "f")
    holder = sqlite3.connect(folder / ".mlcnn-tagger" / "library.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(Library, "busy_timeout_s", 0.2)
    try:
        with pytest.raises(LibraryError, match="in use by another program"):
            Library.open(folder, data_dir=tmp_path / "data")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not (tmp_path / "data").exists()


def test_read_only_folder_shows_its_library_and_merges_back(tmp_path, monkeypatch):
    folder = make_tagged_folder(tmp_path / "f")
    lib = Library.open(folder)
    lib.confirm_all(lib.image_id("img0002.jpg"))  # reviewed before: copied, so not merged back as new
    lib.close()
    real_access = os.access
    library_dir = str(folder / ".mlcnn-tagger")
    monkeypatch.setattr(
        library_module.os, "access", lambda p, mode: False if str(p) == library_dir else real_access(p, mode)
    )
    ro = Library.open(folder, data_dir=tmp_path / "data")
    assert "cannot be written" in ro.fallback_reason and "copy of the folder's own library" in ro.fallback_reason
    b = ro.image_id("img0001.jpg")
    assert [t.tag for t in ro.tags(b)] == ["only-in-library"]  # the person's work is visible
    ro.set_tag(b, "added-while-read-only", "added")
    ro.close()
    monkeypatch.setattr(library_module.os, "access", real_access)

    lib = Library.open(folder, data_dir=tmp_path / "data")
    assert lib.fallback_reason is None and "merged back" in lib.notice and "(1 images)" in lib.notice
    b = lib.image_id("img0001.jpg")
    assert sorted(t.tag for t in lib.tags(b)) == ["added-while-read-only", "only-in-library"]
    assert b in [i for i, _ in lib.pending_sidecars()]
    lib.close()
    again = Library.open(folder, data_dir=tmp_path / "data")
    assert again.notice is None  # merged once
    again.close()
