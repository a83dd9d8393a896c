"""Reading a model card never imports torch: the GUI reads cards on its own thread."""

import subprocess
import sys
from pathlib import Path

import pytest

STARTER = Path(__file__).resolve().parents[1] / "resources" / "models" / "starter.safetensors"


@pytest.mark.skipif(not STARTER.exists(), reason="the starter model is not in this checkout")
def test_reading_the_starters_card_and_its_readings_does_not_import_torch():
    code = f"""
import sys
from mlcnn_core import card, library, modelfile, sidecars
c = modelfile.read_card({str(STARTER)!r})
assert c["prediction"]["second_short_side"] and "single_pass" in c
one = card.card_reading(c, single_pass=True)
assert one["prediction"]["second_short_side"] is None
card.PredictConfig.from_dict(one["prediction"])
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
