import sqlite3
import threading
import time
from pathlib import Path

import pytest

from mlcnn_core import sidecars
from mlcnn_core.library import (
    Library,
    LibraryError,
    ModelInfo,
    TagExpressionError,
    compile_tag_expression,
    uncertainty_of,
)


def make_folder(root: Path, names) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really an image")
    return root


@pytest.fixture
def lib(tmp_path):
    make_folder(tmp_path, ["a.jpg", "b.png", "sub/c.webp", "sub/deep/d.JPEG", ".hidden/e.jpg", "notes.txt"])
    library = Library.open(tmp_path)
    library.scan()
    yield library
    library.close()


def ids(library, records=None):
    records = library.images() if records is None else records
    return [r.path for r in records]


def test_scan_finds_images_recursively_skipping_hidden(lib, tmp_path):
    assert ids(lib) == ["a.jpg", "b.png", "sub/c.webp", "sub/deep/d.JPEG"]
    assert (tmp_path / ".mlcnn-tagger" / "library.sqlite").is_file()
    assert lib.fallback_reason is None
    mode = lib.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_rescan_tracks_added_removed_changed(lib, tmp_path):
    (tmp_path / "a.jpg").unlink()
    (tmp_path / "f.gif").write_bytes(b"x")
    result = lib.scan()
    assert (result.added, result.removed, result.total) == (1, 1, 4)
    assert "a.jpg" not in ids(lib) and "f.gif" in ids(lib)


def test_scan_of_ten_thousand_files_is_fast(tmp_path):
    for d in range(10):
        sub = tmp_path / f"d{d}"
        sub.mkdir()
        for i in range(1000):
            (sub / f"{i:04d}.png").touch()
    library = Library.open(tmp_path)
    result = library.scan()
    assert result.total == 10_000
    assert result.seconds < 10  # typically ~0.2 s; generous for a shared CI machine
    assert len(library.images()) == 10_000
    library.close()


def test_human_and_machine_tags_are_told_apart(lib):
    a = lib.image_id("a.jpg")
    status = lib.store_prediction(a, ["cat", "sky"], {"cat": 0.9, "sky": 0.6, "dog": 0.1}, ModelInfo("m1", "M", "h"))
    assert status == "predicted"
    assert [(t.tag, t.source, t.state) for t in lib.tags(a)] == [
        ("cat", "machine", "predicted"),
        ("sky", "machine", "predicted"),
    ]
    lib.set_tag(a, "cat", "confirmed")
    lib.set_tag(a, "sky", "rejected")
    assert lib.image(a).status == "confirmed"
    lib.set_tag(a, "tree", "added")
    tags = {t.tag: (t.source, t.state) for t in lib.tags(a)}
    assert tags == {"cat": ("human", "confirmed"), "sky": ("human", "rejected"), "tree": ("human", "added")}
    assert lib.human_tags(a) == ["cat", "tree"]
    pred = lib.prediction(a)
    assert pred.model_id == "m1" and pred.scores["dog"] == pytest.approx(0.1)


def test_confirmed_images_are_each_confirmed_image_with_its_human_tags_in_order(lib):
    a, b, c, d = (lib.image_id(p) for p in ("a.jpg", "b.png", "sub/c.webp", "sub/deep/d.JPEG"))
    lib.store_prediction(a, ["cat", "sky"], {"cat": 0.9, "sky": 0.6, "dog": 0.1})
    lib.set_tag(a, "sky", "rejected")
    lib.set_tag(a, "zebra", "added")
    lib.set_tag(a, "apple", "added")
    lib.confirm_all(a)                       # cat confirmed; sky stays rejected
    lib.move_to_front([a], "zebra")
    lib.store_prediction(b, ["cat"], {"cat": 0.9})   # machine tags only: not confirmed
    lib.set_tag(c, "tree", "added")
    lib.confirm_all(c)
    lib.store_prediction(d, [], {})
    lib.confirm_all(d)                       # confirmed with no tag of a person's: left out
    expected = [(lib.abspath(r.path), lib.human_tags(r.id)) for r in lib.images(["confirmed"]) if lib.human_tags(r.id)]
    assert lib.confirmed_images() == expected
    assert [(p.name, tags) for p, tags in expected] == [("a.jpg", ["zebra", "cat", "apple"]), ("c.webp", ["tree"])]


