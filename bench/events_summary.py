#!/usr/bin/env python3
"""One line per epoch, time-budget change and end of an ``mlcnn train --events`` log, prefixed by
the run's name (the GPU scripts' report of their runs).

    python bench/events_summary.py NAME EVENTS.jsonl
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    name, path = argv
    with open(path, encoding="utf-8") as f:
        for line in f:
            e = json.loads(line)
            if e["event"] == "epoch":
                v = e.get("val", {})
                print(name, "epoch", e["epoch"], f"loss {e['train_loss']:.4f}", "img/s", e["images_per_s"],
                      "s", e["seconds"], f"val acc {v.get('accuracy', 0):.4f} mAP {v.get('mAP', 0):.4f}")
            elif e["event"] == "time_budget":
                print(name, "time budget: epochs cut to", e["epochs"])
            elif e["event"] == "done":
                print(name, "done in", e["seconds"], "s; validation",
                      json.dumps(e["metrics"].get("validation_single_pass")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
