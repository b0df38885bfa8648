"""`gen score fid|kid|is`: score folders of generated images against real ones.

    gen score fid --real DIR --fake DIR [--features toy|inception|PATH] [--json]
    gen score kid --real DIR --fake DIR [--subsets 100 --subset-size 1000]
    gen score is --fake DIR                       # Inception Score (needs the Inception weights)
    gen score lpips A B                           # mean LPIPS of same-named images (AlexNet weights)

Feature spaces: `toy` (default): the shipped toy-world judge's pooled features, always
available; `inception`: the FID Inception (pytorch-fid protocol), found locally through
metrics.weights (a file path may be given instead). Folders follow the imagefolder
convention (metadata.jsonl, class folders or loose images); images are resized to the
feature network's input by its protocol.
"""

from __future__ import annotations

import argparse
import json
import sys

from gen.errors import GenError

KINDS = ("fid", "kid", "is", "lpips")
LATER = ("fvd", "clip")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metric", metavar="METRIC", help=f"one of {', '.join(KINDS)} ({', '.join(LATER)}: not built yet)")
    parser.add_argument("pair", nargs="*", metavar="FOLDER", help="lpips: the two folders to compare")
    parser.add_argument("--real", help="folder of real (reference) images")
    parser.add_argument("--fake", help="folder of generated images")
    parser.add_argument("--features", default="toy", help="toy (default), inception, or a FID Inception weights file")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=100, help="kid: number of random subsets")
    parser.add_argument("--subset-size", type=int, default=1000, help="kid: samples per subset (capped at n)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _images(folder: str | None, flag: str):
    from gen.data.folders import ImageFolderDataset

    if not folder:
        raise GenError(f"{flag} FOLDER is required")
    ds = ImageFolderDataset(folder)
    if len(ds) < 2:
        raise GenError(f"{flag} {folder} holds {len(ds)} image(s); scores need at least 2")
    return ds


def _extractor(name: str, device, output: str = "pool"):
    """(batch -> features, native side, description) for a feature space."""
    import torch

    if name == "toy":
        from gen.pipeline import WEIGHTS_DIR
        from metrics.toy_judge import ImageJudge

        judge = ImageJudge.from_pretrained(WEIGHTS_DIR / "toy-judge-image", device=device).eval()
        if output != "pool":
            raise GenError("the Inception Score needs --features inception (class logits)")
        return judge.features, judge.config.image_size, "toy judge pooled features"
    from metrics.backbones import fid_inception
    from metrics.weights import WeightsNotFoundError

    try:
        net = fid_inception(None if name == "inception" else name, output=output, device=device)
    except WeightsNotFoundError as err:
        raise GenError(str(err).splitlines()[0] + " (see metrics/weights.py for where it is looked for)") from None
    return (lambda x: net(x.to(device)).to(torch.float64)), 299, "FID Inception (pytorch-fid protocol)"


def _features(ds, extract, side: int, batch: int, device, said: set):
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    out = []
    chunk = []
    for i in tqdm(range(len(ds)), desc=str(ds.root), unit="image", disable=None, file=sys.stderr):
        x = ds[i]["image"]
        if x.shape[-2:] != (side, side):
            if "resize" not in said:
                print(f"gen: images are resized to {side}x{side} for these features", file=sys.stderr)
                said.add("resize")
            x = F.interpolate(x[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0]
        chunk.append(x)
        if len(chunk) == batch or i == len(ds) - 1:
            with torch.no_grad():
                out.append(extract(torch.stack(chunk).to(device)).double().cpu())
            chunk = []
    return torch.cat(out)


def _lpips(args, device) -> dict:
    """Mean LPIPS (AlexNet) over images with the same file name in both folders."""
    import torch

    from gen.data.folders import ImageFolderDataset
    from metrics.reconstruction import alexnet_weights_path, lpips, lpips_network

    if len(args.pair) != 2:
        raise GenError("gen score lpips takes two folders: gen score lpips A B")
    a, b = (ImageFolderDataset(f) for f in args.pair)
    names_b = {r["file_name"]: i for i, r in enumerate(b.records)}
    pairs = [(i, names_b[r["file_name"]]) for i, r in enumerate(a.records) if r["file_name"] in names_b]
    if not pairs:
        raise GenError(f"{args.pair[0]} and {args.pair[1]} share no file names; LPIPS compares same-named images")
    network = lpips_network(device)
    if network is None:
        raise GenError(f"LPIPS needs torchvision's AlexNet weights at {alexnet_weights_path()} "
                       "(https://download.pytorch.org/models/alexnet-owt-7be5be79.pth); place the file there")
    values = []
    with torch.no_grad():
        for i, j in pairs:
            x, y = a[i]["image"][None], b[j]["image"][None]
            if x.shape != y.shape:
                raise GenError(f"{a.records[i]['file_name']}: sizes differ between the folders "
                               f"({tuple(x.shape[-2:])} vs {tuple(y.shape[-2:])})")
            values.append(lpips(network, x, y).cpu())
    v = torch.cat(values).double()
    return {"lpips_mean": v.mean().item(), "lpips_std": v.std().item() if len(v) > 1 else 0.0, "pairs": len(v)}


def run(args: argparse.Namespace) -> int:
    import warnings

    import metrics
    from gen.runtime import resolve_device

    if args.metric in LATER:
        print(f"gen: error: `gen score {args.metric}` is not built yet in this version", file=sys.stderr)
        return 2
    if args.metric not in KINDS:
        raise GenError(f"unknown metric {args.metric!r}; known: {', '.join(KINDS)}")
    device = resolve_device(args.device)
    said: set = set()
    result: dict = {"metric": args.metric}
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: print(f"gen: warning: {message}", file=sys.stderr)
        if args.metric == "lpips":
            result.update(_lpips(args, device))
        elif args.metric == "is":
            fake = _images(args.fake, "--fake")
            extract, side, what = _extractor(args.features if args.features != "toy" else "inception", device,
                                             "logits_unbiased")
            logits = _features(fake, extract, side, args.batch, device, said)
            score = metrics.inception_score(logits, splits=min(10, len(fake)))
            result.update(mean=score.mean, std=score.std, n=len(fake))
        else:
            real, fake = _images(args.real, "--real"), _images(args.fake, "--fake")
            extract, side, what = _extractor(args.features, device)
            f_real = _features(real, extract, side, args.batch, device, said)
            f_fake = _features(fake, extract, side, args.batch, device, said)
            result.update(n_real=len(real), n_fake=len(fake), dim=f_real.shape[1])
            if args.metric == "fid":
                a, b = metrics.FeatureStats().update(f_real), metrics.FeatureStats().update(f_fake)
                result["fid"] = a.frechet_distance(b)
            else:
                size = min(args.subset_size, len(real), len(fake))
                kid = metrics.kernel_inception_distance(f_real, f_fake, subsets=args.subsets, subset_size=size,
                                                        seed=args.seed)
                result.update(kid_mean=kid.mean, kid_std=kid.std, subset_size=size, subsets=args.subsets)
    if args.metric != "lpips":
        result["features"] = what
    if args.json:
        print(json.dumps(result))
    else:
        print("  ".join(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()))
    return 0
