"""Cold-start time of `gen video "a ball rolling left"` on this machine, with its split.

    python scripts/bench_gen_video.py [--runs 5] [--prompt "a ball rolling left"] [-- extra gen video flags]

Each run is a fresh process (cold start: interpreter, imports, weights). It prints the
median wall time of the real command over the runs, beside a bare `python -c "import
torch"`, then the median split by stage from the same number of instrumented fresh
processes that do what `gen video` does with the shipped default: import, load, then for a
video cascade frame 0 (the image stage), animation (the video stage), temporal and spatial
super-resolution, and save (a single video pipeline: denoise, save). Issue 17 asks for
at most 30 s on the 2-core CPU at the default output.
"""

from __future__ import annotations

import sys
from pathlib import Path

STAGES = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from gen.pipeline import VideoCascade, VideoPipeline, clips_to_uint8
from gen.video_io import write_video
t1 = time.perf_counter()
pipe = VideoPipeline.from_pretrained("default")
prompt, times, t = sys.argv[1], {"import": t1 - t0}, time.perf_counter()
times["load"] = t - t1


def lap(key):
    global t
    now = time.perf_counter()
    times[key] = now - t
    t = now


if isinstance(pipe, VideoCascade):  # what VideoCascade.generate does, stage by stage
    first = pipe.image.generate([prompt], [0], **pipe.stage_settings("image"))
    lap("frame 0 (image)")
    clip = pipe.video.generate([prompt], [0], init_image=first)
    lap("animate (video)")
    if pipe.temporal is not None:
        clip = pipe.temporal.interpolate([prompt], clip, [0], **pipe.stage_settings("temporal"))
        lap("temporal SR")
    for stage in pipe.spatial:
        b, c, n = clip.shape[:3]
        clip = stage.upscale(clip.transpose(1, 2).flatten(0, 1), [0] * n).unflatten(0, (b, n)).transpose(1, 2)
    lap("spatial SR")
else:
    clip = pipe.generate([prompt], [0])
    lap("denoise")
write_video(sys.argv[2], clips_to_uint8(clip)[0], pipe.defaults.fps)
lap("save")
print(json.dumps(times))
"""


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_gen_image import bench

    bench("video", ".gif", STAGES, "a ball rolling left", __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
