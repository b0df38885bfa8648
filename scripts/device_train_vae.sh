#!/usr/bin/env bash
# Device run of the toy VAE recipe: train on the GPU for a fixed wall-clock budget,
# then return the VAE (fp16) and the log under $OUT.
#   bash scripts/device_train_vae.sh MINUTES BATCH WORKERS DEVICE
set -euo pipefail
minutes=${1:-2.5}; batch=${2:-64}; workers=${3:-12}; device=${4:-cuda}
out=${OUT:-/tmp/out}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
py=${PYTHON:-python3}
"$py" scripts/train_default_vae.py --out /tmp/vrun --minutes "$minutes" --batch "$batch" \
    --workers "$workers" --device "$device" 2>&1 | tr '\r' '\n' | grep -v '%|' | tail -5
"$py" - "$out" <<'PY'
import sys, shutil, torch
import models
out = sys.argv[1]
models.load_pretrained("/tmp/vrun/vae").save_pretrained(f"{out}/vae", overwrite=True, dtype=torch.float16)
for f in ("log.jsonl", "config.json"):
    shutil.copy(f"/tmp/vrun/{f}", f"{out}/{f}")
print("exported", out)
PY
tail -2 /tmp/vrun/log.jsonl
