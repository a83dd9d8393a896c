#!/usr/bin/env bash
# Continue training the Noto-only model on a GPU, with and without restyled emoji, side by side.
#
# Builds the 48,000-scene Noto training set twice from a carried glyph cache (no font needed):
# plain, and with --restyle 0.5 (half the emoji redrawn with flat colours, ink lines and another
# palette); then trains two models from the same parent at once, one per set, each within a time
# budget, and writes both with their event logs to $OUT. Which one generalises better to OpenMoji
# is measured afterwards on the validation sets (bench/run.py, bench/finetune_curve.py).
#
#   bash bench/gpu_train.sh PARENT.safetensors CARRY_DIR OUT_DIR
#
# CARRY_DIR holds emoji-test.txt and .glyphs-noto.npz (copied from a machine that built the data).
# Environment: COUNT (scenes per training set, 48000), VAL (noto-val scenes, 1000), BUDGET_MIN
# (training minutes per model, 6), EPOCHS (planned, 40), LR (peak rate of the warm restart, 1e-3),
# WORKERS (data loaders per model, 7), DEVICE (cuda), BUILD_WORKERS (16), RUNS ("plain styled", or
# one of them), SEED (of the training scenes, 0; validation scenes always 0). OUT_DIR receives only
# the two models, their event logs and their logs (checkpoints stay in WORK).
set -euo pipefail
parent=$1 carry=$2 out=$3
COUNT=${COUNT:-48000} VAL=${VAL:-1000} BUDGET_MIN=${BUDGET_MIN:-6} EPOCHS=${EPOCHS:-40} LR=${LR:-1e-3}
WORKERS=${WORKERS:-7} DEVICE=${DEVICE:-cuda} BUILD_WORKERS=${BUILD_WORKERS:-16} RUNS=${RUNS:-plain styled}
SEED=${SEED:-0}
PY=${PYTHON:-python3}
work=${WORK:-/tmp/gpu-data}
models=$work/models
mkdir -p "$out" "$work/plain" "$work/styled" "$models"
for d in plain styled; do cp "$carry/.glyphs-noto.npz" "$work/$d/"; done
export PYTHONUNBUFFERED=1
trap 'cp "$models"/*.safetensors "$models"/*.jsonl "$models"/*.log "$out"/ 2>/dev/null || true' EXIT
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"

t0=$(date +%s)
build() {  # folder, extra builder flags...
    local dir=$1; shift
    $PY bench/emoji_scenes.py --out "$dir" --emoji-test "$carry/emoji-test.txt" --workers "$BUILD_WORKERS" \
        --chunk-size 500 "$@"
}
build "$work/plain" --sets "noto-val:$VAL"
for name in $RUNS; do
    if [ "$name" = plain ]; then build "$work/plain" --seed "$SEED" --sets "noto-train:$COUNT"
    else build "$work/styled" --seed "$SEED" --restyle 0.5 --sets "noto-train:$COUNT"; fi
done
echo "data built in $(( $(date +%s) - t0 )) s"

train() {  # name, training set
    $PY -m mlcnn_core.cli train --init "$parent" --data "$2" --val-data "$work/plain/noto-val" \
        --out "$models/$1.safetensors" --epochs "$EPOCHS" --batch-size 64 --lr "$LR" --norm-stats update \
        --patience 0 --workers "$WORKERS" --device "$DEVICE" --time-budget "$BUDGET_MIN" --name noto-only \
        --events "$models/$1.events.jsonl" >"$models/$1.log" 2>&1
}
t1=$(date +%s)
declare -A pids
for name in $RUNS; do
    train "$name" "$work/$name/noto-train" &
    pids[$name]=$!
done
status=0
for name in $RUNS; do
    wait "${pids[$name]}" || { status=1; echo "$name run failed:"; tail -20 "$models/$name.log"; }
done
echo "trained in $(( $(date +%s) - t1 )) s"
for name in $RUNS; do
    $PY bench/events_summary.py "$name" "$models/$name.events.jsonl" || true
done
exit $status
