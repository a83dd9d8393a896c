"""Average the weights of models trained from one starting point (a "model soup").

    python bench/soup.py --model resources/models/starter.safetensors --model runs/scale/control.safetensors \
        --out runs/soup/soup.safetensors

Every model must have the same architecture and labels (each is a fine-tune of the same model, so
their weights lie in one basin and their mean is a model too). Floating-point tensors are averaged
(``--weight`` per model, default equal); integer ones (batch-norm step counters) are taken from the
first model. The card is the first model's with ``provenance.soup`` naming the ingredients; its
prediction settings and thresholds are the first model's, so refit them on validation data
(bench/rescore.py) before reading the soup's numbers.
"""

from __future__ import annotations

import argparse
import sys

import torch

from mlcnn_core.modelfile import load_model, save_model


def soup(state_dicts: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weighted mean of state dicts with the same keys and shapes (integer tensors: the first's)."""
    total = sum(weights)
    out = {}
    for key, first in state_dicts[0].items():
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        out[key] = sum(w / total * sd[key].double() for sd, w in zip(state_dicts, weights, strict=True)).to(first.dtype)
    return out


def soup_entry(path: str, weight: float, model) -> dict:
    """How a soup's card names an ingredient: its file, weight, name and the training run that made it
    (its card's provenance without its parents', which the soup's own card already holds)."""
    run = {k: v for k, v in model.card.get("provenance", {}).items() if k not in ("parent", "soup")}
    return {"model": path, "weight": weight, "name": model.name, "run": run}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="an ingredient (give two or more)")
    ap.add_argument("--weight", action="append", type=float, help="its weight in the mean (default: equal)")
    ap.add_argument("--name", help="the soup's name (default: the first model's)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if len(args.model) < 2:
        ap.error("give two or more --model")
    weights = args.weight or [1.0] * len(args.model)
    if len(weights) != len(args.model) or min(weights) < 0 or sum(weights) <= 0:
        ap.error("give one non-negative --weight per --model, not all zero")
    models = [load_model(p) for p in args.model]
    first = models[0]
    for path, m in zip(args.model[1:], models[1:], strict=True):
        if m.card["arch"] != first.card["arch"] or m.labels != first.labels:
            ap.error(f"{path} has another architecture or label set than {args.model[0]}")
    first.net.load_state_dict(soup([m.net.state_dict() for m in models], weights))
    provenance = dict(first.card.get("provenance", {}))
    provenance["soup"] = [soup_entry(p, w, m) for p, w, m in zip(args.model, weights, models, strict=True)]
    first.card = dict(first.card, provenance=provenance, name=args.name or first.name)
    save_model(first, args.out)
    print(f"wrote {args.out}: the weighted mean of " + ", ".join(f"{p} ({w:g})" for p, w in zip(args.model, weights,
                                                                                              strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
