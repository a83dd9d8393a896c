"""Reading a model card never imports torch: the GUI reads cards on its own thread."""

import subprocess
import sys
from pathlib import Path

import pytest
from shapes import SHAPES, make_dataset

STARTER = Path(__file__).resolve().parents[1] / "resources" / "models" / "starter.safetensors"


def _fine_tune_with_a_one_pass_reading(folder: Path) -> Path:
    """A fine-tune of a two-pass model on too few held-out images to refit its threshold: its card
    keeps the parent's one-pass reading (``single_pass``), as most fine-tunes of the starter do."""
    import torch

    from mlcnn_core import cli
    from mlcnn_core.card import PredictConfig
    from mlcnn_core.modelfile import new_model, save_model

    torch.manual_seed(0)
    parent = new_model("tiny", labels=list(SHAPES), name="two")
    one, two = (0.9, 0.9, 4.6, 1.7, -7.0), (0.9, 0.9, 4.6, 1.7, 0.5, 0.5, 2.0, 1.0, -7.0)
    parent.card["prediction"] = PredictConfig(short_side=96, second_short_side=64, rescore=two).to_dict()
    threshold = {"kind": "global", "bias": 0.4, "weights": [], "at_least_one": True}
    parent.card["threshold"] = threshold
    parent.card["single_pass"] = {"rescore": list(one), "threshold": threshold}
    save_model(parent, folder / "parent.safetensors")
    make_dataset(folder / "train", 8, seed=4)
    make_dataset(folder / "val", 6, seed=5)
    out = folder / "child.safetensors"
    assert cli.main(["train", "--init", str(folder / "parent.safetensors"), "--data", str(folder / "train"),
                     "--val-data", str(folder / "val"), "--out", str(out), "--epochs", "0", "--workers", "0"]) == 0
    return out


@pytest.mark.skipif(not STARTER.exists(), reason="the starter model is not in this checkout")
def test_cards_and_recipes_are_read_without_importing_torch(tmp_path):
    fine_tune = _fine_tune_with_a_one_pass_reading(tmp_path)
    code = f"""
import sys
from mlcnn_core import card, library, modelfile, recipes, sidecars
for path in ({str(STARTER)!r}, {str(fine_tune)!r}):
    c = modelfile.read_card(path)
    assert c["prediction"]["second_short_side"] and "single_pass" in c, path
    one = card.card_reading(c, single_pass=True)
    assert one["prediction"]["second_short_side"] is None
    card.PredictConfig.from_dict(one["prediction"])
assert modelfile.read_card({str(fine_tune)!r})["provenance"]["init"]
run = recipes.TrainConfig(data=["d"], out="m.safetensors", init={str(fine_tune)!r})
run.recipe_for(100), run.command_line()
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
