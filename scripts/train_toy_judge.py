"""Train the toy-world image judge that ships in gen/weights/toy-judge-image/.

    python scripts/train_toy_judge.py [--size 32] [--pool 24000] [--steps 900] [--out DIR]

Renders a pool of toy images, half of kind "single" and half "wearing" (seed 0), with
labels from their exact attributes: the main object is objects[0]; it wears a hat
iff the scene is a "wearing" one, whose hat colour is objects[1]["color"]. Trains the
`metrics.toy_judge.ImageJudge` CNN on it with light augmentation (horizontal flips,
shifts of a pixel or two, a mild blur, a little noise: the judge must read generated
images, which are softer and noisier than renders), AdamW with warmup and cosine decay,
bf16 autocast and channels_last on CPU. Then measures accuracy per head on fresh
renders of another seed and writes the weights and a model card with those figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gen.toyworld import COLORS, OBJECTS, toy_image
from metrics.toy_judge import ImageJudge

OUT = Path(__file__).resolve().parents[1] / "gen" / "weights" / "toy-judge-image"
KINDS = ("single", "wearing")
IGNORE = -100  # hat_color label of images without a hat


def render(n: int, size: int, seed: int) -> dict[str, torch.Tensor]:
    """n toy images (n/2 per kind) as uint8 (n, 3, size, size) and their labels."""
    cls_of, col_of = {c: i for i, c in enumerate(OBJECTS)}, {c: i for i, c in enumerate(COLORS)}
    images = np.empty((n, size, size, 3), np.uint8)
    labels = {k: np.empty(n, np.int64) for k in ("cls", "color", "hat", "hat_color")}
    for i in range(n):
        kind = KINDS[i % 2]
        sample = toy_image(i // 2, size=size, seed=seed, kind=kind)
        objs = sample.attributes["objects"]
        images[i] = sample.pixels
        labels["cls"][i] = cls_of[objs[0]["class"]]
        labels["color"][i] = col_of[objs[0]["color"]]
        labels["hat"][i] = kind == "wearing"
        labels["hat_color"][i] = col_of[objs[1]["color"]] if kind == "wearing" else IGNORE
    out = {k: torch.from_numpy(v) for k, v in labels.items()}
    out["images"] = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (n, 3, S, S)
    return out


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0  # uint8 -> [-1, 1]


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Light, label-preserving: flips, shifts of up to 2 px, mild blur, a little noise."""
    b, _, s, _ = x.shape
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = 2
    padded = F.pad(x, (pad,) * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()  # one shift per batch
    x = padded[..., dy:dy + s, dx:dx + s]
    blur = torch.rand(b, generator=g) < 0.3  # down to 45-85% of the side and back up
    if blur.any():
        side = int(s * (0.45 + 0.4 * torch.rand(1, generator=g).item()))
        soft = F.interpolate(F.interpolate(x[blur], size=(side, side), mode="bilinear", antialias=True),
                             size=(s, s), mode="bilinear")
        x = x.clone()
        x[blur] = soft
    sigma = 0.05 * torch.rand(b, 1, 1, 1, generator=g)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def loss_fn(out: dict, y: dict) -> tuple[torch.Tensor, dict]:
    parts = {
        "cls": F.cross_entropy(out["cls"].float(), y["cls"]),
        "color": F.cross_entropy(out["color"].float(), y["color"]),
        "hat": F.binary_cross_entropy_with_logits(out["hat"].float(), y["hat"].float()),
        "hat_color": F.cross_entropy(out["hat_color"].float(), y["hat_color"], ignore_index=IGNORE),
    }
    return sum(parts.values()), {k: v.item() for k, v in parts.items()}


@torch.no_grad()
def evaluate(judge: ImageJudge, data: dict, batch: int = 500) -> dict[str, float]:
    """Accuracy per head (hat colour over images with a hat) and all four right."""
    judge.eval()
    hits = {k: 0 for k in ("cls", "color", "hat", "hat_color", "all")}
    n = len(data["cls"])
    for i in range(0, n, batch):
        out = judge(to_unit(data["images"][i:i + batch]))
        y = {k: v[i:i + batch] for k, v in data.items() if k != "images"}
        ok = {"cls": out["cls"].argmax(-1) == y["cls"], "color": out["color"].argmax(-1) == y["color"],
              "hat": (out["hat"] > 0) == y["hat"].bool()}
        ok["hat_color"] = (out["hat_color"].argmax(-1) == y["hat_color"]) | (y["hat_color"] == IGNORE)
        ok["all"] = ok["cls"] & ok["color"] & ok["hat"] & ok["hat_color"]
        for k in ok:
            hits[k] += int(ok[k].sum())
    judge.train()
    n_hat = int((data["hat_color"] != IGNORE).sum())
    return {k: (hits[k] - (n - n_hat) if k == "hat_color" else hits[k]) / (n_hat if k == "hat_color" else n)
            for k in hits}


def write_card(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".README.md.", dir=path)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path / "README.md")


