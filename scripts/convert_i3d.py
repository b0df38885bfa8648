"""Convert StyleGAN-V's FVD I3D (`i3d_torchscript.pt`) once into a safetensors state dict for metrics.i3d.I3D.

    python scripts/convert_i3d.py                  # the file resolve("i3d-fvd") finds; writes
                                                   # i3d_torchscript.safetensors next to it, where load_i3d() looks
    python scripts/convert_i3d.py path/to/i3d_torchscript.pt --out i3d.safetensors
    python scripts/convert_i3d.py --download       # fetch the upstream file first (the registry's URL)
    python scripts/convert_i3d.py FILE --show-code # also print the archive's own forward() source

SECURITY: this runs `torch.jit.load` on the archive, i.e. executes the TorchScript code stored
in it. Run it only on a file from a source you trust, ideally on a machine you can afford to
lose. The library itself never does this; it only reads the safetensors file written here.

Parameter names. The archive's module is `__torch__.src.i3dpt_jit.I3D` (the class path that
torch prints when its forward is called wrongly, as reported in public issue threads),
i.e. a TorchScript-ready variant of the `I3D` of hassony2/kinetics_i3d_pytorch `src/i3dpt.py`,
whose state dict names are `conv3d_1a_7x7.conv3d.weight`, `...batch3d.running_var`,
`mixed_3b.branch_1.0.conv3d.weight` and `conv3d_0c_1x1.conv3d.bias`. The archive's own names
have not been seen here (no copy of the file), so the mapping tries, in order:

  1. this module's names as they are;
  2. i3dpt's names (above) -> ours, name by name;
  3. piergiaj/pytorch-i3d's names (`Mixed_3b.b1a.conv3d.weight`, `logits.conv3d.bias`);
  4. by structure: the archive's tensors in their stored order, paired one by one with ours
     (num_batches_tracked counters left out), every shape checked.

Whatever mapping is used, the result is only written after the outputs agree: the same
random 16-frame clip through the archive and through the converted native module,

  network    224x224 floats in [-1, 1]:  archive(x, rescale=False, resize=False, return_features=True)
  protocol   uint8 values at another size: archive(u, rescale=True, resize=True, return_features=True)
             against I3D()(u): checks the rescale and the resize (bilinear, align_corners=False) too

with the max abs differences printed. If the network agrees but the protocol does not, the
archive's resize is not the one assumed; the nearest of a few alternatives is printed. An
18-frame clip is also compared and reported (not used by the protocol): it tells whether the
archive's temporal max pools pad like TF 'SAME' (as metrics.i3d does) or like i3dpt's fixed
(k - s) padding with ceil_mode, which differ when a pooled length is odd.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metrics.i3d import CONVERTED_FILENAME, INPUT_SIZE, I3D, converted_candidates, i3d_from_state_dict  # noqa: E402
from metrics.weights import resolve  # noqa: E402

RTOL = 1e-3  # max |archive - ours| <= RTOL * max(1, max |archive|): float32 round-off, not a different network

# our Unit3D / block names -> the two known PyTorch ports' names
I3DPT_TOP = {"Logits": "conv3d_0c_1x1"}  # others: lower case (Conv3d_1a_7x7 -> conv3d_1a_7x7, Mixed_3b -> mixed_3b)
I3DPT_BRANCH = {"branch_0": "branch_0", "branch_1a": "branch_1.0", "branch_1b": "branch_1.1",
                "branch_2a": "branch_2.0", "branch_2b": "branch_2.1", "branch_3b": "branch_3.1"}
I3DPT_UNIT = {"conv": "conv3d", "bn": "batch3d"}
PYTORCH_I3D_TOP = {"Logits": "logits"}
PYTORCH_I3D_BRANCH = {"branch_0": "b0", "branch_1a": "b1a", "branch_1b": "b1b", "branch_2a": "b2a",
                      "branch_2b": "b2b", "branch_3b": "b3b"}
PYTORCH_I3D_UNIT = {"conv": "conv3d", "bn": "bn"}


def _rename(key: str, top: dict, branch: dict, unit: dict, lower: bool) -> str:
    """One of our keys in another port's names, e.g. Mixed_3b.branch_1a.bn.bias -> mixed_3b.branch_1.0.batch3d.bias."""
    parts = key.split(".")
    head = top.get(parts[0], parts[0].lower() if lower else parts[0])
    if parts[1] in branch:  # <block>.<branch>.<conv|bn>.<tensor>
        return ".".join([head, branch[parts[1]], unit[parts[2]], *parts[3:]])
    return ".".join([head, unit[parts[1]], *parts[2:]])  # <unit>.<conv|bn>.<tensor>


