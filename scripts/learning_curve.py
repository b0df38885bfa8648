"""A run's learning curve: `gen eval` on each of its snapshots, against samples seen.

    python scripts/learning_curve.py RUN [--n 50] [--init-frames] [--out RUN/learning-curve.json]

A run trained with `--snapshot-every N` keeps its EMA pipeline every N steps under
RUN/snapshots/step-N/. Each is scored by `gen eval image|video` (the run's kind; fresh
prompts from the evaluation seed, never trained on), and the curve is the judge's figures
against samples (images or clips) seen, step x batch from RUN/config.json. It prints one
row per snapshot and writes the JSON ({"kind", "batch", "points": [{"step", "samples",
"generated": {...}, "seconds_per_sample"}]}) for a model card; nothing in RUN changes
but that file. `--init-frames` (video): frame 0 of each clip is its caption's render, which
measures a masked-frame model's animation alone (`gen eval video --init-frames`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def snapshots(run: Path) -> list[tuple[int, Path]]:
    """(step, pipeline folder) of each snapshot, in step order."""
    found = []
    for folder in sorted((run / "snapshots").glob("step-*")):
        pipeline = folder / "pipeline"
        if pipeline.is_dir() and folder.name[5:].isdigit():
            found.append((int(folder.name[5:]), pipeline))
    return found


def curve(run: Path, n: int, device: str = "auto", init_frames: bool = False) -> dict:
    from gen.cli import main

    config = json.loads((run / "config.json").read_text())
    kind, batch = config["kind"], config["batch"]  # the global batch: samples per optimiser step
    points = []
    with tempfile.TemporaryDirectory(prefix="curve-") as tmp:
        for step, pipeline in snapshots(run):
            out = Path(tmp) / f"step-{step}"
            code = main(["--device", device, "eval", kind, "--model", str(pipeline), "--n", str(n),
                         "--out", str(out), "--json"] + (["--init-frames"] if init_frames else []))
            if code:
                raise SystemExit(f"learning_curve: gen eval failed on {pipeline}")
            report = json.loads((out / "report.json").read_text())
            points.append({"step": step, "samples": step * batch, "generated": report["generated"],
                           "seconds_per_sample": report.get("seconds_per_image", report.get("seconds_per_clip"))})
            print(f"step {step:>7}  samples {step * batch:>9}  " + "  ".join(
                f"{k} {v:.3f}" for k, v in report["generated"].items() if isinstance(v, (int, float))),
                file=sys.stderr, flush=True)
    return {"kind": kind, "batch": batch, "n": n, "init_frames": init_frames, "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=50, help="prompts per snapshot (default 50)")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN/learning-curve.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--init-frames", action="store_true",
                        help="video: frame 0 of each clip is its caption's render (animation alone)")
    args = parser.parse_args()
    if not snapshots(args.run):
        raise SystemExit(f"learning_curve: {args.run} has no snapshots (train it with --snapshot-every N)")
    if args.init_frames and json.loads((args.run / "config.json").read_text())["kind"] != "video":
        raise SystemExit("learning_curve: --init-frames is for a video run")
    result = curve(args.run, args.n, args.device, args.init_frames)
    out = args.out or args.run / "learning-curve.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
