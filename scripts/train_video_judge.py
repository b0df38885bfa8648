"""Train the toy-world video judge (to ship in gen/weights/toy-judge-video/).

    python scripts/train_video_judge.py --minutes 6 --batch 256 --workers 5 --device cuda --out DIR
    python scripts/train_video_judge.py --minutes 2 --batch 24 --workers 1 --warmup 10 --threads 1 --device cpu \
        --out /tmp/vj  # CPU smoke run

Data: toy-world clips rendered on the fly, `toy_clip(i, size, frames=16, fps=8, seed)`
(seed 0), by DataLoader worker processes in chunks of `--chunk` clips. A background
thread moves each chunk into a replay pool (uint8, on the training device) as it
arrives; every step draws its batch from the pool, so the accelerator never waits for
the renderer and each clip is seen a few times, under fresh augmentation each time.
Labels from the exact attributes: class and colour of `objects[0]`, `motion.kind`.

Frame settings: the judge must read 16 frames at 8 fps and 8 frames at 4 fps (both
span 2 s). Time is continuous in the toy world, so the 8-frame clip is every other
frame of the 16-frame one, bit for bit; steps alternate between the two (the 8-frame
ones start at frame 0 or 1).

Augmentation (label-exact; the judge must read generated clips, which are softer and
noisier than renders): a horizontal flip (left <-> right), time reversal (left <-> right,
up <-> down, growing <-> shrinking), a shift of up to 2 px, a mild blur, a little
brightness jitter and Gaussian noise.

AdamW with warmup and cosine decay over --steps or --minutes (whichever ends first),
bf16 autocast, channels_last. Then measures accuracy per head on fresh clips of
another seed in both frame settings (plus the same clips softened by a fixed blur and
noise) and writes the weights (`save_pretrained`), `heldout.json` and a model card.

Throughput, measured on an H200 with 16 CPU cores shared by three trainings at once
(this one twice and the scene judge): batch 256, 5 workers, 2,640 steps in 4.5 minutes,
~2,500 clips drawn/s against ~1,550 rendered/s (each clip drawn ~1.6 times), 100% on
every head in both frame settings. A worker renders ~650 16-frame clips/s on an idle
core; the pool keeps the accelerator busy when the renderers fall behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from gen.toyworld import CLIP_SECONDS, COLORS, MOTIONS, OBJECTS, toy_clip
from gen.toyworld.captions import motion_phrases
from metrics.video_judge import VideoJudge

OUT = Path(__file__).resolve().parents[1] / "gen" / "weights" / "toy-judge-video"
FRAMES, FPS = 16, 8.0  # rendered; the 8-frame, 4 fps setting is every other frame
SETTINGS = ((16, 8.0), (8, 4.0))
HEADS = ("cls", "color", "motion")
MIRRORED = {"left": "right", "right": "left"}  # a horizontal flip
REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up",
            "growing": "shrinking", "shrinking": "growing"}  # time running backwards


def motion_word_table() -> dict[str, str]:
    """Every phrase the caption grammar uses for a motion, over all objects -> motion kind."""
    table: dict[str, str] = {}
    for kind in MOTIONS:
        for name in OBJECTS:
            for phrase in motion_phrases(kind, name):
                if table.setdefault(phrase, kind) != kind:
                    raise ValueError(f"motion phrase {phrase!r} means both {table[phrase]!r} and {kind!r}")
    return dict(sorted(table.items()))


def label_permutation(mapping: dict[str, str]) -> torch.Tensor:
    """A motion relabelling as an index table over MOTIONS."""
    return torch.tensor([MOTIONS.index(mapping.get(k, k)) for k in MOTIONS])


def render_clips(indices, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clips as uint8 (n, FRAMES, size, size, 3) and labels int64 (n, 3): class, colour, motion."""
    colors = tuple(COLORS)
    pixels = np.empty((len(indices), FRAMES, size, size, 3), np.uint8)
    labels = np.empty((len(indices), 3), np.int64)
    for j, i in enumerate(indices):
        clip = toy_clip(int(i), size=size, frames=FRAMES, fps=FPS, seed=seed)
        obj = clip.attributes["objects"][0]
        pixels[j] = clip.pixels
        labels[j] = (OBJECTS.index(obj["class"]), colors.index(obj["color"]),
                     MOTIONS.index(clip.attributes["motion"]["kind"]))
    return pixels, labels