def i3dpt_name(key: str) -> str:
    """Our key as hassony2/kinetics_i3d_pytorch `src/i3dpt.py` names it."""
    return _rename(key, I3DPT_TOP, I3DPT_BRANCH, I3DPT_UNIT, lower=True)


def pytorch_i3d_name(key: str) -> str:
    """Our key as piergiaj/pytorch-i3d `pytorch_i3d.py` (InceptionI3d) names it."""
    return _rename(key, PYTORCH_I3D_TOP, PYTORCH_I3D_BRANCH, PYTORCH_I3D_UNIT, lower=False)


def _tensors(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def map_state_dict(upstream: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> tuple[dict, str]:
    """`upstream` (any port's state dict) in `ours`' names, and how it was mapped ("names", "i3dpt names",
    "pytorch-i3d names" or "stored order"). Every shape is checked; a failure says where."""
    up, target = _tensors(upstream), _tensors(ours)
    for how, rename in (("names", lambda k: k), ("i3dpt names", i3dpt_name), ("pytorch-i3d names", pytorch_i3d_name)):
        names = {k: rename(k) for k in target}
        if set(names.values()) == set(up):
            mapped = {k: up[name] for k, name in names.items()}
            break
    else:
        how = "stored order"
        if len(up) != len(target):
            raise ValueError(f"the archive holds {len(up)} tensors (not counting num_batches_tracked), the I3D "
                             f"{len(target)}: not the same network, or another width / class count")
        mapped = dict(zip(target, up.values()))
    for i, (k, v) in enumerate(target.items()):
        if mapped[k].shape != v.shape:
            source = list(up)[i] if how == "stored order" else k
            raise ValueError(f"mapping by {how}: tensor #{i} {source} has shape {tuple(mapped[k].shape)}, but the "
                             f"I3D's {k} is {tuple(v.shape)}")
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in mapped.items()}, how


def infer_config(upstream: dict[str, torch.Tensor]) -> dict:
    """num_classes and width from the archive's tensors: Conv3d_1a_7x7's weight is the one (64 width, 3, 7, 7, 7)
    tensor, the logits' the (num_classes, 1024 width, 1, 1, 1) one (no other layer has 1024 width inputs)."""
    first = [v for v in upstream.values() if v.dim() == 5 and tuple(v.shape[1:]) == (3, 7, 7, 7)]
    if len(first) != 1:
        raise ValueError(f"the archive has {len(first)} (C, 3, 7, 7, 7) RGB convolutions, an I3D one: not an I3D")
    width = first[0].shape[0] / 64
    logits = [v for v in upstream.values()
              if v.dim() == 5 and tuple(v.shape[2:]) == (1, 1, 1) and v.shape[1] == round(1024 * width)]
    if len(logits) != 1:
        raise ValueError(f"the archive has {len(logits)} 1x1x1 convolutions from {round(1024 * width)} channels, "
                         "an I3D one (its logits): not an I3D")
    return {"num_classes": logits[0].shape[0], "width": width}


def random_clips(frames: int, size: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip twice: (1, 3, frames, 224, 224) floats in [-1, 1], and (1, 3, frames, *size) uint8."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, frames, INPUT_SIZE, INPUT_SIZE, generator=g) * 2 - 1
    return x, torch.randint(0, 256, (1, 3, frames, *size), generator=g, dtype=torch.uint8)


def agrees(diff: float, scale: float) -> bool:
    """Whether outputs `diff` apart (max abs) at magnitude `scale` are the same network up to float32 round-off."""
    return diff <= RTOL * max(1.0, scale)


@torch.no_grad()
def compare(archive, model: I3D, frames: int = 16, size: tuple[int, int] = (128, 160), seed: int = 0) -> dict:
    """{"network", "protocol"}: (max |archive - ours|, max |archive|, the archive's output) on one random clip of
    `frames` frames: 224x224 floats in [-1, 1] for the network, uint8 values at `size` for the protocol."""
    x, u = random_clips(frames, size, seed)
    out = {}
    pairs = (("network", lambda: archive(x, rescale=False, resize=False, return_features=True),
              lambda: model.logits(x)),
             ("protocol", lambda: archive(u.float(), rescale=True, resize=True, return_features=True),
              lambda: model(u)))
    for name, theirs, mine in pairs:
        with torch.jit.optimized_execution(False):  # the archive's ops as written: no profiling runs, no fusion
            a, b = theirs().float(), mine().float()
        if a.shape != b.shape:
            raise ValueError(f"{name}: the archive returns {tuple(a.shape)}, the I3D {tuple(b.shape)}")
        out[name] = ((a - b).abs().max().item(), a.abs().max().item(), a)
    return out


@torch.no_grad()
def diagnose_resize(model: I3D, reference: torch.Tensor, size: tuple[int, int], frames: int = 16, seed: int = 0) -> str:
    """Resizes that might be the archive's, nearest first: max |ours - `reference`| (the archive's protocol
    output on `compare`'s clip) with each in place of ours."""
    u = random_clips(frames, size, seed)[1]
    x = (u.float() / 255 * 2 - 1).flatten(1, 2)  # frames as channels
    variants = {"bilinear, align_corners=False": dict(mode="bilinear", align_corners=False),
                "bilinear, align_corners=True": dict(mode="bilinear", align_corners=True),
                "bilinear, antialias": dict(mode="bilinear", align_corners=False, antialias=True),
                "bicubic, align_corners=False": dict(mode="bicubic", align_corners=False)}
    diffs = {}
    for name, kwargs in variants.items():
        y = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), **kwargs).unflatten(1, (3, frames))
        diffs[name] = (model.logits(y) - reference).abs().max().item()
    return ", ".join(f"{k}: {v:.3g}" for k, v in sorted(diffs.items(), key=lambda kv: kv[1]))


