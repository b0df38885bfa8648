"""Cold-start time of `gen video "a ball rolling left"` on this machine, with its split.

    python scripts/bench_gen_video.py [--runs 5] [--prompt "a ball rolling left"] [-- extra gen video flags]

Each run is a fresh process (cold start: interpreter, imports, weights). It prints the
median wall time of the real command over the runs, then the median split by stage from
the same number of instrumented fresh processes that do what `gen video` does: import,
load (the base image model and the motion module), text, denoise, decode, save. Issue 8
asks for under 30 s on the 2-core CPU at the default settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt", default="a ball rolling left")
    args, extra = parser.parse_known_args()
    gen = shutil.which("gen") or f"{sys.executable} -m gen"
    work = tempfile.mkdtemp()
    walls = []
    for k in range(args.runs):
        t = time.perf_counter()
        subprocess.run([*gen.split(), "video", args.prompt, "--out", f"{work}/run{k}.gif", *extra],
                       check=True, capture_output=True)
        walls.append(time.perf_counter() - t)
    print(f"gen video {args.prompt!r} {' '.join(extra)}: median {statistics.median(walls):.2f} s "
          f"(min {min(walls):.2f}, max {max(walls):.2f}, {args.runs} cold runs)")
    splits = []
    for k in range(args.runs):
        out = subprocess.run([sys.executable, "-c", STAGES, args.prompt, f"{work}/stage{k}.gif"],
                             check=True, capture_output=True, text=True).stdout
        splits.append(json.loads(out.strip().splitlines()[-1]))
    print("split (median s): " + ", ".join(f"{key} {statistics.median(s[key] for s in splits):.2f}"
                                            for key in splits[0]))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
