#!/usr/bin/env python3
"""Write into a model's card what data it was trained on, read from the ``DONE`` files of the sets
its provenance names (bench/emoji_scenes.py writes them): each set's scenes, artist and composition,
with the artists' packages and licences, for the training data of a shipped model to be stated in the
file a person holds.

    python bench/card_data.py --model runs/artists/new.safetensors --out runs/artists/new.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from iconify_artists import ARTISTS, TRAINING_ARTISTS, UNSEEN_ARTISTS  # bench/
from run import lineage_runs  # bench/run.py

from mlcnn_core.modelfile import load_model, save_model

FIXED = {"noto": ("Debian fonts-noto-color-emoji", "Google", "Apache 2.0"),
         "openmoji": ("npm openmoji 17", "OpenMoji", "CC BY-SA 4.0"),
         "twemoji": ("npm @twemoji/svg 15.0.0", "Twitter", "CC BY 4.0")}


def artist_line(style: str) -> str:
    if style in ARTISTS:
        a = ARTISTS[style]
        return f"{style}: npm {a.package} {a.version} ({a.author}, {a.licence})"
    source, author, licence = FIXED[style]
    return f"{style}: {source} ({author}, {licence})"


def describe(provenance: dict) -> dict:
    seen: dict[str, dict] = {}
    for run in lineage_runs(provenance):
        for folder in run.get("data", []):
            done = Path(folder) / "DONE"
            if folder in seen or not done.exists():
                continue
            params = json.loads(done.read_text(encoding="utf-8"))
            seen[folder] = {"set": params["set"], "scenes": params["count"], "style": params["style"],
                            "composition": params["geometry"].get("composition") or "classic",
                            "seed": params["seed"]}
    styles = sorted({s["style"] for s in seen.values()})
    artists = sorted(set(TRAINING_ARTISTS) if "mix" in styles else {s for s in styles if s != "mix"})
    return {
        "sets": list(seen.values()),
        "artists": [artist_line(a) for a in artists],
        "never_trained_on": [artist_line(a) for a in UNSEEN_ARTISTS],
        "clutter": "openclipart drawings (Debian openclipart-svg, public domain) by training creators only "
                   "(bench/openclipart.py's split rule)" if any(s["composition"].startswith("varied")
                                                                 for s in seen.values()) else "none",
        "generator": "bench/emoji_scenes.py (compositions: bench/compositions.py)",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    model = load_model(args.model)
    model.card["training_data"] = describe(model.card.get("provenance") or {})
    save_model(model, args.out)
    print(json.dumps(model.card["training_data"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
