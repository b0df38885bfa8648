"""diffusers denoisers behind our contract `model(x_t, t, cond) -> prediction`.

    net = load_diffusers("path/to/unet_folder")          # class read from config.json
    net = adapt(diffusers.DiTTransformer2DModel(...))      # or wrap a model you built
    eps = net(x_t, t, {"text": ..., "text_mask": ...})

| diffusers class | adapter | x | cond keys |
| --- | --- | --- | --- |
| UNet2DConditionModel (SD) | DiffusersUNet2D | (B, C, H, W) | text [, text_mask, label, pooled + time_ids] |
| UNet2DModel (DDPM, Ho et al. 2020) | DiffusersPlainUNet2D | (B, C, H, W) | none, or label |
| DiTTransformer2DModel (Peebles & Xie 2023) | DiffusersDiT | (B, C, H, W) | label |
| UNet3DConditionModel (ModelScope T2V) | DiffusersUNet3D | (B, C, T, H, W) | text |

Each adapter exposes `in_channels`, `out_channels`, `cond_keys`, `is_video` and the
wrapped model as `.model`; it checks the call with `models.denoiser.check_inputs`, runs
the model in its own dtype and returns the prediction in x's dtype. What the prediction
means (eps, v, x0) is the checkpoint's scheduler config, not the adapter's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .denoiser import check_inputs

SUPPORTED = ("UNet2DConditionModel", "UNet2DModel", "DiTTransformer2DModel", "Transformer2DModel",
             "UNet3DConditionModel")


class DiffusersDenoiser(nn.Module):
    """Shared plumbing: attributes from the diffusers config, input checks, dtype handling."""

    is_video = False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.in_channels = model.config.in_channels
        self.out_channels = model.config.out_channels or model.config.in_channels
        self.cond_keys: tuple[str, ...] = ()

    def _inputs(self, x, t, cond):
        """Check the call, then cast x and floating cond tensors to the model's dtype."""
        cond = check_inputs(type(self).__name__, x, t, cond, self.in_channels,
                            (5,) if self.is_video else (4,), self.cond_keys)
        dtype = self.model.dtype
        cond = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in cond.items()}
        return x.to(dtype), cond

    def _check_text(self, text: torch.Tensor, batch: int, width: int | None) -> None:
        if text.dim() != 3 or text.shape[0] != batch or (width is not None and text.shape[-1] != width):
            raise ValueError(f"{type(self).__name__} takes cond['text'] of shape ({batch}, L, {width or 'D'}) "
                             f"(the text encoder's token states), got {tuple(text.shape)}")

    def _check_label(self, label: torch.Tensor, batch: int) -> None:
        if label.shape[:1] != (batch,):
            raise ValueError(f"{type(self).__name__} takes cond['label'] of shape ({batch},), got {tuple(label.shape)}")


