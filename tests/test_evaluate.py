import numpy as np
import torch
from PIL import Image

from mlcnn_core.data import Sample
from mlcnn_core.evaluate import evaluate
from mlcnn_core.modelfile import new_model
from mlcnn_core.predict import PredictConfig


def test_only_labels_leaves_the_other_labels_out_of_the_metrics(tmp_path):
    torch.manual_seed(0)
    model = new_model("tiny", labels=["a", "b", "c"], name="three")
    model.card["prediction"] = PredictConfig(keep_ratio=1.0, short_side=64).to_dict()
    model.card["threshold"] = {"kind": "global", "bias": 0.0, "weights": [], "at_least_one": True}
    with torch.no_grad():
        model.net.head.fcs[-1].bias[1] = 100.0  # "b" wins every position: the model says "b" and only "b"
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        samples.append(Sample(str(tmp_path / f"{i}.png"), ("b", "c")))
    every = evaluate(model, samples, device="cpu", bf16=False, baseline=False, per_label=True)["single_pass"]
    two = evaluate(model, samples, device="cpu", bf16=False, baseline=False, per_label=True,
                   only_labels=["b", "not-a-label"])["single_pass"]
    # "c" is missed when it counts, and out of the metrics when only "b" is scored
    assert every["precision"] == two["precision"] == 1.0
    assert every["recall"] == 0.5 and two["recall"] == 1.0
    assert set(every["per_label"]) == {"a", "b", "c"} and set(two["per_label"]) == {"b"}