class ClipStream(IterableDataset):
    """An endless stream of chunks of fresh clips; worker w of W renders chunks w, w + W, ..."""

    def __init__(self, size: int, seed: int, chunk: int):
        self.size, self.seed, self.chunk = size, seed, chunk

    def __iter__(self):
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        for j in range(w, 1 << 40, n):
            pixels, labels = render_clips(range(j * self.chunk, (j + 1) * self.chunk), self.size, self.seed)
            yield torch.from_numpy(pixels), torch.from_numpy(labels)


class HeldOut(Dataset):
    """Index ranges [a, b) of one seed's clips, rendered on access."""

    def __init__(self, ranges: list[tuple[int, int]], size: int, seed: int):
        self.ranges, self.size, self.seed = ranges, size, seed

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, labels = render_clips(range(*self.ranges[i]), self.size, self.seed)
        return torch.from_numpy(pixels), torch.from_numpy(labels)


class ReplayPool:
    """A ring buffer of rendered clips on the training device, filled by a background thread."""

    def __init__(self, capacity: int, size: int, device: torch.device):
        self.pixels = torch.empty((capacity, FRAMES, size, size, 3), dtype=torch.uint8, device=device)
        self.labels = torch.empty((capacity, 3), dtype=torch.int64, device=device)
        self.capacity, self.filled, self.head, self.added = capacity, 0, 0, 0
        self.inbox: queue.Queue = queue.Queue(maxsize=8)
        self.error: BaseException | None = None

    def start(self, loader: DataLoader) -> None:
        def pump():
            try:
                for chunk in loader:
                    self.inbox.put(chunk)
            except BaseException as e:  # a render worker failed: say so in the training loop
                self.error = e
        threading.Thread(target=pump, daemon=True).start()

    def take(self, block: bool = False) -> None:
        """Move the chunks that have arrived into the pool (wait for one if `block`)."""
        while True:
            if self.error is not None:
                raise RuntimeError("rendering clips failed in a DataLoader worker") from self.error
            try:
                pixels, labels = self.inbox.get(block=block, timeout=5 if block else None)
            except queue.Empty:
                return
            block = False
            n = min(len(labels), self.capacity)
            at = (self.head + torch.arange(n)) % self.capacity
            at = at.to(self.pixels.device)
            self.pixels[at] = pixels[:n].to(self.pixels.device, non_blocking=True)
            self.labels[at] = labels[:n].to(self.labels.device, non_blocking=True)
            self.head = (self.head + n) % self.capacity
            self.filled, self.added = min(self.filled + n, self.capacity), self.added + n

    def sample(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, self.filled, (batch,), generator=g).to(self.pixels.device)
        return self.pixels[idx], self.labels[idx]


def to_clips(pixels: torch.Tensor, frames: int, offset: int = 0) -> torch.Tensor:
    """uint8 (B, 16, S, S, 3) at 8 fps -> float (B, 3, frames, S, S) in [-1, 1] (8: every other frame)."""
    step = FRAMES // frames
    x = pixels[:, offset::step][:, :frames]  # (B, frames, S, S, 3)
    return x.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, frames, S, S)


