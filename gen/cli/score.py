"""`gen score`: score folders of images (FID, KID, IS, LPIPS, CLIPScore) or clips (FVD), and cache
reference statistics.

    gen score fid --real DIR|STATS.npz --fake DIR [--features toy|inception|PATH] [--save-stats FILE.npz]
    gen score kid --real DIR|STATS.npz --fake DIR [--subsets 100 --subset-size 1000]
    gen score is --fake DIR                            # Inception Score (needs the Inception weights)
    gen score lpips A B [--weights PATH]               # mean LPIPS of same-named images (AlexNet weights)
    gen score clip --fake DIR [--prompts FILE] [--model ViT-B-32|FOLDER] [--weights PATH] [--reduction R]
    gen score stats DIR --out FILE.npz [--features ...] # a folder's features and moments, for --real
    gen score fvd --real DIR --fake DIR [--features toy|i3d|PATH] [--frames 16]   # folders of clips

Feature spaces (fid, kid, stats): `toy` (default), the shipped toy-world judge's pooled features,
always available; `inception`, the FID Inception under the pytorch-fid protocol, found through
metrics.weights (or a file path, used as given). A stats file records its feature space, protocol,
weights digest, n and d, and is only ever compared with the same space. Images are decoded and
resized on `--workers` threads; each space resizes by its protocol's rule (said once when sizes
differ). `--json` prints one JSON object: metric, value, n, the feature space and protocol.

Each metric is one function `(args, session) -> dict` registered with `@metric(name)`; reading
folders, feature spaces and stats files live in gen/scoring.py.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from gen.cli import args as types
from gen.errors import GenError
from gen.scoring import (FeatureSpace, Reference, Session, check_stats_target, feature_space, folder_features,
                         image_folder, load_stats, measure, moments, read_image, save_stats, stream)

METRICS: dict[str, Callable] = {}  # name -> fn(args, session) -> result dict


def metric(name: str):
    """Register `fn(args, session) -> dict` as `gen score NAME`."""
    def register(fn):
        METRICS[name] = fn
        return fn
    return register


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metric", metavar="METRIC",  # METRICS is filled by the @metric functions below at import
                        help=f"one of {', '.join(METRICS)}")
    parser.add_argument("pair", nargs="*", metavar="FOLDER", help="lpips: the two folders; stats: the folder")
    parser.add_argument("--real", help="folder of real (reference) images, or a stats .npz from `gen score stats`")
    parser.add_argument("--fake", help="folder of generated images")
    parser.add_argument("--features", default="toy",
                        help="toy (default), inception or a FID Inception weights file; fvd: toy, i3d or a "
                             "converted I3D weights file")
    parser.add_argument("--frames", type=types.frames, default=None,
                        help="fvd: frames read from the start of each clip (default 16 for i3d, whole clips for toy)")
    parser.add_argument("--save-stats", metavar="FILE.npz", help="fid/kid: also save the --real folder's statistics")
    parser.add_argument("--out", metavar="FILE.npz", help="stats: where to write the statistics")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing stats file")
    parser.add_argument("--prompts", metavar="FILE", help="clip: one prompt per line, for the images sorted by name")
    parser.add_argument("--model", default="ViT-B-32", help="clip: open_clip model name or model folder")
    parser.add_argument("--weights", help="clip, lpips: the weights file to use (taken as given, not hash-checked)")
    parser.add_argument("--net", default="alex", choices=("alex", "vgg"), help="lpips: the backbone (default alex)")
    parser.add_argument("--reduction", default="torchmetrics", choices=("torchmetrics", "hessel", "hessel2021"),
                        help="clip: max(100 mean cos, 0) (torchmetrics) or mean 2.5 max(cos, 0) (Hessel et al.)")
    parser.add_argument("--batch", type=types.integer(1, 4096), default=64, help="images per batch (default 64)")
    parser.add_argument("--workers", type=types.integer(1, 64), default=min(8, os.cpu_count() or 1),
                        help="threads decoding and resizing images")
    parser.add_argument("--subsets", type=types.integer(1, 100_000), default=100, help="kid: number of random subsets")
    parser.add_argument("--subset-size", type=types.integer(2, 1_000_000), default=1000,
                        help="kid: samples per subset (capped at n)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _reference(args, space: FeatureSpace, session: Session) -> Reference:
    """--real as a folder (features computed, saved with --save-stats) or as a stats file."""
    if args.real and Path(args.real).suffix == ".npz":
        if args.save_stats:
            raise GenError("--save-stats saves the --real folder's statistics, but --real is already a stats file")
        return load_stats(args.real, space)
    if not args.save_stats:
        return measure(args.real, "--real", space, session)
    target = check_stats_target(args.save_stats, args.overwrite)
    with stats_lock(target):
        check_stats_target(args.save_stats, args.overwrite)  # again under the lock
        ref = measure(args.real, "--real", space, session)
        save_stats(target, ref, space)
    return ref


def stats_lock(target: Path):
    """The lock on a stats file about to be written (its folder made first)."""
    from gen.lock import output_lock

    target.parent.mkdir(parents=True, exist_ok=True)
    return output_lock(target, beside=True)


def _say_bias(session: Session, n: dict, d: int) -> None:
    """One warning when a set has no more samples than dimensions (stats.py's warning, said once)."""
    if min(n.values()) <= d:
        counts = ", ".join(f"{k}={v}" for k, v in n.items())
        session.warn("n<=d", f"{counts} samples in d={d} dimensions: n <= d, so the covariance has rank < d and "
                              f"the Frechet distance is strongly biased (upwards); use more than {d} samples per set "
                              "(FID is usually reported at n >= 10,000)")


# ---------------------------------------------------------------------------- the metrics


@metric("fid")
def _fid(args, session: Session) -> dict:
    import metrics

    space = feature_space(args.features, session)
    fake_folder = image_folder(args.fake, "--fake")  # checked before the real side is computed
    real = _reference(args, space, session)
    fake = folder_features(fake_folder, space, session, "fake")
    d = fake.shape[1]
    if real.mu.shape[0] != d:
        raise GenError(f"--real has {real.mu.shape[0]}-d statistics but the fake features are {d}-d")
    _say_bias(session, {"n_real": real.n, "n_fake": len(fake)}, d)
    fid = metrics.frechet_distance(real.mu, real.sigma, *moments(fake))
    return {"value": fid, "fid": fid, "n": len(fake), "n_real": real.n, "dim": d, "features": space.name,
            "protocol": space.protocol}


@metric("kid")
def _kid(args, session: Session) -> dict:
    import metrics

    space = feature_space(args.features, session)
    fake_folder = image_folder(args.fake, "--fake")
    real = _reference(args, space, session)
    if real.features is None:
        raise GenError(f"{real.source} holds moments only; KID needs the features: pass the folder as --real")
    fake = folder_features(fake_folder, space, session, "fake")
    size = min(args.subset_size, real.n, len(fake))
    kid = metrics.kernel_inception_distance(real.features, fake, subsets=args.subsets, subset_size=size,
                                            seed=args.seed)
    return {"value": kid.mean, "kid_mean": kid.mean, "kid_std": kid.std, "n": len(fake), "n_real": real.n,
            "dim": fake.shape[1], "subset_size": size, "subsets": args.subsets, "features": space.name,
            "protocol": space.protocol}


@metric("is")
def _is(args, session: Session) -> dict:
    import metrics

    space = feature_space(args.features if args.features != "toy" else "inception", session, output="logits_unbiased")
    fake = image_folder(args.fake, "--fake")
    logits = folder_features(fake, space, session, "fake")
    score = metrics.inception_score(logits, splits=min(10, len(fake)), seed=args.seed)
    return {"value": score.mean, "mean": score.mean, "std": score.std, "n": len(fake), "features": space.name,
            "protocol": space.protocol}


@metric("lpips")
def _lpips(args, session: Session) -> dict:
    """Mean LPIPS (AlexNet) over images with the same file name in both folders."""
    import torch

    from gen.data.folders import to_model_range
    from metrics.reconstruction import lpips, lpips_network

    if len(args.pair) != 2:
        raise GenError("gen score lpips takes two folders: gen score lpips A B")
    a, b = (image_folder(f, "gen score lpips", least=1) for f in args.pair)
    names_b = {r["file_name"]: i for i, r in enumerate(b.records)}
    pairs = [(i, names_b[r["file_name"]]) for i, r in enumerate(a.records) if r["file_name"] in names_b]
    if not pairs:
        raise GenError(f"{args.pair[0]} and {args.pair[1]} share no file names; LPIPS compares same-named images")
    network = lpips_network(session.device, weights=args.weights, missing_ok=False, net=args.net)

    def load(pair):
        x, y = (to_model_range(read_image(ds, k)) for ds, k in zip((a, b), pair))
        if x.shape != y.shape:
            raise GenError(f"{a.records[pair[0]]['file_name']}: sizes differ between the folders "
                           f"({tuple(x.shape[-2:])} vs {tuple(y.shape[-2:])}); LPIPS compares same-size images")
        return x, y

    values = []
    for chunk in stream(pairs, load, session, "lpips"):
        for shape in dict.fromkeys(x.shape for x, _ in chunk):  # same-size pairs in one batch
            xs, ys = (torch.stack([p[k] for p in chunk if p[0].shape == shape]) for k in (0, 1))
            with torch.no_grad():
                values.append(lpips(network, xs, ys).double().cpu())
    v = torch.cat(values)
    mean, std = v.mean().item(), (v.std().item() if len(v) > 1 else 0.0)
    return {"value": mean, "lpips_mean": mean, "lpips_std": std, "n": len(v), "pairs": len(v),
            "features": f"lpips-{args.net}",
            "protocol": f"torchmetrics LPIPS v0.1 ({'AlexNet' if args.net == 'alex' else 'VGG16'}), sides < 64 upsampled"}


def _prompts(args, ds) -> tuple[list[int], list[str]]:
    """(image order, prompts): --prompts FILE lines for the images sorted by file name, else each image's caption."""
    names = [r["file_name"] for r in ds.records]
    if args.prompts:
        try:
            lines = Path(args.prompts).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise GenError(f"--prompts {args.prompts}: cannot read it as UTF-8 text ({err})") from None
        empty = [k + 1 for k, line in enumerate(lines) if not line.strip()]
        if empty:
            raise GenError(f"--prompts {args.prompts}: line {empty[0]} is empty; give one prompt per line")
        if len(lines) != len(ds):
            raise GenError(f"--prompts {args.prompts} has {len(lines)} prompts but {ds.root} holds {len(ds)} images; "
                           "give one prompt per line, in the sorted order of the image file names")
        return sorted(range(len(ds)), key=names.__getitem__), lines
    texts = [ds.caption(i).strip() for i in range(len(ds))]
    if not all(texts):
        first = names[texts.index("")]
        raise GenError(f"{ds.root}: {first} has no caption (no metadata `{ds.caption_key}`); add captions or pass "
                       "--prompts FILE (one per line, for the images sorted by file name)")
    return list(range(len(ds))), texts


@metric("clip")
def _clip(args, session: Session) -> dict:
    """CLIPScore of each generated image against its prompt, with an open_clip model."""
    import torch
    from PIL import Image

    from metrics.clip_score import clip_score, load_open_clip

    fake = image_folder(args.fake, "--fake", least=1)
    order, prompts = _prompts(args, fake)
    try:
        clip = load_open_clip(args.model, weights=args.weights, device=session.device)
    except (ValueError, FileNotFoundError) as err:
        raise GenError(str(err)) from None
    cut = clip.too_long(prompts)
    if cut:
        session.warn("cut", f"{len(cut)} prompt(s) exceed the model's {clip.context_length}-token context and are "
                            f"cut there (as torchmetrics does), e.g. {prompts[cut[0]][:60]!r}")
    rule = f"resized by {clip.protocol}"

    def load(i):
        a = read_image(fake, i)
        return clip.preprocess(Image.fromarray(a)), a.shape[:2]

    images = []
    for chunk in stream(order, load, session, f"clip {fake.root.name}"):
        for _, size in chunk:
            session.saw(size, fake.root, rule)
        images.append(clip.image_embeds(torch.stack([x for x, _ in chunk])).cpu())
    texts = [clip.text_embeds(prompts[k:k + session.batch]).cpu() for k in range(0, len(prompts), session.batch)]
    reduction = "hessel2021" if args.reduction == "hessel" else args.reduction
    result = clip_score(torch.cat(images), torch.cat(texts), reduction=reduction)
    out = {"value": result.score, "clip_score": result.score, "reduction": result.reduction,
           "cosine_mean": result.cosine.mean().item(), "n": result.n, "features": f"open_clip {clip.name}",
           "protocol": clip.protocol, "weights": str(clip.weights)}
    if args.json:
        out["per_sample"] = [{"file_name": fake.records[i]["file_name"], "prompt": p, "cosine": c}
                             for i, p, c in zip(order, prompts, result.cosine.tolist())]
    return out


def _clip_folder(folder: str | None, flag: str, frames: int | None):
    from gen.data.folders import VideoFolderDataset

    if not folder:
        raise GenError(f"{flag} FOLDER is required (a folder of clips: gif, mp4, ... or frame folders)")
    ds = VideoFolderDataset(folder, frames=frames)
    if len(ds) < 2:
        raise GenError(f"{flag} {folder} holds {len(ds)} clip(s); FVD needs at least 2")
    return ds


def _clip_features(ds, extract: Callable, session: Session, what: str):
    """(N, d) features of every clip of `ds`, read on worker threads, `session.batch` clips at a time."""
    import torch

    out, length = [], None
    for chunk in stream(range(len(ds)), lambda i: ds[i]["video"], session, f"{what} {ds.root.name}"):
        for clip in chunk:
            if length is None:
                length = clip.shape[1]
            elif clip.shape[1] != length:
                raise GenError(f"clips in {ds.root} have different lengths ({length} and {clip.shape[1]} frames); "
                               "pass --frames N to read the first N of each")
        with torch.no_grad():
            out.append(extract(torch.stack(chunk)).float().cpu())  # (B, 3, T, H, W) -> (B, d)
    return torch.cat(out)


@metric("fvd")
def _fvd(args, session: Session) -> dict:
    """FVD: Frechet distance of clip features, StyleGAN-V's statistics (covariance divided by N)."""
    from metrics.fvd import FVD_FRAMES, check_clips, fvd, quantize

    device = session.device
    if args.features == "toy":
        from gen.pipeline import WEIGHTS_DIR
        from metrics.video_judge import VideoJudge

        folder = WEIGHTS_DIR / "toy-judge-video"
        judge = VideoJudge.from_pretrained(folder, device=device).eval()
        frames, protocol = args.frames, "toy-judge-video pooled features"
        extract = lambda x: judge.features(x.to(device))  # noqa: E731
    else:
        from metrics.i3d import load_i3d

        explicit = args.features not in ("i3d", "inception")
        i3d = load_i3d(args.features if explicit else None, device=device)
        frames, protocol = args.frames or FVD_FRAMES, "stylegan-v (I3D Kinetics-400 logits, 16 frames, 224x224)"
        if frames < FVD_FRAMES:
            raise GenError(f"--frames {frames}: the I3D protocol needs clips of at least {FVD_FRAMES} frames")
        extract = lambda x: i3d(quantize(check_clips(x, FVD_FRAMES)).to(device))  # noqa: E731
    fake_ds = _clip_folder(args.fake, "--fake", frames)
    real_ds = _clip_folder(args.real, "--real", frames)
    try:
        real = _clip_features(real_ds, extract, session, "real")
        fake = _clip_features(fake_ds, extract, session, "fake")
    except ValueError as err:  # the protocol's checks (clip length, layout)
        raise GenError(str(err)) from None
    d = fake.shape[1]
    _say_bias(session, {"n_real": len(real), "n_fake": len(fake)}, d)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="covariance of n=")
        value = fvd(real, fake)
    return {"value": value, "fvd": value, "n": len(fake), "n_real": len(real), "dim": d,
            "features": "toy" if args.features == "toy" else "i3d", "protocol": protocol}


