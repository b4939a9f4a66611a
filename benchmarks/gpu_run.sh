#!/usr/bin/env bash
# The prepared device run (about 8 minutes on an H200, cold caches): every CUDA path of ptm_func,
# the numbers the brief targets first, so a run cut short still has them.
#   A (alone, timed): Net - book loop, eager, CUDA graphs, an 8-member ensemble and its peak
#     memory; NetRes - book loop, CUDA graphs.
#   C (two at once): resdeep, 100 blocks, tied and untied, against the book's loop.
#   B (in parallel): `ptm check` of every model, the CUDA tests.
#   A2 (alone): what --augment flip,crop costs Net.
#   T (alone): ptm tune's trials per hour, 16 Net trials at once (vmapped) against one alone.
#   D (ACCURACY=1 only): resdeep's 100-epoch accuracy against the book's loop (README's table).
#   MODES=reduce-overhead,default,eager adds torch.compile's default mode to A's rows;
#   PARTS="A B C" runs only those parts, in that order (A: Net; A1: NetRes).
# Results land in $OUT: log.txt, one JSON per part; each part's stderr ends the log on failure.
#   OUT=/tmp/out bash benchmarks/gpu_run.sh    (DATA: bundled by default; DEVICE: cuda)
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
DATA=${DATA:-bundled}
DEVICE=${DEVICE:-cuda}
MODES=${MODES:-reduce-overhead,eager}
PARTS=${PARTS:-A A1 C B A2 T}
OUT=${OUT:-/tmp/ptm_out}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
# speed SECONDS NAME ARGS...: `timeout` runs programs, not shell functions, so the limit goes
# inside; stderr (compile warnings) is kept in $LOGS/NAME.err and shown only when the part fails
speed() {
  timeout "$1" python3 benchmarks/train_speed.py --data "$DATA" --device "$DEVICE" "${@:3}" \
    2> "$LOGS/$2.err" || { echo "$2 FAILED (exit $?):"; tail -15 "$LOGS/$2.err"; }
  grep -h "ptm: " "$LOGS/$2.err" | cut -c1-300 | head -4  # a step that fell back says so here
}
part_A() {
  echo "== A: Net (alone)"
  speed 170 net --models net --epochs 5 --modes "$MODES" --replicas 8 --json "$OUT/speed_net.json"
}
part_A1() {
  echo "== A1: NetRes (alone)"
  speed 100 res --models res --epochs 4 --modes "${MODES%%,*}" --json "$OUT/speed_res.json"
}
part_C() {
  echo "== C: resdeep, 100 blocks, tied and untied (two processes at once)"
  for tied in "" "--tied"; do
    speed 150 "resdeep$tied" --models resdeep --n-blocks 100 $tied --subset 2560 --epochs 3 \
      --modes reduce-overhead,eager --json "$OUT/speed_resdeep${tied:+_tied}.json" > "$LOGS/resdeep$tied.log" &
  done
  wait
  cat "$LOGS"/resdeep*.log
}
part_B() {
  echo "== B: ptm check (every model), CUDA tests"
  for m in net width l2 dropout batchnorm depth res resdeep; do
    blocks=$([ "$m" = resdeep ] && echo "--n-blocks 10")  # 100 blocks: part C times them
    timeout 150 python3 -m cli.main check "$m" $blocks --device "$DEVICE" --json > "$LOGS/check_$m.json" \
      2> "$LOGS/check_$m.err" &
  done
  # the loop above is test_ptm_check_passes_on_cuda_without_recompiling with numbers: not twice
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "not ptm_check" \
    > "$LOGS/cuda_tests.log" 2>&1 &
  wait
  tail -25 "$LOGS/cuda_tests.log"
  python3 - "$LOGS" "$OUT/check.json" <<'PY'
import json, pathlib, sys
reports = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("check_*.json")):
    try:
        reports += json.loads(path.read_text())
    except ValueError:
        print(path.stem, "gave no report (timed out or failed):", path.with_suffix(".err").read_text()[-600:])
for r in reports:
    for v in r["variants"]:
        print(f"{r['model']:<10} {v['name']:<26} rel {v['relative_diff']:.1e} compiles {v['compiles']} "
              f"graphs {v['cudagraph_recordings']} {v['seconds']:.0f}s {'ok' if v['ok'] else 'FAIL'}"
              + "".join(f"\n    fell back: {event[:240]}" for event in v["fallbacks"]))
json.dump(reports, open(sys.argv[2], "w"), indent=1)
PY
}
part_A2() {
  echo "== A2: what --augment flip,crop costs Net (alone)"
  timeout 100 python3 benchmarks/augment_speed.py --models net --data "$DATA" --device "$DEVICE" \
    --rounds 3 2> "$LOGS/augment.err" || tail -15 "$LOGS/augment.err"
}
part_T() {
  echo "== T: ptm tune, 16 Net trials at once against one alone (alone)"
  timeout 240 python3 benchmarks/tune_speed.py --model net --trials 16 --epochs 3 --against-one --rounds 1 \
    --data "$DATA" --device "$DEVICE" --json "$OUT/tune_speed.json" 2> "$LOGS/tune.err" | tail -3 \
    || tail -15 "$LOGS/tune.err"
}
{
  date
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  python3 -c "import importlib.metadata as m; print(*(f'{p} {m.version(p)}' for p in
    ('typer', 'safetensors', 'einops', 'filelock', 'pillow', 'pytest', 'optuna')), sep=', ')"
  for part in $PARTS; do "part_$part"; done
  if [ "${ACCURACY:-0}" = 1 ]; then  # optional: ~4-8 minutes more
    echo "== D: resdeep (100 untied blocks), 100 epochs, against the book's loop"
    timeout 480 python3 benchmarks/accuracy.py --model resdeep --data "$DATA" --device "$DEVICE" --compile \
      --json "$OUT/accuracy_resdeep.json" 2>&1 | tail -4
  fi
  date
} 2>&1 | tee "$OUT/log.txt"
