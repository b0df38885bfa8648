#!/usr/bin/env bash
# One device run for the shipped models: train several recipes side by side on the GPU for
# MINUTES each, measure them there, and return each result as one tar under $OUT (the
# device tool brings back at most 8 files).
#   bash scripts/device_session.sh MINUTES [DEVICE] [JOBS...]
# Batch sizes: VIDEO_BATCH, VJUDGE_BATCH, SJUDGE_BATCH, LATENT_BATCH (for a CPU dry run);
# VIDEO_INIT=toy-video-dit continues the shipped video model instead of starting from the image one.
# JOBS (default all): video (scripts/train_default_video.py), vjudge (train_video_judge.py),
# sjudge (train_scene_judge.py), latent (train_default_image.py --vae toy-vae --size 64, the
# latent-space variant of the image default, measured against the shipped pixel model).
set -uo pipefail
minutes=${1:-6}; device=${2:-cuda}; shift 2 || shift $#
jobs=${*:-video vjudge sjudge latent}
out=${OUT:-/tmp/out}; work=${WORK:-/tmp/session}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
py=${PYTHON:-python3}
has() { [[ " $jobs " == *" $1 "* ]]; }
start() {  # name, command...: run in the background, output to $work/name.log
    local name=$1; shift
    ( "$@" >"$work/$name.log" 2>&1; echo "[$name exited $?]" >>"$work/$name.log" ) &
}
has video && start video "$py" scripts/train_default_video.py --out "$work/video" --minutes "$minutes" \
    --batch "${VIDEO_BATCH:-96}" --workers 3 --device "$device" ${VIDEO_INIT:+--init "$VIDEO_INIT"}
has vjudge && start vjudge "$py" scripts/train_video_judge.py --out "$work/vjudge" --minutes "$minutes" \
    --batch "${VJUDGE_BATCH:-256}" --workers 5 --device "$device"
has sjudge && start sjudge "$py" scripts/train_scene_judge.py --out "$work/sjudge" --minutes "$minutes" \
    --batch "${SJUDGE_BATCH:-256}" --workers 3 --device "$device"
has latent && start latent "$py" scripts/train_default_image.py --out "$work/latent" --vae toy-vae --size 64 \
    --steps 2100 --batch "${LATENT_BATCH:-512}" --minutes "$minutes" --workers 4 --device "$device"
wait
n=${EVAL_N:-400}
judge=gen/weights/toy-judge-video  # the shipped video judge, or the one trained in this run
[ -f "$work/vjudge/config.json" ] && judge="$work/vjudge"
if has video && [ -d "$work/video/pipeline" ] && [ -f "$judge/config.json" ]; then
    "$py" scripts/eval_toy_video.py --model "$work/video/pipeline" --judge "$judge" --n "$n" --batch 50 \
        --device "$device" --json "$work/video/eval.json" >"$work/video-eval.log" 2>&1
fi
if has latent && [ -d "$work/latent/pipeline" ]; then
    "$py" scripts/eval_toy_image.py --model "$work/latent/pipeline" --n "$n" --batch 100 --device "$device" \
        --json "$work/latent/eval.json" >"$work/latent-eval.log" 2>&1
    "$py" scripts/eval_toy_image.py --model default --n "$n" --batch 100 --device "$device" \
        --json "$work/latent/eval-pixel-default.json" >>"$work/latent-eval.log" 2>&1
fi
# Pack: float16 weights; the video model as its difference from the shipped image model;
# the latent pipeline without its VAE (the shipped toy-vae, frozen in training).
"$py" - "$work" <<'PY'
import shutil, sys
from pathlib import Path
import torch
work = Path(sys.argv[1])
pack = work / "pack"
shutil.rmtree(pack, ignore_errors=True)
if (work / "video/pipeline").is_dir():
    from gen.pipeline import VideoPipeline
    VideoPipeline.from_pretrained(str(work / "video/pipeline")).save_pretrained(
        pack / "video/pipeline", dtype=torch.float16, base="toy-image-dit")
if (work / "latent/pipeline").is_dir():
    from gen.pipeline import Pipeline
    Pipeline.from_pretrained(str(work / "latent/pipeline")).save_pretrained(pack / "latent/pipeline", dtype=torch.float16)
    shutil.rmtree(pack / "latent/pipeline/vae")
for job in ("video", "latent"):
    for f in ("config.json", "log.jsonl", "eval.json", "eval-pixel-default.json"):
        if (work / job / f).is_file():
            (pack / job).mkdir(parents=True, exist_ok=True)
            shutil.copy(work / job / f, pack / job / f)
for job in ("vjudge", "sjudge"):
    if (work / job).is_dir():
        shutil.copytree(work / job, pack / job)
print("packed", sorted(str(p.relative_to(pack)) for p in pack.rglob("*") if p.is_file()))
PY
for job in video latent vjudge sjudge; do
    [ -d "$work/pack/$job" ] && tar -C "$work/pack" -cf "$out/$job.tar" "$job"
done
cat "$work"/*.log | tr '\r' '\n' | grep -v '%|' >"$out/log.txt"
tail -n 4 "$work"/*.log | tr '\r' '\n' | grep -v '%|' | tail -n 40
ls -la "$out"
