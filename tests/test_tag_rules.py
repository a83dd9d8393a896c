"""The rules for proposed and written tags (tag_rules.py) and the edits of a selection (library.py):
what the CLI and the app share."""

import sqlite3

import pytest

from mlcnn_core import sidecars
from mlcnn_core.library import Library
from mlcnn_core.tag_rules import TagRules, display_confidences


def test_a_minimum_confidence_replaces_the_cards_choice():
    confidences = {"cat": 0.9, "dog": 0.55, "owl": 0.2, "fox": 0.0}
    assert TagRules().choose(["cat"], confidences) == ["cat"]
    assert TagRules(min_confidence=0.5).choose(["cat"], confidences) == ["cat", "dog"]
    assert TagRules(min_confidence=0.0).choose([], confidences) == ["cat", "dog", "owl"]  # a pruned label never


def test_excluded_tags_match_whatever_their_case_separator_or_wildcard():
    rules = TagRules(exclude=["Long Hair", "water*"])
    assert rules.excluded("long_hair") and rules.excluded("WATERMARK") and not rules.excluded("hair")
    assert rules.choose(["watermark", "long_hair", "cat"], {"watermark": 0.9, "long_hair": 0.8, "cat": 0.7}) == ["cat"]
    assert rules.written(["cat", "watermark", "long hair"]) == ["cat"]


@pytest.mark.parametrize("typed", ["long__hair", "Long  Hair", "long _ hair", "LONG_HAIR", "long_ hair", "long__*"])
def test_an_excluded_tag_matches_however_many_separators_join_its_words(typed):
    rules = TagRules(exclude=[typed])
    assert rules.excluded("long_hair") and rules.excluded("long hair") and not rules.excluded("longhair")
    assert rules.choose(["long_hair", "cat"], {"long_hair": 0.9, "cat": 0.7}) == ["cat"]
    assert rules.written(["long_hair", "cat"]) == ["cat"]


def test_kaomoji_with_more_underscores_are_other_tags():
    assert TagRules(exclude=["^_^"]).excluded("^ ^") and not TagRules(exclude=["^_^"]).excluded("^__^")
    assert TagRules(exclude=["^__^"]).excluded("^__^") and not TagRules(exclude=["^__^"]).excluded("^_^")
    assert not TagRules(exclude=["t_shirt"]).excluded("t-shirt")  # a hyphen is part of the word


def test_excluded_tags_take_brackets_and_other_signs_as_themselves():
    rules = TagRules(exclude=["[sic]", "name (artist)", "a+b", "^_^"])
    assert rules.excluded("[sic]") and not rules.excluded("s") and not rules.excluded("i")
    assert rules.excluded("Name (Artist)") and rules.excluded("a+b") and not rules.excluded("aab")
    assert rules.excluded("^_^") and not rules.excluded("^_^_^")
    assert TagRules(exclude=["[!a]"]).excluded("[!a]") and not TagRules(exclude=["[!a]"]).excluded("b")


def test_at_most_max_tags_proposals_the_most_confident_kept():
    confidences = {"a": 0.3, "b": 0.9, "c": 0.6}
    assert TagRules(max_tags=2).choose(["a", "b", "c"], confidences) == ["b", "c"]


def test_words_are_written_with_spaces_or_underscores_and_kaomoji_kept():
    spaces, underscores = TagRules(word_separator="space"), TagRules(word_separator="underscore")
    assert [spaces.word_form(t) for t in ["long_hair", "^_^", "o_o", "looking_at_viewer"]] == [
        "long hair", "^_^", "o_o", "looking at viewer"]
    assert underscores.word_form("long hair") == "long_hair"
    assert spaces.word_form("hatsune_miku_(cosplay)") == "hatsune miku (cosplay)"  # not half written
    assert underscores.word_form("hatsune miku (cosplay)") == "hatsune_miku_(cosplay)"
    assert spaces.word_form("^_^;") == "^_^;"
    assert TagRules().word_form("long_hair") == "long_hair"


@pytest.mark.parametrize("kwargs", [{"min_confidence": 1.5}, {"max_tags": 0}, {"word_separator": "dash"},
                                    {"prefix": ["a, b"]}])
def test_rules_that_cannot_be_applied_are_refused(kwargs):
    with pytest.raises(ValueError):
        TagRules(**kwargs)


def test_display_confidences_are_probabilities_or_shares():
    assert display_confidences({"a": 0.9, "b": -0.1}, rescored=True) == {"a": 0.9, "b": 0.0}
    assert display_confidences({"a": 3.0, "b": 1.0}, rescored=False) == {"a": 0.75, "b": 0.25}


# ------------------------------------------------------------------------------- written captions


