"""CLIP's byte-level BPE tokenizer (Radford et al. 2021; Sennrich et al. 2016), reading the
vocabulary that ships inside open_clip (`bpe_simple_vocab_16e6.txt.gz`) without importing
open_clip, whose package imports torchvision, timm and transformers (seconds of start-up).

    tok = CLIPTokenizer(context_length=32)
    tok(["a cat in a hat"])       # (1, 32) int64: SOT, the words' ids, EOT, then 0-padding
    tok.encode("a cat")           # [320, 2368]: the words alone

It yields the same ids as `open_clip.SimpleTokenizer` (the tests compare them on the toy
grammar and on awkward text): text is cleaned the same way (ftfy, HTML unescaping,
whitespace folded, lower case), split by CLIP's pattern, each piece's UTF-8 bytes mapped to
printable characters, and the pieces merged pair by pair in the order of the merge list.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from pathlib import Path

import torch

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2  # CLIP uses the first 48,894 merges of the file
SOT, EOT = "<start_of_text>", "<end_of_text>"


def bundled_vocab() -> Path:
    """open_clip's vocabulary file, found without running open_clip's __init__."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the CLIP tokenizer reads its vocabulary from open_clip; "
                                  "install it with pip install open-clip-torch", name="open_clip")
    return Path(next(iter(spec.submodule_search_locations))) / VOCAB_FILE


@functools.lru_cache(maxsize=1)
def byte_symbols() -> dict[int, str]:
    """Byte -> one printable character (GPT-2's reversible map): the 188 printable Latin-1
    bytes stand for themselves, the other 68 take code points 256, 257, ... in byte order.
    The dict lists the printable bytes first, then the rest: the order of the vocabulary's
    first 256 (and, with "</w>", next 256) ids."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + k) for k, b in enumerate(rest)}}


def clean(text: str) -> str:
    """open_clip's default cleaning: ftfy's fixes, HTML entities undone (twice), runs of
    whitespace folded to one space, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


@functools.lru_cache(maxsize=1)
def _tables(path: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    lines = gzip.open(path).read().decode("utf-8").split("\n")[1:MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(byte_symbols().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    return {piece: i for i, piece in enumerate(vocab)}, {m: rank for rank, m in enumerate(merges)}


class CLIPTokenizer:
    """Text -> CLIP BPE ids; `__call__` pads or cuts to `context_length` (EOT kept last)."""

    def __init__(self, context_length: int = 77, vocab: str | Path | None = None):
        import regex

        self.context_length = context_length
        self.ids, self.ranks = _tables(str(vocab or bundled_vocab()))
        self.vocab_size = len(self.ids)
        self.sot_token_id, self.eot_token_id = self.ids[SOT], self.ids[EOT]
        # CLIP's pieces: the special tokens, English contractions, letter runs, single digits,
        # runs of anything else that is not space
        self.pattern = regex.compile(
            rf"{SOT}|{EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE)
        self._merged: dict[str, list[str]] = {SOT: [SOT], EOT: [EOT]}

    def merge(self, piece: str) -> list[str]:
        """One piece's BPE symbols: start from its characters (the last one marked as the
        word's end) and apply the best-ranked merge present until none applies."""
        if piece in self._merged:
            return self._merged[piece]
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, MERGES))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        self._merged[piece] = word
        return word

    def encode(self, text: str) -> list[int]:
        symbols = byte_symbols()
        ids = []
        for piece in self.pattern.findall(clean(text)):
            mapped = "".join(symbols[b] for b in piece.encode("utf-8"))
            ids.extend(self.ids[s] for s in self.merge(mapped))
        return ids

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.LongTensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > length:
                ids = ids[:length - 1] + [self.eot_token_id]
            out[row, :len(ids)] = torch.tensor(ids)
        return out


__all__ = ["CLIPTokenizer", "bundled_vocab", "clean"]
