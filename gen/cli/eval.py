"""`gen eval image|video|vae|judge`: measure models on fresh toy-world data.

    gen eval image [--model NAME|PATH] [--prompts FILE] [--n 200] [--steps S] [--json] [--out DIR]
    gen eval video [--model NAME|PATH] [--n 200] [--steps S] [--json] [--out DIR]

image / video: generate N samples (prompts from FILE, or fresh toy-grammar captions), then
report the toy judges' attribute accuracy (GenEval-style: a sample is right when every
attribute its prompt names is right), toy FID / KID (image) or toy FVD, frame consistency
and flicker (video) against fresh renders; the samples, `report.json` and `report.md` go
to a new folder (see gen/evaluate.py).

`gen eval vae`: how well an autoencoder reconstructs fresh toy-world images (or clips).

    gen eval vae                              # the shipped VAE (gen/weights/toy-vae)
    gen eval vae --model runs/vae-1 --n 500 --size 64 --json
    gen eval vae --video --model runs/video-vae

It encodes and decodes N fresh toy images (toy-world seed 4242 unless --seed is given:
never a training image, those use seed 0) and reports

- PSNR per image (mean and 5th percentile: the worst reconstructions), in dB;
- LPIPS (AlexNet) when torchvision's AlexNet weights are in the torch hub cache;
- the shipped toy judge's attribute accuracy (object, colour, hat) on the reconstructions
  and on the originals, and the difference in points: what the autoencoder loses that a
  generator built on it can never get back. Judged: the single-object and wearing scenes
  (their captions say exactly what to look for).

With --video the same on clips (PSNR per clip; LPIPS and the judge frame by frame).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from gen.cli import args as types
from gen.errors import GenError

TARGETS = ("image", "video", "vae", "judge", "sr")
EVAL_SEED = 4242  # toy-world seed of the evaluation data: never the training data's (seed 0)
JUDGED_KINDS = ("single", "wearing")
JUDGE_ATTRIBUTES = ("object", "color", "hat", "hat_color", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", default=None, help="what to evaluate: image, video, vae, judge, sr")
    parser.add_argument("--model", default="default",
                        help="shipped name (default: toy-vae) or a checkpoint folder (config.json + "
                             "model.safetensors), or a pipeline folder with a vae part")
    parser.add_argument("--n", type=int, default=200, help="how many fresh toy images or clips (default 200)")
    parser.add_argument("--size", type=types.pixels, default=None,
                        help="side in pixels, a multiple of the VAE factor (default 64 for images, as the "
                             "shipped VAE was trained; 32 for clips)")
    parser.add_argument("--frames", type=types.frames, default=None,
                        help="--video: frames per clip, 1 + k * the temporal factor (default: k = 2)")
    parser.add_argument("--batch", type=types.integer(1, 4096), default=32,
                        help="images (clips) per encode/decode call")
    parser.add_argument("--video", action="store_true", help="evaluate a video VAE on toy clips")
    parser.add_argument("--prompts", metavar="FILE", help="image: prompts, one per line (default: fresh "
                                                            "toy-grammar captions)")
    parser.add_argument("--steps", type=int, default=None, help="image/video: sampling steps (default: the model's)")
    parser.add_argument("--sampler", default=None, help="image/video: sampler (default: the model's)")
    parser.add_argument("--cfg", type=float, default=None, help="image/video: guidance scale (default: the model's)")
    parser.add_argument("--clip", default="ViT-B-32",
                        help="image: open_clip model (name or hub-layout folder) for CLIPScore, used when its "
                             "weights are on this machine; none: skip")
    parser.add_argument("--out", help="image/video: new folder for the samples and the report "
                                      "(default: eval-<target>-<model>, here)")
    parser.add_argument("--sr-noise", type=types.number(0, 1), default=None,
                        help="sr: augmentation level of the stage's input, 0-1 (default: the stage's)")
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
    if args.target in ("image", "video"):
        return evaluate_model(args)
    if args.target == "sr":
        return evaluate_stage(args)
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
    from gen.pipeline import shipped_models
    from gen.runtime import resolve_device
    from gen.pipeline.superres import SuperResolution, evaluate_sr

    if args.model == "default" and "default" not in shipped_models("sr"):
        raise GenError("no super-resolution stage ships with this gen yet; pass --model RUN/pipeline "
                       "(gen train sr)")
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
    prompts = None
    if args.prompts:
        if video:
            raise GenError("gen eval video draws its prompts from the toy clip grammar (the renders of the same "
                           "captions are its reference); --prompts is for gen eval image")
        file = Path(args.prompts)
        if not file.is_file():
            raise GenError(f"--prompts {file} does not exist")
        from gen.errors import reading

        with reading(file, "--prompts", "give a UTF-8 text file, one prompt per line"):
            prompts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise GenError(f"--prompts {file} holds no prompts (one per line)")
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
    bar = tqdm(total=args.n, unit="clip" if video else "image", file=sys.stderr, disable=args.json)
    progress = lambda done: bar.update(done - bar.n)  # noqa: E731
    try:  # the bar starts once everything is loaded: an error before it is the only line
        if video:
            report, samples = evaluate_video(pipe, judge, image_judge, n=args.n, steps=args.steps,
                                             sampler=args.sampler, cfg=args.cfg, seed=seed, progress=progress)
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
    lines = [f"# gen eval {target}: {r.get('model', '')}", "",
             f"{r['n']} samples, {r['sampler']} {r['steps']} steps, cfg {r['cfg']}, toy-world seed {r['seed']}", "",
             "| attribute | generated | renders (judge ceiling) |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {pct(g.get(k))} | {pct(c.get(k))} |" for k in keys]
    lines.append("")
    if target == "video":
        lines += ["- motion accuracy by the motion asked: " + ", ".join(
            f"{m} {pct(v['accuracy'])} (n={v['n']})" for m, v in r["motion_accuracy_by_kind"].items())]
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


# ---------------------------------------------------------------------------- loading


def load_vae(model: str, video: bool, device):
    import models

    from gen.errors import reading
    from gen.pipeline import resolve_vae

    path = resolve_vae(model, video)
    with reading(path / "config.json", "--model"):
        cls = models.read_config(path).get("_class")
    want = "VideoVAE" if video else "ImageVAE"
    if cls != want:
        hint = " (drop --video)" if cls == "ImageVAE" else " (add --video)" if cls == "VideoVAE" else ""
        raise GenError(f"--model {model}: {path} holds a {cls}, not the {want} this evaluation needs{hint}")
    with reading(path, "--model"):
        return path, models.load_pretrained(path, device=device).eval()


# ---------------------------------------------------------------------------- data


def _toy_images(n: int, size: int, seed: int):
    """(pixels (n, 3, S, S) in [-1, 1], judge targets {index: target}) of fresh toy images."""
    import numpy as np
    import torch

    from gen.toyworld import COLORS, OBJECTS, toy_image
    from metrics.toy_judge import parse_caption

    samples = [toy_image(i, size, seed=seed) for i in range(n)]
    pixels = torch.from_numpy(np.stack([s.pixels for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1
    targets = {i: parse_caption(s.caption, OBJECTS, COLORS) for i, s in enumerate(samples)
               if s.attributes["kind"] in JUDGED_KINDS}
    return pixels, targets


def _toy_clips(n: int, size: int, frames: int, seed: int):
    """(pixels (n, 3, T, S, S) in [-1, 1], per-clip targets for the judge, frame by frame)."""
    import numpy as np
    import torch

    from gen.toyworld import toy_clip

    samples = [toy_clip(i, size, frames=frames, fps=8.0, seed=seed) for i in range(n)]
    pixels = torch.from_numpy(np.stack([s.pixels for s in samples])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    targets = {i: {"class": s.attributes["objects"][0]["class"], "color": s.attributes["objects"][0]["color"],
                   "hat": False} for i, s in enumerate(samples) if len(s.attributes["objects"]) == 1}
    return pixels, targets


# ---------------------------------------------------------------------------- evaluation


def evaluate_vae(model: str = "default", n: int = 200, size: int | None = None, video: bool = False,
                 frames: int | None = None, batch: int = 32, seed: int = EVAL_SEED, device="auto") -> dict:
    """Reconstruct n fresh toy images (clips) with the VAE `model`; PSNR, LPIPS, judge accuracy."""
    import torch

    from gen.pipeline import WEIGHTS_DIR
    from gen.runtime import resolve_device
    from metrics.reconstruction import alexnet_weights_path, lpips, lpips_network, psnr_over_batches, summarize_psnr
    from metrics.toy_judge import ImageJudge, judge_prompts

    if not 1 <= n <= 100_000:
        raise GenError(f"--n must be between 1 and 100000, got {n}")
    if not 1 <= batch <= 4096:
        raise GenError(f"--batch must be between 1 and 4096, got {batch}")
    if size is not None and size < 1:
        raise GenError(f"--size must be a positive number of pixels, got {size}")
    device = resolve_device(device)
    path, vae = load_vae(model, video, device)
    factor = vae.scale_factor  # pixels per latent along each side
    size = (32 if video else 64) if size is None else size
    if size % factor:
        lower, upper = size - size % factor, size - size % factor + factor
        raise GenError(f"--size {size} is not divisible by the VAE factor {factor}; use a multiple of "
                       f"{factor} (e.g. {lower or upper} or {upper})")
    if video:
        tf = _temporal_factor(vae)
        frames = 1 + 2 * tf if frames is None else frames
        if frames < 1 or (frames - 1) % tf:
            raise GenError(f"--frames must be 1 + k * {tf} (the video VAE's temporal factor), got {frames}")
        originals, targets = _toy_clips(n, size, frames, seed)
    else:
        if frames is not None:
            raise GenError("--frames is for --video (clips); images have none")
        originals, targets = _toy_images(n, size, seed)

    start = time.perf_counter()
    recons = []
    with torch.no_grad():
        for x in originals.split(batch):
            x = x.to(device)
            recons.append(vae.decode(vae.encode(x)).float().clamp(-1, 1).cpu())
    seconds = time.perf_counter() - start
    recons = torch.cat(recons)

    result = {"model": str(path), "class": type(vae).__name__, "factor": factor,
              "latent_channels": vae.latent_channels, "parameters": vae.num_parameters(),
              "kind": "clips" if video else "images", "n": n, "size": size, "seed": seed,
              "device": str(device), "seconds_per_sample": seconds / n}
    if video:
        result.update(temporal_factor=_temporal_factor(vae), frames=frames)
    pairs = list(zip(originals.split(batch), recons.split(batch)))
    result["psnr"] = summarize_psnr(psnr_over_batches(pairs))

    network = lpips_network(device)
    if network is None:
        result["lpips"] = None
        result["lpips_note"] = f"weights not present ({alexnet_weights_path()})"
    else:
        with torch.no_grad():
            values = torch.cat([lpips(network, a, b).cpu() for a, b in pairs])
        result["lpips"] = {"mean": values.mean().item(), "p95": torch.quantile(values, 0.95).item()}

    judge = ImageJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-image", device=device)
    index = sorted(targets)
    if not index:
        result["judge"] = None
        return result
    pick = lambda x: _frames(x[index]) if video else x[index]  # noqa: E731
    wanted = [targets[i] for i in index for _ in range(frames if video else 1)]
    scores = {name: judge_prompts(judge, pick(x), wanted) for name, x in (("originals", originals),
                                                                           ("reconstructions", recons))}
    result["judge"] = {"n": len(wanted), "kinds": "motion clips, every frame" if video else list(JUDGED_KINDS)}
    for name, report in scores.items():
        result["judge"][name] = {a: report[a] for a in JUDGE_ATTRIBUTES}
    result["judge"]["difference_points"] = {
        a: None if scores["originals"][a] is None else 100 * (scores["reconstructions"][a] - scores["originals"][a])
        for a in JUDGE_ATTRIBUTES}
    return result


def _frames(clips):
    """(B, C, T, H, W) -> (B*T, C, H, W), clip-major."""
    return clips.transpose(1, 2).flatten(0, 1)


def _temporal_factor(vae) -> int:
    for owner in (vae, vae.config):
        tf = getattr(owner, "temporal_factor", None)
        if isinstance(tf, int) and tf >= 1:
            return tf
    raise GenError(f"{type(vae).__name__} states no temporal_factor: cannot choose the clip length")


# ---------------------------------------------------------------------------- output


def _finite(value):
    """The report with non-finite floats (PSNR of an exact reconstruction) as null: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def format_report(r: dict) -> str:
    what = f"{r['n']} fresh toy {r['kind']} at {r['size']}x{r['size']}" + (
        f", {r['frames']} frames" if "frames" in r else "")
    factor = f"{r['factor']} ({r['temporal_factor']} in time)" if "temporal_factor" in r else r["factor"]
    lines = [f"{r['class']} {r['model']}: factor {factor}, {r['latent_channels']} latent channels, "
             f"{r['parameters'] / 1e6:.2f}M parameters",
             f"{what} (toy-world seed {r['seed']}), {r['device']}, "
             f"{1000 * r['seconds_per_sample']:.1f} ms per {r['kind'][:-1]} (encode + decode)",
             f"PSNR: mean {r['psnr']['mean']:.2f} dB, 5th percentile {r['psnr']['p5']:.2f} dB "
             f"(worst {r['psnr']['min']:.2f} dB)"]
    if r["lpips"] is None:
        lines.append(f"LPIPS: {r['lpips_note']}")
    else:
        lines.append(f"LPIPS (AlexNet): mean {r['lpips']['mean']:.4f}, 95th percentile {r['lpips']['p95']:.4f}")
    j = r["judge"]
    if j is None:
        lines.append("Toy judge: no judgeable samples among these")
        return "\n".join(lines)
    kinds = j["kinds"] if isinstance(j["kinds"], str) else "/".join(j["kinds"]) + " images"
    lines.append(f"Toy judge accuracy on {j['n']} {kinds}:")
    lines.append(f"  {'attribute':<10}{'originals':>11}{'reconstructed':>15}{'difference':>12}")
    for a in JUDGE_ATTRIBUTES:
        o, c, d = j["originals"][a], j["reconstructions"][a], j["difference_points"][a]
        if o is None:
            continue
        lines.append(f"  {a:<10}{100 * o:>10.1f}%{100 * c:>14.1f}%{d:>+8.1f} pts")
    return "\n".join(lines)
