"""End to end through the `mlcnn` command line, on generated images (tiny network, CPU)."""

import json
import os
import socket
import subprocess
import sys

import pytest
from shapes import SHAPES, make_dataset

from mlcnn_core.cli import main
from mlcnn_core.modelfile import load_model, read_card


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_dataset(root / "train", 200, seed=1)
    make_dataset(root / "val", 60, seed=2)
    out = root / "model.safetensors"
    events = root / "events.jsonl"
    rc = main(["train", "--data", str(root / "train"), "--val-data", str(root / "val"), "--out", str(out),
               "--arch", "tiny", "--epochs", "10", "--batch-size", "16", "--workers", "1",
               "--events", str(events)])
    assert rc == 0
    return root, out, [json.loads(line) for line in events.read_text().splitlines()]


def test_training_learns(trained):
    root, out, events = trained
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 10
    assert epochs[-1]["train_loss"] < 0.6 * epochs[0]["train_loss"]
    # chance: always predicting the most common label scores about 0.3 accuracy here
    assert max(e["val"]["accuracy"] for e in epochs) > 0.8
    step = next(e for e in events if e["event"] == "step")
    assert {"epoch", "step", "images_per_s", "loss", "eta_s"} <= set(step)
    card = read_card(out)
    assert sorted(card["labels"]) == sorted(SHAPES)
    assert card["metrics"]["validation_single_pass"]["accuracy"] > 0.6
    assert "baseline_threshold" in card and card["provenance"]["epochs_run"] == 10


def test_predict_writes_jsonl(trained, tmp_path):
    root, out, _ = trained
    (root / "val" / "broken.jpg").write_bytes(b"not an image")
    jsonl = tmp_path / "p.jsonl"
    # exit status 1: an image could not be read (the others are predicted)
    assert main(["predict", "--model", str(out), "--output", str(jsonl), str(root / "val")]) == 1
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 61
    errors = [r for r in rows if "error" in r]
    assert len(errors) == 1 and errors[0]["image"].endswith("broken.jpg")
    good = [r for r in rows if "error" not in r]
    assert all(set(r) == {"image", "labels", "confidences", "peaks"} for r in good)
    assert all(set(r["peaks"]) == set(r["confidences"]) and set(r["labels"]) <= set(r["confidences"]) for r in good)
    hits = sum(set(r["labels"]) == set(open(r["image"][:-4] + ".txt").read().split(", ")) for r in good)
    assert hits > len(good) * 0.6
    (root / "val" / "broken.jpg").unlink()


def test_keep_ratio_overrides_the_cards_pruning(trained, tmp_path, capsys):
    root, out, _ = trained
    counts = {}
    for ratio in ("1", "0.05"):
        jsonl = tmp_path / f"keep-{ratio}.jsonl"
        args = ["predict", "--model", str(out), "--keep-ratio", ratio, "--output", str(jsonl), str(root / "val")]
        assert main(args) == 0
        counts[ratio] = sum(len(json.loads(line)["confidences"]) for line in jsonl.read_text().splitlines())
    assert counts["0.05"] > counts["1"]  # labels close to a position's best now keep their share
    assert main(["predict", "--model", str(out), "--keep-ratio", "2", str(root / "val")]) == 2
    assert "--keep-ratio: '2'" in capsys.readouterr().err


def test_short_side_overrides_the_cards_input_size(trained, tmp_path, capsys):
    root, out, _ = trained
    reports = {}
    for short in ("64", "128"):
        report = tmp_path / f"eval-{short}.json"
        args = ["evaluate", "--model", str(out), "--data", str(root / "val"), "--no-baseline", "--short-side", short,
                "--json", str(report)]
        assert main(args) == 0
        reports[short] = json.loads(report.read_text())["single_pass"]["cost"]["gflops_per_image"]
    assert reports["128"] == pytest.approx(4 * reports["64"], rel=0.15)  # FLOPs grow with the pixels
    assert main(["predict", "--model", str(out), "--short-side", "20", str(root / "val")]) == 2
    assert "--short-side: '20'" in capsys.readouterr().err


def test_evaluate_and_info(trained, tmp_path, capsys):
    root, out, _ = trained
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(out), "--data", str(root / "val"), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["images"] == 60
    for method in ("single_pass", "ten_crop"):
        assert 0 <= result[method]["accuracy"] <= 1 and result[method]["cost"]["gflops_per_image"] > 0
    assert result["cost_ratio"]["flops"] > 3
    assert "10-crop" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "mlcnn-tagger-model"


