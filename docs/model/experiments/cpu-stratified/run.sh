#!/usr/bin/env bash
# Retrain the two members whose training cases change when the LGG cases are split across folds
# (folds 1 and 3 of docs/model/experiments/cpu-stratified/splits.json), through the same three stages as the
# shipped members; the two folds run side by side, one thread each. Log: runs/strat.log.
#   usage: bash docs/model/experiments/cpu-stratified/run.sh   (from the repository root)
set -euo pipefail
py=${PYTHON:-.venv/bin/python}
splits=docs/model/experiments/cpu-stratified/splits.json
pack=.gpu/brats23_2mm.npz
export OMP_NUM_THREADS=1
stage() {  # stage NAME FOLD [train options]
  local name=$1 f=$2
  shift 2
  "$py" -m brats_seg.cli train "$pack" --output "runs/strat/$name/fold$f" --splits "$splits" --fold "$f" \
    --no-progress "$@" >"runs/strat/$name/fold$f.log" 2>&1
}
for name in stage1 stage2 stage3; do mkdir -p "runs/strat/$name"; done
for f in 1 3; do
  (
    stage stage1 "$f" --epochs 30 --samples-per-epoch 400 --seed 0 --precision bf16
    date -u +"%H:%M fold $f stage 1 done"
    stage stage2 "$f" --epochs 8 --samples-per-epoch 400 --lr 1e-3 --intensity-augment strong --seed "$f" \
      --precision bf16 --export-dtype float16 --init-from "runs/strat/stage1/fold$f"
    date -u +"%H:%M fold $f stage 2 done"
    stage stage3 "$f" --epochs 12 --samples-per-epoch 140 --lr 1e-3 --patch-size 96 96 96 --intensity-augment strong \
      --seed "2$f" --precision bf16 --export-dtype float16 --init-from "runs/strat/stage2/fold$f"
    date -u +"%H:%M fold $f stage 3 done"
  ) &
done
wait
