"""The many-artist benchmark: Iconify matching, the openclipart creator split and the varied and
out-of-generator compositions (bench/iconify_artists.py, openclipart.py, compositions.py).

Synthetic packages, glyphs and drawings stand in for the npm and Debian artwork."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from test_emoji_scenes import es, synthetic_pool

# bench/ modules, importable once test_emoji_scenes has loaded emoji_scenes (which puts bench/ on the path)
compositions = importlib.import_module("compositions")
iconify_artists = importlib.import_module("iconify_artists")
openclipart = importlib.import_module("openclipart")


def _entry(codepoints, name, subgroup="animal-bug"):
    return es.EmojiEntry(tuple(codepoints), "fully-qualified", "Animals & Nature", subgroup, name)


def _fake_package(npm: Path, package: str, icons: dict, aliases: dict | None = None, chars: dict | None = None):
    folder = npm / package
    folder.mkdir(parents=True)
    (folder / "icons.json").write_text(json.dumps({"prefix": "x", "width": 32, "height": 32, "icons": icons,
                                                   "aliases": aliases or {}}))
    (folder / "chars.json").write_text(json.dumps(chars or {}))
    (folder / "package.json").write_text(json.dumps({"version": "9.9.9"}))


SQUARE = {"body": '<rect x="4" y="4" width="24" height="24" fill="#e33"/>'}


def test_slug_is_the_iconify_name_of_a_cldr_name():
    assert iconify_artists.slug("A button (blood type)") == "a-button-blood-type"
    assert iconify_artists.slug("man’s shoe") == "mans-shoe"
    assert iconify_artists.slug("keycap: #") == "keycap"


def test_match_by_code_point_name_and_squashed_name_but_no_alias_to_another_subject(tmp_path):
    _fake_package(tmp_path, "@iconify-json/fxemoji", {"ladybeetle": SQUARE, "cricket-game": SQUARE, "ant": SQUARE,
                                                      "bee": SQUARE},
                  aliases={"cricket": {"parent": "cricket-game"}, "honeybee": {"parent": "bee"}},
                  chars={"1f41c": "ant"})
    renderer = iconify_artists.IconifyRenderer("fxemoji", npm_dir=tmp_path)
    ant, beetle = _entry([0x1F41C], "ant"), _entry([0x1F41E], "lady beetle")
    cricket, game = _entry([0x1F997], "cricket"), _entry([0x1F3CF], "cricket game", "sport")
    bee = _entry([0x1F41D], "honeybee")
    matches = renderer.match([ant, beetle, cricket, game, bee])
    assert matches[ant.hex] == ("ant", "chars")
    assert matches[beetle.hex] == ("ladybeetle", "squashed")
    assert matches[game.hex] == ("cricket-game", "name")
    assert matches[bee.hex] == ("honeybee", "name")  # an alias of a name no emoji has is followed
    assert cricket.hex not in matches  # the alias points at the cricket *game*
    assert renderer.source_id == "@iconify-json/fxemoji:9.9.9:256"


def test_render_draws_the_icon_cropped_to_its_alpha(tmp_path):
    pytest.importorskip("cairosvg")
    _fake_package(tmp_path, "@iconify-json/fxemoji", {"ant": SQUARE, "flipped": SQUARE},
                  aliases={"ant2": {"parent": "ant", "hFlip": True}})
    renderer = iconify_artists.IconifyRenderer("fxemoji", npm_dir=tmp_path, render_px=64)
    arr = renderer.render(_entry([0x1F41C], "ant"))
    assert arr.shape == (48, 48, 4) and arr[..., 3].min() == 255 and arr[24, 24, 0] > 200
    assert "scale(-1 1)" in renderer.svg("ant2")
    assert renderer.render(_entry([0x1F997], "nothing like it")) is None


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench/setup.sh"):
        iconify_artists.IconifyRenderer("fluent", npm_dir=tmp_path)


def test_creator_split_rule_is_fixed_and_parsed_from_the_svg():
    svg = ('<svg><metadata><dc:creator>\n  <cc:Agent rdf:about="x">\n    <dc:title> Gerald G. </dc:title>'
           '</cc:Agent></dc:creator></metadata></svg>')
    assert openclipart.creator_of(svg) == "Gerald G."
    assert openclipart.creator_of("<svg/>") == ""
    names = [f"creator {i}" for i in range(500)]
    test = [n for n in names if openclipart.is_test_creator(n)]
    assert 60 < len(test) < 140  # about a fifth
    assert openclipart.is_test_creator("Creator 7 ") == openclipart.is_test_creator("creator 7")
    drawings = [openclipart.Drawing(f"{n}.svg", n, np.zeros((2, 2, 4), np.uint8)) for n in names]
    train, held = openclipart.split_by_creator(drawings)
    assert {d.creator for d in held} == set(test) and not {d.creator for d in train} & set(test)


def _svg(creator: str, colour: str = "red") -> str:
    return ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:cc="http://creativecommons.org/ns#" width="40" height="30"><metadata><dc:creator>'
            f'<cc:Agent><dc:title>{creator}</dc:title></cc:Agent></dc:creator></metadata>'
            f'<rect x="5" y="5" width="30" height="20" fill="{colour}"/></svg>')


def test_topic_drawings_label_each_topic_folder_and_render_once(tmp_path, monkeypatch):
    pytest.importorskip("cairosvg")
    monkeypatch.setattr(openclipart, "TOPICS", {"bird": ("animals/birds",), "toy": ("recreation/toys",)})
    root = tmp_path / "svg"
    for rel, text in {"animals/birds/owl.svg": _svg("Ann"), "animals/birds/sub/jay.svg": _svg("Bob", "blue"),
                      "recreation/toys/ball.svg": _svg("Ann", "green"), "recreation/toys/broken.svg": "<svg",
                      "recreation/sports/bat.svg": _svg("Cy")}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "recreation/toys/huge.svg").write_text(_svg("Ann") + " " * openclipart.MAX_SVG_BYTES)
    drawings = openclipart.topic_drawings(tmp_path / "cache", root=root, workers=1, verbose=False)
    got = {(d.path, d.creator, d.label) for d in drawings}
    assert got == {("animals/birds/owl.svg", "Ann", "bird"), ("animals/birds/sub/jay.svg", "Bob", "bird"),
                   ("recreation/toys/ball.svg", "Ann", "toy")}
    assert all(d.rgba.ndim == 3 and d.rgba.shape[2] == 4 and d.rgba[..., 3].max() == 255 for d in drawings)
    (root / "animals/birds/owl.svg").write_text("<svg")  # unreadable now: the cache is what is read
    again = openclipart.topic_drawings(tmp_path / "cache", root=root, workers=1, verbose=False)
    assert [(d.path, d.label) for d in again] == [(d.path, d.label) for d in drawings]
    assert all(np.array_equal(a.rgba, b.rgba) for a, b in zip(again, drawings, strict=True))


def _sources(comp_side: str) -> compositions.SceneSources:
    rng = np.random.default_rng(0)
    drawings = [openclipart.Drawing(f"d{i}.svg", f"c{i}", np.dstack([rng.integers(0, 255, (30, 40, 3), np.uint8),
                                                                     np.full((30, 40), 255, np.uint8)]))
                for i in range(4)]
    wallpapers = [rng.integers(0, 255, (200, 300, 3), np.uint8)] if comp_side == "test" else []
    return compositions.SceneSources(es.Backgrounds(), drawings, wallpapers)


@pytest.mark.parametrize("name", ["varied", "varied-plain", "ood", "small"])
def test_composition_keeps_each_label_visible_enough_and_within_its_settings(name):
    comp = compositions.COMPOSITIONS[name]
    sources = _sources(comp.creators)
    pool = synthetic_pool()
    counts = []
    for i in range(40):
        image, record = compositions.compose_varied(es.scene_rng(0, f"x-{name}", i), pool, sources, comp)
        assert image.size == (record["width"], record["height"]) and image.mode == "RGB"
        assert comp.short_min <= min(image.size) <= comp.short_max
        assert max(image.size) <= round(min(image.size) * comp.aspect_max) + 1
        assert comp.jpeg_min <= record["jpeg_quality"] <= comp.jpeg_max
        assert record["labels"] == sorted({o["label"] for o in record["objects"]})
        for o in record["objects"]:
            assert o["visible"] >= 1 - comp.max_hidden - 1e-3
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= record["width"] and 0 <= y0 < y1 <= record["height"]
        counts.append(len(record["objects"]))
    assert 1 <= min(counts) and max(counts) <= max(comp.counts)
    if name == "varied":
        assert max(counts) >= 4  # scenes of many emoji occur


def test_composition_is_deterministic_and_set_builder_records_it(tmp_path):
    comp = compositions.COMPOSITIONS["ood"]
    pool, sources = synthetic_pool(), _sources("test")
    a = compositions.compose_varied(es.scene_rng(3, "mix-ood", 5), pool, sources, comp)
    b = compositions.compose_varied(es.scene_rng(3, "mix-ood", 5), pool, sources, comp)
    assert a[1] == b[1] and np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    out = es.build_set(tmp_path, es.SetSpec("mix-ood", 6), 0, pool, sources, composition="ood", verbose=False)
    done = json.loads((out / "DONE").read_text())
    assert done["geometry"]["composition"] == "ood"
    rows = es.read_truth(out)
    assert len(rows) == 6 and all("jpeg_quality" in r for r in rows)


def test_mixed_pool_draws_from_every_artist():
    one, two = synthetic_pool(), synthetic_pool()
    two.labels = two.labels[:3]
    two.glyphs = {k: v for k, v in two.glyphs.items() if k in two.labels}
    mixed = es.mixed_pool([one, two])
    assert mixed.labels == one.labels
    assert len(mixed.glyphs["red"]) == 4 and len(mixed.glyphs["black"]) == 2
