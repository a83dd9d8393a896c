"""bench/soup.py: the weighted mean of fine-tunes of one model, written as a model file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from mlcnn_core.modelfile import load_model, new_model, read_card, save_model

SOUP = Path(__file__).resolve().parents[1] / "bench" / "soup.py"


def _soup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SOUP), *args], capture_output=True, text=True, timeout=120)


def test_soup_is_the_weighted_mean_and_refuses_other_label_sets(tmp_path):
    torch.manual_seed(0)
    a = new_model("tiny", labels=["x", "y"], name="a")
    b = new_model("tiny", labels=["x", "y"], name="b")
    with torch.no_grad():
        for p in b.net.parameters():
            p.add_(torch.randn_like(p))
    pa, pb = save_model(a, tmp_path / "a.safetensors"), save_model(b, tmp_path / "b.safetensors")
    out = tmp_path / "soup.safetensors"
    proc = _soup("--model", str(pa), "--model", str(pb), "--weight", "3", "--weight", "1", "--out", str(out),
                 "--name", "soup")
    assert proc.returncode == 0, proc.stderr
    soup, sa, sb = (load_model(p).net.state_dict() for p in (out, pa, pb))
    for key, value in soup.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * sa[key] + 0.25 * sb[key])
        else:
            assert torch.equal(value, sa[key])
    card = read_card(out)
    assert card["name"] == "soup" and card["labels"] == ["x", "y"]
    assert [(i["model"], i["weight"]) for i in card["provenance"]["soup"]] == [(str(pa), 3.0), (str(pb), 1.0)]

    other = save_model(new_model("tiny", labels=["x", "z"]), tmp_path / "other.safetensors")
    proc = _soup("--model", str(pa), "--model", str(other), "--out", str(tmp_path / "bad.safetensors"))
    assert proc.returncode != 0 and "label set" in proc.stderr
    assert not (tmp_path / "bad.safetensors").exists()
