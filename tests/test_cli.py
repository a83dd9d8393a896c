"""The `mlcnn` command line as a script sees it: what it writes, what it refuses, its exit codes."""

import json
import os
import shutil

import pytest
from shapes import make_dataset

from mlcnn_core.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from mlcnn_core.library import Library
from mlcnn_core.modelfile import new_model, save_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(new_model("tiny", labels=["circle", "square", "triangle"]), path)
    return path


@pytest.fixture
def captioned(tmp_path):
    """Three images with a person's captions (no library yet) and two without."""
    folder = tmp_path / "dataset"
    make_dataset(folder, 5, seed=3, sidecars=False)
    images = sorted(folder.glob("*.jpg"))
    for image in images[:3]:
        image.with_suffix(".txt").write_text("ohwx, 1girl, solo, smile\n", encoding="utf-8")
    return folder, images


def _captions(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.txt"))}


def test_tag_write_never_changes_a_persons_caption(model_path, captioned, capsys):
    folder, images = captioned
    before = _captions(folder)
    assert main(["tag", str(folder), "--model", str(model_path), "--write", "txt"]) == EXIT_OK
    assert _captions(folder) == before   # nothing appended, and no file made for a guess
    proposed = [json.loads(line)["image"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(proposed) == [str(p) for p in images[3:]]   # captioned images count as tagged


def test_tag_writes_predictions_only_when_asked_and_knows_them_as_the_models(model_path, captioned, capsys):
    folder, images = captioned
    before = _captions(folder)
    assert main(["tag", str(folder), "--model", str(model_path), "--write", "txt,xmp",
                 "--write-predictions"]) == EXIT_OK
    assert {k: v for k, v in _captions(folder).items() if k in before} == before
    fresh = images[3]
    assert fresh.with_suffix(".txt").is_file() and fresh.with_name(fresh.name + ".xmp").is_file()
    # a second run reads the folder again: the files it wrote are still the model's proposals
    assert main(["tag", str(folder), "--model", str(model_path), "--only", "all"]) == EXIT_OK
    library = Library.open(folder)
    sources = {t.source for t in library.tags(library.image_id(fresh))}
    assert sources == {"machine"}
    assert {t.tag: t.source for t in library.tags(library.image_id(images[0]))}["ohwx"] == "sidecar"
    library.close()


def test_tag_writes_what_a_person_confirmed(model_path, captioned):
    folder, images = captioned
    library = Library.open(folder)
    library.scan()
    image_id = library.image_id(images[4])
    library.set_tag(image_id, "square", "added")
    library.close()
    assert main(["tag", str(folder), "--model", str(model_path), "--write", "txt"]) == EXIT_OK
    assert images[4].with_suffix(".txt").read_text(encoding="utf-8") == "square\n"
    assert not images[3].with_suffix(".txt").exists()


def test_tag_refuses_unknown_formats_before_touching_the_folder(captioned, capsys):
    folder, _ = captioned
    assert main(["tag", str(folder), "--model", "missing.safetensors", "--write", "txt,json"]) == EXIT_USAGE
    assert "txt,json" in capsys.readouterr().err
    assert not (folder / ".mlcnn-tagger").exists()
    assert main(["tag", str(folder), "--write-predictions"]) == EXIT_USAGE


@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--batch-size", "-1"), ("--keep-ratio", "nan"),
                                        ("--short-side", "100000"), ("--min-confidence", "1.5"),
                                        ("--max-tags", "0"), ("--exclude", " , ")])
def test_numbers_are_checked_before_any_work(model_path, captioned, capsys, flag, value):
    folder, _ = captioned
    for command in (["predict", str(folder)], ["tag", str(folder)]):
        assert main([*command, "--model", str(model_path), flag, value]) == EXIT_USAGE
        assert f"argument {flag}: {value!r}" in capsys.readouterr().err
    assert not (folder / ".mlcnn-tagger").exists()


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--lr", "-1"), ("--batch-size", "0"),
                                        ("--val-fraction", "2"), ("--time-budget", "nan"), ("--anchor", "nan")])
def test_training_numbers_are_checked_before_any_work(tmp_path, capsys, flag, value):
    make_dataset(tmp_path / "d", 8, seed=5)
    out = tmp_path / "m.safetensors"
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(out), "--arch", "tiny", "--epochs", "1",
                 "--max-steps", "1", "--workers", "0", flag, value]) == EXIT_USAGE
    assert f"argument {flag}: {value!r}" in capsys.readouterr().err
    assert not out.exists()


def test_training_refuses_a_folder_as_out_before_training(tmp_path, capsys):
    make_dataset(tmp_path / "d", 8, seed=5)
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path), "--arch", "tiny"]) == EXIT_USAGE
    assert "is a folder" in capsys.readouterr().err


def test_predict_refuses_to_write_over_an_image(model_path, captioned, capsys):
    folder, images = captioned
    victim = images[0]
    before = victim.read_bytes()
    assert main(["predict", "--model", str(model_path), "--output", str(victim), str(victim)]) == EXIT_USAGE
    renamed = folder / "victim.jsonl"
    shutil.copy(victim, renamed)
    assert main(["predict", "--model", str(model_path), "--output", str(renamed), str(images[1])]) == EXIT_USAGE
    assert main(["predict", "--model", str(model_path), "--output", str(folder), str(images[1])]) == EXIT_USAGE
    assert victim.read_bytes() == before and renamed.read_bytes() == before
    assert "image" in capsys.readouterr().err


def test_predict_exit_status_says_when_an_image_failed(model_path, captioned, tmp_path):
    folder, images = captioned
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "tags.jsonl"
    assert main(["predict", "--model", str(model_path), "--output", str(out), str(folder)]) == EXIT_FAILED
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6 and sum("error" in r for r in rows) == 1
    assert main(["predict", "--model", str(model_path), str(images[0])]) == EXIT_OK