def convert(archive) -> tuple[dict[str, torch.Tensor], str]:
    """The archive's weights in metrics.i3d.I3D's names (a full state dict, counters included)."""
    upstream = dict(archive.state_dict())
    reference = I3D(**infer_config(upstream)).state_dict()
    mapped, how = map_state_dict(upstream, reference)
    counters = {k: v.clone() for k, v in reference.items() if k.endswith("num_batches_tracked")}
    return {**counters, **mapped}, how


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("torchscript", nargs="?",
                        help="i3d_torchscript.pt (default: where resolve('i3d-fvd') finds it)")
    parser.add_argument("--out", help=f"output .safetensors (default: {CONVERTED_FILENAME} next to the input)")
    parser.add_argument("--download", action="store_true", help="fetch the upstream file if it is not here")
    parser.add_argument("--show-code", action="store_true", help="print the archive's forward() source")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"),
                        help="frame size of the protocol check's clip (default 128 160: resized to 224)")
    args = parser.parse_args(argv)

    source = Path(args.torchscript) if args.torchscript else resolve("i3d-fvd", allow_download=args.download)
    out = Path(args.out) if args.out else source.with_name(CONVERTED_FILENAME)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    print(f"source  {source} ({source.stat().st_size:,} bytes, SHA-256 {digest})")
    archive = torch.jit.load(str(source), map_location="cpu").eval()  # runs the archive's code: trusted files only
    if args.show_code:
        print(archive.code)

    state, how = convert(archive)
    model = i3d_from_state_dict(state)
    print(f"mapped  {len(state)} tensors by {how}; I3D(num_classes={model.num_classes}, width={model.width:g})")
    size = tuple(args.size)
    result = compare(archive, model, size=size)
    for name, (diff, scale, _) in result.items():
        verdict = "ok" if agrees(diff, scale) else "FAILED"
        print(f"{name:9s} max |archive - ours| = {diff:.3g} (max |archive| = {scale:.3g}) {verdict}")
    ok = all(agrees(diff, scale) for diff, scale, _ in result.values())
    if agrees(*result["network"][:2]) and not ok:
        print("the network agrees but the protocol does not: the archive preprocesses differently; nearest resize: "
              + diagnose_resize(model, result["protocol"][2], size))
    if not ok:
        print(f"not written: the converted network does not reproduce the archive (see above); {out} untouched")
        return 1
    try:
        diff, scale, _ = compare(archive, model, frames=18, size=size, seed=1)["network"]
        verdict = ("TF SAME pooling, as ours" if agrees(diff, scale) else
                   "pools differ: FVD of such clip lengths would differ from the archive's (16 and 128 do not)")
        print(f"18 frames (odd pooled lengths; not the protocol's): max |archive - ours| = {diff:.3g} "
              f"(max |archive| = {scale:.3g}): {verdict}")
    except Exception as e:  # informational only
        print(f"18 frames: not compared ({type(e).__name__}: {e})")

    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"source": source.name, "source_sha256": digest, "mapping": how,
                                         "module": "metrics.i3d.I3D"})
    found = any(file is not None and file.resolve() == out.resolve() for _, file in converted_candidates())
    print(f"wrote   {out}: " + ("metrics.i3d.load_i3d() finds it there" if found else
                                f"load it with metrics.i3d.load_i3d('{out}'), or move it to $GEN_WEIGHTS"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
