"""Scoring folders from Python, and the machinery behind `gen score`: image folders read on
worker threads, feature spaces under their protocols, and reference statistics files.

    from gen.scoring import fid, kid, inception_score, lpips, clip_score, fvd, score
    fid("real/", "fake/")                            # toy features; features="inception" for FID proper
    kid("real.npz" or "real/", "fake/")              # (mean, std)
    lpips("a/", "b/"); clip_score("fake/", prompts="prompts.txt"); fvd("real_clips/", "fake_clips/")
    score("fid", real="real/", fake="fake/", features="inception", batch=32)   # the whole JSON result

Every function runs `gen score`'s own code on the same options (the flags, with - as _),
so Python and the command line give the same numbers.

    session = Session(device, batch=64, workers=8)   # warnings said once, sizes noted
    space = feature_space("toy", session)            # or "inception", or a weights file
    ref = measure("real/", "--real", space, session) # features and their float64 moments
    save_stats(check_stats_target("real.npz", overwrite=False), ref, space)
    load_stats("real.npz", space)                    # refused if the space, protocol or weights differ
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gen.errors import GenError

log = logging.getLogger(__name__)

STATS_FORMAT = "gen-feature-stats/1"


# ---------------------------------------------------------------------------- the Python API


def score(metric: str, *folders, device: str = "cpu", seed: int = 0, **options) -> dict:
    """What `gen score METRIC FOLDER... --option value ...` prints with --json, as a dict:
    score("fid", real="a/", fake="b/"), score("lpips", "a/", "b/"), score("stats", "a/", out="a.npz")."""
    import argparse

    from gen.cli import score as cli

    parser = argparse.ArgumentParser(prog="gen score")
    cli.add_arguments(parser)
    args = parser.parse_args([metric, *map(str, folders)])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise GenError(f"unknown option {unknown[0]!r} for gen.scoring.score; known: "
                       f"{', '.join(k for k in vars(args) if k not in ('metric', 'pair', 'json'))}")
    for key, value in options.items():
        setattr(args, key, str(value) if isinstance(value, Path) else value)
    args.device, args.seed = device, seed
    return cli.compute(args)


def fid(real, fake, **options) -> float:
    """Frechet distance of two folders (or `real` a stats .npz), toy features unless features=..."""
    return score("fid", real=real, fake=fake, **options)["fid"]


def kid(real, fake, **options) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) over random subsets."""
    result = score("kid", real=real, fake=fake, **options)
    return result["kid_mean"], result["kid_std"]


def inception_score(fake, **options) -> tuple[float, float]:
    result = score("is", fake=fake, **options)
    return result["mean"], result["std"]


def lpips(a, b, **options) -> float:
    """Mean LPIPS of the same-named images of two folders."""
    return score("lpips", a, b, **options)["value"]


def clip_score(fake, **options) -> float:
    """CLIPScore of a folder against its captions (or prompts=FILE)."""
    return score("clip", fake=fake, **options)["value"]


def fvd(real, fake, **options) -> float:
    """Frechet Video Distance of two folders of clips."""
    return score("fvd", real=real, fake=fake, **options)["value"]


# ---------------------------------------------------------------------------- reading images


@dataclass
class Session:
    """What every metric shares: the device, batching, worker threads, and warnings said once."""

    device: object
    batch: int
    workers: int
    said: set = field(default_factory=set)
    sizes: dict = field(default_factory=dict)  # (H, W) -> the folder it was first seen in

    def warn(self, key: str, message: str) -> None:
        if key not in self.said:
            self.said.add(key)
            log.warning("%s", message)

    def saw(self, size: tuple[int, int], where, rule: str) -> None:
        """Note an image size; the first time a second size shows up, say how images are resized."""
        if size not in self.sizes:
            self.sizes[size] = where
            if len(self.sizes) == 2:
                (a, fa), (b, fb) = self.sizes.items()
                self.warn("sizes", f"images come in more than one size ({a[1]}x{a[0]} in {fa}, {b[1]}x{b[0]} in "
                                   f"{fb}, width x height); each image is {rule}")