def test_new_prediction_keeps_human_decisions(lib):
    a = lib.image_id("a.jpg")
    lib.store_prediction(a, ["cat", "sky"], {"cat": 0.9, "sky": 0.6})
    lib.set_tag(a, "sky", "rejected")
    lib.store_prediction(a, ["sky", "dog"], {"sky": 0.8, "dog": 0.7})
    tags = {t.tag: (t.source, t.state) for t in lib.tags(a)}
    assert tags == {"sky": ("human", "rejected"), "dog": ("machine", "predicted")}
    assert lib.image(a).status == "predicted"


def test_confirm_all_and_undo_snapshot(lib):
    a = lib.image_id("a.jpg")
    lib.store_prediction(a, ["cat", "sky"], {"cat": 0.9, "sky": 0.6})
    snap = lib.snapshot_tags(a)
    assert lib.confirm_all(a) == "confirmed"
    assert lib.human_tags(a) == ["cat", "sky"]
    assert lib.restore_snapshot(a, snap) == "predicted"
    assert all(t.source == "machine" for t in lib.tags(a))


def test_status_filter_and_counts(lib):
    a, b = lib.image_id("a.jpg"), lib.image_id("b.png")
    lib.store_prediction(a, ["cat"], {"cat": 0.9})
    lib.set_tag(b, "dog", "added")
    assert lib.status_counts() == {"untagged": 2, "predicted": 1, "confirmed": 1}
    assert ids(lib, lib.images(["untagged"])) == ["sub/c.webp", "sub/deep/d.JPEG"]


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("cat", ["a.jpg", "b.png"]),
        ("cat AND dog", ["b.png"]),
        ("cat & NOT dog", ["a.jpg"]),
        ("cat -dog".replace("-", "!"), ["a.jpg"]),
        ("dog OR blue sky", ["b.png", "sub/c.webp"]),
        ("NOT (cat | blue sky)", ["sub/deep/d.JPEG"]),
        ("blue*", ["sub/c.webp"]),
        ("?og", ["b.png"]),
        ('"blue sky"', ["sub/c.webp"]),
        ("CAT", ["a.jpg", "b.png"]),
        ("", ["a.jpg", "b.png", "sub/c.webp", "sub/deep/d.JPEG"]),
    ],
)
def test_tag_expressions(lib, expr, expected):
    lib.set_tag(lib.image_id("a.jpg"), "cat", "added")
    lib.set_tag(lib.image_id("b.png"), "cat", "added")
    lib.set_tag(lib.image_id("b.png"), "dog", "added")
    lib.store_prediction(lib.image_id("sub/c.webp"), ["blue sky"], {"blue sky": 0.5})
    lib.set_tag(lib.image_id("sub/deep/d.JPEG"), "cat", "rejected")
    matches = compile_tag_expression(expr) if expr else None  # as the gallery's filter applies it
    tags = lib.tags_by_image()
    assert ids(lib, [r for r in lib.images() if matches is None or matches(tags.get(r.id, ()))]) == expected


@pytest.mark.parametrize("bad", ["(cat", "cat AND", "cat )", "OR dog"])
def test_malformed_tag_expressions(bad):
    with pytest.raises(TagExpressionError):
        compile_tag_expression(bad)


def test_uncertainty_definition():
    assert uncertainty_of({"a": 0.9, "b": 0.1}, ["a"]) == pytest.approx(1 - 0.8 / 0.9)
    assert uncertainty_of({"a": 0.5, "b": 0.5}, ["a"]) == pytest.approx(1.0)
    assert uncertainty_of({"a": 0.9}, ["a"]) == pytest.approx(0.0)


def test_all_tags_rename_delete(lib):
    a, b = lib.image_id("a.jpg"), lib.image_id("b.png")
    lib.set_tag(a, "kitty", "added")
    lib.store_prediction(b, ["kitty", "cat"], {"kitty": 0.9, "cat": 0.8})
    lib.set_tag(b, "cat", "confirmed")
    assert lib.all_tags() == [("kitty", 2), ("cat", 1)]
    touched = lib.rename_tag("kitty", "cat")
    assert sorted(touched) == sorted([a, b])
    assert lib.all_tags() == [("cat", 2)]
    assert lib.tag_record(b, "cat").source == "human"  # a person's row wins the clash
    assert sorted(i for i, _ in lib.pending_sidecars()) == sorted([a, b])
    lib.delete_tag("cat")
    assert lib.all_tags() == []


