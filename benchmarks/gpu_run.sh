#!/usr/bin/env bash
# The prepared device run of issue 14 (< 8 minutes on an H200): every CUDA path of ptm_func.
#   A (alone, timed): Net and NetRes speed - book loop, eager, default compile, CUDA graphs,
#     and an 8-member ensemble with its peak memory; then what --augment flip,crop costs.
#   B (in parallel): `ptm check` of every model, the CUDA tests.
#   C (two at once): resdeep, 100 blocks, tied and untied, against the book's loop.
#   D (ACCURACY=1 only): resdeep's 100-epoch accuracy against the book's loop (README's table).
# Results land in $OUT: log.txt, one JSON per part.
#   OUT=/tmp/out bash benchmarks/gpu_run.sh    (DATA: bundled by default; DEVICE: cuda)
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
DATA=${DATA:-bundled}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/ptm_out}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
speed() { python3 benchmarks/train_speed.py --data "$DATA" --device "$DEVICE" "$@"; }
{
  date
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  echo "== A: Net, then NetRes (alone)"
  timeout 170 speed --models net --epochs 5 --modes reduce-overhead,default,eager --replicas 8 \
    --json "$OUT/speed_net.json" 2>&1 | tail -12
  timeout 100 speed --models res --epochs 4 --modes reduce-overhead,default \
    --json "$OUT/speed_res.json" 2>&1 | tail -8
  echo "== A2: what --augment flip,crop costs, Net and NetRes (alone)"
  timeout 120 python3 benchmarks/augment_speed.py --models net,res --data "$DATA" --device "$DEVICE" \
    --rounds 3 2>&1 | tail -3
  echo "== B: ptm check (every model), CUDA tests"
  for m in net width l2 dropout batchnorm depth res resdeep; do
    blocks=$([ "$m" = resdeep ] && echo "--n-blocks 10")  # 100 blocks: part C times them
    timeout 120 python3 -m cli.main check "$m" $blocks --device "$DEVICE" --json > "$LOGS/check_$m.json" \
      2> "$LOGS/check_$m.err" &
  done
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$LOGS/cuda_tests.log" 2>&1 &
  wait
  tail -5 "$LOGS/cuda_tests.log"
  python3 - "$LOGS" "$OUT/check.json" <<'PY'
import json, pathlib, sys
reports = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("check_*.json")):
    try:
        reports += json.loads(path.read_text())
    except ValueError:
        print(path.stem, "gave no report:", path.with_suffix(".err").read_text()[-400:])
for r in reports:
    for v in r["variants"]:
        print(f"{r['model']:<10} {v['name']:<26} rel {v['relative_diff']:.1e} compiles {v['compiles']} "
              f"graphs {v['cudagraph_recordings']} {v['seconds']:.0f}s {'ok' if v['ok'] else 'FAIL'}")
json.dump(reports, open(sys.argv[2], "w"), indent=1)
PY
  echo "== C: resdeep, 100 blocks, tied and untied"
  for tied in "" "--tied"; do
    timeout 150 speed --models resdeep --n-blocks 100 $tied --subset 2560 --epochs 3 \
      --modes reduce-overhead,eager --json "$OUT/speed_resdeep${tied:+_tied}.json" > "$LOGS/resdeep$tied.log" 2>&1 &
  done
  wait
  tail -6 "$LOGS"/resdeep*.log
  if [ "${ACCURACY:-0}" = 1 ]; then  # optional: ~4-8 minutes more
    echo "== D: resdeep (100 untied blocks), 100 epochs, against the book's loop"
    timeout 480 python3 benchmarks/accuracy.py --model resdeep --data "$DATA" --device "$DEVICE" --compile \
      --json "$OUT/accuracy_resdeep.json" 2>&1 | tail -4
  fi
  date
} 2>&1 | tee "$OUT/log.txt"
