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


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_gen_image import bench, stage_script

    imports = "from gen.pipeline import VideoPipeline, clips_to_uint8\nfrom gen.video_io import write_video"
    stages = stage_script(imports, "VideoPipeline", "clips_to_uint8(x)[0]", "write_video(sys.argv[2], out, pipe.defaults.fps)")
    bench("video", ".gif", stages, "a ball rolling left", __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
