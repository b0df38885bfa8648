#!/usr/bin/env bash
# Device run of a shipped-model recipe: train on the GPU for a fixed wall-clock budget,
# then return the result in float16 (files under 16 MiB each) with the run's log and config.
#   bash scripts/device_train.sh image|vae MINUTES BATCH WORKERS DEVICE
# image: scripts/train_default_image.py -> $OUT/pipe;  vae: scripts/train_default_vae.py -> $OUT/vae
set -euo pipefail
what=${1:?image or vae}; minutes=${2:-6}; batch=${3:-512}; workers=${4:-12}; device=${5:-cuda}
out=${OUT:-/tmp/out}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
py=${PYTHON:-python3}
case "$what" in
    image) script=scripts/train_default_image.py ;;
    vae) script=scripts/train_default_vae.py ;;
    *) echo "unknown recipe $what: image or vae" >&2; exit 2 ;;
esac
"$py" "$script" --out /tmp/run --minutes "$minutes" --batch "$batch" --workers "$workers" --device "$device" \
    2>&1 | tr '\r' '\n' | grep -v '%|' | tail -15
"$py" - "$what" "$out" <<'PY'
import shutil, sys, torch
what, out = sys.argv[1:]
if what == "image":
    from gen.pipeline import Pipeline
    Pipeline.from_pretrained("/tmp/run/pipeline").save_pretrained(f"{out}/pipe", overwrite=True, dtype=torch.float16)
else:
    import models
    models.load_pretrained("/tmp/run/vae").save_pretrained(f"{out}/vae", overwrite=True, dtype=torch.float16)
for f in ("log.jsonl", "config.json"):
    shutil.copy(f"/tmp/run/{f}", f"{out}/{f}")
print("exported", out)
PY
tail -2 /tmp/run/log.jsonl
