"""What a run says about itself: `loss.png` (loss and samples/s against step, from
log.jsonl) beside the log at every checkpoint, and a model card (README.md) in every
exported pipeline: the recipe, the data, steps, samples seen, wall time, the last figures.
Drawn with Pillow alone, so a run needs no plotting library.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

WIDTH, HEIGHT, MARGIN = 640, 220, 48


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash: the rest still plots
            continue
    return [r for r in rows if isinstance(r, dict) and "step" in r]


def _panel(draw, top: int, xs: list[float], ys: list[float], title: str, log_y: bool, colour) -> None:
    """One line plot in the band [top, top + HEIGHT): axes, min / max labels, the line."""
    left, right, bottom = MARGIN + 24, WIDTH - 16, top + HEIGHT - 28
    upper = top + 22
    draw.text((left, top + 4), title, fill="black")
    draw.rectangle([left, upper, right, bottom], outline="grey")
    pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y) and (y > 0 or not log_y)]
    if len(pairs) < 1:
        return
    fy = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    x0, x1 = min(p[0] for p in pairs), max(p[0] for p in pairs)
    y0, y1 = min(fy(p[1]) for p in pairs), max(fy(p[1]) for p in pairs)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9)
    points = [(left + (x - x0) / (x1 - x0) * (right - left), bottom - (fy(y) - y0) / (y1 - y0) * (bottom - upper))
              for x, y in pairs]
    if len(points) > 1:
        draw.line(points, fill=colour, width=2)
    else:
        draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
    top_label, low_label = (10**y1, 10**y0) if log_y else (y1, y0)
    draw.text((4, upper), f"{top_label:.3g}", fill="black")
    draw.text((4, bottom - 10), f"{low_label:.3g}", fill="black")
    draw.text((left, bottom + 4), f"step {x0:g}", fill="black")
    end = f"{x1:g}"
    draw.text((right - 8 * len(end), bottom + 4), end, fill="black")


def plot_log(log: Path, out: Path) -> Path | None:
    """loss.png from log.jsonl (loss on a log scale, then samples/s); None if nothing is logged."""
    from PIL import Image, ImageDraw

    rows = read_log(log)
    if not rows:
        return None
    image = Image.new("RGB", (WIDTH, 2 * HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    steps = [float(r["step"]) for r in rows]
    _panel(draw, 0, steps, [float(r.get("loss", math.nan)) for r in rows], "training loss (log scale)", True,
           (31, 119, 180))
    _panel(draw, HEIGHT, steps, [float(r.get("samples_per_s", math.nan)) for r in rows], "samples / s", False,
           (214, 39, 40))
    tmp = out.with_name(out.name + ".partial.png")
    image.save(tmp)
    tmp.replace(out)
    return out


def write_card(run: Path, config: dict, target: Path) -> Path:
    """README.md in an exported pipeline: how it was trained and what its log last said."""
    rows = read_log(run / "log.jsonl")
    last = rows[-1] if rows else {}
    step = int(last.get("step", 0))
    every = config.get("log_every") or 1
    seconds = sum(every / r["steps_per_s"] for r in rows if r.get("steps_per_s"))
    first = rows[0] if rows else {}
    data = config.get("data")
    lines = [f"# {Path(config.get('out') or run).name} ({config.get('kind')} model trained with `gen train`)", "",
             "## Recipe", "",
             f"- data: `{data}`" + (f" (split {config['data_split']})" if config.get("data_split") else "")
             + (f", {config['data_n']:,} distinct samples" if config.get("data_n") else "")
             + f", {config.get('size')} px" + (f", crops of {config['crop']}" if config.get("crop") else ""),
             f"- model: `{config.get('model')}`; schedule {json.dumps(config.get('schedule'))}",
             f"- batch {config.get('batch')}" + (f" ({config['accumulate']} micro-batches)"
                                                  if config.get("accumulate", 1) > 1 else "")
             + f", lr {config.get('lr')}, warm-up {config.get('warmup')}, EMA {config.get('ema_decay')}, "
             f"{'bf16 autocast' if config.get('bf16') else 'float32'}, seed {config.get('seed')}",
             "", "## Training", "",
             f"- {step:,} steps, {step * int(config.get('batch') or 0):,} samples seen, "
             f"{seconds / 60:.1f} min of training (from the log)",
             ]
    if last:
        lines.append(f"- loss {first.get('loss', float('nan')):.4g} at step {first.get('step')} -> "
                     f"{last.get('loss', float('nan')):.4g} at step {step}; "
                     f"{last.get('samples_per_s', float('nan')):.1f} samples/s at the end")
    lines += ["", "The full log is the run's `log.jsonl`; `loss.png` plots it. The config is `config.json`.", ""]
    path = target / "README.md"
    path.write_text("\n".join(lines))
    return path
