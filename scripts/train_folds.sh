#!/usr/bin/env bash
# Train every fold of a k-fold split at once, one `brats-seg train` process per fold, all sharing
# one machine (a GPU, or the CPUs). Fold f uses --seed f; each fold's log is OUT_DIR/fold<f>.log.
# In the extra options, {fold} stands for the fold number (e.g. --init-from runs/gpu/fold{fold}).
#
# usage: scripts/train_folds.sh DATA OUT_DIR SPLITS [more `brats-seg train` options]
#   DATA    a folder of BraTS cases, or a .npz written by `brats-seg pack`
#   SPLITS  a splits.json written by an earlier run (its "folds" list decides k)
#   PYTHON  (environment) the interpreter that can import brats_seg; default python3
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
data=$1 out=$2 splits=$3
shift 3
py=${PYTHON:-python3}
k=$("$py" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["folds"]))' "$splits")
mkdir -p "$out"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; exit 143' INT TERM  # stopping this script stops every fold
for ((f = 0; f < k; f++)); do
  extra=("${@//\{fold\}/$f}")
  "$py" -m brats_seg.cli train "$data" --output "$out/fold$f" --splits "$splits" --fold "$f" --seed "$f" \
    --no-progress ${extra[@]+"${extra[@]}"} >"$out/fold$f.log" 2>&1 &
  pids+=("$!")
done
echo "started $k folds: ${pids[*]}"
failed=0
for f in "${!pids[@]}"; do
  if ! wait "${pids[$f]}"; then
    echo "fold $f failed; the end of $out/fold$f.log:" >&2
    tail -n 20 "$out/fold$f.log" >&2
    failed=1
  fi
done
exit "$failed"