@metric("stats")
def _stats(args, session: Session) -> dict:
    """A folder's features, mean and covariance, saved for `--real FILE.npz`."""
    if len(args.pair) != 1 or not args.out:
        raise GenError("gen score stats takes one folder and --out: gen score stats DIR --out FILE.npz")
    target = check_stats_target(args.out, args.overwrite)
    space = feature_space(args.features, session)
    with stats_lock(target):
        check_stats_target(args.out, args.overwrite)  # again under the lock
        ref = measure(args.pair[0], "gen score stats", space, session)
        save_stats(target, ref, space)
    return {"value": str(target), "n": ref.n, "d": ref.features.shape[1], "features": space.name,
            "protocol": space.protocol}


# ---------------------------------------------------------------------------- the command


def compute(args: argparse.Namespace) -> dict:
    """The result of `gen score` for parsed arguments (also gen.scoring.score's)."""
    from gen.runtime import resolve_device
    from metrics.weights import WeightsHashError, WeightsNotFoundError

    if args.metric not in METRICS:
        raise GenError(f"unknown metric {args.metric!r}; known: {', '.join(METRICS)}")
    if args.pair and args.metric not in ("lpips", "stats"):
        raise GenError(f"gen score {args.metric} takes its folders as --real/--fake, not {' '.join(args.pair)}")
    if args.save_stats and args.metric not in ("fid", "kid"):
        raise GenError("--save-stats is for fid and kid (it saves --real's statistics); for one folder use "
                       "`gen score stats DIR --out FILE.npz`")
    session = Session(resolve_device(args.device), args.batch, args.workers)
    with warnings.catch_warnings():  # every library warning once, on one line
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_, **__: session.warn(str(message), str(message))
        try:
            return {"metric": args.metric, **METRICS[args.metric](args, session)}
        except (WeightsNotFoundError, WeightsHashError) as err:  # the registry's message: file, places, fix
            raise GenError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    result = compute(args)
    if args.json:
        print(json.dumps(result))
    else:
        print("  ".join(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}"
                        for k, v in result.items() if not isinstance(v, list)))
    return 0