class DiffusersUNet2D(DiffusersDenoiser):
    """UNet2DConditionModel (Rombach et al. 2022): cross-attention to cond["text"].

    cond["text"] -> encoder_hidden_states; cond["text_mask"] (when given and
    `use_text_mask`) -> encoder_attention_mask, so padding tokens are not attended.
    Stable Diffusion's checkpoints were trained attending to every one of their 77
    tokens, padding included: wrap those with `use_text_mask=False`. cond["label"] feeds
    `class_labels` when the UNet has a class embedding; SDXL's "text_time" addition
    takes cond["pooled"] (text_embeds) and cond["time_ids"].
    """

    def __init__(self, unet: nn.Module, use_text_mask: bool = True):
        super().__init__(unet)
        cfg = unet.config
        if cfg.addition_embed_type not in (None, "text", "text_time"):
            raise ValueError(f"DiffusersUNet2D does not feed addition_embed_type={cfg.addition_embed_type!r} "
                             f"(image embeddings); supported: None, 'text', 'text_time'")
        if cfg.encoder_hid_dim_type not in (None, "text_proj"):
            raise ValueError(f"DiffusersUNet2D does not feed encoder_hid_dim_type={cfg.encoder_hid_dim_type!r}")
        self.use_text_mask = use_text_mask
        self.text_dim = cfg.encoder_hid_dim if cfg.encoder_hid_dim_type else cfg.cross_attention_dim
        if isinstance(self.text_dim, (list, tuple)):  # per-block cross_attention_dim: no single width
            self.text_dim = None
        self.cond_keys = ("text",) + (("label",) if unet.class_embedding is not None else ()) \
            + (("pooled", "time_ids") if cfg.addition_embed_type == "text_time" else ())

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        h, cond = self._inputs(x, t, cond)  # (B, C, H, W)
        self._check_text(cond["text"], x.shape[0], self.text_dim)
        if "label" in self.cond_keys:
            self._check_label(cond["label"], x.shape[0])
        mask = cond.get("text_mask") if self.use_text_mask else None
        added = {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]} if "time_ids" in self.cond_keys else None
        out = self.model(h, t, encoder_hidden_states=cond["text"], class_labels=cond.get("label"),
                         encoder_attention_mask=mask, added_cond_kwargs=added, return_dict=False)[0]
        return out.to(x.dtype)  # (B, out_channels, H, W)


class DiffusersPlainUNet2D(DiffusersDenoiser):
    """UNet2DModel (Ho et al. 2020's DDPM U-Net): unconditional, or class-conditional
    through cond["label"] when built with `num_class_embeds` / `class_embed_type`."""

    def __init__(self, unet: nn.Module):
        super().__init__(unet)
        self.cond_keys = ("label",) if unet.class_embedding is not None else ()

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        h, cond = self._inputs(x, t, cond)  # (B, C, H, W)
        if self.cond_keys:
            self._check_label(cond["label"], x.shape[0])
        out = self.model(h, t, class_labels=cond.get("label") if self.cond_keys else None, return_dict=False)[0]
        return out.to(x.dtype)


class DiffusersDiT(DiffusersDenoiser):
    """DiTTransformer2DModel (Peebles & Xie 2023, adaLN-Zero): class-conditional on cond["label"].

    DiT learns the reverse-process variance (Nichol & Dhariwal 2021, eq. 15): with
    `learned_sigma` (out_channels == 2 * in_channels) the full output is returned,
    channels [0:C) the eps prediction and [C:2C) the interpolation weight v of
    log-variance; the pipeline splits off the first half. The null class for
    classifier-free guidance is `null_label` (= num_embeds_ada_norm). Note that in
    `train()` mode diffusers itself replaces 10% of labels with the null class.
    """

    def __init__(self, transformer: nn.Module):
        super().__init__(transformer)
        self.out_channels = transformer.out_channels
        self.learned_sigma = self.out_channels == 2 * self.in_channels
        self.null_label = transformer.config.num_embeds_ada_norm
        self.cond_keys = ("label",)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        h, cond = self._inputs(x, t, cond)  # (B, C, H, W)
        self._check_label(cond["label"], x.shape[0])
        out = self.model(h, timestep=t, class_labels=cond["label"], return_dict=False)[0]
        return out.to(x.dtype)  # (B, 2C, H, W) when learned_sigma


class DiffusersUNet3D(DiffusersDenoiser):
    """UNet3DConditionModel (ModelScope text-to-video, Wang et al. 2023): x is (B, C, T, H, W),
    the layout it takes natively; cond["text"] -> encoder_hidden_states. The model has no
    encoder attention mask, so a cond["text_mask"] is not used (`use_text_mask = False`)."""

    is_video = True
    use_text_mask = False

    def __init__(self, unet: nn.Module):
        super().__init__(unet)
        self.cond_keys = ("text",)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        h, cond = self._inputs(x, t, cond)  # (B, C, T, H, W)
        self._check_text(cond["text"], x.shape[0], self.model.config.cross_attention_dim)
        out = self.model(h, t, encoder_hidden_states=cond["text"], return_dict=False)[0]
        return out.to(x.dtype)  # (B, out_channels, T, H, W)


