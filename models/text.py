"""The text encoder: CLIP's BPE tokenizer and text tower (Radford et al. 2021), open_clip-compatible.

    enc = TextEncoder(TextEncoderConfig())                      # "tiny": trained from scratch
    enc = TextEncoder(TextEncoderConfig(arch="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    cond = enc.encode(["a red circle left of a blue square"])
    cond["text"]       # (B, L, D) per-token states after ln_final: cross-attention context
    cond["text_mask"]  # (B, L) bool, True for SOT, the words and EOT; False for padding
    cond["pooled"]     # (B, E) the EOT token's state times text_projection (CLIP's text embedding)

The tower is CLIP's text transformer with open_clip's parameter names, built from an
open_clip model config (`open_clip.get_model_config(arch)["text_cfg"]`, or the "tiny"
preset below), so open_clip checkpoints load unchanged; the tokenizer reads the BPE
vocabulary bundled with open_clip. Both are gen's own code (the tests compare them with
open_clip's `TextTransformer` and `SimpleTokenizer`) because importing open_clip costs
seconds of start-up; the "tiny" arch never imports it.
Only archs on open_clip's bundled BPE vocabulary are accepted (the CLIP family: ViT-B-32,
ViT-L-14, ViT-H-14, ...); archs with a Hugging Face text model or tokenizer (SigLIP,
CLIPA, XLM-R, ...) would need downloads and are refused.

Pretrained weights are read from disk only, never downloaded: `pretrained` is a file
(`.safetensors`, or a `.pt`/`.bin` state dict read with `torch.load(weights_only=True)`)
or an open_clip tag whose file already sits in the cache (`$GEN_OPEN_CLIP_CACHE`, else
open_clip's defaults: the Hugging Face hub cache and ~/.cache/clip). A missing file is
one FileNotFoundError naming the places looked in and how to fill them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .base import ConfiguredModule, register
from .tokenizer import CLIPTokenizer

CACHE_ENV = "GEN_OPEN_CLIP_CACHE"

# A small tower for the toy world: ~6.3M parameters in the (49408, 128) token table
# (the size of the bundled BPE vocabulary), ~0.4M in two transformer layers.
TINY = {"embed_dim": 128, "quick_gelu": False,
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2}}


@dataclass
class TextEncoderConfig:
    """Which tower to build. `None` fields take the arch's value and are filled in at build
    time, so a saved config.json names the exact architecture.

    arch: an open_clip model name (`open_clip.list_models()`) or "tiny".
    pretrained: open_clip weights to load when the module is built (a file path or a tag
        from `open_clip.list_pretrained_tags_by_model(arch)`), or None for random init. A
        checkpoint folder written by `save_pretrained` holds the weights itself and is saved
        with `pretrained=None`.
    quick_gelu: the activation x*sigmoid(1.702x) of OpenAI's and LAION-400M's weights;
        None = the arch's setting, or the pretrained tag's when it names one.
    context_length: may be shorter than the checkpoint's; the positional table is then cut,
        which is exact for the causal tower as long as every prompt fits.
    """

    arch: str = "tiny"
    context_length: int | None = None
    width: int | None = None
    layers: int | None = None
    heads: int | None = None
    vocab_size: int | None = None
    embed_dim: int | None = None
    quick_gelu: bool | None = None
    pretrained: str | None = None
    hash_vocab: int | None = None  # fold the BPE ids into this many rows (small towers)


def fold_ids(tokens: torch.Tensor, buckets: int, sot_id: int, eot_id: int) -> torch.Tensor:
    """BPE ids -> [0, buckets): padding stays 0, SOT -> buckets - 2, EOT -> buckets - 1
    (still the largest id, so CLIP's argmax pooling finds it), every other id
    1 + (id mod (buckets - 3)). A small vocabulary such as the toy world's gets its own
    rows (the tests check it has no collisions) at a fraction of the 49408-row table."""
    folded = 1 + tokens % (buckets - 3)
    folded = torch.where(tokens == sot_id, buckets - 2, folded)
    folded = torch.where(tokens == eot_id, buckets - 1, folded)
    pad = torch.arange(tokens.shape[1], device=tokens.device) > (tokens == eot_id).int().argmax(-1, keepdim=True)
    return torch.where(pad & (tokens == eot_id).any(-1, keepdim=True), 0, folded)


def open_clip_model_config(arch: str) -> dict:
    """The open_clip model config dict (`embed_dim`, `text_cfg`, ...) for `arch`."""
    if arch == "tiny":
        return copy.deepcopy(TINY)
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(f"unknown text encoder arch {arch!r}; use 'tiny' or an open_clip model name "
                         f"such as ViT-B-32 (open_clip.list_models() lists {len(open_clip.list_models())})")
    text = cfg["text_cfg"]
    if text.get("hf_model_name") or text.get("hf_tokenizer_name") or "siglip" in arch.lower():
        raise ValueError(f"open_clip arch {arch!r} uses a Hugging Face text model or tokenizer, which would "
                         f"have to be downloaded; choose an arch on open_clip's bundled BPE vocabulary "
                         f"(e.g. ViT-B-32, ViT-L-14, ViT-H-14) or 'tiny'")
    return cfg


def _tag_config(arch: str, pretrained: str | None) -> dict:
    """open_clip's record for a pretrained tag ({} for a file path or no weights)."""
    if pretrained is None or arch == "tiny" or os.path.isfile(pretrained):
        return {}
    import open_clip

    return open_clip.get_pretrained_cfg(arch, pretrained)


def find_open_clip_weights(arch: str, pretrained: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local file holding open_clip weights `pretrained` (a path or a tag) for `arch`.

    Looks where `open_clip.create_model(arch, pretrained=tag, cache_dir=...)` would have
    saved them: for a tag with an `hf_hub` entry, the hub cache (open_clip's safetensors
    name first, then its .bin); for one with a `url`, `cache_dir/<file name>` (default
    ~/.cache/clip). `cache_dir` defaults to $GEN_OPEN_CLIP_CACHE. Never touches the network.
    """
    import open_clip

    if os.path.isfile(pretrained):
        return Path(pretrained)
    cache_dir = cache_dir or os.environ.get(CACHE_ENV) or None
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise FileNotFoundError(f"pretrained={pretrained!r} is neither a file nor an open_clip tag for {arch}; "
                                f"tags for {arch}: {', '.join(tags) or 'none'}")
    looked, fetch = [], []
    if cfg.get("file"):
        looked.append(Path(cfg["file"]))
    if cfg.get("hf_hub"):
        from huggingface_hub import constants, try_to_load_from_cache

        repo, name = os.path.split(cfg["hf_hub"])  # "org/repo/" names open_clip's default file
        name = name or "open_clip_pytorch_model.bin"
        safe = ("open_clip_model.safetensors" if name == "open_clip_pytorch_model.bin"
                else name[:-4] + ".safetensors" if name.endswith((".bin", ".pth")) else None)
        names = [n for n in (safe, name) if n]
        for n in names:
            hit = try_to_load_from_cache(repo, n, cache_dir=cache_dir)
            if isinstance(hit, str):
                return Path(hit)
        hub = cache_dir or constants.HF_HUB_CACHE
        looked.append(f"the Hugging Face hub cache {hub} ({repo}: {' or '.join(names)})")
        fetch.append(f"`huggingface-cli download {repo} {names[0]}`")
    if cfg.get("url"):
        file = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        looked.append(file)
        fetch.append(f"download {cfg['url']} into {file.parent}")
    for p in looked:
        if isinstance(p, Path) and p.is_file():
            return p
    raise FileNotFoundError(
        f"open_clip weights {arch}/{pretrained} are not on this machine (no downloads here); looked in: "
        f"{'; '.join(map(str, looked))}. Fetch them on a machine with network "
        f"({' or '.join(fetch) or 'see open_clip'}) "
        f"and copy them into that cache, point ${CACHE_ENV} at the folder holding them, or pass the "
        f"file's path as pretrained=")


@functools.lru_cache(maxsize=8)
def _tokenizer(context_length: int) -> CLIPTokenizer:
    """CLIP's BPE tokenizer on the vocabulary bundled with open_clip (every accepted arch uses it)."""
    return CLIPTokenizer(context_length=context_length)


# open_clip text_cfg fields the tower implements, and CLIP's values of the others
TOWER_FIELDS = ("context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio")
CLIP_VALUES = {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "pad_id": 0,
               "pool_type": "argmax", "proj_type": "linear", "proj_bias": False, "final_ln_after_pool": False,
               "attentional_pool": False, "use_pad_mask": False, "act_kwargs": None, "norm_kwargs": None,
               "tokenizer_kwargs": None}


def tower_config(arch: str, text_cfg: dict) -> dict:
    """The CLIPTextTower arguments in an open_clip text_cfg. A field whose value departs from
    CLIP's text transformer (CoCa's class token, a bidirectional mask, ...) is refused."""
    odd = {k: v for k, v in text_cfg.items()
           if k not in (*TOWER_FIELDS, "output_tokens") and CLIP_VALUES.get(k, ...) != v}
    if odd:
        raise ValueError(f"open_clip arch {arch!r} has a text tower unlike CLIP's ({odd}); gen builds CLIP's "
                         f"text transformer only: choose a CLIP-family arch such as ViT-B-32")
    return {k: text_cfg[k] for k in TOWER_FIELDS if k in text_cfg}


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer layer of CLIP's text tower: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, hidden),
                                             gelu=QuickGELU() if quick_gelu else nn.GELU(),
                                             c_proj=nn.Linear(hidden, width)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Blocks(nn.Module):
    def __init__(self, width: int, heads: int, layers: int, mlp_ratio: float, quick_gelu: bool):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio, quick_gelu)
                                       for _ in range(layers))