def _library(folder, names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    library = Library.open(folder)
    library.scan()
    library.import_sidecars()
    return library


def _write(library, name, rules, formats=("txt",)):
    image_id = library.image_id(name)
    image = library.abspath(name)
    library.write_sidecars(image_id, formats=list(formats), txt_path=sidecars.stem_txt_path(image), policy="merge",
                           rules=rules)


def test_a_prefix_leads_a_new_caption_and_an_existing_one(tmp_path):
    (tmp_path / "b.txt").write_text("1girl, ohwx, smile\nA caption in words stays.\n", encoding="utf-8")
    library = _library(tmp_path, ["a.jpg", "b.jpg"])
    rules = TagRules(prefix=["ohwx"])
    for name in ("a.jpg", "b.jpg"):
        library.set_tag(library.image_id(name), "cat", "added")
        _write(library, name, rules, formats=("txt", "xmp"))
    assert (tmp_path / "a.txt").read_text() == "ohwx, cat\n"
    assert (tmp_path / "b.txt").read_text() == "ohwx, 1girl, smile, cat\nA caption in words stays.\n"
    assert sidecars.read_xmp(tmp_path / "a.jpg.xmp") == ["cat"]  # keywords are a set: no trigger word there
    library.close()


def test_excluded_tags_are_not_written_and_a_files_own_are_left(tmp_path):
    (tmp_path / "b.txt").write_text("watermark, smile\n", encoding="utf-8")
    library = _library(tmp_path, ["a.jpg", "b.jpg"])
    rules = TagRules(exclude=["watermark"])
    for name in ("a.jpg", "b.jpg"):
        library.set_tag(library.image_id(name), "watermark", "added")
        library.set_tag(library.image_id(name), "cat", "added")
        _write(library, name, rules)
    assert (tmp_path / "a.txt").read_text() == "cat\n"
    assert (tmp_path / "b.txt").read_text() == "watermark, smile, cat\n"  # merge: the person's file keeps it
    library.close()


def test_words_are_rewritten_in_place_not_appended_twice(tmp_path):
    (tmp_path / "a.txt").write_text("ohwx, long_hair, smile\n", encoding="utf-8")
    library = _library(tmp_path, ["a.jpg"])
    library.set_tag(library.image_id("a.jpg"), "blue_eyes", "added")
    _write(library, "a.jpg", TagRules(word_separator="space"))
    assert (tmp_path / "a.txt").read_text() == "ohwx, long hair, smile, blue eyes\n"
    _write(library, "a.jpg", TagRules(word_separator="underscore"))
    assert (tmp_path / "a.txt").read_text() == "ohwx, long_hair, smile, blue_eyes\n"
    library.set_tag(library.image_id("a.jpg"), "long_hair", "rejected")  # the file's own form goes too
    _write(library, "a.jpg", TagRules(word_separator="space"))
    assert (tmp_path / "a.txt").read_text() == "ohwx, smile, blue eyes\n"
    library.close()


# ---------------------------------------------------------------------------- edits of a selection


def test_a_tag_added_to_and_removed_from_a_selection(tmp_path):
    library = _library(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    a, b, c = (library.image_id(n) for n in ("a.jpg", "b.jpg", "c.jpg"))
    library.store_prediction(b, ["cat"], {"cat": 0.9})
    library.set_tag(c, "cat", "added")
    assert library.add_tag_to_images([a, b, c], "cat") == [a, b]  # c has it already
    assert {t.tag: (t.source, t.state) for t in library.tags(b)} == {"cat": ("human", "confirmed")}
    assert library.remove_tag_from_images([a, b], "cat") == [a, b]
    assert library.tags(a) == []  # a person's own tag is deleted
    assert library.tag_record(b, "cat").state == "rejected"  # a proposal is rejected: not proposed again
    assert library.tag_record(c, "cat").state == "added"  # not selected
    library.close()


def test_find_and_replace_in_tags(tmp_path):
    library = _library(tmp_path, ["a.jpg", "b.jpg"])
    a, b = library.image_id("a.jpg"), library.image_id("b.jpg")
    for tag in ("long_hair", "short_hair", "hair"):
        library.set_tag(a, tag, "added")
    library.set_tag(b, "long_hair", "added")
    assert library.replace_in_tags([a], "_hair", " hair") == [a]
    assert sorted(t.tag for t in library.tags(a)) == ["hair", "long hair", "short hair"]
    assert library.tag_record(b, "long_hair") is not None  # outside the selection
    assert library.replace_in_tags([a, b], "hair", "", whole=True) == [a]  # a tag left empty goes
    assert sorted(t.tag for t in library.tags(a)) == ["long hair", "short hair"]
    assert library.replace_in_tags([a], "long hair", "short hair", whole=True) == [a]  # merged into one
    assert [t.tag for t in library.tags(a)] == ["short hair"]
    library.close()


def test_a_tag_moved_to_the_front_leads_the_caption_and_undo_restores_it(tmp_path):
    (tmp_path / "a.txt").write_text("1girl, smile, character_x\n", encoding="utf-8")
    library = _library(tmp_path, ["a.jpg"])
    a = library.image_id("a.jpg")
    before = library.snapshot_images([a])
    assert library.move_to_front([a], "character_x") == [a]
    assert library.tags(a)[0].tag == "character_x"
    assert library.move_to_front([a], "character_x") == []  # already first
    _write(library, "a.jpg", TagRules(prefix=["ohwx"]))
    assert (tmp_path / "a.txt").read_text() == "ohwx, character_x, 1girl, smile\n"
    library.set_tag(a, "character_x", "confirmed")  # a decision on the tag keeps its place
    assert library.tags(a)[0].tag == "character_x"
    library.restore_snapshots(before)
    assert library.tags(a)[0].rank is None
    library.close()


def test_a_library_of_version_1_gets_the_rank_column(tmp_path):
    library = _library(tmp_path, ["a.jpg"])
    library.set_tag(library.image_id("a.jpg"), "cat", "added")
    library.close()
    db = tmp_path / ".mlcnn-tagger" / "library.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE tags DROP COLUMN rank")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    library = Library.open(tmp_path)
    a = library.image_id("a.jpg")
    assert [t.tag for t in library.tags(a)] == ["cat"]
    library.set_tag(a, "dog", "added")
    assert library.move_to_front([a], "dog") == [a]
    assert [t.tag for t in library.tags(a)] == ["dog", "cat"]
    library.close()