def adapt(model: nn.Module, use_text_mask: bool = True) -> DiffusersDenoiser:
    """Wrap a diffusers model in the adapter for its class (`use_text_mask`: DiffusersUNet2D only)."""
    import diffusers

    if isinstance(model, diffusers.UNet2DConditionModel):
        return DiffusersUNet2D(model, use_text_mask=use_text_mask)
    for cls, adapter in ((diffusers.UNet2DModel, DiffusersPlainUNet2D), (diffusers.DiTTransformer2DModel, DiffusersDiT),
                         (diffusers.UNet3DConditionModel, DiffusersUNet3D)):
        if isinstance(model, cls):
            return adapter(model)
    raise TypeError(f"no adapter for {type(model).__name__}; supported: UNet2DConditionModel, UNet2DModel, "
                    f"DiTTransformer2DModel, UNet3DConditionModel")


def _read_config(path_or_id: str, subfolder: str | None, local_files_only: bool, kwargs: dict) -> dict:
    import diffusers

    try:
        return diffusers.UNet2DConditionModel.load_config(  # any model class: it reads config.json as is
            path_or_id, subfolder=subfolder, local_files_only=local_files_only,
            **{k: kwargs[k] for k in ("cache_dir", "revision", "token") if k in kwargs})
    except (OSError, ValueError) as e:
        where = f"{path_or_id}" + (f" (subfolder {subfolder!r})" if subfolder else "")
        if os.path.isdir(path_or_id):
            hint = f"{where} has no diffusers config.json"
        elif path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") != 1:  # hub ids are "org/name"
            hint = f"no folder {path_or_id}"
        elif local_files_only:
            hint = (f"{where} is neither a local folder nor in the Hugging Face cache, and local_files_only=True "
                    f"tries no download: run `huggingface-cli download {path_or_id}` on a machine with network and "
                    f"pass the folder it writes, or pass local_files_only=False where the hub is reachable")
        else:
            hint = f"could not fetch {where}'s config.json from the hub"
        detail = str(e).splitlines()[0] if str(e) else ""
        raise FileNotFoundError(f"load_diffusers: {hint} ({type(e).__name__}: {detail})") from e


def load_diffusers(path_or_id: str | os.PathLike, subfolder: str | None = None, local_files_only: bool = True,
                   use_text_mask: bool = True, **kwargs) -> DiffusersDenoiser:
    """Load a diffusers denoiser folder (or cached hub id) and wrap it in its adapter.

    The class comes from config.json's `_class_name` (legacy "Transformer2DModel" DiT
    checkpoints are remapped to DiTTransformer2DModel by diffusers itself). For a pipeline
    folder (model_index.json) without `subfolder`, its "unet" or "transformer" part is
    taken. Hub ids resolve from the local cache only unless `local_files_only=False`.
    `use_text_mask` goes to DiffusersUNet2D; other kwargs (torch_dtype, cache_dir, revision,
    variant, ...) go to `from_pretrained`.
    """
    import diffusers

    path_or_id = str(path_or_id)
    index = Path(path_or_id) / "model_index.json"
    if subfolder is None and index.is_file():
        parts = json.loads(index.read_text())
        subfolder = next((p for p in ("unet", "transformer") if p in parts), None)
        if subfolder is None:
            raise ValueError(f"{path_or_id} is a diffusers pipeline without a unet or transformer; "
                             f"pass subfolder= (its parts: {', '.join(k for k in parts if not k.startswith('_'))})")
    config = _read_config(path_or_id, subfolder, local_files_only, kwargs)
    name = config.get("_class_name")
    if name not in SUPPORTED:
        raise ValueError(f"load_diffusers: {path_or_id} holds a {name}; supported: {', '.join(SUPPORTED)}")
    model = getattr(diffusers, name).from_pretrained(path_or_id, subfolder=subfolder,
                                                     local_files_only=local_files_only, **kwargs)
    return adapt(model, use_text_mask=use_text_mask)
