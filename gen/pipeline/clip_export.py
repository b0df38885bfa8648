"""gen's CLIP text encoder (models/text.py) as transformers' CLIPTextModelWithProjection and
CLIPTokenizer, the text side of a diffusers folder.

    model = clip_text_model(enc)        # same token states and pooled embedding as enc
    save_text_encoder(enc, folder / "text_encoder", folder / "tokenizer")

The tower maps one to one (Radford et al. 2021: pre-LN causal transformer, final layer
norm, the end-of-text state times text_projection):

    open_clip / gen                              transformers
    token_embedding                              text_model.embeddings.token_embedding
    positional_embedding                         text_model.embeddings.position_embedding
    transformer.resblocks.N.ln_1 / ln_2          text_model.encoder.layers.N.layer_norm1 / 2
    transformer.resblocks.N.attn.in_proj_*       ...self_attn.{q,k,v}_proj (split in three)
    transformer.resblocks.N.attn.out_proj        ...self_attn.out_proj
    transformer.resblocks.N.mlp.c_fc / c_proj    ...mlp.fc1 / fc2
    ln_final                                     text_model.final_layer_norm
    text_projection (D, E)                       text_projection.weight (E, D), its transpose

so cond["text"] is the model's last_hidden_state and cond["pooled"] its text_embeds.

A folded vocabulary (`hash_vocab`: fold_ids maps the 49,408 BPE ids onto a few rows) is
unfolded: row i of the exported table is the folded table's row for BPE id i, so the
model reads plain BPE ids. gen's padding (every position after the first EOT) reads
row 0, which no BPE id folds to, so the export adds one id, 49408, "<|pad|>", as the
tokenizer's pad token with that row: hidden states then match at every position. An
unfolded encoder pads with id 0 as open_clip does; the export gives it the same "<|pad|>"
id with row 0's values, since "!" (id 0) as transformers' pad token would be split out of
the text as a special token ("!!" read as two pad tokens, not BPE's "!!").

The tokenizer is CLIP's BPE (vocab.json, merges.txt). transformers' cleaning is Unicode
NFC, whitespace folding and lower case; gen's (open_clip's) is ftfy's fixes and HTML
unescaping, then the same. Plain text tokenizes the same; text that ftfy or HTML
unescaping changes (curly quotes, "&amp;", full-width letters, mojibake) may not, nor text
spelling a special token ("<|endoftext|>", "<|pad|>": one id there, BPE pieces in gen).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"  # transformers' names for CLIP's special tokens


def tokenizer_tables(enc) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) of the exported tokenizer: gen's BPE pieces under CLIP's special-token
    names, then the pad token (module doc); the merges in rank order."""
    tok = enc.tokenizer
    names = {tok.sot_token_id: BOS, tok.eot_token_id: EOS}
    vocab = {names.get(i, piece): i for piece, i in tok.ids.items()}
    vocab[PAD] = len(vocab)
    merges = [f"{a} {b}" for (a, b), _ in sorted(tok.ranks.items(), key=lambda item: item[1])]
    return vocab, merges


def token_table(enc) -> torch.Tensor:
    """The exported token table (49409, D): row i is the row gen reads for BPE id i (through
    fold_ids where the vocabulary is folded), and the pad id's row is row 0, which gen's
    padding reads."""
    from models.text import fold_ids

    table = enc.tower.token_embedding.weight.detach()
    tok = enc.tokenizer
    ids = torch.arange(tok.vocab_size)
    if enc.config.hash_vocab is not None:  # every BPE id as a one-token row: none of them is padding
        ids = fold_ids(ids[:, None], enc.config.hash_vocab, tok.sot_token_id, tok.eot_token_id)[:, 0]
    return torch.cat([table[ids], table[:1]])


def clip_text_model(enc):
    """A transformers CLIPTextModelWithProjection computing what `enc` computes (module doc)."""
    import transformers

    c, tower = enc.config, enc.tower
    vocab, _ = tokenizer_tables(enc)
    table = token_table(enc)
    hidden = tower.transformer.resblocks[0].mlp.c_fc.out_features  # int(width * mlp_ratio)
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=c.width, intermediate_size=hidden, projection_dim=c.embed_dim,
        num_hidden_layers=c.layers, num_attention_heads=c.heads, max_position_embeddings=c.context_length,
        hidden_act="quick_gelu" if c.quick_gelu else "gelu", layer_norm_eps=tower.ln_final.eps,
        attention_dropout=0.0, pad_token_id=vocab[PAD], bos_token_id=enc.tokenizer.sot_token_id,
        eos_token_id=enc.tokenizer.eot_token_id)
    own = {k: v.detach() for k, v in tower.state_dict().items()}
    state = {"text_model.embeddings.token_embedding.weight": table,
             "text_model.embeddings.position_embedding.weight": own["positional_embedding"],
             "text_model.final_layer_norm.weight": own["ln_final.weight"],
             "text_model.final_layer_norm.bias": own["ln_final.bias"],
             "text_projection.weight": own["text_projection"].t()}
    for n in range(c.layers):
        src, dst = f"transformer.resblocks.{n}.", f"text_model.encoder.layers.{n}."
        for kind in ("weight", "bias"):
            q, k, v = own[f"{src}attn.in_proj_{kind}"].chunk(3)  # (3D, D) -> three (D, D)
            state.update({f"{dst}self_attn.q_proj.{kind}": q, f"{dst}self_attn.k_proj.{kind}": k,
                          f"{dst}self_attn.v_proj.{kind}": v})
            for ours, theirs in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                                 ("attn.out_proj", "self_attn.out_proj"), ("mlp.c_fc", "mlp.fc1"),
                                 ("mlp.c_proj", "mlp.fc2")):
                state[f"{dst}{theirs}.{kind}"] = own[f"{src}{ours}.{kind}"]
    model = transformers.CLIPTextModelWithProjection(config)
    dtype = table.dtype
    missing, unexpected = model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise RuntimeError(f"CLIP text export: the tensors do not match transformers' layout (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")  # a bug, not a user error
    return model.to(dtype).eval()


def clip_tokenizer(enc, folder: Path):
    """Write vocab.json and merges.txt (CLIP's files) into `folder` and return the transformers
    CLIPTokenizer read from them, padding with the export's pad token to the context length."""
    import transformers

    vocab, merges = tokenizer_tables(enc)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(folder, pad_token=PAD, model_max_length=enc.context_length)


def save_text_encoder(enc, text_folder: Path, tokenizer_folder: Path) -> None:
    """text_folder: CLIPTextModelWithProjection (config.json, model.safetensors); tokenizer_folder:
    CLIPTokenizer (vocab.json, merges.txt and transformers' tokenizer files)."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # its "Writing model shards" bar would break the command line's one-line output
    try:
        clip_text_model(enc).save_pretrained(text_folder)
        clip_tokenizer(enc, tokenizer_folder).save_pretrained(tokenizer_folder)
    finally:
        if shown:
            logging.enable_progress_bar()


__all__ = ["clip_text_model", "clip_tokenizer", "save_text_encoder", "tokenizer_tables"]
