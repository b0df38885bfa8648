"""`gen eval image|video|vae|judge|sr|interp`: measure models on fresh toy-world data.

    gen eval image [--model NAME|PATH] [--prompts FILE] [--n 200] [--steps S] [--json] [--out DIR]
    gen eval video [--model NAME|PATH] [--n 200] [--steps S] [--json] [--out DIR]

image / video: generate N samples (prompts from FILE, or fresh toy-grammar captions), then
report the toy judges' attribute accuracy (GenEval-style: a sample is right when every
attribute its prompt names is right), toy FID / KID (image) or toy FVD, frame consistency
and flicker (video) against fresh renders; the samples, `report.json` and `report.md` go
to a new folder (see gen/evaluate.py).

`gen eval vae` (gen/cli/eval_vae.py): how well an autoencoder reconstructs fresh toy-world
images or clips. `gen eval judge`: the shipped judges on fresh renders. `gen eval sr`: a
super-resolution stage against bicubic. `gen eval interp`: a video pipeline's temporal
super-resolution (VideoPipeline.interpolate) against the linear blend of neighbouring frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gen.cli import args as types
from gen.cli.eval_vae import EVAL_SEED, JUDGED_KINDS, _finite, evaluate_vae, format_report
from gen.errors import GenError

TARGETS = ("image", "video", "vae", "judge", "sr", "interp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", default=None,
                        help="what to evaluate: image, video, vae, judge, sr, interp")
    parser.add_argument("--model", default="default",
                        help="shipped name (default: toy-vae) or a checkpoint folder (config.json + "
                             "model.safetensors), or a pipeline folder with a vae part")
    parser.add_argument("--n", type=int, default=200, help="how many fresh toy images or clips (default 200)")
    parser.add_argument("--size", type=types.pixels, default=None,
                        help="side in pixels, a multiple of the VAE factor (default 64 for images, as the "
                             "shipped VAE was trained; 32 for clips)")
    parser.add_argument("--frames", type=types.frames, default=None,
                        help="--video: frames per clip, 1 + k * the temporal factor (default: k = 2); "
                             "interp: frames of the render clips, every other one given (default 16)")
    parser.add_argument("--batch", type=types.integer(1, 4096), default=32,
                        help="images (clips) per encode/decode call")
    parser.add_argument("--video", action="store_true", help="evaluate a video VAE on toy clips")
    parser.add_argument("--init-frames", action="store_true",
                        help="video: frame 0 of each clip is its caption's render (measures animation alone)")
    parser.add_argument("--prompts", metavar="FILE", help="image/video: prompts, one per line (default: fresh "
                                                            "toy-grammar captions; video: toy clip captions)")
    parser.add_argument("--steps", type=int, default=None,
                        help="image/video/interp: sampling steps (default: the model's)")
    parser.add_argument("--sampler", default=None, help="image/video/interp: sampler (default: the model's)")
    parser.add_argument("--cfg", type=float, default=None, help="image/video/interp: guidance scale (default: the "
                                                                     "model's; interp: a cascade's for the stage)")
    parser.add_argument("--frame-cfg", type=float, default=1.0,
                        help="video: a masked-frame model's guidance on frame 0 (1 = none; see gen video)")
    parser.add_argument("--clip", default="ViT-B-32",
                        help="image: open_clip model (name or hub-layout folder) for CLIPScore, used when its "
                             "weights are on this machine; none: skip")
    parser.add_argument("--out", help="image/video: new folder for the samples and the report "
                                      "(default: eval-<target>-<model>, here)")
    parser.add_argument("--sr-noise", type=types.number(0, 1), default=None,
                        help="sr: augmentation level of the stage's input, 0-1 (default: the stage's)")
    parser.add_argument("--inbetween", choices=("model", "motion"), default=None,
                        help="interp: the frames between given ones drawn by the model, or motion-compensated "
                             "(the model draws the last); default: a cascade's for its temporal stage, else model")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (infinite PSNR, from exact reconstructions, is null)")
    parser.add_argument("--download", action="store_true",
                        help="image/video: allow fetching a hub model that is not in the local cache (network)")


def run(args: argparse.Namespace) -> int:
    if args.target not in TARGETS:
        what = f"gen eval {args.target}" if args.target else "gen eval"
        print(f"gen: error: `{what}` is not built yet in gen 0.1.0; built: "
              + ", ".join(f"gen eval {t}" for t in TARGETS), file=sys.stderr)
        return 2
    if args.inbetween is not None and args.target != "interp":
        raise GenError(f"--inbetween {args.inbetween} sets how gen eval interp makes its new frames; "
                       f"gen eval {args.target} takes none")
    if args.target in ("image", "video"):
        return evaluate_model(args)
    if args.target == "sr":
        return evaluate_stage(args)
    if args.target == "interp":
        return evaluate_interp(args)
    if args.target == "judge":
        results = evaluate_judges(n=args.n, size=args.size or 32, seed=_data_seed(args), device=args.device)
        if args.json:
            print(json.dumps(results))
        else:
            for r in results:
                print(f"{r['judge']} on {r['n']} fresh {r['data']} (seed {r['seed']}): "
                      + ", ".join(f"{k} {100 * v:.2f}%" for k, v in r["accuracy"].items()))
        return 0
    result = evaluate_vae(model=args.model, n=args.n, size=args.size, video=args.video, frames=args.frames,
                          batch=args.batch, seed=_data_seed(args), device=args.device)
    if args.json:
        print(json.dumps(_finite(result)))
    else:
        print(format_report(result))
    return 0


def evaluate_stage(args) -> int:
    """`gen eval sr`: a super-resolution stage against bicubic on fresh toy renders."""
    from gen.evaluate import evaluate_sr
    from gen.pipeline import SuperResolution
    from gen.runtime import resolve_device

    if not 1 <= args.n <= 100_000:
        raise GenError(f"--n must be between 1 and 100000, got {args.n}")
    stage = SuperResolution.from_pretrained(args.model, device=resolve_device(args.device))
    report = evaluate_sr(stage, n=args.n, size=args.size or 128, seed=_data_seed(args), batch=args.batch,
                         steps=args.steps, sr_noise=args.sr_noise)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.model}: {report['n']} fresh toy renders at {report['size']}x{report['size']} (seed "
          f"{report['seed']}), box-downsampled {report['scale']}x; {report['steps']} steps, sr-noise "
          f"{report['sr_noise']}, {report['seconds_per_image']:.2f} s/image")
    for name in ("sr", "bicubic"):
        r = report[name]
        print(f"  {name:<8} PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}  "
              f"edge energy {r['edge_energy']:.2f}x the truth's")
    return 0


def evaluate_interp(args) -> int:
    """`gen eval interp`: temporal super-resolution alone, on fresh render clips."""
    from gen.evaluate import evaluate_interpolation
    from gen.pipeline import WEIGHTS_DIR, VideoCascade, VideoPipeline
    from gen.runtime import resolve_device
    from metrics.video_judge import VideoJudge

    if not 1 <= args.n <= 100_000:
        raise GenError(f"--n must be between 1 and 100000, got {args.n}")
    device = resolve_device(args.device)
    pipe = VideoPipeline.from_pretrained(args.model, device=device)
    settings = {k: v for k, v in dict(steps=args.steps, sampler=args.sampler, cfg=args.cfg,
                                      inbetween=args.inbetween).items() if v is not None}
    if isinstance(pipe, VideoCascade):  # its temporal stage, as the cascade runs it
        if pipe.temporal is None:
            raise GenError(f"--model {args.model} is a video cascade with no temporal stage: nothing interpolates")
        pipe, settings = pipe.temporal, pipe.stage_settings("temporal", **settings)
    if not isinstance(pipe, VideoPipeline):
        raise GenError(f"--model {args.model} is a {type(pipe).__name__}; gen eval interp takes the video "
                       f"pipeline that interpolates (a cascade's temporal stage) or a video cascade")
    judge = VideoJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-video", device=device)
    frames = args.frames or 16
    # the pipeline draws clips at its fps; interpolation doubles it (4 -> 8 fps for the shipped one)
    report = evaluate_interpolation(pipe, judge, n=args.n, frames=frames, fps=2 * (pipe.defaults.fps or 4.0),
                                    seed=_data_seed(args), batch=min(args.batch, 16), **settings)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.model}: {report['n']} fresh toy clips of {report['frames']} frames at {report['fps']:g} fps "
          f"(seed {report['seed']}), every other frame given; {report['sampler']} {report['steps']} steps, "
          f"cfg {report['cfg']:g}, in-betweens by {report['inbetween']}; {report['seconds_per_clip']:.2f} s/clip")
    for name in ("model", "linear_blend"):
        r = report[name]
        print(f"  {name:<13} PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f} on the drawn frames")
    print(f"  gain over the blend: {report['psnr_gain_db']:+.2f} dB; judged motion: " + ", ".join(
        f"{k} {100 * v['motion']:.1f}%" for k, v in report["judge"].items()))
    return 0


def evaluate_judge(n: int, size: int, seed: int, device: str = "auto") -> dict:
    """The shipped image judge's accuracy per head on fresh renders of its scene kinds
    (half single objects, half wearers), labels from the toy world's exact attributes."""
    import numpy as np
    import torch

    from gen.pipeline import WEIGHTS_DIR
    from gen.runtime import resolve_device
    from gen.toyworld import toy_image
    from metrics.toy_judge import ImageJudge

    if not 2 <= n <= 100_000:
        raise GenError(f"--n must be at least 2 and at most 100000, got {n}")
    dev = resolve_device(device)
    judge = ImageJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-image", device=dev)
    samples = [toy_image(i, size, seed=seed, kind=JUDGED_KINDS[i % 2]) for i in range(n)]
    images = torch.from_numpy(np.stack([s.pixels for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1
    predictions = judge.predict(images)
    right = {"object": [], "color": [], "hat": [], "hat_color": []}
    for s, p in zip(samples, predictions):
        objs, wearing = s.attributes["objects"], s.attributes["kind"] == "wearing"
        right["object"].append(p["class"] == objs[0]["class"])
        right["color"].append(p["color"] == objs[0]["color"])
        right["hat"].append(p["hat"] == wearing)
        if wearing:
            right["hat_color"].append(p["hat_color"] == objs[1]["color"])
    return {"judge": "toy-judge-image", "n": n, "size": size, "seed": seed,
            "data": f"renders ({size}x{size}, half single objects, half wearers)",
            "accuracy": {k: sum(v) / len(v) for k, v in right.items()}}


def evaluate_judges(n: int, size: int, seed: int, device: str = "auto") -> list[dict]:
    """Every shipped judge's accuracy per head on fresh renders of toy-world seed `seed`:
    the image judge (main object), the scene judge (every object, relation, hat) and the
    video judge (object, colour, motion; clips of 16 frames at 8 fps and 8 at 4 fps)."""
    import numpy as np
    import torch

    from gen.pipeline import WEIGHTS_DIR
    from gen.runtime import resolve_device
    from gen.toyworld import COLORS, OBJECTS, toy_clip, toy_image
    from metrics.scene_judge import SceneJudge, scene_accuracy, scene_labels, stack_labels
    from metrics.video_judge import VideoJudge, judge_clips

    results = [evaluate_judge(n, size, seed, device)]
    dev = resolve_device(device)
    scene = SceneJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-scene", device=dev)
    samples = [toy_image(i, size, seed=seed) for i in range(n)]
    images = torch.from_numpy(np.stack([s.pixels for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1
    labels = stack_labels([scene_labels(s.attributes, OBJECTS, tuple(COLORS)) for s in samples])
    results.append({"judge": "toy-judge-scene", "n": n, "size": size, "seed": seed,
                    "data": f"renders ({size}x{size}, every scene kind)",
                    "accuracy": scene_accuracy(scene, images, labels)})
    video = VideoJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-video", device=dev)
    for frames, fps in ((16, 8.0), (8, 4.0)):
        clips = [toy_clip(i, size=size, frames=frames, fps=fps, seed=seed) for i in range(n)]
        x = torch.from_numpy(np.stack([c.pixels for c in clips])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        truth = [{"class": c.attributes["objects"][0]["class"], "color": c.attributes["objects"][0]["color"],
                  "motion": c.attributes["motion"]["kind"]} for c in clips]
        report = judge_clips(video, x, truth)
        results.append({"judge": "toy-judge-video", "n": n, "size": size, "seed": seed,
                        "data": f"clips ({frames} frames at {fps:g} fps, {size}x{size})",
                        "accuracy": {k: report[k] for k in ("object", "color", "motion", "all")}})
    return results


def _new_folder(args):
    """The new folder `gen eval image|video` writes to (refused if it exists and is not empty)."""
    from pathlib import Path

    from gen.cli.image import slug

    out = Path(args.out) if args.out else Path.cwd() / f"eval-{args.target}-{slug(Path(args.model).name)}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GenError(f"--out {out} exists and is not empty; choose a new folder (nothing is overwritten)")
    if not out.parent.is_dir():
        raise GenError(f"--out: folder {out.parent} does not exist; create it first")
    return out


def evaluate_model(args) -> int:
    """`gen eval image|video`: generate samples for toy prompts, score them, write them and a report."""
    from gen.lock import output_lock

    if not 2 <= args.n <= 100_000:
        raise GenError(f"--n must be between 2 and 100000, got {args.n}")
    video = args.target == "video"
    if args.init_frames and (not video or args.prompts):
        raise GenError("--init-frames starts each clip from its caption's render: gen eval video, without --prompts")
    prompts = None
    if args.prompts:
        from gen.cli.args import read_prompts

        prompts = read_prompts(args.prompts)
    out = _new_folder(args)
    with output_lock(out, beside=True):
        _new_folder(args)  # checked again under the lock: another command may have written it since
        return _evaluate_into(args, out, video, prompts)


def _evaluate_into(args, out, video: bool, prompts) -> int:
    """The body of evaluate_model, run while `out` is locked."""
    import shutil
    import tempfile

    from tqdm import tqdm

    from gen.evaluate import evaluate_image, evaluate_video
    from gen.pipeline import WEIGHTS_DIR, Pipeline, VideoPipeline, clips_to_uint8, to_uint8
    from gen.runtime import resolve_device
    from gen.video_io import write_png, write_video

    device = resolve_device(args.device)
    clip, clip_note = _load_clip(args, device) if not video else (None, None)
    seed = _data_seed(args)
    if video:
        from metrics.toy_judge import ImageJudge
        from metrics.video_judge import VideoJudge

        pipe = VideoPipeline.from_pretrained(args.model, device=device, local_files_only=not args.download)
        judge = VideoJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-video", device=device)
        image_judge = ImageJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-image", device=device)
    else:
        from metrics.scene_judge import SceneJudge
        from metrics.toy_judge import ImageJudge

        pipe = Pipeline.from_pretrained(args.model, device=device, local_files_only=not args.download)
        judge = ImageJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-image", device=device)
        scene = SceneJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-scene", device=device)
    if video and prompts is not None:  # a caption the judge cannot read fails before anything runs
        from gen.evaluate import video_targets

        video_targets(prompts, judge)
    bar = tqdm(total=args.n, unit="clip" if video else "image", file=sys.stderr, disable=args.json)
    progress = lambda done: bar.update(done - bar.n)  # noqa: E731
    try:  # the bar starts once everything is loaded: an error before it is the only line
        if video:
            report, samples = evaluate_video(pipe, judge, image_judge, n=args.n, steps=args.steps,
                                             sampler=args.sampler, cfg=args.cfg, seed=seed, progress=progress,
                                             prompts=prompts, init_frames=args.init_frames,
                                             frame_cfg=args.frame_cfg)
        else:
            report, samples = evaluate_image(pipe, judge, n=args.n, prompts=prompts, steps=args.steps,
                                             sampler=args.sampler, cfg=args.cfg, seed=seed, scene_judge=scene,
                                             progress=progress)
            if clip is not None:
                from gen.evaluate import clip_scores

                report["clip_score"] = clip_scores(clip, samples, report["prompts"])
            else:
                report["clip_score"] = {"value": None, "note": clip_note}
    finally:
        bar.close()
    report["model"] = args.model
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))  # ours alone
    try:
        (tmp / "samples").mkdir()
        if video:
            for i, frames in enumerate(clips_to_uint8(samples)):
                write_video(tmp / "samples" / f"{i:04d}.gif", frames, report["fps"])
        else:
            for i, image in enumerate(to_uint8(samples)):
                write_png(tmp / "samples" / f"{i:04d}.png", image)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(markdown_report(args.target, report))
        if out.exists():
            out.rmdir()  # empty (checked under the lock)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = {k: v for k, v in report.items() if k not in ("per_clip", "per_image")}
    if args.json:
        print(json.dumps({**summary, "out": str(out)}))
    else:
        print(markdown_report(args.target, report), end="")
        print(f"samples and report: {out}")
    return 0


def _load_clip(args, device):
    """(the CLIP for CLIPScore, None) when its weights are here, else (None, why not)."""
    from metrics.clip_score import load_open_clip
    from metrics.weights import WeightsNotFoundError

    if args.clip == "none":
        return None, "skipped (--clip none)"
    try:
        return load_open_clip(args.clip, device=device), None
    except (WeightsNotFoundError, FileNotFoundError) as err:
        return None, f"no CLIP weights on this machine ({str(err).splitlines()[0]})"
    except ValueError as err:
        raise GenError(f"--clip {args.clip}: {err}") from None


def markdown_report(target: str, r: dict) -> str:
    """The report as a Markdown table (accuracy per attribute, generated vs renders) and the scores."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    keys = (("object", "color", "motion", "all") if target == "video"
            else ("object", "color", "hat", "hat_color", "count", "relation", "all"))
    g, c = r.get("generated", {}), r["renders"]
    floor = r.get("static_frame0")  # video: the renders' frame 0 held still
    lines = [f"# gen eval {target}: {r.get('model', '')}", "",
             f"{r['n']} samples, {r['sampler']} {r['steps']} steps, cfg {r['cfg']}, toy-world seed {r['seed']}", "",
             "| attribute | generated | renders (judge ceiling) |" + (" frame 0 held (floor) |" if floor else ""),
             "| --- | ---: | ---: |" + (" ---: |" if floor else "")]
    lines += [f"| {k} | {pct(g.get(k))} | {pct(c.get(k))} |" + (f" {pct(floor.get(k))} |" if floor else "")
              for k in keys]
    lines.append("")
    if target == "video":
        lines += ["- motion accuracy by the motion asked: " + ", ".join(
            f"{m} {pct(v['accuracy'])} (n={v['n']})" for m, v in r["motion_accuracy_by_kind"].items())]
        if r.get("motion_confusion"):
            lines += ["- motion asked -> judged: " + "; ".join(
                f"{m}: " + ", ".join(f"{j} {k}" for j, k in sorted(row.items(), key=lambda kv: -kv[1]))
                for m, row in r["motion_confusion"].items())]
        lines += [f"- toy FVD: {r['toy_fvd']:.3f}",
                  f"- frame consistency: generated {r['frame_consistency']['generated']:.4f}, "
                  f"renders {r['frame_consistency']['renders']:.4f}",
                  f"- flicker: generated {r['flicker']['generated']:.4f}, renders {r['flicker']['renders']:.4f}"]
    else:
        lines += [f"- toy FID: {r['toy_fid']:.3f}",
                  f"- toy KID: {r['toy_kid']['mean']:.5f} +- {r['toy_kid']['std']:.5f}"]
        clip = r.get("clip_score") or {}
        lines.append(f"- CLIPScore ({clip['model']}, {clip['reduction']}): {clip['value']:.3f}" if clip.get("value")
                     is not None else f"- CLIPScore: {clip.get('note', 'not measured')}")
        if r.get("prompts_unread"):
            lines.append(f"- {r['prompts_unread']} prompts no judge can read (scored for FID/KID only)")
    return "\n".join(lines) + "\n"


def _data_seed(args) -> int:
    given = any(a == "--seed" or a.startswith("--seed=") for a in getattr(args, "argv", []))
    return args.seed if given else EVAL_SEED
