#!/usr/bin/env bash
# One call on the GPU machine: install the carried wheels, train the 5 folds at once, return weights.
# Everything is overridable for a local dry run (OUT, PY, PACK, SPLITS, SPACING, PATCH, BATCH, EPOCHS, BUDGET,
# DEADLINE, WORKERS, AUG, LR, WHEELS, INIT, EXTRA); LR unset means lr_find picks the learning rate; BUDGET=none
# keeps --samples-per-epoch; INIT=model fine-tunes each fold from the bundled model's member of that fold
# (e.g. INIT=model AUG=strong-bias, then brats-seg average here); EXTRA holds more `brats-seg train` options.
set -u
T0=$(date +%s)
: "${OUT:?}"
PY=${PY:-python3}  # one word: the interpreter
WHEELS=${WHEELS:-.whl}
if [[ "$WHEELS" != none ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 PYTHON=$PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 20 >"$OUT/gpu.csv" 2>/dev/null &
MONITOR=$!
"$PY" -c "import sys, torch, monai, fastai; print(sys.version.split()[0], torch.__version__, monai.__version__, fastai.__version__, 'cuda', torch.cuda.is_available())" || exit 1
RUNS=${RUNS:-/tmp/runs}
rm -rf "$RUNS"
bash scripts/train_folds.sh "${PACK:-.gpu/brats23_1.5mm.npz}" "$RUNS" "${SPLITS:-.gpu/splits.json}" \
  --spacing ${SPACING:-1.5 1.5 1.5} --patch-size ${PATCH:-112 112 112} --batch-size "${BATCH:-2}" --epochs "${EPOCHS:-16}" \
  $([[ "${BUDGET:-}" == none ]] || echo --time-budget "${BUDGET:-5.5}") --num-workers "${WORKERS:-3}" \
  --intensity-augment "${AUG:-strong}" --export-dtype float16 ${LR:+--lr "$LR"} ${INIT:+--init-from "$INIT"} ${EXTRA:-} &
TP=$!
DEADLINE=${DEADLINE:-540}
while kill -0 "$TP" 2>/dev/null; do
  if (($(date +%s) - T0 > DEADLINE)); then
    echo "deadline of ${DEADLINE}s reached: stopping the folds"
    kill "$TP"  # train_folds.sh stops its folds
    break
  fi
  sleep 5
done
wait "$TP"
echo "train_folds exit $? after $(($(date +%s) - T0)) s"
kill "$MONITOR" 2>/dev/null
for d in "$RUNS"/fold*/; do
  f=$(basename "$d")
  if [[ -f "$d/model.pkl" ]]; then
    cp "$d/model.pkl" "$OUT/$f.pkl"
  elif [[ -f "$d/models/last.pth" ]]; then  # salvage: the last epoch's weights, as float16
    "$PY" -c "import sys, torch; s = torch.load(sys.argv[1], map_location='cpu', weights_only=False); s = s.get('model', s); torch.save({k: v.half() if v.is_floating_point() else v for k, v in s.items()}, sys.argv[2])" "$d/models/last.pth" "$OUT/${f}_last.pt"
  fi
done
for d in "$RUNS"/fold*/; do echo "== $d"; grep -v -i warn "${d%/}.log" | tail -n 6; done
tar czf "$OUT/runs.tgz" --exclude=model.pkl --exclude=models -C "$(dirname "$RUNS")" "$(basename "$RUNS")"
ls -la "$OUT"
echo "total $(($(date +%s) - T0)) s"
