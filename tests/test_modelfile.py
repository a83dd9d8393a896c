import json
import os
import pickle
import re
import struct
import threading

import pytest
import torch

from mlcnn_core.modelfile import (
    CARD_KEY,
    CardWarning,
    ModelFileError,
    load_model,
    new_model,
    read_card,
    save_model,
)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = new_model("tiny", labels=["cat", "dog", "bird"], mean=[0.4, 0.5, 0.6], name="t")
    path = save_model(model, tmp_path / "m.safetensors")
    return model, path


def rewrite_card(path, dest, edit):
    """Copy a model file with its card changed by ``edit`` (header re-framed correctly)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    card = json.loads(header["__metadata__"][CARD_KEY])
    edit(card, header)
    header["__metadata__"][CARD_KEY] = json.dumps(card)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dest.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return dest


def test_round_trip(saved, tmp_path):
    model, path = saved
    loaded = load_model(path)
    assert loaded.labels == ["cat", "dog", "bird"] and loaded.mean == [0.4, 0.5, 0.6]
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, loaded.net.state_dict()[k])
    assert read_card(path)["name"] == "t"
    assert not list(tmp_path.glob(".*.tmp"))


def test_pickle_is_refused_without_unpickling(tmp_path):
    evil = tmp_path / "evil.safetensors"
    torch.save({"x": torch.zeros(1)}, evil)
    with pytest.raises(ModelFileError, match="refused because unpickling"):
        load_model(evil)
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match=str(raw)):
        load_model(raw)


def test_truncated_file(saved, tmp_path):
    _, path = saved
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(cut)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(ModelFileError, match="too short"):
        load_model(tiny)


def test_foreign_safetensors_without_card(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ModelFileError, match="without an MLCNN Tagger card"):
        load_model(other)


@pytest.mark.parametrize("edit, message", [
    (lambda c, h: c.update(format="something-else"), "not an MLCNN Tagger model"),
    (lambda c, h: c.update(format_version=99), "newer than this program"),
    (lambda c, h: c.update(labels=[]), "no label list"),
    (lambda c, h: c.update(labels=["a", "a", "b"]), "duplicates"),
    (lambda c, h: c.update(mean=[1, 2]), "mean pixel"),
    (lambda c, h: c.update(threshold={"kind": "linear", "weights": [1.0], "bias": 0}), "threshold"),
    (lambda c, h: c["arch"].update(trunk=[["conv", 8, 5, 2]]), "bad trunk layer"),
    (lambda c, h: c.update(labels=["a", "b", "c", "d"]), "weights do not match the card"),
])
def test_wrong_card(saved, tmp_path, edit, message):
    _, path = saved
    bad = rewrite_card(path, tmp_path / "bad.safetensors", edit)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(bad)
    assert str(bad) in str(info.value)


def test_wrong_tensor_shape(saved, tmp_path):
    _, path = saved

    def widen(card, header):
        card["arch"]["trunk"][0][1] = 16
    bad = rewrite_card(path, tmp_path / "shape.safetensors", widen)
    with pytest.raises(ModelFileError, match="has shape"):
        load_model(bad)


def with_card_text(path, dest, text):
    """Copy a model file with its card's text replaced by ``text``."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["__metadata__"][CARD_KEY] = text
    new = json.dumps(header).encode()
    dest.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return dest


def test_card_is_not_json(saved, tmp_path):
    _, path = saved
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_card(with_card_text(path, tmp_path / "nojson.safetensors", "{not json"))


def test_killed_save_keeps_the_old_file(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def crash(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, path)
    assert path.read_bytes() == before
    assert not list(path.parent.glob(".*.tmp"))


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ModelFileError, match="nothere.safetensors"):
        load_model(tmp_path / "nothere.safetensors")


