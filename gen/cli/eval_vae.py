"""`gen eval vae`: how well an autoencoder reconstructs fresh toy-world images (or clips).

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

import math
import time

from gen.errors import GenError

EVAL_SEED = 4242  # toy-world seed of the evaluation data: never the training data's (seed 0)
JUDGED_KINDS = ("single", "wearing")
JUDGE_ATTRIBUTES = ("object", "color", "hat", "hat_color", "all")


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
