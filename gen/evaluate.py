"""Evaluate a text-to-video model on the toy world: prompt accuracy, toy FVD, temporal
consistency (what `gen eval video` and `scripts/eval_toy_video.py` report).

    from gen.evaluate import evaluate_video
    report, clips = evaluate_video(pipe, video_judge, image_judge, n=200)

Prompts are fresh captions of the toy clip grammar (toy-world seed `EVAL_SEED`, never a
training seed), each drawn once at the pipeline's settings (clip i from noise seed i).
The toy world renders the same captions' own clips at the model's size, frame count and
frame rate; they give the judge's ceiling and the reference set for toy FVD.

- accuracy: the video judge's object / colour (where named) / motion, and all three,
  GenEval-style: a clip is right when everything its prompt names is right;
- toy FVD: Frechet distance between the video judge's pooled features of the generated
  clips and of the renders (float64; n should exceed the feature dimension);
- temporal consistency: mean cosine of consecutive frames' image-judge features, and
  flicker (mean absolute frame-to-frame change), for the generated clips and the renders.

`evaluate_image` does the same for text-to-image models (attribute accuracy, toy FID and
KID), and `evaluate_sr` for super-resolution stages (PSNR, SSIM and edge energy against
the true renders, beside bicubic).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from gen.errors import GenError

EVAL_SEED = 999  # toy-world seed of evaluation prompts: never a training seed (0)


def clip_prompts(n: int, size: int, frames: int, fps: float, seed: int = EVAL_SEED):
    """(captions, renders uint8 (n, T, H, W, 3)) of toy clips 0..n-1 of `seed`."""
    from gen.toyworld import toy_clip

    samples = [toy_clip(i, size=size, frames=frames, fps=fps, seed=seed) for i in range(n)]
    return [s.caption for s in samples], np.stack([s.pixels for s in samples])


def to_clips(frames: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def generate(pipe, prompts: list[str], steps, sampler, cfg, batch: int, progress=None,
             init: torch.Tensor | None = None, **video) -> tuple[torch.Tensor, float]:
    """(samples on the CPU, seconds): prompt i drawn from noise seed i, `batch` prompts per call;
    `init` (video): frame 0 of clip i is init[i]; `video`: more video settings (frame_cfg)."""
    start = time.perf_counter()
    chunks = []
    for i in range(0, len(prompts), batch):
        seeds = list(range(i, min(i + batch, len(prompts))))
        first = {} if init is None else {"init_image": init[i:i + batch]}
        chunks.append(pipe.generate(prompts[i:i + batch], seeds, steps=steps, sampler=sampler, cfg=cfg,
                                    **first, **video).float().cpu())
        if progress is not None:
            progress(seeds[-1] + 1)
    return torch.cat(chunks), time.perf_counter() - start


def video_targets(prompts: list[str], judge) -> list[dict]:
    """What each toy clip caption asks the video judge for; a GenError for one it cannot read."""
    from metrics.video_judge import parse_motion_caption

    cfg_, targets = judge.config, []
    for p in prompts:
        try:
            targets.append(parse_motion_caption(p, cfg_.classes, cfg_.colors, cfg_.motion_words))
        except ValueError as err:
            raise GenError(f"{err} (gen eval video judges toy clip captions, e.g. 'a red ball rolling left')") \
                from None
    return targets


def evaluate_video(pipe, judge, image_judge, n: int = 200, steps=None, sampler=None, cfg=None,
                   batch: int = 16, seed: int = EVAL_SEED, progress=None,
                   prompts: list[str] | None = None, init_frames: bool = False,
                   frame_cfg: float = 1.0) -> tuple[dict, torch.Tensor]:
    """Generate n clips for fresh toy prompts (or `prompts`, toy clip captions, cycled to n)
    and score them (see the module docstring): the judge's accuracy, per motion and as a
    confusion matrix (asked -> judged), beside the renders of n fresh captions (the ceiling)
    and those renders' frame 0 held still (the floor a clip that does not move gets).
    `init_frames`: frame 0 of each clip is its caption's render (`init_image`), which
    measures animation alone; `frame_cfg`, the video model's guidance on frame 0.
    Returns (report, clips (n, 3, T, H, W) in [-1, 1] on the CPU)."""
    from metrics.stats import feature_stats, frechet_distance
    from metrics.temporal import temporal_consistency, temporal_flicker
    from metrics.video_judge import judge_clips, parse_motion_caption

    d = pipe.defaults
    frames, fps, size = d.frames, d.fps, d.size
    fresh, renders = clip_prompts(n, size, frames, fps, seed)
    if prompts is not None and init_frames:
        raise GenError("--init-frames starts each clip from its caption's render: it takes the fresh captions, "
                       "not --prompts")
    prompts = fresh if prompts is None else [prompts[i % len(prompts)] for i in range(n)]
    cfg_ = judge.config
    targets = video_targets(prompts, judge)
    fresh_targets = [parse_motion_caption(p, cfg_.classes, cfg_.colors, cfg_.motion_words) for p in fresh]
    real = to_clips(renders)
    clips, seconds = generate(pipe, prompts, steps, sampler, cfg, batch, progress,
                              init=real[:, :, 0] if init_frames else None, frame_cfg=frame_cfg)
    device = next(judge.parameters()).device

    def scores(x, asked=targets):
        report = judge_clips(judge, x, asked)
        return {k: v for k, v in report.items() if k != "per_clip"}, report["per_clip"]

    def judge_features(x):
        with torch.no_grad():
            return torch.cat([judge.eval().features(c.to(device)).float().cpu() for c in x.split(64)])

    def encode(frames_):
        with torch.no_grad():
            return image_judge.eval().features(frames_.to(device)).float().cpu()

    generated, per_clip = scores(clips)
    asked: dict[str, list[bool]] = {}
    for target, row in zip(targets, per_clip):
        asked.setdefault(target["motion"], []).append(row["correct"]["motion"])
    by_motion = {m: {"accuracy": sum(v) / len(v), "n": len(v)} for m, v in sorted(asked.items())}
    confusion: dict[str, dict[str, int]] = {}
    for target, row in zip(targets, per_clip):
        judged = confusion.setdefault(target["motion"], {})
        judged[row["prediction"]["motion"]] = judged.get(row["prediction"]["motion"], 0) + 1
    ceiling, _ = scores(real, fresh_targets)
    static, _ = scores(real[:, :, :1].expand_as(real).contiguous(), fresh_targets)
    fvd = frechet_distance(*feature_stats(judge_features(clips).double()),
                           *feature_stats(judge_features(real).double()))
    consistency = {"generated": temporal_consistency(clips, encode).mean().item(),
                   "renders": temporal_consistency(real, encode).mean().item()}
    flicker = {"generated": temporal_flicker(clips).mean().item(), "renders": temporal_flicker(real).mean().item()}
    report = {"n": n, "seed": seed, "size": size, "frames": frames, "fps": fps, "init_frames": init_frames,
              "steps": steps or d.steps, "sampler": sampler or d.sampler, "cfg": d.cfg if cfg is None else cfg,
              "frame_cfg": frame_cfg,
              "generated": generated, "renders": ceiling, "static_frame0": static,
              "motion_accuracy_by_kind": by_motion, "motion_confusion": confusion, "toy_fvd": fvd,
              "frame_consistency": consistency, "flicker": flicker, "seconds_per_clip": seconds / n,
              "per_clip": [{"prompt": p, **row} for p, row in zip(prompts, per_clip)]}
    return report, clips


IMAGE_KINDS = ("single", "wearing", "relation", "count")


def image_prompts(n: int, size: int, seed: int = EVAL_SEED, kinds: tuple[str, ...] = IMAGE_KINDS):
    """(captions, renders uint8 (n, H, W, 3)): toy images 0..n-1 of `seed`, the scene kinds
    in turn (single objects, wearers in hats, relations, counts)."""
    from gen.toyworld import toy_image

    samples = [toy_image(i, size, seed=seed, kind=kinds[i % len(kinds)]) for i in range(n)]
    return [s.caption for s in samples], np.stack([s.pixels for s in samples])


def to_images(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


def prompt_targets(prompts: list[str], judge, scene_judge=None) -> list[tuple[str, dict] | None]:
    """Per prompt: ("image", target) for a single / wearing caption (the image judge reads it),
    ("scene", target) for a relation / count caption (the scene judge), or None."""
    from metrics.scene_judge import parse_scene_caption
    from metrics.toy_judge import parse_caption

    plurals, phrases = scene_grammar()
    out = []
    for p in prompts:  # relation / count first: "three fish" also reads as one fish
        try:
            target = parse_scene_caption(p, judge.classes, judge.colors, plurals, phrases)
            out.append(("scene", target) if scene_judge is not None else None)
            continue
        except ValueError:
            pass
        try:
            out.append(("image", parse_caption(p, judge.classes, judge.colors)))
        except ValueError:
            out.append(None)
    return out


def judge_images(images: torch.Tensor, targets: list, judge, scene_judge=None) -> tuple[dict, list]:
    """GenEval-style accuracy of images against `prompt_targets`: per attribute kind (object,
    color, hat, hat_color from the image judge; count, relation from the scene judge) and
    "all" (every attribute a prompt names right), over the prompts a judge can read."""
    from metrics.scene_judge import judge_scenes
    from metrics.toy_judge import judge_prompts

    rows: list = [None] * len(targets)
    report: dict = {"n": {}}
    for who, run, judge_ in (("image", judge_prompts, judge), ("scene", judge_scenes, scene_judge)):
        picked = [i for i, t in enumerate(targets) if t is not None and t[0] == who]
        if not picked:
            continue
        result = run(judge_, images[picked], [targets[i][1] for i in picked])
        keys = ("object", "color", "hat", "hat_color") if who == "image" else ("count", "relation")
        for k in keys:
            report[k], report["n"][k] = result[k], result["n"][k]
        for i, row in zip(picked, result["per_image"]):
            rows[i] = row
    scored = [row["correct"]["all"] for row in rows if row is not None]
    report["all"], report["n"]["all"] = (sum(scored) / len(scored) if scored else None), len(scored)
    return report, rows


def evaluate_image(pipe, judge, n: int = 200, prompts: list[str] | None = None, steps=None, sampler=None,
                   cfg=None, batch: int = 25, seed: int = EVAL_SEED, kid_subsets: int = 100,
                   scene_judge=None, progress=None) -> tuple[dict, torch.Tensor]:
    """Generate n images and score them: GenEval-style attribute accuracy (the image judge for
    single objects and wearers, the scene judge, when given, for relations and counts), toy
    FID and KID in the image judge's feature space against n fresh renders.

    Prompts: `prompts` (cycled to n; those no judge can read count for FID/KID only) or fresh
    toy captions of every scene kind in turn. Returns (report, images (n, 3, H, W) in [-1, 1]
    on the CPU)."""
    from metrics.kid import kernel_inception_distance
    from metrics.stats import feature_stats, frechet_distance

    d = pipe.defaults
    size = d.size
    kinds = IMAGE_KINDS if scene_judge is not None else IMAGE_KINDS[:2]
    fresh, renders = image_prompts(n, size, seed, kinds)
    prompts = fresh if prompts is None else [prompts[i % len(prompts)] for i in range(n)]
    targets = prompt_targets(prompts, judge, scene_judge)
    samples, seconds = generate(pipe, prompts, steps, sampler, cfg, batch, progress)
    images, real = samples, to_images(renders)
    device = next(judge.parameters()).device

    def features(x):
        with torch.no_grad():
            return torch.cat([judge.eval().features(c.to(device)).float().cpu() for c in x.split(256)]).double()

    generated, rows = judge_images(images, targets, judge, scene_judge)
    ceiling, _ = judge_images(real, prompt_targets(fresh, judge, scene_judge), judge, scene_judge)
    unread = sum(t is None for t in targets)
    report = {"n": n, "seed": seed, "size": size, "steps": steps or d.steps, "sampler": sampler or d.sampler,
              "cfg": d.cfg if cfg is None else cfg, "prompts_judged": n - unread, "prompts_unread": unread,
              "generated": generated, "renders": ceiling, "prompts": prompts,
              "per_image": [{"prompt": p, **row} for p, row in zip(prompts, rows) if row is not None]}
    fake_f, real_f = features(images), features(real)
    report["toy_fid"] = frechet_distance(*feature_stats(fake_f), *feature_stats(real_f))
    kid = kernel_inception_distance(real_f, fake_f, subsets=kid_subsets, subset_size=min(1000, n))
    report["toy_kid"] = {"mean": kid.mean, "std": kid.std}
    report["seconds_per_image"] = seconds / n
    return report, images


def scene_grammar() -> tuple[dict[str, str], dict[str, str]]:
    """(plural noun -> class, relation phrase -> relation or "next to") of the toy caption
    grammar, for metrics.scene_judge.parse_scene_caption."""
    from gen.toyworld.captions import RELATION_WORDS, SIDE_BY_SIDE
    from gen.toyworld.shapes import DRAWINGS

    plurals = {d.plural: name for name, d in DRAWINGS.items()}
    phrases = {words: relation for relation, options in RELATION_WORDS.items() for words in options}
    phrases.update({words: "next to" for words in SIDE_BY_SIDE})
    return plurals, phrases


def clip_scores(clip, images: torch.Tensor, prompts: list[str], batch: int = 64) -> dict:
    """CLIPScore of images (B, 3, H, W) in [-1, 1] against their prompts with an open_clip
    model (metrics.clip_score.CLIPEmbedder): torchmetrics' reduction, per-sample cosines."""
    from PIL import Image

    from gen.pipeline import to_uint8
    from metrics.clip_score import clip_score

    pixels = to_uint8(images)
    embeds = []
    for i in range(0, len(pixels), batch):
        x = torch.stack([clip.preprocess(Image.fromarray(a)) for a in pixels[i:i + batch]])
        embeds.append(clip.image_embeds(x).cpu())
    texts = torch.cat([clip.text_embeds(prompts[i:i + batch]).cpu() for i in range(0, len(prompts), batch)])
    result = clip_score(torch.cat(embeds), texts, reduction="torchmetrics")
    return {"value": result.score, "reduction": result.reduction, "model": clip.name,
            "cosine_mean": result.cosine.mean().item(), "protocol": clip.protocol}