def test_a_file_name_that_is_not_utf8_is_predicted_and_skipped_by_tag(model_path, captioned, tmp_path, capsys):
    folder, images = captioned
    odd = os.fsdecode(os.fsencode(str(folder)) + b"/odd-\xff\xfe.jpg")
    shutil.copy(images[3], odd)
    out = tmp_path / "tags.jsonl"
    assert main(["predict", "--model", str(model_path), "--output", str(out), str(folder)]) == EXIT_OK
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6 and odd in [r["image"] for r in rows] and all("labels" in r for r in rows)
    capsys.readouterr()
    assert main(["tag", str(folder), "--model", str(model_path)]) == EXIT_FAILED
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2   # the two untagged images with ordinary names
    assert "odd-\\xff\\xfe.jpg: skipped" in captured.err


def test_training_that_diverges_stops_and_keeps_the_old_model(model_path, tmp_path, capsys):
    make_dataset(tmp_path / "d", 24, seed=4)
    out = tmp_path / "m.safetensors"
    shutil.copy(model_path, out)
    before = out.read_bytes()
    rc = main(["train", "--data", str(tmp_path / "d"), "--out", str(out), "--arch", "tiny", "--epochs", "3",
               "--batch-size", "8", "--workers", "0", "--lr", "1e30", "--val-fraction", "0"])
    assert rc == EXIT_FAILED
    assert "diverged" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("mlcnn ")
    assert main(["tag", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_tag_prints_the_lines_predict_prints(model_path, captioned, capsys):
    folder, _ = captioned
    (folder / "broken.jpg").write_bytes(b"not an image")
    assert main(["tag", str(folder), "--model", str(model_path)]) == EXIT_FAILED
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(tuple(sorted(r)) for r in rows) == [("confidences", "image", "labels", "peaks")] * 2 + [
        ("error", "image")]


def test_tag_says_when_it_rebuilt_a_damaged_library(model_path, captioned, capsys):
    folder, _ = captioned
    assert main(["tag", str(folder), "--model", str(model_path)]) == EXIT_OK
    db = folder / ".mlcnn-tagger" / "library.sqlite"
    with open(db, "r+b") as fh:
        fh.write(os.urandom(100))
    capsys.readouterr()
    assert main(["tag", str(folder), "--model", str(model_path)]) == EXIT_OK
    err = capsys.readouterr().err
    assert "damaged" in err and "library.sqlite.damaged-" in err


def test_tag_applies_the_proposal_and_caption_rules(tmp_path, captioned, capsys):
    folder, images = captioned
    model = tmp_path / "underscored.safetensors"
    save_model(new_model("tiny", labels=["long_hair", "blue_eyes", "smile"]), model)
    before = _captions(folder)
    assert main(["tag", str(folder), "--model", str(model), "--write", "txt", "--write-predictions",
                 "--min-confidence", "0", "--max-tags", "2", "--exclude", "Smile", "--prefix", "ohwx",
                 "--word-separator", "space"]) == EXIT_OK
    rows = {r["image"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {k: v for k, v in _captions(folder).items() if k in before} == before  # a person's captions
    for image in images[3:]:
        row = rows[str(image)]
        ranked = sorted((t for t, v in row["confidences"].items() if v > 0 and t != "smile"),
                        key=lambda t: -row["confidences"][t])
        assert row["labels"] == ranked[:2] and row["labels"]
        words = [t.replace("_", " ") for t in row["labels"]]
        assert image.with_suffix(".txt").read_text(encoding="utf-8") == ", ".join(["ohwx", *words]) + "\n"


def test_predict_applies_the_proposal_rules(model_path, captioned, capsys):
    folder, _ = captioned
    assert main(["predict", str(folder), "--model", str(model_path), "--min-confidence", "0",
                 "--max-tags", "1"]) == EXIT_OK
    for row in map(json.loads, capsys.readouterr().out.splitlines()):
        assert row["labels"] == [max(row["confidences"], key=row["confidences"].get)]


def test_predict_excludes_a_tag_typed_with_other_separators(tmp_path, captioned, capsys):
    folder, _ = captioned
    model = tmp_path / "underscored.safetensors"
    save_model(new_model("tiny", labels=["long_hair", "blue_eyes", "smile"]), model)
    assert main(["predict", str(folder), "--model", str(model), "--min-confidence", "0",
                 "--exclude", "long__hair", "--exclude", "Blue  Eyes"]) == EXIT_OK
    rows = list(map(json.loads, capsys.readouterr().out.splitlines()))
    assert rows and all(row["labels"] == (["smile"] if row["confidences"].get("smile", 0) > 0 else [])
                        for row in rows)


def test_caption_rules_without_captions_are_refused_before_any_work(model_path, captioned, capsys):
    folder, _ = captioned
    assert main(["tag", str(folder), "--model", str(model_path), "--prefix", "ohwx"]) == EXIT_USAGE
    assert main(["tag", str(folder), "--model", str(model_path), "--write", "xmp", "--prefix", "ohwx"]) == EXIT_USAGE
    assert main(["tag", str(folder), "--model", str(model_path), "--word-separator", "space"]) == EXIT_USAGE
    assert "--prefix" in capsys.readouterr().err
    assert not (folder / ".mlcnn-tagger").exists()


def test_mlcnn_makes_torch_threads_wait_passively_before_torch_loads():
    """libgomp reads OMP_WAIT_POLICY once, when torch is imported; spinning threads cost 10× on a busy machine."""
    import subprocess
    import sys

    code = ("import os, sys; import mlcnn_core.cli as cli; loaded = 'torch' in sys.modules; "
            "cli.main(['--version']); print(loaded, os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["False", "PASSIVE"]
