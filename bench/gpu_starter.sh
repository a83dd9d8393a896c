#!/usr/bin/env bash
# Continue the starter on a GPU machine with several training settings side by side ("arms").
#
# Builds one fresh set of Noto and OpenMoji training scenes (seed SEED) and the starter's
# validation scenes (the first 300 of noto-val and the 500 of openmoji-val, seed 0, the same
# scenes as data/emoji's) from a carried glyph cache (no font, npm or network needed), then
# continues PARENT once per arm, all at once, each within a time budget, and writes the models
# and their event logs to OUT_DIR. Which arm is better is judged afterwards, on a CPU machine, on
# the validation sets (bench/rescore.py).
#
#   bash bench/gpu_starter.sh PARENT.safetensors CARRY_DIR OUT_DIR NAME[=TRAIN FLAGS] ...
#
# e.g.  control  small='--short-side-range 192 256'  wide='--short-side-range 192 320'
# CARRY_DIR holds emoji-test.txt, .glyphs-noto.npz and .glyphs-openmoji.npz (copied from a machine
# that built the data). Environment: NOTO and OPENMOJI (training scenes, 48000 and 24000), SEED
# (of the training scenes, 17), BUDGET_MIN (training minutes per arm, 5), EPOCHS (planned, 3),
# LR (peak rate, 1e-4), WORKERS (data loaders per arm, 15 / arms), DEVICE (cuda), BUILD_WORKERS
# (16), WORK (/tmp/gpu-starter). OUT_DIR receives NAME.safetensors and NAME.events.jsonl per arm,
# and an arm's log only when it failed.
set -euo pipefail
parent=$1 carry=$2 out=$3
shift 3
[ $# -gt 0 ] || { echo "name at least one arm" >&2; exit 2; }
NOTO=${NOTO:-48000} OPENMOJI=${OPENMOJI:-24000} SEED=${SEED:-17} BUDGET_MIN=${BUDGET_MIN:-5} EPOCHS=${EPOCHS:-3}
LR=${LR:-1e-4} DEVICE=${DEVICE:-cuda} BUILD_WORKERS=${BUILD_WORKERS:-16} WORKERS=${WORKERS:-$(( 15 / $# ))}
PY=${PYTHON:-python3}
work=${WORK:-/tmp/gpu-starter}
models=$work/models
mkdir -p "$out" "$work/train" "$work/val" "$models"
for style in noto openmoji; do
    for d in train val; do cp "$carry/.glyphs-$style.npz" "$work/$d/"; done
done
export PYTHONUNBUFFERED=1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"

t0=$(date +%s)
build() {  # folder, builder flags...
    local dir=$1; shift
    $PY bench/emoji_scenes.py --out "$dir" --emoji-test "$carry/emoji-test.txt" --workers "$BUILD_WORKERS" \
        --chunk-size 500 "$@"
}
build "$work/val" --seed 0 --sets noto-val:300 openmoji-val:500
build "$work/train" --seed "$SEED" --sets "noto-train:$NOTO" "openmoji-train:$OPENMOJI"
echo "data built in $(( $(date +%s) - t0 )) s"

names=()
declare -A pids
t1=$(date +%s)
for arm in "$@"; do
    name=${arm%%=*}
    flags=""
    [ "$arm" = "$name" ] || flags=${arm#*=}
    names+=("$name")
    # shellcheck disable=SC2086  # the arm's flags are words
    $PY -m mlcnn_core.cli train --init "$parent" --data "$work/train/openmoji-train" --data "$work/train/noto-train" \
        --val-data "$work/val/noto-val" --val-data "$work/val/openmoji-val" --epochs "$EPOCHS" --lr "$LR" \
        --anchor 0 --seed "$SEED" --name starter --workers "$WORKERS" --device "$DEVICE" \
        --time-budget "$BUDGET_MIN" --out "$models/$name.safetensors" --events "$models/$name.events.jsonl" \
        $flags >"$models/$name.log" 2>&1 &
    pids[$name]=$!
    echo "arm $name: ${flags:-(no extra flags)}"
done
status=0
for name in "${names[@]}"; do
    if wait "${pids[$name]}"; then
        cp "$models/$name.safetensors" "$models/$name.events.jsonl" "$out/"
    else
        status=1
        echo "$name failed:"
        tail -20 "$models/$name.log"
        cp "$models/$name.log" "$models/$name.events.jsonl" "$out/" 2>/dev/null || true
    fi
done
echo "trained in $(( $(date +%s) - t1 )) s"
for name in "${names[@]}"; do
    $PY bench/events_summary.py "$name" "$models/$name.events.jsonl" || true
done
exit $status
