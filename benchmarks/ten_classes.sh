#!/usr/bin/env bash
# README's ten-class table: six chapter-8 nets on all ten classes of cifar10-mini (1,000 train and
# 200 test JPEGs per class), EPOCHS epochs each; net and res also with --augment flip,crop.
#   bash benchmarks/ten_classes.sh [DATA]    (DATA: default ../shared/data/cifar10-mini)
# Writes OUT/MODEL[-augment].{safetensors,metrics.jsonl,json}, then the table and the curves.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/cifar10-mini}
out=${OUT:-runs/ten} epochs=${EPOCHS:-40} ptm=${PTM:-.venv/bin/ptm}
mkdir -p "$out"
train() {  # NAME MODEL [OPTIONS...]
  local name=$1 model=$2
  shift 2
  [ -f "$out/$name.json" ] && return  # done in an earlier call
  "$ptm" train "$model" --data "$data" --classes all --epochs "$epochs" --device cpu \
    --out "$out/$name.safetensors" --force --json "$@" >"$out/$name.json.tmp"
  mv "$out/$name.json.tmp" "$out/$name.json"
}
for model in net width dropout batchnorm depth res; do train "$model" "$model"; done
for model in net res; do train "$model-augment" "$model" --augment flip,crop; done
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | train acc | val acc | seconds |")
print("|---|---:|---:|---:|")
for f in sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime):
    if f.name.endswith(".run.json"):
        continue
    r = json.loads(f.read_text())
    print(f"| {f.stem} | {r['train_accuracy']:.4f} | {r['val_accuracy']:.4f} | {r['seconds']:.0f} |")
PY
what="$epochs epochs on cifar10-mini, all ten classes (10,000 train / 2,000 val)"
"$ptm" plot "$out"/{net,width,dropout,batchnorm,depth,res}.safetensors --out "$out/ten-classes.png" \
  --title "six chapter-8 nets, $what"
"$ptm" plot "$out"/{net,net-augment,res,res-augment}.safetensors --out "$out/ten-classes-augment.png" \
  --title "without and with --augment flip,crop, $what"