def image_folder(folder: str | None, flag: str, least: int = 2):
    from gen.data.folders import ImageFolderDataset

    if not folder:
        raise GenError(f"{flag} FOLDER is required")
    ds = ImageFolderDataset(folder)
    if len(ds) < least:
        raise GenError(f"{flag} {folder} holds {len(ds)} image(s); this score needs at least {least}")
    return ds


def read_image(ds, i: int):
    """Image i of `ds` as uint8 (H, W, 3); an unreadable file is a GenError naming it."""
    from gen.data.folders import load_image

    return load_image(ds.root / ds.records[i]["file_name"], 3)


def stream(items, load: Callable, session: Session, desc: str) -> Iterator[list]:
    """`load(item)` for every item on `session.workers` threads, at most two batches ahead of the
    consumer, yielded in order as lists of `session.batch` results; a tqdm bar on stderr."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    items = list(items)
    pool = ThreadPoolExecutor(max_workers=session.workers, thread_name_prefix="gen-score")
    pending: deque = deque()
    todo = iter(items)
    try:
        for item in todo:
            pending.append(pool.submit(load, item))
            if len(pending) >= 2 * session.batch:
                break
        chunk = []
        with tqdm(total=len(items), desc=desc, unit="image", file=sys.stderr, disable=None) as bar:
            while pending:
                chunk.append(pending.popleft().result())  # re-raises a worker's error here
                item = next(todo, None)
                if item is not None:
                    pending.append(pool.submit(load, item))
                bar.update()
                if len(chunk) == session.batch or not pending:
                    yield chunk
                    chunk = []
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------- feature spaces


@dataclass(frozen=True)
class FeatureSpace:
    """A feature network under one protocol. prepare: uint8 (H, W, 3) -> (3, S, S) float in [-1, 1],
    resized by the protocol's rule (runs on worker threads); extract: (B, 3, S, S) -> (B, d)."""

    name: str  # "toy" or "inception": what stats files record
    protocol: str
    rule: str  # how each image is resized, in words
    weights: Path
    prepare: Callable
    extract: Callable


def feature_space(name: str, session: Session, output: str = "pool") -> FeatureSpace:
    import torch
    import torch.nn.functional as F

    from gen.data.folders import to_model_range

    device = session.device
    if name == "toy":
        from gen.pipeline import WEIGHTS_DIR
        from metrics.toy_judge import ImageJudge, to_native_size

        if output != "pool":
            raise GenError("the Inception Score needs --features inception (class logits)")
        folder = WEIGHTS_DIR / "toy-judge-image"
        judge = ImageJudge.from_pretrained(folder, device=device).eval()
        side = judge.config.image_size
        return FeatureSpace(
            "toy", "toy-judge-image pooled features", f"resized to {side}x{side} (bilinear, antialiased: the "
            "toy judge's rule)", folder / "model.safetensors",
            prepare=lambda a: to_native_size(to_model_range(a)[None], side, "the toy judge")[0],
            extract=lambda x: judge.features(x.to(device)).float())
    from metrics.backbones import INPUT_SIZE, fid_inception, fid_inception_weights

    explicit = name != "inception"  # a file the user names is used as given; cache hits are hash-checked
    path = fid_inception_weights(name if explicit else None, verify_hash=not explicit)
    net = fid_inception(path, output=output, device=device, verify_hash=False)
    side = INPUT_SIZE

    def prepare(a):
        x = to_model_range(a)[None]  # (1, 3, H, W) in [-1, 1]
        if x.shape[-2:] != (side, side):  # pytorch-fid: bilinear, align_corners=False, no antialias
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        return x[0]

    return FeatureSpace("inception", "pytorch-fid", f"resized to {side}x{side} (bilinear, no antialias: the "
                        "pytorch-fid rule)", path, prepare, extract=lambda x: net(x.to(device)).to(torch.float32))


def folder_features(ds, space: FeatureSpace, session: Session, what: str):
    """(N, d) float32 features of every image of `ds`, in the dataset's order."""
    import torch

    def load(i):
        a = read_image(ds, i)
        return space.prepare(a), a.shape[:2]

    out = []
    for chunk in stream(range(len(ds)), load, session, f"{what} {ds.root.name}"):
        for _, size in chunk:
            session.saw(size, ds.root, space.rule)
        with torch.no_grad():
            out.append(space.extract(torch.stack([x for x, _ in chunk])).cpu())
    return torch.cat(out)


