"""Choose a model soup on validation sets: each ingredient alone, the uniform soup, and the greedy soup.

    python bench/soup_select.py --model resources/models/starter.safetensors --model runs/soup/control.safetensors \
        --model runs/soup/small.safetensors --val data/emoji/noto-val --val data/emoji/openmoji-val \
        --short-side 288 --out runs/soup/greedy.safetensors --md bench/results/soup-select.md

Every candidate is read the same way: test-form outputs at ``--short-side`` px (default: the first
model's card), rescore.py's logistic model and a global threshold fitted on the validation sets, and
its accuracy on all of them pooled. The greedy soup (Wortsman et al. 2022, "Model soups") takes the
ingredients from the best alone to the worst and keeps each one whose addition to the mean does not
lower that accuracy. ``--out`` writes the best candidate: an ingredient as it is, or a soup with the first model's card
(the ingredients' common starting point, its reading and provenance) and the ingredients in
``provenance.soup``; fit its reading and measure it on
test sets with bench/rescore.py. Only validation data choose anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from rescore import measure, scores_of  # bench/rescore.py
from run import load_truth, one_pass_predictor, raw_outputs, rescore_candidates, truth_matrix  # bench/run.py
from soup import soup, soup_entry  # bench/soup.py

from mlcnn_core.modelfile import load_model, save_model
from mlcnn_core.predict import Predictor
from mlcnn_core.rescore import fit_rescore
from mlcnn_core.threshold import fit_threshold


def validation_reading(model, rows: dict, truths: dict, short: int) -> dict:
    """Rescore and threshold fitted on all the sets of ``rows`` at ``short`` px; metrics per set and pooled."""
    predictor = one_pass_predictor(model)
    base = dataclasses.replace(predictor.config, short_side=short, rescore=None)
    predictor = Predictor(model, config=base)
    raws = {name: raw_outputs(predictor, r) for name, r in rows.items()}
    examples = [rescore_candidates(raws[n], truths[n], base) for n in rows]
    weights = fit_rescore(np.concatenate([f for f, _ in examples]), np.concatenate([y for _, y in examples]))
    cfg = dataclasses.replace(base, rescore=weights)
    scores = {n: scores_of(raws[n], cfg) for n in rows}
    threshold = fit_threshold(np.concatenate(list(scores.values())), np.concatenate(list(truths.values())),
                              kind="global", at_least_one=True)
    per_set = {n: measure(scores[n], truths[n], threshold) for n in rows}
    pooled = sum(per_set[n]["accuracy"] * len(rows[n]) for n in rows) / sum(map(len, rows.values()))
    return {"sets": per_set, "pooled_accuracy": pooled}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="an ingredient (two or more, one basin)")
    ap.add_argument("--val", action="append", required=True, metavar="DIR", help="validation set (truth.jsonl)")
    ap.add_argument("--short-side", type=int, help="input size (default: the first model's card)")
    ap.add_argument("--out", help="write the best candidate here")
    ap.add_argument("--md", help="markdown table of the results (and a .json beside it)")
    args = ap.parse_args()
    if len(args.model) < 2:
        ap.error("give two or more --model")
    t0 = time.time()
    models = [load_model(p) for p in args.model]
    first = models[0]
    for path, m in zip(args.model[1:], models[1:], strict=True):
        if m.card["arch"] != first.card["arch"] or m.labels != first.labels:
            ap.error(f"{path} has another architecture or label set than {args.model[0]}")
    short = args.short_side or int(first.card.get("prediction", {}).get("short_side", 256))
    rows = {Path(d).name: load_truth(Path(d)) for d in args.val}
    truths = {n: truth_matrix(r, first.labels) for n, r in rows.items()}
    states = [m.net.state_dict() for m in models]
    template = load_model(args.model[0])
    results: dict[str, dict] = {}

    def evaluate(tag: str, members: list[int]) -> float:
        if len(members) == 1:
            model = models[members[0]]
        else:
            template.net.load_state_dict(soup([states[i] for i in members], [1.0] * len(members)))
            model = template
        r = validation_reading(model, rows, truths, short)
        results[tag] = {"members": [args.model[i] for i in members], **r}
        print(f"{tag:40s} pooled accuracy {100 * r['pooled_accuracy']:.2f}  " + "  ".join(
            f"{n} " + " / ".join(f"{100 * m[k]:.1f}" for k in ("precision", "recall", "accuracy", "mAP"))
            for n, m in r["sets"].items()), flush=True)
        return r["pooled_accuracy"]

    alone = {i: evaluate(Path(p).stem, [i]) for i, p in enumerate(args.model)}
    evaluate("uniform soup", list(alone))
    order = sorted(alone, key=lambda i: -alone[i])
    greedy, best = [order[0]], alone[order[0]]
    for i in order[1:]:
        tag = "greedy: " + " + ".join(Path(args.model[j]).stem for j in greedy + [i])
        accuracy = evaluate(tag, greedy + [i])
        if accuracy >= best:
            greedy, best = greedy + [i], accuracy
    results["greedy soup"] = {"members": [args.model[i] for i in greedy], "pooled_accuracy": best}
    winner = max((t for t in results if t != "greedy soup"), key=lambda t: results[t]["pooled_accuracy"])
    members = [args.model.index(p) for p in results[winner]["members"]]
    print(f"greedy soup: {' + '.join(Path(args.model[i]).stem for i in greedy)}; best on validation: {winner}",
          flush=True)
    if args.out:
        out = load_model(args.model[members[0] if len(members) == 1 else 0])
        if len(members) > 1:
            out.net.load_state_dict(soup([states[i] for i in members], [1.0] * len(members)))
            provenance = dict(out.card.get("provenance", {}))
            provenance["soup"] = [soup_entry(args.model[i], 1.0, models[i]) for i in members]
            out.card = dict(out.card, provenance=provenance)
        save_model(out, args.out)
        print(f"wrote {args.out}", flush=True)
    seconds = round(time.time() - t0, 1)
    if args.md:
        Path(args.md).write_text(render(results, winner, short, seconds), encoding="utf-8")
        Path(args.md).with_suffix(".json").write_text(json.dumps(
            {"command": "python " + " ".join(sys.argv), "short_side": short, "best": winner, "results": results},
            indent=1), encoding="utf-8")
    print(f"done in {seconds} s")
    return 0


def render(results: dict, winner: str, short: int, seconds: float) -> str:
    rows = {t: r for t, r in results.items() if "sets" in r}
    sets = list(next(iter(rows.values()))["sets"])
    lines = ["## Model soups (validation sets)", "",
             f"`python bench/soup_select.py {' '.join(sys.argv[1:])}` ({seconds:.0f} s). Each row: the weights "
             f"averaged, read at {short} px with rescore.py's model and a global threshold fitted on the validation "
             "sets; precision / recall / accuracy / mAP. The greedy soup adds ingredients from the best alone down "
             f"and keeps each that does not lower the pooled accuracy; it is "
             f"**{' + '.join(Path(p).stem for p in results['greedy soup']['members'])}**. Best: **{winner}**.", "",
             "| candidate | pooled accuracy | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for tag, r in rows.items():
        name = f"**{tag}**" if tag == winner else tag
        lines.append(f"| {name} | {100 * r['pooled_accuracy']:.2f} | " + " | ".join(
            " / ".join(f"{100 * r['sets'][n][k]:.1f}" for k in ("precision", "recall", "accuracy", "mAP"))
            for n in sets) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