def test_finetune_grows_labels_and_resume(trained, tmp_path):
    root, out, _ = trained
    data = tmp_path / "new"
    items = make_dataset(data, 30, seed=5)
    for image, labels in items[:15]:
        image.with_suffix(".txt").write_text(", ".join(labels + ["zz-new"]))
    tuned = tmp_path / "tuned.safetensors"
    events_file = tmp_path / "ev.jsonl"
    events_file.write_text('{"event": "done", "from": "an earlier run"}\n')
    assert main(["train", "--init", str(out), "--data", str(data), "--out", str(tuned), "--epochs", "2",
                 "--learn", "all", "--workers", "0", "--events", str(events_file)]) == 0
    first = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [e["event"] for e in first].count("start") == 1 and not any("from" in e for e in first)  # a new file
    old, new = load_model(out), load_model(tuned)
    assert new.labels == old.labels + ["zz-new"]
    assert read_card(tuned)["provenance"]["init"] == str(out)
    # resume continues from the checkpoint's epoch
    assert main(["train", "--init", str(out), "--data", str(data), "--out", str(tuned), "--epochs", "3",
                 "--learn", "all", "--workers", "0", "--resume", "--events", str(events_file)]) == 0
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert events[: len(first)] == first  # a resumed run adds to its events
    resumed = events[len(first):]
    assert [e["event"] for e in resumed[:2]] == ["labels_added", "new_labels_mode"]
    assert resumed[1]["mode"] == "fit"  # every weight learns
    assert resumed[2]["event"] == "resumed" and resumed[2]["epoch"] == 2
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3]


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "none.safetensors"), str(tmp_path)]) == 2
    assert "none.safetensors" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "no labelled images" in capsys.readouterr().err
    for flag, value in (("--anchor", "-1"), ("--time-budget", "0"), ("--time-budget", "-5")):
        assert main(["train", "--data", str(empty), "--out", str(tmp_path / "m.safetensors"), flag, value]) == 2
        assert flag in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_paper_recipe_runs(tmp_path):
    make_dataset(tmp_path / "d", 40, seed=3)
    out = tmp_path / "paper.safetensors"
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(out), "--arch", "tiny", "--recipe", "paper",
                 "--epochs", "1", "--workers", "0", "--events", str(tmp_path / "e.jsonl")]) == 0
    card = read_card(out)
    assert card["provenance"]["recipe"]["optimizer"] == "paper-rmsprop"
    assert card["arch"]["norm"] is False