def test_sidecar_bookkeeping(lib):
    a = lib.image_id("a.jpg")
    lib.set_tag(a, "cat", "added")
    assert [i for i, _ in lib.pending_sidecars()] == [a]
    lib.mark_sidecar_failed(a, "disk full")
    assert lib.failed_sidecars() == [(a, "disk full")]
    lib.mark_sidecar_written(a)
    assert lib.pending_sidecars() == [] and lib.sidecar_content(a) == "human"


def test_import_sidecars(tmp_path):
    make_folder(tmp_path, ["a.jpg", "b.jpg", "c.jpg", "c.png"])
    (tmp_path / "a.txt").write_text("cat, dog")
    sidecars.write_xmp(tmp_path / "b.jpg.xmp", ["bird"], policy="replace")
    (tmp_path / "c.txt").write_text("ambiguous")
    (tmp_path / "c.png.txt").write_text("own")
    lib = Library.open(tmp_path)
    lib.scan()
    assert lib.import_sidecars() == []
    a = lib.image_id("a.jpg")
    assert [(t.tag, t.source) for t in lib.tags(a)] == [("cat", "sidecar"), ("dog", "sidecar")]
    assert lib.image(a).status == "untagged"
    assert lib.positive_tags(lib.image_id("c.jpg")) == []
    assert lib.positive_tags(lib.image_id("c.png")) == ["own"]
    lib.close()

    trusting = Library.open(tmp_path)
    (tmp_path / "b.jpg.xmp").touch()
    time.sleep(0.01)
    sidecars.write_xmp(tmp_path / "b.jpg.xmp", ["bird", "tree"], policy="replace")
    trusting.import_sidecars(as_confirmed=True)
    b = trusting.image_id("b.jpg")
    assert {t.tag: t.source for t in trusting.tags(b)} == {"bird": "human", "tree": "human"}
    assert trusting.image(b).status == "confirmed"
    assert trusting.tag_record(a, "cat").source == "human"
    trusting.close()


def test_malformed_sidecar_is_reported_not_fatal(tmp_path):
    make_folder(tmp_path, ["a.jpg", "b.jpg"])
    (tmp_path / "a.jpg.xmp").write_text("<broken")
    (tmp_path / "b.txt").write_text("ok")
    lib = Library.open(tmp_path)
    lib.scan()
    errors = lib.import_sidecars()
    assert len(errors) == 1 and "a.jpg.xmp" in errors[0]
    assert lib.positive_tags(lib.image_id("b.jpg")) == ["ok"]
    lib.close()


def test_unwritable_folder_falls_back_to_user_data(tmp_path):
    folder = make_folder(tmp_path / "ro", ["a.jpg"])
    (folder / ".mlcnn-tagger").write_text("a file where the library folder should be")
    lib = Library.open(folder, data_dir=tmp_path / "data")
    assert lib.fallback_reason and "user data folder" in lib.fallback_reason
    assert str(lib.db_path).startswith(str(tmp_path / "data"))
    lib.scan()
    assert ids(lib) == ["a.jpg"]
    lib.close()
    again = Library.open(folder, data_dir=tmp_path / "data")
    assert again.db_path == lib.db_path and ids(again) == ["a.jpg"]
    again.close()


def test_not_a_folder(tmp_path):
    with pytest.raises(LibraryError):
        Library.open(tmp_path / "missing")


def test_one_connection_per_thread_and_concurrent_writes(lib):
    image_ids = [r.id for r in lib.images()]
    errors = []
    # all three alive at once: a finished thread's id may be reused, and its connection with it
    all_started = threading.Barrier(3)

    def writer(n):
        try:
            all_started.wait(timeout=30)
            for i in image_ids:
                lib.store_prediction(i, [f"t{n}"], {f"t{n}": 0.5})
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert lib.connection_count() == 4
    assert all(len(lib.tags(i)) == 1 for i in image_ids)


