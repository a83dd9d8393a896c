"""Autocomplete tag lists: a1111 tag autocomplete CSVs and plain lists."""

import pytest

from mlcnn_core.tag_vocabulary import TagListError, read_tag_list


def test_a_tagcomplete_csv_gives_its_tags_in_order_without_aliases(tmp_path):
    path = tmp_path / "danbooru.csv"
    path.write_text('\ufeff1girl,0,4114588,"1girls,sole_female"\nlong_hair,0,2800000,\n'
                    'hatsune_miku,4,90000,"miku"\n\n1girl,0,1,\n', encoding="utf-8")
    assert read_tag_list(path) == ["1girl", "long_hair", "hatsune_miku"]


def test_a_header_row_and_a_plain_list(tmp_path):
    (tmp_path / "a.csv").write_text("name,category\ncat,0\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("blue sky\nsmile\n", encoding="utf-8")
    assert read_tag_list(tmp_path / "a.csv") == ["cat"]
    assert read_tag_list(tmp_path / "b.txt") == ["blue sky", "smile"]


def test_what_is_not_a_tag_list_is_refused_with_its_name(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    with pytest.raises(TagListError, match="x.png"):
        read_tag_list(tmp_path / "x.png")
    with pytest.raises(TagListError, match="missing.csv"):
        read_tag_list(tmp_path / "missing.csv")