# ---------------------------------------------------------------------------- super-resolution


def edge_energy(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute horizontal and vertical difference of neighbouring pixels, per image."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return (dx + dy) / 2


def reconstruction_scores(images: torch.Tensor, truth: torch.Tensor) -> dict:
    """PSNR (dB, mean over images) and SSIM (mean) on [0, 1] pixels, and edge energy
    relative to the truth's (ratio of the means), for images in [-1, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    a, b = (images.double() + 1) / 2, (truth.double() + 1) / 2
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = torch.cat([structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")  # (B,) per chunk:
                      for x, y in zip(a.split(32), b.split(32))])  # at once, 500 images at 128 take ~40 GB
    return {"psnr": psnr.mean().item(), "ssim": ssim.mean().item(),
            "edge_energy": (edge_energy(a).mean() / edge_energy(b).mean()).item()}


def evaluate_interpolation(pipe, judge, n: int = 200, frames: int = 16, fps: float = 8.0, seed: int = EVAL_SEED,
                           batch: int = 16, steps: int | None = None, sampler: str | None = None,
                           cfg: float | None = None, inbetween: str = "model", progress=None) -> dict:
    """Temporal super-resolution alone on n fresh toy renders of `frames` frames at `fps`:
    the even frames (half the rate) go to `pipe.interpolate` (`inbetween`: how it makes the
    frames between given ones, see VideoPipeline.interpolate), and the frames it draws between
    them are compared with the true renders (PSNR, SSIM) beside the linear blend of their
    neighbours (the last frame, which has no later one, beside holding the one before);
    the judge reads motion at both rates."""
    from metrics.video_judge import judge_clips, parse_motion_caption

    if frames % 2 or frames < 4:
        raise GenError(f"--frames must be even and at least 4 (half of them given), got {frames}")
    prompts, renders = clip_prompts(n, pipe.defaults.size, frames, fps, seed)
    truth = to_clips(renders)  # (n, 3, T, H, W)
    low = truth[:, :, 0::2]
    start, outs = time.perf_counter(), []
    for i in range(0, n, batch):
        outs.append(pipe.interpolate(prompts[i:i + batch], low[i:i + batch], list(range(i, min(i + batch, n))),
                                     steps=steps, sampler=sampler, cfg=cfg, inbetween=inbetween).float().cpu())
        if progress is not None:
            progress(min(i + batch, n))
    seconds = time.perf_counter() - start
    out = torch.cat(outs)
    blend = truth.clone()
    blend[:, :, 1:-1:2] = (truth[:, :, 0:-2:2] + truth[:, :, 2::2]) / 2
    blend[:, :, -1] = truth[:, :, -2]
    drawn = slice(1, None, 2)

    def frames_of(x):
        return x[:, :, drawn].transpose(1, 2).flatten(0, 1)

    model, linear = (reconstruction_scores(frames_of(x), frames_of(truth)) for x in (out, blend))
    cfg_ = judge.config
    targets = [parse_motion_caption(p, cfg_.classes, cfg_.colors, cfg_.motion_words) for p in prompts]
    scores = {name: {k: v for k, v in judge_clips(judge, x, targets).items() if k != "per_clip"}
              for name, x in (("interpolated", out), ("given", low), ("renders", truth))}
    return {"n": n, "frames": frames, "fps": fps, "given_fps": fps / 2, "seed": seed,
            "steps": steps or pipe.defaults.steps, "sampler": sampler or pipe.defaults.sampler,
            "cfg": pipe.defaults.cfg if cfg is None else cfg, "inbetween": inbetween, "model": model,
            "linear_blend": linear,
            "psnr_gain_db": model["psnr"] - linear["psnr"], "judge": scores, "seconds_per_clip": seconds / n}


def evaluate_sr(stage, n: int = 500, size: int = 128, seed: int = 999, batch: int = 16,
                steps: int | None = None, sr_noise: float | None = None, progress=None) -> dict:
    """The stage on n fresh toy renders at size x size (toy-world `seed`, never a training
    seed), box-downsampled by its scale: PSNR, SSIM and edge energy of its output and of
    bicubic upsampling against the true render (SR3's comparison)."""
    import torch.nn.functional as F

    from gen.pipeline.superres import box_downsample
    from gen.toyworld import toy_image

    scale = stage.defaults.scale
    if size % scale:
        raise GenError(f"--size {size} is not a multiple of the stage's scale {scale}")
    renders = np.stack([toy_image(i, size, seed=seed, kind=IMAGE_KINDS[i % len(IMAGE_KINDS)]).pixels
                        for i in range(n)])
    truth = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 127.5 - 1
    low = box_downsample(truth, scale)
    bicubic = F.interpolate(low, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)
    start, outs = time.perf_counter(), []
    for i in range(0, n, batch):
        outs.append(stage.upscale(low[i:i + batch], list(range(i, min(i + batch, n))), steps=steps,
                                  sr_noise=sr_noise).cpu())
        if progress is not None:
            progress(min(i + batch, n))
    seconds = time.perf_counter() - start
    sr = torch.cat(outs)
    d = stage.defaults
    return {"n": n, "size": size, "seed": seed, "scale": scale, "steps": steps or d.steps,
            "sr_noise": d.sr_noise if sr_noise is None else sr_noise,
            "sr": reconstruction_scores(sr, truth), "bicubic": reconstruction_scores(bicubic, truth),
            "seconds_per_image": seconds / n}