class CLIPTextTower(nn.Module):
    """CLIP's causal text transformer (Radford et al. 2021) under open_clip's parameter names
    (`token_embedding`, `positional_embedding`, `transformer.resblocks.N.{ln_1, attn, ln_2,
    mlp.c_fc, mlp.c_proj}`, `ln_final`, `text_projection`), so open_clip's CLIP checkpoints
    and gen's earlier ones load unchanged. It is built here rather than by open_clip, whose
    package import costs seconds on every start; the tests check it equals open_clip's
    `TextTransformer` for the same weights.

    forward(tokens (B, L)) -> (pooled (B, E), states (B, L, D)): states after ln_final, pooled
    the state at each row's largest id (EOT) times text_projection.
    """

    def __init__(self, context_length: int, vocab_size: int, width: int, heads: int, layers: int,
                 embed_dim: int, quick_gelu: bool = False, mlp_ratio: float = 4.0):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Blocks(width, heads, layers, mlp_ratio, quick_gelu)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        causal = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=False)
        # CLIP's initialisation (as open_clip's TextTransformer.init_parameters)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std, attn_std, fc_std = (width ** -0.5) * ((2 * layers) ** -0.5), width ** -0.5, (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:L]
        mask = self.attn_mask[:L, :L].to(x.dtype)
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(-1)]
        return pooled @ self.text_projection, x