def _free_port() -> int:
    """A port nothing listens on now, so two test runs on one machine do not collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("extra", [[], ["--short-side-range", "96", "320"]], ids=["fixed-scale", "scale-range"])
def test_torchrun_two_processes_on_cpu(tmp_path, extra):
    make_dataset(tmp_path / "d", 64, seed=4)
    out = tmp_path / "ddp.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "mlcnn_core.cli", "train", "--data", str(tmp_path / "d"), "--out", str(out), "--arch", "tiny",
           "--epochs", "2", "--batch-size", "16", "--workers", "0", "--device", "cpu",
           "--events", str(tmp_path / "ddp.jsonl"), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in (tmp_path / "ddp.jsonl").read_text().splitlines()]
    start = events[0]
    assert start["world_size"] == 2
    assert len([e for e in events if e["event"] == "epoch"]) == 2
    # each process sees half the data: 2 steps of 8 per process cover 32 images = half of the 90% kept
    assert start["steps_per_epoch"] <= 4
    assert load_model(out).labels


def test_tag_folder_records_machine_tags_and_writes_sidecars(trained, tmp_path, capsys):
    import shutil

    from mlcnn_core.library import Library

    root, out, _ = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted((root / "val").glob("*.jpg"))[:4]:
        shutil.copy(src, folder / src.name)
    shutil.copy(folder / sorted(p.name for p in folder.iterdir())[0], folder / "twin.jpg")
    shutil.copy(folder / "twin.jpg", folder / "twin.png")   # same stem: must not share twin.txt
    assert main(["tag", str(folder), "--model", str(out), "--write", "txt,xmp", "--write-predictions"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6
    assert (folder / "twin.jpg.txt").is_file() and (folder / "twin.png.txt").is_file()
    assert not (folder / "twin.txt").exists()
    assert (folder / "twin.jpg.xmp").read_text().count("rdf:li") >= 1
    lib = Library.open(folder)
    image_id = lib.image_id(folder / "twin.jpg")
    tags = lib.tags(image_id)
    assert tags and all(t.source == "machine" for t in tags)
    assert lib.prediction(image_id).model_hash


def test_finetune_with_a_linear_threshold_and_a_new_label(trained, tmp_path):
    from mlcnn_core.modelfile import save_model

    root, out, _ = trained
    parent = load_model(out)
    parent.card["threshold"] = {"kind": "linear", "weights": [0.1] * len(parent.labels), "bias": 0.5}
    linear = save_model(parent, tmp_path / "linear.safetensors")
    data = tmp_path / "new"
    for image, labels in make_dataset(data, 20, seed=6)[:10]:
        image.with_suffix(".txt").write_text(", ".join(labels + ["zz-new"]))
    tuned = tmp_path / "tuned.safetensors"
    assert main(["train", "--init", str(linear), "--data", str(data), "--out", str(tuned), "--epochs", "1",
                 "--workers", "0", "--events", str(tmp_path / "ev.jsonl")]) == 0
    card = read_card(tuned)
    assert card["labels"][-1] == "zz-new"
    # too few held-out images to refit: the parent's threshold is kept, grown by a zero weight
    assert card["threshold"]["weights"] == [0.1] * len(parent.labels) + [0.0]
    assert card["name"] == "tuned" and card["created"] >= parent.card["created"]


def test_a_new_label_only_on_unreadable_images_is_warned_about(trained, tmp_path):
    root, out, _ = trained
    data = tmp_path / "new"
    for image, labels in make_dataset(data, 12, seed=7)[:6]:
        image.with_suffix(".txt").write_text(", ".join(labels + ["zz-seen"]))
    (data / "junk.jpg").write_bytes(b"not an image")
    (data / "junk.txt").write_text("zz-unseen")
    events = tmp_path / "ev.jsonl"
    assert main(["train", "--init", str(out), "--data", str(data), "--out", str(tmp_path / "m.safetensors"),
                 "--epochs", "0", "--workers", "0", "--events", str(events)]) == 0
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    warnings = [e["message"] for e in lines if e["event"] == "warning"]
    assert len(warnings) == 1 and "zz-unseen" in warnings[0] and "zz-seen" not in warnings[0].replace("zz-unseen", "")
    assert read_card(tmp_path / "m.safetensors")["labels"][-2:] == ["zz-seen", "zz-unseen"]


def test_epochs_within_budget():
    from mlcnn_core.train import epochs_within_budget

    assert epochs_within_budget(planned=30, epoch_seconds=[10], elapsed_s=10, budget_s=100) == 10
    assert epochs_within_budget(planned=5, epoch_seconds=[10], elapsed_s=10, budget_s=100) == 5  # at most planned
    assert epochs_within_budget(planned=30, epoch_seconds=[30, 30, 30], elapsed_s=90, budget_s=60) == 3  # never fewer
    assert epochs_within_budget(planned=30, epoch_seconds=[10, 10], elapsed_s=20, budget_s=55) == 5
    # a slow first epoch (set-up, a busy machine) alone would cut the run to 3 epochs; once the next
    # two run at their usual pace the plan is made from the median and gives the epochs back
    assert epochs_within_budget(planned=10, epoch_seconds=[30], elapsed_s=30, budget_s=100) == 3
    assert epochs_within_budget(planned=10, epoch_seconds=[30, 10, 10], elapsed_s=50, budget_s=100) == 8


def test_time_budget_shortens_the_run_and_its_schedule(tmp_path):
    make_dataset(tmp_path / "d", 40, seed=6)
    out, events_file = tmp_path / "m.safetensors", tmp_path / "e.jsonl"
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(out), "--arch", "tiny", "--epochs", "6",
                 "--batch-size", "8", "--workers", "0", "--time-budget", "0.00001",
                 "--events", str(events_file)]) == 0
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    budget = [e for e in events if e["event"] == "time_budget"]
    assert [e["epochs"] for e in budget] == [1]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1]
    steps = [e for e in events if e["event"] == "step"]
    assert budget[0]["total_steps"] == steps[-1]["step"] < steps[-1]["total_steps"]
    assert read_card(out)["provenance"]["recipe"]["epochs"] == 1


def test_short_side_range_trains_at_several_scales(tmp_path, capsys):
    make_dataset(tmp_path / "d", 40, seed=7)
    out, events_file = tmp_path / "m.safetensors", tmp_path / "e.jsonl"
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(out), "--arch", "tiny", "--epochs", "2",
                 "--batch-size", "8", "--workers", "1", "--short-side-range", "96", "320",
                 "--events", str(events_file)]) == 0
    assert read_card(out)["provenance"]["short_sides"] == [96, 320]
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    # the scaled batches cover each epoch as the plain loader would: every planned step ran
    steps = [e for e in events if e["event"] == "step"]
    assert steps[-1]["step"] == steps[-1]["total_steps"] == 2 * events[0]["steps_per_epoch"]
    capsys.readouterr()
    # a bad range is refused before any data is read: the folder named here does not even exist
    for bad in (["20", "300"], ["300", "200"]):
        assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x.safetensors"),
                     "--arch", "tiny", "--epochs", "1", "--short-side-range", *bad]) != 0
        err = capsys.readouterr().err
        assert f"--short-side-range {bad[0]} {bad[1]}" in err and "missing" not in err
    assert not (tmp_path / "x.safetensors").exists()


def test_few_held_out_images_keep_the_last_epoch(trained, tmp_path):
    """Too few held-out images to judge by: the last epoch is kept, not the one that scored best."""
    root, out, _ = trained
    assert read_card(out)["provenance"]["kept"] == "the best epoch on the held-out images"  # 60 held out
    data = tmp_path / "few"
    make_dataset(data, 40, seed=8)
    tuned = tmp_path / "tuned.safetensors"
    assert main(["train", "--init", str(out), "--data", str(data), "--out", str(tuned), "--epochs", "4",
                 "--workers", "0", "--events", str(tmp_path / "ev.jsonl")]) == 0
    prov = read_card(tuned)["provenance"]
    assert prov["kept"].startswith("the last epoch") and prov["best_epoch"] == prov["epochs_run"] == 4
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert all(e["improved"] for e in events if e["event"] == "epoch")


def _tag_red_squares(folder, n, seed):
    """Scenes whose red squares also carry a new tag, as a person might add "red" to a collection."""
    items = make_dataset(folder, n, seed=seed)
    for image, labels in items:
        image.with_suffix(".txt").write_text(", ".join(labels + (["zz-red"] if "red-square" in labels else [])))
    return items


def _new_label_scores(model_path, items):
    from mlcnn_core.predict import Predictor

    predictor = Predictor(load_model(model_path), device="cpu")
    predicted = [predictor.predict_file(image).labels for image, _ in items]
    truth = [labels + (["zz-red"] if "red-square" in labels else []) for _, labels in items]
    hits = sum("zz-red" in p and "zz-red" in t for p, t in zip(predicted, truth, strict=True))
    tagged = sum("zz-red" in p for p in predicted)
    old_kept = sum(set(t) - {"zz-red"} <= set(p) for p, t in zip(predicted, truth, strict=True))
    return hits / max(1, tagged), hits / sum("zz-red" in t for t in truth), old_kept / len(items)


def test_new_label_rows_are_fitted_to_the_test_form(trained, tmp_path):
    """A new tag on a drawing the model knows (``zz-red`` on red squares) is learnt from the person's
    images by fitting its output row (--epochs 0: nothing else trained), and shares the positions of
    the known label instead of taking them; the row left as added is noise. With --epochs 0 the
    automatic choice is the fit, and a mode that learns rows in steps (there are none) is refused."""
    from mlcnn_core.modelfile import add_labels, save_model

    root, trained_out, _ = trained
    parent = load_model(trained_out)
    # the shipped models' pruning: a position keeps every label within half of its best (with the
    # paper's best-label-only pruning a tag on a known drawing can only take that label's positions)
    parent.card["prediction"] = dict(parent.card["prediction"], keep_ratio=0.5)
    out = save_model(parent, tmp_path / "parent.safetensors")
    _tag_red_squares(tmp_path / "new", 60, seed=9)
    held_out = _tag_red_squares(tmp_path / "held", 60, seed=10)
    fitted, refused = tmp_path / "fitted.safetensors", tmp_path / "refused.safetensors"
    assert main(["train", "--init", str(out), "--data", str(tmp_path / "new"), "--out", str(fitted),
                 "--epochs", "0", "--workers", "0", "--events", str(fitted.with_suffix(".jsonl"))]) == 0
    assert main(["train", "--init", str(out), "--data", str(tmp_path / "new"), "--out", str(refused),
                 "--epochs", "0", "--new-labels", "train", "--workers", "0"]) == 2
    assert not refused.exists()
    unfitted = load_model(out)
    add_labels(unfitted, ["zz-red"])
    unfitted = save_model(unfitted, tmp_path / "unfitted.safetensors")
    events = [json.loads(line) for line in fitted.with_suffix(".jsonl").read_text().splitlines()]
    assert [e["mode"] for e in events if e["event"] == "new_labels_mode"] == ["fit"]
    fit = [e for e in events if e["event"] == "new_labels_fitted"]
    assert [e["when"] for e in fit] == ["before training"]          # nothing trained: no second fit
    assert fit[0]["labels"]["zz-red"]["images"] > 10
    precision, recall, old_kept = _new_label_scores(fitted, held_out)
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)
    _, _, parent_old_kept = _new_label_scores(out, held_out)
    assert old_kept >= parent_old_kept - 0.1
    unfitted_precision, unfitted_recall, _ = _new_label_scores(unfitted, held_out)
    assert unfitted_precision < 0.6 and unfitted_recall < 0.8, (unfitted_precision, unfitted_recall)
    assert read_card(fitted)["provenance"]["epochs_run"] == 0


def test_resuming_from_a_damaged_checkpoint_says_so(tmp_path):
    import torch

    from mlcnn_core.train import load_checkpoint, save_checkpoint

    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, net, optimizer, {"epoch": 1})
    path.write_bytes(path.read_bytes()[:-10])   # what a power cut can leave: rename without fsync
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(path, net, optimizer)


def test_a_fine_tune_keeps_card_keys_this_version_does_not_know(trained, tmp_path, capsys):
    from test_modelfile import rewrite_card

    from mlcnn_core.modelfile import CardWarning

    root, out, _ = trained
    newer = rewrite_card(out, tmp_path / "newer.safetensors",
                         lambda c, h: c.update(licence="CC BY 4.0", training_data={"sets": ["noto-train"]}))
    tuned = tmp_path / "tuned.safetensors"
    assert main(["train", "--init", str(newer), "--data", str(root / "val"), "--out", str(tuned), "--epochs", "1",
                 "--workers", "0", "--events", str(tmp_path / "ev.jsonl")]) == 0
    assert f"mlcnn: warning: {newer}: the card has keys this version does not know" in capsys.readouterr().err
    with pytest.warns(CardWarning, match="licence"):
        card = read_card(tuned)
    assert card["licence"] == "CC BY 4.0"
    # what the parent was trained on is the parent's: kept with its provenance, not said of the fine-tune
    assert "training_data" not in card and card["provenance"]["parent"]["training_data"] == {"sets": ["noto-train"]}


def test_new_label_cuts_are_placed_for_the_last_block_and_refused_for_every_weight(trained, tmp_path, capsys):
    root, out, _ = trained
    data = tmp_path / "new"
    for image, labels in make_dataset(data, 24, seed=9):
        image.with_suffix(".txt").write_text(", ".join(labels + ["zz-new"]))
    tuned, events = tmp_path / "tuned.safetensors", tmp_path / "ev.jsonl"
    run = ["train", "--init", str(out), "--data", str(data), "--out", str(tuned), "--epochs", "1", "--workers", "0",
           "--events", str(events), "--new-labels", "cut"]
    assert main([*run, "--learn", "all"]) == 2
    assert "mlcnn: error: --new-labels cut places each new label's cut" in capsys.readouterr().err
    assert not tuned.exists() and not events.exists()   # refused before any work
    assert main([*run, "--learn", "block"]) == 0
    cut = [json.loads(line) for line in events.read_text().splitlines() if '"new_labels_cut"' in line]
    assert len(cut) == 1 and list(cut[0]["scales"]) == ["zz-new"]
    card = read_card(tuned)
    assert card["provenance"]["new_labels"]["mode"] == "cut"
    assert card["threshold"]["label_scales"][-1] == cut[0]["scales"]["zz-new"]
