"""FID throughput and the Frechet-distance solve: ours vs torchmetrics, and vs scipy's sqrtm.

    python scripts/bench_fid.py                          # CPU: 2,048 real + 2,048 fake 32x32 images, d=512
    python scripts/bench_fid.py --device cuda --images 16384 --dim 2048
    python scripts/bench_fid.py --skip-sqrtm             # scipy's sqrtm at d=2048 takes a while on 2 cores

Part 1, the FID path: the same images go through the same small random conv net (no
weights needed) into our FeatureStats (float64 Chan updates) + frechet_distance, and into
torchmetrics' FrechetInceptionDistance with that net as its `feature` module (float64 sums
+ eigvals of S1 S2). Times are medians over interleaved repeats; images/s counts real and
fake images together; the net's own time is reported so the accumulation cost is visible.

Part 2, the solve at --solve-dim (2048, Inception's pool features) on fixed covariances:
our frechet_distance (Cholesky or eigh factor + eigvalsh), torchmetrics' _compute_fid (general eigvals), and
pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of S1 S2), each run once.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from metrics.stats import FeatureStats, frechet_distance


class RandomConvFeatures(nn.Module):
    """Two strided 3x3 convs, global average pool, a linear map to `dim`: an untrained stand-in backbone."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim  # torchmetrics reads this instead of probing with a dummy image
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.SiLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.SiLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, dim))

    def forward(self, x):  # (B, 3, H, W) -> (B, dim)
        return self.body(x)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def fid_ours(net, real_batches, fake_batches) -> float:
    real, fake = FeatureStats(), FeatureStats()
    for x in real_batches:
        real.update(net(x))
    for x in fake_batches:
        fake.update(net(x))
    return real.frechet_distance(fake)


@torch.no_grad()
def fid_torchmetrics(metric, real_batches, fake_batches) -> float:
    metric.reset()
    for x in real_batches:
        metric.update(x, real=True)
    for x in fake_batches:
        metric.update(x, real=False)
    return metric.compute().item()


@torch.no_grad()
def net_only(net, real_batches, fake_batches) -> float:
    for x in real_batches + fake_batches:
        net(x)
    return 0.0


def timed(fn, device, *args) -> tuple[float, float]:
    sync(device)
    start = time.perf_counter()
    value = fn(*args)
    sync(device)
    return time.perf_counter() - start, value


def bench_fid_path(args, device: torch.device) -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance

    torch.manual_seed(0)
    net = RandomConvFeatures(args.dim).to(device).eval()
    metric = FrechetInceptionDistance(feature=net, reset_real_features=True).to(device)
    g = torch.Generator().manual_seed(1)
    real = [torch.rand(args.batch, 3, args.size, args.size, generator=g).to(device)
            for _ in range(args.images // args.batch)]
    fake = [(torch.rand(args.batch, 3, args.size, args.size, generator=g) ** 1.5).to(device)
            for _ in range(args.images // args.batch)]
    n_images = 2 * len(real) * args.batch
    runs = {"ours": (fid_ours, net), "torchmetrics": (fid_torchmetrics, metric), "net only": (net_only, net)}
    times, values = {k: [] for k in runs}, {}
    with warnings.catch_warnings():  # warm-up on one batch: n <= d warns
        warnings.simplefilter("ignore", UserWarning)
        fid_ours(net, real[:1], fake[:1])
    for _ in range(args.repeats):
        for name, (fn, obj) in runs.items():
            t, values[name] = timed(fn, device, obj, real, fake)
            times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"FID path: {n_images} images {args.size}x{args.size} (half real, half fake), batch {args.batch}, "
          f"d={args.dim}, {device}, median of {args.repeats}")
    for name in ("ours", "torchmetrics", "net only"):
        print(f"  {name:13s} {med[name]:7.3f} s  {n_images / med[name]:9.0f} images/s")
    print(f"  accumulate+solve beyond the net: ours {med['ours'] - med['net only']:.3f} s, "
          f"torchmetrics {med['torchmetrics'] - med['net only']:.3f} s")
    print(f"  speed ratio ours/torchmetrics (images/s): {med['torchmetrics'] / med['ours']:.2f}x")
    rel = abs(values["ours"] - values["torchmetrics"]) / abs(values["torchmetrics"])
    print(f"  FID ours {values['ours']:.6f}, torchmetrics {values['torchmetrics']:.6f} (rel. diff {rel:.1e})")


def bench_solve(args) -> None:
    from torchmetrics.image.fid import _compute_fid

    d = args.solve_dim
    g = torch.Generator().manual_seed(2)
    a, b = (torch.randn(d, d + d // 4, generator=g, dtype=torch.float64) for _ in range(2))
    s1, s2 = a @ a.T / a.shape[1], (b @ b.T / b.shape[1]) * 1.2
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.1, dtype=torch.float64)
    print(f"Frechet-distance solve at d={d} (float64, CPU, {torch.get_num_threads()} threads), one run each")
    t_ours, fd_ours = timed(frechet_distance, torch.device("cpu"), mu1, s1, mu2, s2)
    print(f"  ours (cholesky + eigvalsh)         {t_ours:8.2f} s  FD {fd_ours:.6f}")
    t_tm, fd_tm = timed(lambda: _compute_fid(mu1, s1, mu2, s2).item(), torch.device("cpu"))
    print(f"  torchmetrics (eigvals of S1 S2)    {t_tm:8.2f} s  FD {fd_tm:.6f}  ratio {t_tm / t_ours:.1f}x")
    if args.skip_sqrtm:
        return
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        t_sq, fd_sq = timed(lambda: float(calculate_frechet_distance(mu1.numpy(), s1.numpy(), mu2.numpy(),
                                                                     s2.numpy())), torch.device("cpu"))
    print(f"  pytorch-fid (scipy sqrtm of S1 S2) {t_sq:8.2f} s  FD {fd_sq:.6f}  ratio {t_sq / t_ours:.1f}x")
    print(f"  rel. diff ours vs sqrtm {abs(fd_ours - fd_sq) / abs(fd_sq):.1e}, "
          f"ours vs eigvals {abs(fd_ours - fd_tm) / abs(fd_tm):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=2048, help="real images, and as many fake ones")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--dim", type=int, default=512, help="feature dimension of the FID path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--solve-dim", type=int, default=2048)
    parser.add_argument("--skip-sqrtm", action="store_true")
    parser.add_argument("--skip-path", action="store_true")
    args = parser.parse_args()
    if not args.skip_path:
        bench_fid_path(args, torch.device(args.device))
    bench_solve(args)


if __name__ == "__main__":
    main()