def test_a_thread_closes_its_own_connection_and_no_other(lib):
    lib.images()  # this thread's connection
    seen = []

    def reader():
        seen.append(len(lib.images()))
        lib.close_connection()
        lib.close_connection()  # twice: nothing left to close

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join()
    assert seen == [4]
    assert lib.connection_count() == 1
    assert len(lib.images()) == 4  # this thread's connection is still open


def test_prediction_does_not_reopen_a_confirmed_image(lib):
    a = lib.image_id("a.jpg")
    lib.store_prediction(a, ["cat"], {"cat": 0.9})
    lib.confirm_all(a)
    assert lib.store_prediction(a, ["dog"], {"dog": 0.9, "cat": 0.2}) == "confirmed"
    assert [(t.tag, t.source) for t in lib.tags(a)] == [("cat", "human")]
    assert lib.prediction(a).labels == ["dog"]
    assert lib.tag_records_by_image()[a] == lib.tags(a)


def test_our_own_sidecars_are_not_imported_back(tmp_path):
    make_folder(tmp_path, ["a.jpg"])
    lib = Library.open(tmp_path)
    lib.scan()
    a = lib.image_id("a.jpg")
    lib.store_prediction(a, ["cat"], {"cat": 0.9})
    written = sidecars.write_image_sidecars(
        tmp_path / "a.jpg", lib.positive_tags(a), formats=["txt"], txt_path=tmp_path / "a.txt", policy="merge"
    )
    lib.mark_sidecar_written(a, "machine", written)
    assert lib.import_sidecars() == []
    assert [(t.tag, t.source) for t in lib.tags(a)] == [("cat", "machine")]
    (tmp_path / "a.txt").write_text("cat, edited elsewhere")
    import os

    os.utime(tmp_path / "a.txt", (time.time() + 5, time.time() + 5))
    lib.import_sidecars()
    assert {t.tag: t.source for t in lib.tags(a)} == {"cat": "sidecar", "edited elsewhere": "sidecar"}
    lib.close()


def test_temp_files_of_interrupted_writes_are_cleaned_up(tmp_path):
    import os

    make_folder(tmp_path, ["a.jpg"])
    old = [tmp_path / ".a.txt.k2j4h5g6.tmp", tmp_path / ".a.jpg.xmp.abcd_123.tmp"]
    young = tmp_path / ".a.txt.zzzzzzzz.tmp"
    unrelated = tmp_path / ".notes.md.abcdefgh.tmp"
    for path in [*old, young, unrelated]:
        path.write_text("half a write")
    for path in [*old, unrelated]:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    lib = Library.open(tmp_path)
    lib.scan()
    lib.import_sidecars()
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == sorted([young.name, unrelated.name])
    lib.close()