@register
class TextEncoder(ConfiguredModule):
    """Prompts -> cond {text (B, L, D), text_mask (B, L), pooled (B, E)} for the denoisers.

    `dim` = D (the tower width, for cross-attention) and `pooled_dim` = E (the projection
    width, for adaLN/FiLM conditioning). The tower (`CLIPTextTower`) is under `self.tower`;
    its parameter names are open_clip's text-tower names.
    """

    config_class = TextEncoderConfig

    def __init__(self, config: TextEncoderConfig):
        super().__init__(config)
        cfg = open_clip_model_config(config.arch)
        tag = _tag_config(config.arch, config.pretrained)
        text = {"context_length": 77, "mlp_ratio": 4.0, **tower_config(config.arch, cfg["text_cfg"]),
                **{k: getattr(config, k) for k in ("context_length", "width", "layers", "heads", "vocab_size")
                   if getattr(config, k) is not None}}
        embed_dim = cfg["embed_dim"] if config.embed_dim is None else config.embed_dim
        quick_gelu = config.quick_gelu
        if quick_gelu is None:
            quick_gelu = bool(tag.get("quick_gelu", cfg.get("quick_gelu", False)))
        if text["width"] % text["heads"]:
            raise ValueError(f"text encoder width {text['width']} is not divisible by heads {text['heads']}")
        self.tokenizer = _tokenizer(text["context_length"])
        if config.hash_vocab is not None:
            if not 16 <= config.hash_vocab <= self.tokenizer.vocab_size:
                raise ValueError(f"hash_vocab must be between 16 and {self.tokenizer.vocab_size}, "
                                 f"got {config.hash_vocab}")
            text["vocab_size"] = config.hash_vocab
        elif text["vocab_size"] < self.tokenizer.vocab_size:
            raise ValueError(f"text encoder vocab_size {text['vocab_size']} is smaller than the tokenizer's "
                             f"{self.tokenizer.vocab_size} ids; use vocab_size >= {self.tokenizer.vocab_size}")
        self.config = dataclasses.replace(
            config, context_length=text["context_length"], width=text["width"], layers=text["layers"],
            heads=text["heads"], vocab_size=text["vocab_size"], embed_dim=embed_dim, quick_gelu=quick_gelu)
        self.tower = CLIPTextTower(embed_dim=embed_dim, quick_gelu=quick_gelu, **text)
        self.context_length = text["context_length"]
        self.eot_id = self.tokenizer.eot_token_id if config.hash_vocab is None else config.hash_vocab - 1
        self.dim = text["width"]
        self.pooled_dim = embed_dim
        if config.pretrained is not None:
            self.load_open_clip_weights(config.pretrained)

    def load_open_clip_weights(self, pretrained: str, cache_dir: str | os.PathLike | None = None) -> Path:
        """Load the text tower of an open_clip checkpoint (CLIP or CustomTextCLIP layout)."""
        from open_clip.factory import load_state_dict

        path = find_open_clip_weights(self.config.arch, pretrained, cache_dir)
        try:
            state = load_state_dict(str(path), weights_only=True)  # safetensors, else torch.load(weights_only=True)
        except RuntimeError as e:  # OpenAI's TorchScript .pt files are refused by weights_only
            raise ValueError(f"cannot read {path} as a plain state dict ({e}); use the safetensors or "
                             f"state-dict copy of these weights (open_clip's hf-hub entry for the tag)") from e
        if any(k.startswith("text.") for k in state):  # CustomTextCLIP: the tower is `model.text`
            state = {k[5:]: v for k, v in state.items() if k.startswith("text.")}
        own = self.tower.state_dict()
        state = {k: v for k, v in state.items() if k in own}  # drop the image tower and logit scale
        pos = state.get("positional_embedding")
        if pos is not None and pos.shape[0] > own["positional_embedding"].shape[0]:
            state["positional_embedding"] = pos[: own["positional_embedding"].shape[0]]
        missing = sorted(set(own) - set(state))
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
        if missing or wrong:
            raise ValueError(f"{path} does not hold a {self.config.arch} text tower matching this config: "
                             f"missing {missing[:5]}, shape mismatches {wrong[:5]}")
        self.tower.load_state_dict(state)
        return path

    def save_pretrained(self, path, overwrite: bool = False, dtype=None) -> Path:
        """Write config.json + model.safetensors; the weights are in the folder, so the saved
        config has `pretrained=None` and loading never needs the original open_clip file."""
        config, self.config = self.config, dataclasses.replace(self.config, pretrained=None)
        try:
            return super().save_pretrained(path, overwrite=overwrite, dtype=dtype)
        finally:
            self.config = config

    def tokenize(self, texts: str | list[str]) -> torch.LongTensor:
        """BPE ids (B, L): SOT, words, EOT, then 0-padding; long prompts are cut, EOT kept last."""
        tokens = self.tokenizer([texts] if isinstance(texts, str) else list(texts))
        if self.config.hash_vocab is not None:
            tokens = fold_ids(tokens, self.config.hash_vocab, self.tokenizer.sot_token_id, self.tokenizer.eot_token_id)
        return tokens

    def text_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: True up to and including the first EOT (rows without EOT: all True).

        Padding is found by position, not by id, since id 0 is also the BPE token "!".
        """
        is_eot = tokens == self.eot_id
        last = torch.where(is_eot.any(-1), is_eot.int().argmax(-1), tokens.shape[1] - 1)  # (B,)
        return torch.arange(tokens.shape[1], device=tokens.device) <= last[:, None]

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens (B, L) -> {text (B, L, D), text_mask (B, L), pooled (B, E)}.

        pooled follows CLIP: the final-layer state at the EOT position (argmax of the ids),
        after ln_final, times text_projection; it equals `open_clip.CLIP.encode_text`.
        """
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"TextEncoder takes tokens of shape (B, {self.context_length}) from .tokenize(), "
                             f"got {tuple(tokens.shape)}")
        if tokens.dtype != torch.long:
            raise ValueError(f"TextEncoder takes int64 token ids, got {tokens.dtype}")
        pooled, text = self.tower(tokens)  # (B, E), (B, L, D)
        return {"text": text, "text_mask": self.text_mask(tokens), "pooled": pooled}

    def encode(self, texts: str | list[str]) -> dict[str, torch.Tensor]:
        """tokenize + forward on the module's device."""
        device = next(self.parameters()).device
        return self(self.tokenize(texts).to(device))
