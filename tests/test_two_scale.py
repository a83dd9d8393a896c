"""bench/two_scale.py: a second pass's features beside the first's, fitted on validation sets only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcnn_core.modelfile import load_model, new_model, save_model
from mlcnn_core.predict import PredictConfig, Predictor, card_reading

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "two_scale.py"


def _scene_set(folder: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir()
    rows = []
    for i in range(count):
        h, w = int(rng.integers(64, 96)), int(rng.integers(64, 128))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
        labels = sorted({str(x) for x in rng.choice(["x", "y", "z"], size=int(rng.integers(1, 3)))})
        rows.append({"image": f"{i}.jpg", "width": w, "height": h, "labels": labels,
                     "objects": [{"label": lab, "box": [0, 0, w, h]} for lab in labels]})
    (folder / "truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_two_scale_reads_every_pair_and_costs_both_passes(tmp_path):
    torch.manual_seed(0)
    parent = new_model("tiny", labels=["x", "y", "z"], name="t")
    parent.card["prediction"] = PredictConfig(short_side=96).to_dict()
    model = save_model(parent, tmp_path / "t.safetensors")
    val, test = _scene_set(tmp_path / "val", 24, 1), _scene_set(tmp_path / "test", 8, 2)
    md, out = tmp_path / "two.md", tmp_path / "out.safetensors"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model), "--val", str(val), "--test", str(test),
                           "--second", "64", "--md", str(md), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(md.with_suffix(".json").read_text(encoding="utf-8"))
    single, both = result["results"]
    assert single["passes"] == [96] and both["passes"] == [96, 64]
    assert len(single["weights"]) == 5 and len(both["weights"]) == 9   # four features per pass, and a bias
    assert both["gflops"] > single["gflops"] > 0
    assert both["ten_crop_ratio"] < single["ten_crop_ratio"]
    for r in result["results"]:
        assert set(r["metrics"]) == {"val", "test"}
        assert 0.0 <= r["pooled_val_accuracy"] <= 1.0
        assert r["pooled_val_accuracy"] == pytest.approx(r["metrics"]["val"]["accuracy"])
    table = md.read_text(encoding="utf-8")
    assert "| 96 px + 64 px |" in table.replace("**", "")
    # --out: the model read as the best row on validation, its reading before kept one flag away
    best = max(result["results"], key=lambda r: (r["pooled_val_accuracy"], -r["gflops"]))
    card = load_model(out).card
    assert card["prediction"]["rescore"] == pytest.approx(best["weights"])
    assert card["threshold"] == best["threshold"]
    assert card["metrics"]["validation_two_pass"]["val"] == best["metrics"]["val"]
    if len(best["passes"]) == 2:
        assert card["prediction"]["second_short_side"] == 64
        assert card_reading(card, single_pass=True)["prediction"] == PredictConfig(short_side=96).to_dict()
        assert card["single_pass"]["threshold"] == parent.card["threshold"]
    else:
        assert card["prediction"]["second_short_side"] is None and "single_pass" not in card
    assert Predictor(load_model(out)).predict_array(np.zeros((80, 90, 3), np.uint8)).scores.shape == (3,)


def test_two_scale_out_refuses_another_first_pass_than_the_cards(tmp_path):
    model = save_model(new_model("tiny", labels=["x", "y"], name="t"), tmp_path / "t.safetensors")
    val = _scene_set(tmp_path / "val", 4, 1)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model), "--val", str(val), "--primary", "96",
                           "--second", "64", "--out", str(tmp_path / "out.safetensors")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--primary" in proc.stderr
    assert not (tmp_path / "out.safetensors").exists()