def test_a_newer_library_is_refused_and_an_older_one_migrated(tmp_path, monkeypatch):
    from mlcnn_core import library as library_module

    Library.open(tmp_path).close()
    db = tmp_path / ".mlcnn-tagger" / "library.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(LibraryError, match="version 99"):
        Library.open(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    monkeypatch.setattr(library_module, "MIGRATIONS", (("ALTER TABLE images ADD COLUMN note TEXT",),))
    monkeypatch.setattr(library_module, "SCHEMA_VERSION", 2)
    lib = Library.open(tmp_path)
    assert "note" in [row[1] for row in lib.conn.execute("PRAGMA table_info(images)")]
    assert lib.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    lib.close()


def test_gallery_dl_metadata_is_imported_and_written_into_the_caption(tmp_path):
    make_folder(tmp_path, ["a.jpg"])
    (tmp_path / "a.jpg.json").write_text('{"category": "danbooru", "tag_string": "1girl smile"}', encoding="utf-8")
    lib = Library.open(tmp_path)
    lib.scan()
    assert lib.import_sidecars() == []
    image_id = lib.image_id("a.jpg")
    assert {t.tag: t.source for t in lib.tags(image_id)} == {"1girl": "sidecar", "smile": "sidecar"}
    lib.confirm_all(image_id)
    lib.write_sidecars(image_id, formats=["txt"], txt_path=tmp_path / "a.txt", policy="merge")
    assert (tmp_path / "a.txt").read_text() == "1girl, smile\n"
    assert (tmp_path / "a.jpg.json").read_text().startswith('{"category"')  # never written
    lib.close()


def test_an_edit_made_while_a_sidecar_is_written_keeps_it_pending(tmp_path, monkeypatch):
    make_folder(tmp_path, ["a.jpg"])
    lib = Library.open(tmp_path)
    lib.scan()
    image_id = lib.image_id("a.jpg")
    lib.set_tag(image_id, "first", "added")
    other = Library.open(tmp_path)  # the GUI's thread, editing while the library thread writes
    real_write = sidecars.write_sidecar_file

    def write_then_edit(*args, **kwargs):
        real_write(*args, **kwargs)
        other.set_tag(image_id, "second", "added")

    monkeypatch.setattr(sidecars, "write_sidecar_file", write_then_edit)
    lib.write_sidecars(image_id, formats=["txt"], txt_path=tmp_path / "a.txt", policy="merge")
    assert (tmp_path / "a.txt").read_text() == "first\n"
    assert [i for i, _ in lib.pending_sidecars()] == [image_id]  # "second" is still to be written
    monkeypatch.setattr(sidecars, "write_sidecar_file", real_write)
    lib.write_sidecars(image_id, formats=["txt"], txt_path=tmp_path / "a.txt", policy="merge")
    assert (tmp_path / "a.txt").read_text() == "first, second\n"
    assert lib.pending_sidecars() == []
    other.close()
    lib.close()


def test_raw_scores_of_an_older_mlcnn_tag_are_put_on_the_apps_scale_once(tmp_path):
    """``mlcnn tag`` once stored the core's summed maps (43.9, or below 0 for a card reading raw
    outputs); the tag panel drew them as they were. Opening the library rescales them as the app
    stores a card's scores without rescoring: each label's share of the image's evidence."""
    make_folder(tmp_path, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    library = Library.open(tmp_path)
    library.scan()
    a, b, c, d = (library.image_id(n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"))
    library.store_prediction(a, ["cat", "sky"], {"cat": 30.0, "sky": 10.0, "dog": -5.0})   # the old CLI's
    library.set_tag(a, "cat", "confirmed")          # keeps its proposal's confidence, 30
    library.store_prediction(b, ["cat"], {"cat": 0.7, "dog": 0.2})                        # the app's
    library.store_prediction(c, ["cat"], {"cat": 43.9})
    library.set_tag(c, "cat", "confirmed")
    library.store_prediction(c, ["cat"], {"cat": 0.8, "sky": 0.2})   # tagged again since: its own score goes
    library.store_prediction(d, ["cat"], {"cat": 0.5})
    library.conn.execute("UPDATE predictions SET scores = '{\"cat\": NaN}' WHERE image_id = ?", (d,))
    library.conn.execute("DELETE FROM meta WHERE key = 'confidences'")   # a library filled before the fix
    before = {i: library.image(i).uncertainty for i in (a, b, c, d)}
    library.close()

    library = Library.open(tmp_path)
    try:
        assert library.prediction(a).scores == {"cat": 0.75, "sky": 0.25, "dog": 0.0}
        assert {t.tag: t.confidence for t in library.tags(a)} == {"cat": 0.75, "sky": 0.25}
        assert library.image(a).uncertainty == uncertainty_of({"cat": 0.75, "sky": 0.25, "dog": 0.0}, ["cat", "sky"])
        assert library.prediction(b).scores == {"cat": 0.7, "dog": 0.2}   # the app's stay as they are
        assert [t.confidence for t in library.tags(b)] == [0.7]
        assert library.prediction(c).scores == {"cat": 0.8, "sky": 0.2}
        assert [(t.tag, t.state, t.confidence) for t in library.tags(c)] == [("cat", "confirmed", None)]
        assert str(library.prediction(d).scores["cat"]) == "nan"   # not JSON to SQLite: left, and no error
        assert {i: library.image(i).uncertainty for i in (b, c, d)} == {i: before[i] for i in (b, c, d)}
        library.conn.execute("UPDATE tags SET confidence = 7 WHERE image_id = ?", (b,))
    finally:
        library.close()
    library = Library.open(tmp_path)   # once: the scores are not searched at every opening
    try:
        assert [t.confidence for t in library.tags(b)] == [7.0]
    finally:
        library.close()
