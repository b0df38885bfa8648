#!/usr/bin/env bash
# Device run of the shipped-default recipe: train on the GPU for a fixed wall-clock
# budget, then return the pipeline in float16 (files under 16 MiB each) and the log.
#   bash scripts/device_train_default.sh MINUTES BATCH WORKERS DEVICE
set -euo pipefail
minutes=${1:-6}; batch=${2:-512}; workers=${3:-12}; device=${4:-cuda}
out=${OUT:-/tmp/out}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
py=${PYTHON:-python3}
"$py" scripts/train_default_image.py --out /tmp/run --minutes "$minutes" --batch "$batch" \
    --workers "$workers" --device "$device" --ckpt-every 1000000 2>&1 | tr '\r' '\n' | grep -v '%|' | tail -15
"$py" - "$out" <<'PY'
import sys, shutil, torch
from gen.pipeline import Pipeline
out = sys.argv[1]
Pipeline.from_pretrained("/tmp/run/pipeline").save_pretrained(f"{out}/pipe", overwrite=True, dtype=torch.float16)
for f in ("log.jsonl", "config.json"):
    shutil.copy(f"/tmp/run/{f}", f"{out}/{f}")
print("exported", out)
PY
tail -2 /tmp/run/log.jsonl
