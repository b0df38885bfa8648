"""`gen eval image|video` speed against an older commit's, at the same settings, side by side.

    python scripts/bench_eval.py [--ref 7d3f35e] [--runs 2] [--n-images 50] [--n-clips 4]

The older code is checked out into a temporary git worktree (nothing in this checkout
changes) and both run as fresh processes, alternately, with the same model folders, sampler,
steps, guidance, prompts and seeds: the models the older code shipped, which both can read
(`gen eval image --model OLD/gen/weights/toy-image-dit --sampler ddim --steps 25 --cfg 3`, and
`gen eval video --model FOLDER` at its defaults, FOLDER the older code's `toy-video-dit` written
whole by the older code's save_pretrained, since it is stored as a difference from a base this
checkout no longer ships). Each
report's own generation time (`seconds_per_image`, `seconds_per_clip`) is read back; the
script prints the median of each and the ratio, old / new. The default ref is the commit
before issue 15 ("gen eval image: about 1.8 s per 32x32 image"), which asks for >= 3x.
`--json` prints {"ref", "image": {"old_s", "new_s", "speedup"}, "video": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SETTINGS = ["--sampler", "ddim", "--steps", "25", "--cfg", "3"]
# the older code's default video model, written as a whole folder by the older code
WRITE_VIDEO = "import sys; from gen.pipeline import VideoPipeline; " \
              "VideoPipeline.from_pretrained('toy-video-dit').save_pretrained(sys.argv[1])"


def run_eval(code: Path, argv: list[str], out: Path) -> float:
    """One fresh `gen eval` with `code` first on the path; the report's seconds per sample."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    check = subprocess.run([sys.executable, "-c", "import gen; print(gen.__file__)"], env=env, cwd=code,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not check.startswith(str(code)):
        raise SystemExit(f"bench_eval: {code} did not shadow the installed gen ({check})")
    subprocess.run([sys.executable, "-m", "gen", "eval", *argv, "--out", str(out), "--json"], env=env, cwd=code,
                   check=True, stdout=subprocess.DEVNULL)
    report = json.loads((out / "report.json").read_text())
    return report.get("seconds_per_image", report.get("seconds_per_clip"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="7d3f35e", help="the older commit (default: before issue 15)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--n-images", type=int, default=50)
    parser.add_argument("--n-clips", type=int, default=4)
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), args.ref], check=True)
        try:
            result = {"ref": args.ref}
            image = old / "gen" / "weights" / "toy-image-dit"
            jobs = [("image", ["image", "--model", str(image), *IMAGE_SETTINGS, "--n", str(args.n_images)])]
            if not args.skip_video:
                video = Path(tmp) / "toy-video-dit"
                subprocess.run([sys.executable, "-c", WRITE_VIDEO, str(video)], cwd=old, check=True,
                               env={**os.environ, "PYTHONPATH": str(old)})
                jobs.append(("video", ["video", "--model", str(video), "--n", str(args.n_clips)]))
            for name, argv in jobs:
                times = {"old": [], "new": []}
                for i in range(args.runs):
                    for which, code in (("old", old), ("new", ROOT)):
                        times[which].append(run_eval(code, argv, Path(tmp) / f"{name}-{which}-{i}"))
                        print(f"  {name} {which}: {times[which][-1]:.3f} s per sample", file=sys.stderr, flush=True)
                o, n = statistics.median(times["old"]), statistics.median(times["new"])
                result[name] = {"old_s": o, "new_s": n, "speedup": o / n}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=True)
    if args.json:
        print(json.dumps(result))
        return
    for name in ("image", "video"):
        if name in result:
            r = result[name]
            print(f"gen eval {name}: {r['old_s']:.3f} s per sample at {args.ref}, {r['new_s']:.3f} s now "
                  f"(median of {args.runs}): {r['speedup']:.2f}x")


if __name__ == "__main__":
    main()