def card(args, judge: ImageJudge, acc: dict, val_n: int, render_s: float, train_s: float, size_bytes: int) -> str:
    rows = "\n".join(f"| {name} | {acc[k] * 100:.2f}% |" for k, name in
                     (("cls", "object class"), ("color", "object colour"), ("hat", "hat (yes/no)"),
                      ("hat_color", "hat colour (images with a hat)"), ("all", "all four right")))
    return f"""# toy-judge-image

A compact CNN that reads a toy-world image and names its main object's class and
colour, whether it wears a hat, and the hat's colour. It is the judge behind the
toolkit's prompt-accuracy metric (`metrics.toy_judge.judge_prompts`): it needs no
downloaded weights and its answers are exact on the toy world.

- Class: `metrics.toy_judge.ImageJudge` ({judge.num_parameters():,} parameters, fp32
  safetensors, {size_bytes / 1e6:.2f} MB). Load with `ImageJudge.from_pretrained(path)`.
- Input: images (B, 3, H, W) in [-1, 1], any size; resized (antialiased bilinear) to
  {args.size}x{args.size}.
- Heads: `cls` ({len(judge.classes)} objects: {", ".join(judge.classes)}), `color`
  ({len(judge.colors)} colours: {", ".join(judge.colors)}), `hat` (one logit), `hat_color`
  (same colours; meaningful only when there is a hat).

## Data

{args.pool:,} toy-world renders at {args.size}x{args.size}, half `toy_image(i, kind="single")`,
half `kind="wearing"`, seed {args.seed}. Labels from the exact attributes: main object =
`objects[0]`, hat = the scene is a wearing one, hat colour = `objects[1]["color"]`.
Augmentation: horizontal flip, a shift of up to 2 px, a mild blur (down to 45-85% of
the side and back) on 30% of images, Gaussian noise with sigma up to 0.05.

## Recipe

    python scripts/train_toy_judge.py --size {args.size} --pool {args.pool} --steps {args.steps} \\
        --batch {args.batch} --lr {args.lr} --seed {args.seed}

AdamW (lr {args.lr}, weight decay 0.05, {args.warmup} warmup steps, cosine decay), batch
{args.batch}, {args.steps} steps, bf16 autocast and channels_last on CPU
({torch.get_num_threads()} threads). Loss: the sum of cross-entropy on `cls`, `color`,
`hat_color` (images with a hat only) and binary cross-entropy on `hat`.
Wall time: rendering {render_s:.0f} s, training {train_s:.0f} s.

## Held-out accuracy

{val_n:,} fresh renders (half single, half wearing) of seed {args.val_seed}, measured by the
training script after training (fp32, eval mode):

| head | accuracy |
| --- | --- |
{rows}

## Limits

It knows only the toy world's objects and colours, and reads only the main object of
single-object and wearing scenes; scores on other scenes (relations, counts) or on
images far from the toy world's look mean little.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="native side of the judge and of the renders")
    parser.add_argument("--pool", type=int, default=24000, help="training renders (half per kind)")
    parser.add_argument("--val", type=int, default=2000, help="held-out renders (half per kind)")
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="toy-world seed of the training pool")
    parser.add_argument("--val-seed", type=int, default=1, help="toy-world seed of the held-out renders")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.seed == args.val_seed:
        parser.error(f"--val-seed must differ from --seed (both {args.seed}): held-out renders must be fresh")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    train, val = render(args.pool, args.size, args.seed), render(args.val, args.size, args.val_seed)
    render_s = time.perf_counter() - t0
    print(f"rendered {args.pool} + {args.val} images at {args.size}px in {render_s:.0f} s")

    judge = ImageJudge.from_config({"classes": list(OBJECTS), "colors": list(COLORS), "image_size": args.size})
    print(f"judge: {judge.num_parameters():,} parameters")
    judge = judge.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(judge.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 *
                                                 (1 + math.cos(math.pi * min(s / args.steps, 1.0))))
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, args.pool, (args.batch,), generator=g)
        x = augment(to_unit(train["images"][idx]), g).contiguous(memory_format=torch.channels_last)
        y = {k: v[idx] for k, v in train.items() if k != "images"}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = judge(x)
        loss, parts = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps:
            acc = evaluate(judge, {k: v[:500] for k, v in val.items()})
            print(f"step {step:5d}  loss {loss.item():.4f} ({', '.join(f'{k} {v:.3f}' for k, v in parts.items())})"
                  f"  val500 " + " ".join(f"{k} {v:.3f}" for k, v in acc.items())
                  + f"  {time.perf_counter() - t0:.0f} s", flush=True)
    train_s = time.perf_counter() - t0

    judge = judge.to(memory_format=torch.contiguous_format)
    acc = evaluate(judge, val)
    args.out.mkdir(parents=True, exist_ok=True)
    judge.save_pretrained(args.out, overwrite=True)
    size_bytes = (args.out / "model.safetensors").stat().st_size
    write_card(args.out, card(args, judge, acc, args.val, render_s, train_s, size_bytes))
    for name in ("config.json", "model.safetensors", "README.md"):
        os.chmod(args.out / name, 0o644)  # temp files are created 0600: ship them readable
    figures = {"held_out": {k: round(v, 4) for k, v in acc.items()}, "held_out_n": args.val,
               "parameters": judge.num_parameters(), "weights_bytes": size_bytes,
               "render_s": round(render_s, 1), "train_s": round(train_s, 1)}
    print(json.dumps(figures, indent=2))
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