def augment(x: torch.Tensor, motion: torch.Tensor, g: torch.Generator, flip_p: float = 0.5,
            reverse_p: float = 0.5, shift: int = 2, blur_p: float = 0.3, noise: float = 0.06,
            jitter: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips (B, 3, T, S, S) in [-1, 1] and motion labels (B,) -> augmented pair, labels kept true.

    Flipped clips get left/right swapped; time-reversed clips left/right, up/down and
    growing/shrinking swapped. `g` is a CPU generator; the draws move to x's device.
    """
    b, _, t, s, _ = x.shape
    dev = x.device

    def draw(*shape):
        return torch.rand(shape, generator=g).to(dev)

    flip, reverse = draw(b) < flip_p, draw(b) < reverse_p
    x = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
    x = torch.where(reverse[:, None, None, None, None], x.flip(2), x)
    motion = torch.where(flip, label_permutation(MIRRORED).to(dev)[motion], motion)
    motion = torch.where(reverse, label_permutation(REVERSED).to(dev)[motion], motion)
    if shift:  # one shift per clip, the same in every frame: crop a replicate-padded copy
        padded = F.pad(x.flatten(1, 2), (shift,) * 4, mode="replicate")  # (B, 3 * T, S + 2 shift, same)
        dy, dx = torch.randint(0, 2 * shift + 1, (2, b, 1), generator=g).to(dev)
        rows, cols = dy + torch.arange(s, device=dev), dx + torch.arange(s, device=dev)  # (B, S) each
        crop = padded.permute(0, 2, 3, 1)[torch.arange(b, device=dev)[:, None, None], rows[:, :, None],
                                          cols[:, None, :]]  # (B, S, S, 3 * T)
        x = crop.permute(0, 3, 1, 2).reshape(b, 3, t, s, s)
    blur = (draw(b) < blur_p).nonzero().flatten()
    if len(blur):  # down to 50-85% of the side and back up, every frame alike
        side = int(s * (0.5 + 0.35 * torch.rand(1, generator=g).item()))
        frames = x[blur].transpose(1, 2).flatten(0, 1)  # (n * T, 3, S, S)
        soft = F.interpolate(F.interpolate(frames, size=(side, side), mode="bilinear", antialias=True),
                             size=(s, s), mode="bilinear")
        x = x.index_copy(0, blur, soft.view(len(blur), t, 3, s, s).transpose(1, 2))
    gain = 1 + jitter * (2 * draw(b, 1, 1, 1, 1) - 1)
    bias = jitter * (2 * draw(b, 1, 1, 1, 1) - 1)
    sigma = noise * draw(b, 1, 1, 1, 1)
    noisy = x * gain + bias + sigma * torch.randn(x.shape, generator=g).to(dev)
    return noisy.clamp(-1, 1), motion


def soften(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A fixed generated-look degradation for evaluation: blur to 65% of the side and back, noise 0.04."""
    b, _, t, s, _ = x.shape
    frames = x.transpose(1, 2).flatten(0, 1)
    side = int(s * 0.65)
    soft = F.interpolate(F.interpolate(frames, size=(side, side), mode="bilinear", antialias=True),
                         size=(s, s), mode="bilinear").view(b, t, 3, s, s).transpose(1, 2)
    return (soft + 0.04 * torch.randn(soft.shape, generator=g).to(x.device)).clamp(-1, 1)


def loss_fn(out: dict, motion: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    parts = {"cls": F.cross_entropy(out["cls"].float(), labels[:, 0]),
             "color": F.cross_entropy(out["color"].float(), labels[:, 1]),
             "motion": F.cross_entropy(out["motion"].float(), motion)}
    return sum(parts.values()), {k: v.item() for k, v in parts.items()}


@torch.no_grad()
def evaluate(judge: VideoJudge, pixels: torch.Tensor, labels: torch.Tensor, frames: int,
             softened: bool = False, batch: int = 250) -> dict[str, float]:
    """Accuracy per head and all three right, on uint8 clips (N, 16, S, S, 3) seen at `frames`."""
    was_training = judge.training
    judge.eval()
    device = next(judge.parameters()).device
    g = torch.Generator().manual_seed(1)
    hits = {k: 0 for k in (*HEADS, "all")}
    for i in range(0, len(labels), batch):
        x = to_clips(pixels[i:i + batch].to(device), frames)
        if softened:
            x = soften(x, g)
        y = labels[i:i + batch].to(device)
        out = judge(x)
        ok = {k: out[k].argmax(-1) == y[:, j] for j, k in enumerate(HEADS)}
        ok["all"] = ok["cls"] & ok["color"] & ok["motion"]
        for k in ok:
            hits[k] += int(ok[k].sum())
    judge.train(was_training)
    return {k: v / len(labels) for k, v in hits.items()}


def render_heldout(n: int, size: int, seed: int, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips 0..n-1 of `seed`, rendered by `workers` processes."""
    chunk = max(1, math.ceil(n / max(1, 4 * workers)))
    parts = HeldOut([(a, min(a + chunk, n)) for a in range(0, n, chunk)], size, seed)
    pixels, labels = zip(*DataLoader(parts, batch_size=None, num_workers=workers))
    return torch.cat(pixels), torch.cat(labels)


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def card(args, judge: VideoJudge, acc: dict, figures: dict) -> str:
    names = {"cls": "object class", "color": "object colour", "motion": "motion (8 kinds)", "all": "all three right"}
    cols = [("16 frames, 8 fps", "16x8"), ("8 frames, 4 fps", "8x4"), ("16 frames, softened", "16x8_soft"),
            ("8 frames, softened", "8x4_soft")]
    head = "| head | " + " | ".join(c for c, _ in cols) + " |\n| --- |" + " --- |" * len(cols)
    rows = "\n".join(f"| {names[k]} | " + " | ".join(f"{acc[key][k] * 100:.2f}%" for _, key in cols) + " |"
                     for k in (*HEADS, "all"))
    return f"""# toy-judge-video

A compact network that reads a toy-world clip and names its object's class and colour
and how the object moves. It is the judge behind the toolkit's video prompt accuracy
(`metrics.video_judge.judge_clips`) and its pooled features are the toy FVD space
(`judge.features(clips)`): it needs no downloaded weights and its answers are exact on
the toy world.

- Class: `metrics.video_judge.VideoJudge` ({judge.num_parameters():,} parameters, fp32
  safetensors, {figures["weights_bytes"] / 1e6:.2f} MB). Load with `VideoJudge.from_pretrained(path)`.
- Input: clips (B, 3, T, H, W) in [-1, 1], any T >= 2, any H, W (each frame resized,
  antialiased bilinear, to {args.size}x{args.size}). Trained on 16 frames at 8 fps and 8 frames at
  4 fps (both {CLIP_SECONDS:g} s); other frame rates are untested.
- Heads: `cls` ({len(judge.classes)} objects: {", ".join(judge.classes)}), `color`
  ({len(judge.colors)} colours: {", ".join(judge.colors)}), `motion` ({", ".join(judge.motions)}).
- Architecture: the image judges' 2-D CNN trunk (channels {list(judge.config.channels)}) on every
  frame; each frame's final map flattened through a linear layer to {judge.config.frame_dim} features
  (keeps position); {judge.config.temporal_layers} residual temporal convolutions (kernel
  {judge.config.temporal_kernel}); mean over time; class and colour also read the trunk's
  features pooled over time and space. `features` = both pooled vectors ({judge.feature_dim} dims).
- The config carries `motion_words`, every phrase the toy caption grammar uses for a
  motion, for `metrics.video_judge.parse_motion_caption`.

## Data

Clips `toy_clip(i, size={args.size}, frames=16, fps=8, seed={args.seed})` rendered on the fly by
{args.workers} worker processes into a replay pool of {args.pool:,} clips on the training
device; {figures["clips_rendered"]:,} distinct clips rendered, {figures["clips_seen"]:,} drawn
(each about {figures["clips_seen"] / max(figures["clips_rendered"], 1):.1f} times). Steps alternate
between 16 frames at 8 fps and 8 frames at 4 fps (every other frame, starting at frame 0 or 1).
Labels from the exact attributes: class and colour of `objects[0]`, `motion.kind`.
Augmentation: horizontal flip (swapping left and right), time reversal (swapping
left/right, up/down, growing/shrinking), a shift of up to 2 px, a mild blur (down to
50-85% of the side and back) on 30% of clips, brightness/contrast jitter of 5%,
Gaussian noise with sigma up to 0.06.

## Recipe

    python scripts/train_video_judge.py --minutes {args.minutes:g} --steps {args.steps} --batch {args.batch} \\
        --workers {args.workers} --device {args.device} --lr {args.lr} --seed {args.seed} \\
        --channels {args.channels} --frame-dim {args.frame_dim}

AdamW (lr {args.lr}, weight decay 0.05, {args.warmup} warmup steps, cosine decay over
{args.steps} steps or {args.minutes:g} minutes, whichever ends first), batch {args.batch},
{figures["steps"]} steps run, bf16 autocast on {figures["device"]}. Loss: the sum of the three
heads' cross-entropies. Wall time: training {figures["train_s"]:.0f} s.

## Held-out accuracy

{args.val:,} fresh clips of seed {args.val_seed}, each seen in both frame settings, and the same
clips softened (blurred to 65% of the side and back, noise sigma 0.04) as a stand-in for
generated clips; measured by the training script after training (fp32, eval mode); also in
`heldout.json`:

{head}
{rows}

## Limits

It knows only the toy world's objects, colours and motions, one moving object per clip;
answers on clips far from the toy world's look, or at frame rates far from 4-8 fps, mean little.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="native side of the judge and of the renders")
    parser.add_argument("--steps", type=int, default=100_000, help="most optimiser steps")
    parser.add_argument("--minutes", type=float, default=6.0,
                        help="training wall-time budget: the cosine decay runs over steps or minutes, whichever ends first")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=4, help="render worker processes")
    parser.add_argument("--chunk", type=int, default=128, help="clips per worker message")
    parser.add_argument("--pool", type=int, default=None,
                        help="replay pool size in clips (default 100000 on cuda, 12000 on cpu)")
    parser.add_argument("--min-fill", type=int, default=None, help="clips in the pool before training starts")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels", default="16,32,64,64", help="per-frame trunk widths, one stage each")
    parser.add_argument("--frame-dim", type=int, default=96, help="per-frame embedding width")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="toy-world seed of the training clips")
    parser.add_argument("--val-seed", type=int, default=1, help="toy-world seed of the held-out clips")
    parser.add_argument("--val", type=int, default=2000, help="held-out clips (each seen at 16 and at 8 frames)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training process on cpu")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.seed == args.val_seed:
        parser.error(f"--val-seed must differ from --seed (both {args.seed}): held-out clips must be fresh")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1 (renders run in worker processes), got {args.workers}")
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    args.pool = args.pool or (100_000 if on_cuda else 12_000)
    min_fill = args.min_fill or min(args.pool, 8 * args.batch, 4096)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True

    judge = VideoJudge.from_config({"classes": list(OBJECTS), "colors": list(COLORS), "motions": list(MOTIONS),
                                    "motion_words": motion_word_table(), "image_size": args.size,
                                    "channels": [int(c) for c in args.channels.split(",")],
                                    "frame_dim": args.frame_dim}).to(device)
    print(f"judge: {judge.num_parameters():,} parameters on {device}", flush=True)
    judge = judge.to(memory_format=torch.channels_last)  # the trunk's weights; frames are 4-D inside it
    opt = torch.optim.AdamW(judge.parameters(), lr=args.lr, weight_decay=0.05)

    render_clips(range(64), args.size, args.seed)  # draw the sprites once here: the workers inherit them
    pool = ReplayPool(args.pool, args.size, device)
    pool.start(DataLoader(ClipStream(args.size, args.seed, args.chunk), batch_size=None, num_workers=args.workers,
                          pin_memory=on_cuda, prefetch_factor=4, persistent_workers=True))
    t_fill = time.perf_counter()
    while pool.filled < min_fill:
        pool.take(block=True)
    print(f"pool: {pool.filled} clips after {time.perf_counter() - t_fill:.1f} s; training", flush=True)

    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    step, seen, last = 0, 0, t0
    while step < args.steps:
        progress = max(step / args.steps, (time.perf_counter() - t0) / (60 * args.minutes))
        if progress >= 1:
            break
        step += 1
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / args.warmup) * 0.5 * (1 + math.cos(math.pi * progress))
        pool.take()
        pixels, labels = pool.sample(args.batch, g)
        frames = FRAMES if step % 2 else FRAMES // 2
        x = to_clips(pixels, frames, offset=int(torch.randint(0, FRAMES // frames, (1,), generator=g)))
        x, motion = augment(x, labels[:, 2], g)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = judge(x)
        loss, parts = loss_fn(out, motion, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += args.batch
        now = time.perf_counter()
        if now - last >= 20 or step == 1:
            last = now
            print(f"step {step:6d}  loss {loss.item():.4f} ({', '.join(f'{k} {v:.3f}' for k, v in parts.items())})"
                  f"  lr {opt.param_groups[0]['lr']:.2e}  rendered {pool.added} ({pool.added / (now - t_fill):.0f}/s)"
                  f"  drawn {seen} ({seen / (now - t0):.0f}/s)  {now - t0:.0f} s", flush=True)
    train_s = time.perf_counter() - t0
    print(f"trained {step} steps in {train_s:.0f} s; rendering {args.val} held-out clips", flush=True)

    judge = judge.to(memory_format=torch.contiguous_format)
    pixels, labels = render_heldout(args.val, args.size, args.val_seed, args.workers)
    acc = {}
    for frames, fps in SETTINGS:
        for softened in (False, True):
            key = f"{frames}x{fps:g}" + ("_soft" if softened else "")
            acc[key] = evaluate(judge, pixels, labels, frames, softened)
            print(f"held out {key}: " + " ".join(f"{k} {v:.4f}" for k, v in acc[key].items()), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    judge.cpu().save_pretrained(args.out, overwrite=True)
    figures = {"held_out": {k: {h: round(v, 4) for h, v in a.items()} for k, a in acc.items()},
               "held_out_n": args.val, "held_out_seed": args.val_seed, "train_seed": args.seed,
               "steps": step, "clips_rendered": pool.added, "clips_seen": seen, "device": str(device),
               "parameters": judge.num_parameters(),
               "weights_bytes": (args.out / "model.safetensors").stat().st_size, "train_s": round(train_s, 1)}
    write_text(args.out / "heldout.json", json.dumps(figures, indent=2) + "\n")
    write_text(args.out / "README.md", card(args, judge, acc, figures))
    for name in ("config.json", "model.safetensors"):
        os.chmod(args.out / name, 0o644)
    print(json.dumps(figures, indent=2))
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