def test_header_length_starting_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A valid file whose header length is 128 mod 256 starts with byte 0x80, like a pickle."""
    for i in range(264):  # the header is padded to 8 bytes: 256 more name bytes reach every residue
        model = new_model("tiny", labels=["a", "b"], name="n" * i)
        path = save_model(model, tmp_path / f"m{i}.safetensors")
        if path.read_bytes()[:1] == b"\x80":
            assert load_model(path).labels == ["a", "b"]
            return
    pytest.fail("no name length gave a header length of 128 mod 256")


def test_saved_file_is_readable_by_others(saved):
    _, path = saved
    assert path.stat().st_mode & 0o044 == 0o044 or os.umask(os.umask(0)) & 0o044


def test_reading_a_card_does_not_import_torch(saved):
    import subprocess
    import sys

    _, path = saved
    code = (f"import sys; from mlcnn_core.modelfile import read_card; read_card({str(path)!r}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_a_cards_architecture_is_checked_before_anything_is_allocated(saved, tmp_path):
    _, path = saved

    def bomb(card, header):  # about 10 TB of weights if the network were built
        card["arch"]["trunk"] = [["conv", 8192, 3, 1, 1], ["conv", 8192, 200, 1, 0]]
    bad = rewrite_card(path, tmp_path / "bomb.safetensors", bomb)
    with pytest.raises(ModelFileError, match="do not match the card"):
        load_model(bad)


def test_a_card_nested_too_deeply_is_refused_with_a_message(saved, tmp_path):
    _, path = saved
    bad = with_card_text(path, tmp_path / "deep.safetensors", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFileError, match="nested"):
        read_card(bad)


def test_a_model_with_non_finite_weights_is_never_saved(saved):
    model, path = saved
    before = path.read_bytes()
    with torch.no_grad():
        next(model.net.parameters())[0].fill_(float("nan"))
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        save_model(model, path)
    assert path.read_bytes() == before


def test_saving_removes_temporary_files_of_killed_saves(saved):
    model, path = saved
    stale = path.with_name(f".{path.name}.999999999.tmp")   # no process has that id
    stale.write_bytes(b"half a model")
    ours = path.with_name(f".{path.name}.{os.getpid()}.tmp.keep")  # not a temporary of save_model
    ours.write_bytes(b"x")
    save_model(model, path)
    assert not stale.exists() and ours.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    errors = []

    def read():
        try:
            read_card(fifo)
        except ModelFileError as e:
            errors.append(str(e))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # let the blocked open() return before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert errors and "not a model file" in errors[0]


@pytest.mark.parametrize("field", ["prediction", "threshold", "provenance", "metrics"])
@pytest.mark.parametrize("value", ["x", [1, 2], 3, None, True])
def test_a_card_field_that_is_not_an_object_is_named_with_the_file(saved, tmp_path, field, value):
    _, path = saved
    bad = rewrite_card(path, tmp_path / "bad.safetensors", lambda c, h: c.update({field: value}))
    with pytest.raises(ModelFileError, match=re.escape(f"{field} is {json.dumps(value)}, not an object")) as info:
        read_card(bad)
    assert str(info.value).startswith(f"{bad}: ")


@pytest.mark.parametrize("field, value, message", [
    ("prediction", {"keep_ratio": "0.5"}, 'prediction.keep_ratio is "0.5", not a number'),
    ("prediction", {"short_side": None}, "prediction.short_side is null, not a whole number"),
    ("prediction", {"pool_kernels": 3}, "prediction.pool_kernels is 3, not a list of whole numbers"),
    ("prediction", {"multiscale": "no"}, 'prediction.multiscale is "no", not true or false'),
    ("prediction", {"scores": "logits"}, 'prediction.scores is "logits", not one of "softmax", "raw"'),
    ("threshold", {"bias": [0.5]}, r"threshold.bias is \[0.5\], not a number"),
    ("threshold", {"kind": "linear", "weights": [1.0]}, r"threshold.weights is \[1.0\], not 3 weights"),
    ("summed_threshold", "x", 'summed_threshold is "x", not an object'),
    ("single_pass", {"threshold": 0.5, "rescore": None}, "single_pass.threshold is 0.5, not an object"),
    ("name", 3, "name is 3, not a string"),
    ("name", None, "name is null, not a string"),
    ("created", ["2026"], r'created is \["2026"\], not a string'),
    ("provenance", {"init": 7}, "provenance.init is 7, not a string or null"),
    ("provenance", {"epochs_run": "10"}, 'provenance.epochs_run is "10", not a whole number or null'),
    ("provenance", {"train_seconds": "12 s"}, 'provenance.train_seconds is "12 s", not a number or null'),
    ("provenance", {"parent": []}, r"provenance.parent is \[\], not an object"),
    ("provenance", {"init": "a.safetensors", "parent": {"parent": {"train_seconds": True}}},
     "provenance.parent.parent.train_seconds is true, not a number or null"),
    ("metrics", {"validation_single_pass": 0.6}, "metrics.validation_single_pass is 0.6, not an object"),
])
def test_a_cards_wrong_value_is_named_with_the_file_and_the_field(saved, tmp_path, field, value, message):
    _, path = saved
    bad = rewrite_card(path, tmp_path / "bad.safetensors", lambda c, h: c.update({field: value}))
    with pytest.raises(ModelFileError, match=message) as info:
        read_card(bad)
    assert str(info.value).startswith(f"{bad}: ")


def test_predict_names_the_model_file_and_the_field_of_a_wrong_card(saved, tmp_path, capsys):
    from mlcnn_core.cli import EXIT_USAGE, main

    _, path = saved
    bad = rewrite_card(path, tmp_path / "bad.safetensors", lambda c, h: c.update(prediction="x"))
    assert main(["predict", "--model", str(bad), str(tmp_path / "none.png")]) == EXIT_USAGE
    assert f'{bad}: bad model card: prediction is "x", not an object' in capsys.readouterr().err


def test_a_card_that_says_what_the_code_reads_loads(saved, tmp_path):
    _, path = saved
    provenance = {"init": None, "epochs_run": 3, "train_seconds": 1.5, "history": [],
                  "parent": {"init": "p.safetensors", "epochs_run": None, "train_seconds": 2}}
    good = rewrite_card(path, tmp_path / "good.safetensors", lambda c, h: c.update(
        name="", created="2026-12-06T21:00:00+00:00", provenance=provenance,
        metrics={"validation_single_pass": {"accuracy": 0.5}, "validation_rescored": {"mix-val": {}}, "loss": 0.3}))
    assert load_model(good).card["provenance"] == provenance


def test_unknown_card_keys_are_warned_about_by_name_and_kept(saved, tmp_path, capsys):
    from mlcnn_core.cli import main

    _, path = saved
    newer = rewrite_card(path, tmp_path / "newer.safetensors",
                         lambda c, h: c.update(licence="CC BY 4.0", treshold={"kind": "global", "bias": 0.9}))
    with pytest.warns(CardWarning, match=re.escape(f"{newer}: ") + ".*not know.*: licence, treshold$"):
        model = load_model(newer)
    assert model.card["licence"] == "CC BY 4.0" and model.card["treshold"]["bias"] == 0.9
    saved_again = save_model(model, tmp_path / "again.safetensors")
    with pytest.warns(CardWarning):
        assert read_card(saved_again)["licence"] == "CC BY 4.0"
    assert main(["info", str(newer)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["licence"] == "CC BY 4.0"
    assert err == (f"mlcnn: warning: {newer}: the card has keys this version does not know, kept but not used "
                   "(written by a newer version, or misspelt): licence, treshold\n")


def test_the_shipped_models_load_without_a_warning():
    import warnings

    from mlcnn_core.modelfile import starter_model_path

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_model(starter_model_path()).labels) == 67


def test_misspelt_keys_inside_a_cards_reading_are_warned_about_by_their_path(saved, tmp_path):
    from dataclasses import fields

    from mlcnn_core.card import THRESHOLD_KEYS
    from mlcnn_core.threshold import Threshold

    assert THRESHOLD_KEYS == {f.name for f in fields(Threshold)}
    _, path = saved

    def misspell(card, _header):
        card["prediction"]["keep_ratoi"] = 0.5
        card["threshold"]["biass"] = 0.2

    odd = rewrite_card(path, tmp_path / "odd.safetensors", misspell)
    with pytest.warns(CardWarning, match=r"not know.*: prediction\.keep_ratoi, threshold\.biass$"):
        load_model(odd)