def moments(features):
    """(mu (d,), sigma (d, d)) float64 of (n, d) features; stats.py's n <= d warning is said by the caller."""
    import metrics

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="covariance of n=")
        return metrics.feature_stats(features)


# ---------------------------------------------------------------------------- stats files


@dataclass
class Reference:
    """The real side of fid/kid: from a folder or a stats file."""

    n: int
    mu: object  # (d,) float64
    sigma: object  # (d, d) float64
    features: object | None  # (n, d), None when a file holds none
    source: str


def measure(folder: str | None, flag: str, space: FeatureSpace, session: Session) -> Reference:
    """A folder's features and their moments."""
    ds = image_folder(folder, flag)
    features = folder_features(ds, space, session, flag.strip("-"))
    return Reference(len(ds), *moments(features), features, str(ds.root))


def check_stats_target(file: str, overwrite: bool) -> Path:
    path = Path(file).expanduser()
    if path.suffix != ".npz":
        raise GenError(f"stats files are .npz; name it e.g. {path.with_suffix('.npz')}, got {file}")
    if path.exists() and not overwrite:
        raise GenError(f"{path} exists; pass --overwrite to replace it, or choose another file name")
    return path


def save_stats(path: Path, ref: Reference, space: FeatureSpace) -> None:
    """mu, sigma (pytorch-fid's keys), features (for KID) and a JSON record, written atomically; no pickle."""
    import tempfile

    import numpy as np

    from gen import __version__
    from metrics.weights import sha256_file

    meta = {"format": STATS_FORMAT, "features": space.name, "protocol": space.protocol,
            "weights_sha256": sha256_file(space.weights), "n": ref.n, "d": int(ref.mu.shape[0]),
            "source": ref.source, "written_by": f"gen {__version__}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".part", delete=False) as f:
        tmp = Path(f.name)
        try:
            np.savez(f, mu=ref.mu.numpy(), sigma=ref.sigma.numpy(), features=ref.features.numpy(),
                     meta=np.array(json.dumps(meta)))
        except BaseException:
            tmp.unlink()
            raise
    os.replace(tmp, path)


def load_stats(file: str, space: FeatureSpace) -> Reference:
    import numpy as np
    import torch

    from metrics.weights import sha256_file

    path = Path(file).expanduser()
    if not path.is_file():
        raise GenError(f"--real {file}: no such stats file; write one with `gen score stats DIR --out {file}`")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as err:  # EOFError: an empty or cut file
        raise GenError(f"{path} is not a readable .npz of arrays ({err}); write it with `gen score stats`") from None
    if "meta" not in arrays:
        raise GenError(f"{path} has no record of its feature space (not written by `gen score stats`, e.g. "
                       f"pytorch-fid's --save-stats); recompute it with `gen score stats DIR --out {path}`")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != STATS_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else "unreadable"
        raise GenError(f"{path} is in format {found!r}; this gen reads {STATS_FORMAT!r}: recompute it")
    if (meta.get("features"), meta.get("protocol")) != (space.name, space.protocol):
        raise GenError(f"{path} holds {meta['features']} features ({meta['protocol']}), but this run uses "
                       f"{space.name} ({space.protocol}); pass --features {meta['features']} or recompute the "
                       f"stats with --features {space.name}")
    mine = sha256_file(space.weights)
    if meta["weights_sha256"] != mine:
        raise GenError(f"{path} was computed with other {space.name} weights (SHA-256 {meta['weights_sha256'][:16]}"
                       f"...) than this run's {space.weights} ({mine[:16]}...); use the same weights or recompute")
    mu, sigma = (torch.from_numpy(arrays[k]).double() for k in ("mu", "sigma"))
    d, n = mu.shape[0], int(meta["n"])
    features = torch.from_numpy(arrays["features"]) if "features" in arrays else None
    if sigma.shape != (d, d) or meta["d"] != d or (features is not None and features.shape != (n, d)):
        raise GenError(f"{path} is inconsistent (mu {tuple(mu.shape)}, sigma {tuple(sigma.shape)}, n={n}, "
                       f"d={meta['d']}); recompute it")
    return Reference(n, mu, sigma, features, str(path))
