"""Fast tests of the emoji-scenes benchmark builder (bench/emoji_scenes.py).

They need only numpy and Pillow: synthetic coloured-square glyphs, gradient/flat backgrounds and a
small excerpt in the emoji-test.txt format stand in for the fonts, OpenMoji and the photographs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_PATH = Path(__file__).resolve().parents[1] / "bench" / "emoji_scenes.py"
if "emoji_scenes" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("emoji_scenes", _PATH)
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["emoji_scenes"] = _mod  # so worker processes can find its functions
    _spec.loader.exec_module(_mod)
es = sys.modules["emoji_scenes"]

EXCERPT = """\
# emoji-test.txt
# Version: 15.0
#
# Format: code points; status # emoji name

# group: Smileys & Emotion

# subgroup: face-smiling
1F600                                   ; fully-qualified     # 😀 E1.0 grinning face
1F603                                   ; fully-qualified     # 😃 E0.6 grinning face with big eyes
263A FE0F                               ; fully-qualified     # ☺️ E0.6 smiling face
263A                                    ; unqualified         # ☺ E0.6 smiling face

# subgroup: face-hat
1F920                                   ; fully-qualified     # 🤠 E3.0 cowboy hat face

# group: People & Body

# subgroup: person-role
1F9D1 200D 2695 FE0F                    ; fully-qualified     # 🧑‍⚕️ E12.1 health worker
1F9D1 1F3FB 200D 2695 FE0F              ; fully-qualified     # 🧑🏻‍⚕️ E12.1 health worker: light skin tone
1F468 200D 2695 FE0F                    ; fully-qualified     # 👨‍⚕️ E4.0 man health worker
1F46E                                   ; fully-qualified     # 👮 E0.6 police officer
1F46E 200D 2642 FE0F                    ; fully-qualified     # 👮‍♂️ E4.0 man police officer
1F46E 200D 2640                         ; minimally-qualified # 👮‍♀ E4.0 woman police officer

# subgroup: person
1F468 200D 1F9B0                        ; fully-qualified     # 👨‍🦰 E11.0 man: red hair
1F9D4 200D 2642 FE0F                    ; fully-qualified     # 🧔‍♂️ E13.1 man: beard
1F9D1                                   ; fully-qualified     # 🧑 E5.0 person
1F476                                   ; fully-qualified     # 👶 E0.6 baby

# group: Component

# subgroup: skin-tone
1F3FB                                   ; component           # 🏻 E1.0 light skin tone

# group: Flags

# subgroup: country-flag
1F1E6 1F1E8                             ; fully-qualified     # 🇦🇨 E2.0 flag: Ascension Island
1F1E6 1F1E9                             ; fully-qualified     # 🇦🇩 E2.0 flag: Andorra
1F1E6 1F1EA                             ; fully-qualified     # 🇦🇪 E2.0 flag: United Arab Emirates

