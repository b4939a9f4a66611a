#!/usr/bin/env bash
# One prepared device run: Net speed alone first, then (in parallel, timing no longer
# matters) the CUDA tests and every model's accuracy side by side with the book's eager loop.
# Results land in $OUT as log.txt and results.json.
#   OUT=/tmp/out bash benchmarks/gpu_run.sh        (DATA: bundled by default; cifar10 or a folder)
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
DATA=${DATA:-bundled}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-100}
RESDEEP_EPOCHS=${RESDEEP_EPOCHS:-5}
OUT=${OUT:-/tmp/ptm_out}
WORK=$(mktemp -d)
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  echo "== Net speed"
  timeout 200 python3 benchmarks/train_speed.py --model net --data "$DATA" --device "$DEVICE" \
    --epochs 6 --modes reduce-overhead,default --replicas 8 --json "$WORK/speed_net.json" 2>&1 | tail -9
  echo "== members: 8 and 64 against separate runs (vmap, loop)"
  timeout 240 python3 benchmarks/sweep_speed.py --model net --members 8 --data "$DATA" --device "$DEVICE" \
    --rounds 2 --json "$WORK/sweep8.json" 2>&1 | tail -4
  timeout 240 python3 benchmarks/sweep_speed.py --model net --members 64 --data "$DATA" --device "$DEVICE" \
    --rounds 1 --json "$WORK/sweep64.json" 2>&1 | tail -4
  echo "== accuracy, all models in parallel"
  for m in net width l2 dropout batchnorm depth res; do
    timeout 300 python3 benchmarks/accuracy.py --model "$m" --data "$DATA" --device "$DEVICE" \
      --epochs "$EPOCHS" --json "$WORK/acc_$m.json" > "$WORK/acc_$m.log" 2>&1 &
  done
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$WORK/cuda_tests.log" 2>&1 &
  timeout 300 python3 benchmarks/accuracy.py --model resdeep --data "$DATA" --device "$DEVICE" \
    --epochs "$RESDEEP_EPOCHS" --no-compile --json "$WORK/acc_resdeep.json" > "$WORK/acc_resdeep.log" 2>&1 &
  wait
  echo "== CUDA tests"; tail -4 "$WORK/cuda_tests.log"
  for f in "$WORK"/acc_*.log; do tail -3 "$f"; done
} 2>&1 | tee "$OUT/log.txt"
python3 - "$WORK" "$OUT/results.json" <<'PY'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
json.dump({p.stem: json.loads(p.read_text()) for p in sorted(work.glob("*.json"))},
          open(sys.argv[2], "w"), indent=2)
PY
