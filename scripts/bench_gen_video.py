"""Cold-start time of `gen video "a ball rolling left"` on this machine, with its split.

    python scripts/bench_gen_video.py [--runs 5] [--prompt "a ball rolling left"] [-- extra gen video flags]

Each run is a fresh process (cold start: interpreter, imports, weights). It prints the
median wall time of the real command over the runs, then the median split by stage from
the same number of instrumented fresh processes that do what `gen video` does: import,
load (the base image model and the motion module), text, denoise, decode, save. Issue 8
asks for under 30 s on the 2-core CPU at the default settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

STAGES = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from gen.pipeline import VideoPipeline, clips_to_uint8
from gen.video_io import write_video
t1 = time.perf_counter()
pipe = VideoPipeline.from_pretrained("default")
t2 = time.perf_counter()
prompt = sys.argv[1]
cond = pipe.encode_prompt([prompt])
t3 = time.perf_counter()
x = pipe.generate([prompt], [0])
t4 = time.perf_counter()
frames = clips_to_uint8(x)[0]
t5 = time.perf_counter()
write_video(sys.argv[2], frames, pipe.defaults.fps)
t6 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "text": t3 - t2, "denoise (incl. text)": t4 - t3,
                  "decode": t5 - t4, "save": t6 - t5}))
"""


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_gen_image import bench

    bench("video", ".gif", STAGES, "a ball rolling left", __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