#EOF
"""


# ------------------------------------------------------------------------------------------------ taxonomy


def test_parse_emoji_test_excerpt():
    entries, version = es.parse_emoji_test(EXCERPT)
    assert version == "15.0"
    assert len(entries) == 19
    first = entries[0]
    assert first.codepoints == (0x1F600,) and first.emoji == "😀" and first.hex == "1F600"
    assert (first.group, first.subgroup) == ("Smileys & Emotion", "face-smiling")
    assert first.status == "fully-qualified"
    assert first.name == "grinning face"
    worker = [e for e in entries if e.codepoints == (0x1F9D1, 0x200D, 0x2695, 0xFE0F)][0]
    assert worker.subgroup == "person-role" and worker.name == "health worker"
    assert worker.hex == "1F9D1 200D 2695 FE0F"


def test_filter_and_min_per_label():
    entries, version = es.parse_emoji_test(EXCERPT)
    tax = es.select_taxonomy(entries, min_per_label=2, version=version)
    # face-hat has 1 emoji (dropped); flags and components are excluded whatever their counts
    assert tax.labels == ["face-smiling", "person-role", "person"]
    hexes = {lab: [e.hex for e in tax.emoji[lab]] for lab in tax.labels}
    assert hexes["face-smiling"] == ["1F600", "1F603", "263A FE0F"]  # not the unqualified one
    # skin-tone variant and ZWJ sequences with ♂/♀ are excluded; other "man ..." sequences stay
    assert hexes["person-role"] == ["1F9D1 200D 2695 FE0F", "1F468 200D 2695 FE0F", "1F46E"]
    # hair component and ♂ ZWJ sequence excluded
    assert hexes["person"] == ["1F9D1", "1F476"]
    assert tax.groups["person"] == "People & Body"
    assert len(tax.entries) == 8
    assert es.select_taxonomy(entries, min_per_label=3).labels == ["face-smiling", "person-role"]


@pytest.mark.skipif(not es.EMOJI_TEST_PATH.exists(), reason="Debian unicode-data not installed")
def test_real_emoji_test_gives_67_labels_1337_emoji():
    tax = es.load_taxonomy(check=False)
    if tax.version != "15.0":
        pytest.skip(f"emoji-test.txt {tax.version} is not the benchmark's 15.0")
    assert len(tax.labels) == 67
    assert len(tax.entries) == 1337
    sizes = {lab: len(v) for lab, v in tax.emoji.items()}
    assert sizes["person-role"] == 68 and sizes["animal-mammal"] == 66
    assert min(sizes.values()) == 8


def test_openmoji_candidate_names():
    assert es.openmoji_names((0x1F600,)) == ["1F600"]
    assert es.openmoji_names((0x23, 0xFE0F, 0x20E3))[:2] == ["0023-FE0F-20E3", "0023-20E3"]
    names = es.openmoji_names((0x1F441, 0xFE0F, 0x200D, 0x1F5E8, 0xFE0F))
    assert names[:2] == ["1F441-FE0F-200D-1F5E8-FE0F", "1F441-200D-1F5E8"]
    assert set(names[2:]) == {"1F441-200D-1F5E8-FE0F", "1F441-FE0F-200D-1F5E8"}


# ------------------------------------------------------------------------------------------------ scenes

PALETTE = [(230, 40, 40), (40, 200, 60), (50, 80, 230), (240, 200, 30), (180, 60, 200), (20, 20, 20)]


def _square(colour, w=40, h=32):
    a = np.zeros((h, w, 4), np.uint8)
    a[..., :3] = colour
    a[..., 3] = 255
    return a


def synthetic_pool() -> es.GlyphPool:
    labels = ["red", "green", "blue", "yellow", "purple", "black"]
    glyphs = {}
    for i, (lab, colour) in enumerate(zip(labels, PALETTE, strict=True)):
        entries = [es.EmojiEntry((0xE000 + 10 * i + k,), "fully-qualified", "test", lab, f"{lab} {k}")
                   for k in range(2)]
        glyphs[lab] = [es.Glyph(entries[0], _square(colour)), es.Glyph(entries[1], _square(colour, 24, 36))]
    return es.GlyphPool("synthetic", labels, glyphs)


SMALL_TRAIN = es.Geometry(64, 64, 1.33)
SMALL_EVAL = es.Geometry(64, 96, 2.0)


def test_svg_renderers_find_files_by_each_package_naming(tmp_path):
    """OpenMoji names files 0023-FE0F-20E3.svg, Twemoji 23-20e3.svg; both may drop FE0F."""
    keycap = es.EmojiEntry((0x23, 0xFE0F, 0x20E3), "fully-qualified", "Symbols", "keycap", "keycap: #")
    copyright_ = es.EmojiEntry((0xA9, 0xFE0F), "fully-qualified", "Symbols", "other-symbol", "copyright")
    om = tmp_path / "openmoji"
    (om / "color" / "svg").mkdir(parents=True)
    (om / "color" / "svg" / "0023-FE0F-20E3.svg").write_text("<svg/>")
    (om / "color" / "svg" / "00A9.svg").write_text("<svg/>")
    tw = tmp_path / "twemoji"
    tw.mkdir()
    (tw / "23-20e3.svg").write_text("<svg/>")
    (tw / "a9.svg").write_text("<svg/>")
    (tw / "package.json").write_text('{"version": "15.0.0"}')
    openmoji, twemoji = es.renderer_for("openmoji", openmoji_dir=om), es.renderer_for("twemoji", twemoji_dir=tw)
    assert openmoji.find(keycap).name == "0023-FE0F-20E3.svg"
    assert openmoji.find(copyright_).name == "00A9.svg"
    assert twemoji.find(keycap).name == "23-20e3.svg"
    assert twemoji.find(copyright_).name == "a9.svg"
    assert twemoji.source_id == "@twemoji/svg:15.0.0:240"
    with pytest.raises(FileNotFoundError):
        es.renderer_for("twemoji", twemoji_dir=tmp_path / "absent")
    with pytest.raises(ValueError):
        es.renderer_for("apple")


def test_sample_count_distribution():
    rng = np.random.default_rng(123)
    n = 20000
    counts = Counter(es.sample_count(rng) for _ in range(n))
    assert set(counts) == {1, 2, 3, 4}
    for k, p in zip(es.COUNT_CHOICES, es.COUNT_WEIGHTS, strict=True):
        assert abs(counts[k] / n - p) < 0.015, (k, counts[k] / n, p)
    mean = sum(k * c for k, c in counts.items()) / n
    assert abs(mean - 1.36) < 0.03


def test_sample_size_geometry():
    rng = np.random.default_rng(5)
    orient = Counter()
    for _ in range(500):
        w, h = es.sample_size(rng, es.TRAIN_GEOMETRY)
        assert min(w, h) == 256 and 1.0 <= max(w, h) / 256 <= 1.33 + 1 / 256
        orient[w >= h] += 1
        w, h = es.sample_size(rng, es.EVAL_GEOMETRY)
        assert 256 <= min(w, h) <= 384 and max(w, h) / min(w, h) <= 2.0 + 1 / 256
    assert orient[True] > 150 and orient[False] > 150
    assert es.geometry_for("noto-train") is es.TRAIN_GEOMETRY
    assert es.geometry_for("openmoji-test") is es.EVAL_GEOMETRY


def test_box_iou():
    assert es.box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == (0.0, 0.0)
    iou, small = es.box_iou([0, 0, 10, 10], [5, 0, 15, 10])
    assert iou == pytest.approx(50 / 150) and small == pytest.approx(0.5)
    iou, small = es.box_iou([0, 0, 100, 100], [10, 10, 20, 20])  # nested: small IoU, full overlap
    assert iou == pytest.approx(0.01) and small == 1.0
    assert not es.overlap_ok([10, 10, 20, 20], [[0, 0, 100, 100]])


def test_compose_scene_layout():
    pool = synthetic_pool()
    bgs = es.Backgrounds()  # no photographs: gradients and flat colours only
    n_labels = []
    n_objects = Counter()
    for i in range(300):
        geo = SMALL_TRAIN if i % 2 else SMALL_EVAL
        img, rec = es.compose_scene(es.scene_rng(7, "synthetic-test", i), pool, bgs, geo)
        w, h = rec["width"], rec["height"]
        assert img.size == (w, h) and img.mode == "RGB"
        assert 1 <= len(rec["objects"]) <= 4
        n_objects[len(rec["objects"])] += 1
        assert rec["labels"] == sorted({o["label"] for o in rec["objects"]})
        n_labels.append(len(rec["labels"]))
        boxes = [o["box"] for o in rec["objects"]]
        short = min(w, h)
        for b in boxes:
            x0, y0, x1, y1 = b
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert max(x1 - x0, y1 - y0) <= 0.6 * short * 1.45 + 2  # rotation by 15 deg grows a box
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                iou, of_smaller = es.box_iou(boxes[a], boxes[b])
                assert iou < es.MAX_IOU and of_smaller < es.MAX_OVERLAP_OF_SMALLER
        # the last pasted (top-most) square is visible at its box centre with its own colour
        top = rec["objects"][-1]
        x0, y0, x1, y1 = top["box"]
        colour = PALETTE[pool.labels.index(top["label"])]
        px = np.asarray(img)[(y0 + y1) // 2, (x0 + x1) // 2].astype(int)
        assert np.abs(px - np.array(colour)).max() <= 0.15 * 255 + 2  # brightness jitter at most 15%
    assert n_objects[1] > n_objects[2] > n_objects[3] > 0
    assert 1.15 < np.mean(n_labels) < 1.6


def test_compose_scene_is_deterministic():
    pool = synthetic_pool()
    bgs = es.Backgrounds()
    a_img, a_rec = es.compose_scene(es.scene_rng(3, "noto-val", 17), pool, bgs, SMALL_EVAL)
    b_img, b_rec = es.compose_scene(es.scene_rng(3, "noto-val", 17), pool, bgs, SMALL_EVAL)
    assert a_rec == b_rec and np.array_equal(np.asarray(a_img), np.asarray(b_img))
    c_img, c_rec = es.compose_scene(es.scene_rng(3, "noto-test", 17), pool, bgs, SMALL_EVAL)
    assert c_rec != a_rec or not np.array_equal(np.asarray(a_img), np.asarray(c_img))


def test_backgrounds_with_photos_and_gradients():
    photo = (np.arange(120 * 160 * 3) % 251).astype(np.uint8).reshape(120, 160, 3)
    bgs = es.Backgrounds([photo])
    rng = np.random.default_rng(0)
    for w, h in [(64, 80), (100, 50), (300, 256)]:
        for _ in range(10):
            im = bgs.sample(rng, w, h)
            assert im.size == (w, h) and im.mode == "RGB"
    g = np.asarray(es.gradient_background(np.random.default_rng(1), 50, 40)).astype(int)
    assert g.shape == (40, 50, 3) and np.ptp(g) > 20


# ------------------------------------------------------------------------------------------------ writer


def _check_set(set_dir: Path, n: int) -> list[dict]:
    assert (set_dir / "DONE").exists()
    truth = es.read_truth(set_dir)
    assert [r["image"] for r in truth] == [f"{i:06d}.jpg" for i in range(n)]
    for r in truth:
        stem = r["image"][:-4]
        with Image.open(set_dir / r["image"]) as im:
            assert im.format == "JPEG" and im.size == (r["width"], r["height"])
        txt = (set_dir / f"{stem}.txt").read_text(encoding="utf-8").strip()
        assert txt.split(", ") == r["labels"] and r["labels"] == sorted(r["labels"])
        assert set(r["labels"]) == {o["label"] for o in r["objects"]}
        for o in r["objects"]:
            assert set(o) == {"label", "emoji", "codepoints", "box"}
            assert o["codepoints"] == " ".join(f"{ord(c):04X}" for c in o["emoji"])
    assert sorted(p.name for p in set_dir.iterdir()) == sorted(
        [f"{i:06d}.{ext}" for i in range(n) for ext in ("jpg", "txt")] + ["truth.jsonl", "DONE"])
    return truth


def test_build_set_writes_consistent_files_and_resumes(tmp_path):
    pool = synthetic_pool()
    bgs = es.Backgrounds()
    spec = es.SetSpec.parse("noto-train:11")
    assert (spec.name, spec.style, spec.count) == ("noto-train", "noto", 11)
    out = es.build_set(tmp_path / "a", spec, 0, pool, bgs, workers=1, chunk_size=4, geo=SMALL_TRAIN,
                       verbose=False)
    assert out == tmp_path / "a" / "noto-train"
    truth = _check_set(out, 11)
    assert all(min(r["width"], r["height"]) == 64 for r in truth)
    assert not any(p.name.startswith(".") for p in (tmp_path / "a").iterdir())

    # Another chunking / worker count / an interrupted run gives byte-identical files.
    partial = tmp_path / "b" / ".noto-train.partial"
    partial.mkdir(parents=True)
    (partial / "000000.jpg").write_bytes(b"garbage from an interrupted run")
    out_b = es.build_set(tmp_path / "b", spec, 0, pool, bgs, workers=2, chunk_size=3, geo=SMALL_TRAIN,
                         verbose=False)
    for p in sorted(out.iterdir()):
        assert p.read_bytes() == (out_b / p.name).read_bytes(), p.name

    # A DONE set is skipped (not rewritten).
    mtime = (out / "truth.jsonl").stat().st_mtime_ns
    es.build_set(tmp_path / "a", spec, 0, pool, bgs, workers=1, geo=SMALL_TRAIN, verbose=False)
    assert (out / "truth.jsonl").stat().st_mtime_ns == mtime

    # A different seed gives different images.
    out_c = es.build_set(tmp_path / "c", spec, 1, pool, bgs, workers=1, geo=SMALL_TRAIN, verbose=False)
    assert (out_c / "000000.jpg").read_bytes() != (out / "000000.jpg").read_bytes()


def test_resume_keeps_written_chunks(tmp_path):
    pool = synthetic_pool()
    bgs = es.Backgrounds()
    spec = es.SetSpec("openmoji-val", 6)
    ref = es.build_set(tmp_path / "ref", spec, 0, pool, bgs, chunk_size=3, geo=SMALL_EVAL, verbose=False)
    # Simulate a run stopped after its first chunk: the chunk is kept, the rest is generated.
    partial = tmp_path / "x" / ".openmoji-val.partial"
    partial.mkdir(parents=True)
    import shutil

    for i in range(3):
        for ext in ("jpg", "txt"):
            shutil.copy(ref / f"{i:06d}.{ext}", partial / f"{i:06d}.{ext}")
    lines = (ref / "truth.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    (partial / ".chunk-000000.jsonl").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    params = json.loads((ref / "DONE").read_text(encoding="utf-8"))
    (partial / ".params.json").write_text(json.dumps(params), encoding="utf-8")
    out = es.build_set(tmp_path / "x", spec, 0, pool, bgs, chunk_size=3, geo=SMALL_EVAL, verbose=False)
    _check_set(out, 6)
    assert (out / "truth.jsonl").read_bytes() == (ref / "truth.jsonl").read_bytes()


def test_set_spec_rejects_bad_names():
    import argparse

    for bad in ["noto:10", "apple-train:10", "noto-train", "noto-train:x"]:
        with pytest.raises(argparse.ArgumentTypeError):
            es.SetSpec.parse(bad)


def test_labels_json(tmp_path):
    entries, version = es.parse_emoji_test(EXCERPT)
    tax = es.select_taxonomy(entries, min_per_label=2, version=version)
    glyph = es.Glyph(tax.emoji["person"][0], _square(PALETTE[0]))
    pool = es.GlyphPool("noto", ["person"], {"person": [glyph]})
    path = es.write_labels_json(tmp_path, tax, {"noto": pool, "openmoji": None})
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["labels"] == ["face-smiling", "person-role", "person"]
    assert data["emoji"]["person"] == {"all": ["🧑", "👶"], "noto": ["🧑"]}
    assert data["emoji"]["face-smiling"]["noto"] == []


def _two_tone_glyph(side: int = 120) -> np.ndarray:
    """A disc with a differently coloured inner disc over smooth shading: regions to restyle."""
    yy, xx = np.mgrid[:side, :side]
    r = np.hypot(yy - side / 2, xx - side / 2)
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., 0] = np.clip(255 - r, 0, 255)
    rgba[..., 1] = 200
    rgba[r < side / 5, :3] = (30, 60, 220)
    rgba[..., 3] = np.where(r < side / 2 - 8, 255, 0)
    return rgba


def test_restyle_glyph_is_deterministic_and_changes_the_drawing_not_the_place():
    glyph = _two_tone_glyph()
    outs = [es.restyle_glyph(np.random.default_rng([5, i]), glyph) for i in range(40)]
    assert np.array_equal(outs[0], es.restyle_glyph(np.random.default_rng([5, 0]), glyph))
    inside = glyph[..., 3] == 255
    changed = 0
    for out in outs:
        assert out.shape == glyph.shape and out.dtype == np.uint8
        assert (out[..., 3][inside] > 0).all()   # the shape stays where it was
        assert (out[..., 3][:4, :4] == 0).all()  # the corners stay transparent
        changed += np.abs(out[..., :3][inside].astype(int) - glyph[..., :3][inside]).mean() > 3
    assert changed >= 24
    # some restyles draw a dark ink outline just outside the shape
    r = np.hypot(*np.mgrid[-60:60, -60:60])
    ring = (r > 52.6) & (r < 53.2)
    assert any((o[..., 3][ring] == 255).mean() > 0.9 and o[..., :3][ring].mean() < 80 for o in outs)


def test_restyle_only_touches_training_sets_and_keeps_old_sets_identical():
    pool = synthetic_pool()
    bgs = es.Backgrounds()
    assert es.geometry_for("noto-val", restyle=0.5).restyle == 0.0
    styled, plain = es.geometry_for("noto-train", restyle=1.0), es.geometry_for("noto-train")
    assert styled.restyle == 1.0 and plain == es.TRAIN_GEOMETRY
    a_img, _ = es.compose_scene(es.scene_rng(1, "noto-train", 3), pool, bgs, plain)
    b_img, _ = es.compose_scene(es.scene_rng(1, "noto-train", 3), pool, bgs, plain)
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img))
    s_img, s_rec = es.compose_scene(es.scene_rng(1, "noto-train", 3), pool, bgs, styled)
    assert s_rec["labels"] and not np.array_equal(np.asarray(a_img), np.asarray(s_img))


def test_glyph_cache_is_used_without_the_artwork(tmp_path, monkeypatch, capsys):
    entries = [es.EmojiEntry((0x1F600 + i,), "fully-qualified", "Smileys & Emotion", f"sub{i % 2}", f"e{i}")
               for i in range(16)]
    tax = es.select_taxonomy(entries, min_per_label=8)
    arrays = {e.hex: _two_tone_glyph(16) for e in tax.entries}
    np.savez_compressed(tmp_path / ".glyphs-noto.npz", __key__=np.array("from another machine"), **arrays)
    monkeypatch.setattr(es.NotoRenderer.__init__, "__defaults__", (tmp_path / "no-such-font.ttf",))
    pool = es.load_glyph_pool("noto", tax, tmp_path)
    assert sorted(pool.labels) == ["sub0", "sub1"] and not pool.missing
    assert "using the glyph cache" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        es.load_glyph_pool("noto", tax, tmp_path / "elsewhere")
