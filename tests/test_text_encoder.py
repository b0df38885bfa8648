"""TextEncoder against open_clip itself: a tiny CLIP registered as an open_clip arch,
random weights saved to disk, loaded both by `open_clip.create_model` and by our path."""

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from models.base import load_pretrained
from models.text import CACHE_ENV, TextEncoder, TextEncoderConfig, find_open_clip_weights

PROMPTS = ["a red circle", "two blue squares left of a green triangle", ""]
EMBED, WIDTH, CONTEXT = 24, 32, 16


def tiny_clip_cfg(custom_text: bool) -> dict:
    return {"embed_dim": EMBED, "quick_gelu": True, "custom_text": custom_text,
            "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
            "text_cfg": {"context_length": CONTEXT, "vocab_size": 49408, "width": WIDTH, "heads": 4, "layers": 2}}


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    """{custom_text: (arch name, open_clip model, weights file)} for the CLIP and CustomTextCLIP layouts."""
    root = tmp_path_factory.mktemp("open_clip")
    out = {}
    for custom, suffix in ((False, ".safetensors"), (True, ".pt")):
        name = f"gen-test-tiny-clip-{'custom' if custom else 'plain'}"
        (root / f"{name}.json").write_text(json.dumps(tiny_clip_cfg(custom)))
        open_clip.add_model_config(root / f"{name}.json")
        torch.manual_seed(1)
        model = open_clip.create_model(name).eval()
        with torch.no_grad():  # nonzero everywhere, so a misplaced tensor cannot hide
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        file = root / f"{name}{suffix}"
        save_file(state, str(file)) if suffix == ".safetensors" else torch.save(state, file)
        out[custom] = (name, model, file)
    return out


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TextEncoder(TextEncoderConfig()).eval()


def test_shapes_dims_and_mask_follow_the_tokenizer(tiny):
    out = tiny.encode(PROMPTS)
    assert out["text"].shape == (3, 32, 128) and out["pooled"].shape == (3, 128)
    assert (tiny.dim, tiny.pooled_dim, tiny.context_length) == (128, 128, 32)
    reference = open_clip.SimpleTokenizer()  # independent count: SOT + BPE words + EOT
    lengths = [len(reference.encode(p)) + 2 for p in PROMPTS]
    assert out["text_mask"].dtype == torch.bool
    assert out["text_mask"].sum(1).tolist() == lengths
    assert all(out["text_mask"][i, :n].all() and not out["text_mask"][i, n:].any() for i, n in enumerate(lengths))
    # id 0 is the BPE token "!": a real 0 before EOT is not padding
    tokens = torch.zeros(1, 32, dtype=torch.long)
    tokens[0, :4] = torch.tensor([reference.sot_token_id, 0, 320, reference.eot_token_id])
    assert tiny.text_mask(tokens).sum().item() == 4
    # a prompt longer than the context is cut with EOT kept last: every position is real
    long = tiny.tokenize(" ".join(["red"] * 50))
    assert long[0, -1].item() == reference.eot_token_id and tiny.text_mask(long).all()


def test_named_open_clip_arch_builds_offline():
    enc = TextEncoder(TextEncoderConfig(arch="ViT-B-32", layers=1))
    assert (enc.dim, enc.pooled_dim, enc.context_length) == (512, 512, 77)
    assert enc.config.heads == 8 and enc.config.quick_gelu is False
    assert enc.tokenize(["a cat"]).shape == (1, 77)


@pytest.mark.parametrize("custom_text", [False, True], ids=["CLIP-safetensors", "CustomTextCLIP-pt"])
def test_matches_open_clip_with_the_same_weights(clip_checkpoint, custom_text):
    name, model, file = clip_checkpoint[custom_text]
    ref = open_clip.create_model(name, pretrained=str(file)).eval()  # open_clip's own loader
    enc = TextEncoder(TextEncoderConfig(arch=name, pretrained=str(file))).eval()
    assert enc.config.quick_gelu is True and (enc.dim, enc.pooled_dim) == (WIDTH, EMBED)
    tokens = open_clip.get_tokenizer(name)(PROMPTS)
    with torch.no_grad():
        out = enc(tokens)
        pooled = ref.encode_text(tokens)
        states = ref.forward_intermediates(text=tokens, text_indices=1, normalize_intermediates=True,
                                           intermediates_only=True)["text_intermediates"][-1]
    torch.testing.assert_close(out["pooled"], pooled, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["text"], states, rtol=0, atol=1e-6)


def test_shorter_context_is_exact_for_prompts_that_fit(clip_checkpoint):
    name, model, file = clip_checkpoint[False]
    enc = TextEncoder(TextEncoderConfig(arch=name, pretrained=str(file), context_length=12)).eval()
    short = PROMPTS[:1]
    with torch.no_grad():
        ours = enc.encode(short)
        theirs = model.encode_text(open_clip.get_tokenizer(name)(short))  # context 16
    torch.testing.assert_close(ours["pooled"], theirs, rtol=0, atol=1e-6)


def test_padding_ids_do_not_change_real_token_outputs(tiny):
    tokens = tiny.tokenize(PROMPTS)
    mask = tiny.text_mask(tokens)
    noisy = torch.where(mask, tokens, torch.randint(1, 49000, tokens.shape, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        a, b = tiny(tokens), tiny(noisy)
    assert torch.equal(a["text"][mask], b["text"][mask])  # causal attention: later tokens are unseen
    assert torch.equal(a["pooled"], b["pooled"])
    assert not torch.equal(a["text"][~mask], b["text"][~mask])


def test_save_and_load_round_trip_is_bit_exact(clip_checkpoint, tmp_path):
    name, _, file = clip_checkpoint[False]
    enc = TextEncoder(TextEncoderConfig(arch=name, pretrained=str(file), context_length=12)).eval()
    enc.save_pretrained(tmp_path / "te")
    saved = json.loads((tmp_path / "te" / "config.json").read_text())
    assert saved["pretrained"] is None and saved["context_length"] == 12 and saved["width"] == WIDTH
    back = load_pretrained(tmp_path / "te").eval()
    assert isinstance(back, TextEncoder)
    assert back.config == type(enc.config)(**{k: v for k, v in saved.items() if k != "_class"})
    with torch.no_grad():
        a, b = enc.encode(PROMPTS), back.encode(PROMPTS)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    enc = TextEncoder(TextEncoderConfig(width=32, heads=2, layers=2, embed_dim=16, context_length=16))
    out = enc.encode(PROMPTS)
    (out["text"].square().mean() + out["pooled"].square().mean()).backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_same_seed_same_model_same_output():
    def build():
        torch.manual_seed(3)
        return TextEncoder(TextEncoderConfig(width=32, heads=2, layers=1, embed_dim=16, context_length=16)).eval()

    a, b = build(), build()
    with torch.no_grad():
        assert torch.equal(a.encode(PROMPTS)["pooled"], b.encode(PROMPTS)["pooled"])
        assert torch.equal(a.encode(PROMPTS)["text"], a.encode(PROMPTS)["text"])


def test_missing_pretrained_weights_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"ViT-B-32/laion2b_s34b_b79k.*laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
                                                r".*GEN_OPEN_CLIP_CACHE"):
        TextEncoder(TextEncoderConfig(arch="ViT-B-32", layers=1, pretrained="laion2b_s34b_b79k"))
    with pytest.raises(FileNotFoundError, match="neither a file nor an open_clip tag.*laion2b_s34b_b79k"):
        find_open_clip_weights("ViT-B-32", "no-such-tag")


def test_finds_weights_where_open_clip_caches_them(tmp_path):
    snapshot = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"")
    (tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K" / "refs").mkdir()
    (tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K" / "refs" / "main").write_text("abc123")
    assert find_open_clip_weights("ViT-B-32", "laion2b_s34b_b79k", tmp_path) == snapshot / "open_clip_model.safetensors"
    url_file = tmp_path / "vit_b_32-quickgelu-laion400m_e31-d867053b.pt"  # a tag's url download name
    url_file.write_bytes(b"")
    assert find_open_clip_weights("ViT-B-32-quickgelu", "laion400m_e31", tmp_path) == url_file


def test_bad_configs_and_inputs_are_named(tiny):
    with pytest.raises(ValueError, match="Hugging Face text model or tokenizer"):
        TextEncoder(TextEncoderConfig(arch="ViT-B-16-SigLIP"))
    with pytest.raises(ValueError, match="unknown text encoder arch 'nope'"):
        TextEncoder(TextEncoderConfig(arch="nope"))
    with pytest.raises(ValueError, match="vocab_size 1000 is smaller"):
        TextEncoder(TextEncoderConfig(vocab_size=1000))
    with pytest.raises(ValueError, match=r"shape \(B, 32\).*\(2, 77\)"):
        tiny(torch.zeros(2, 77, dtype=torch.long))


def test_folded_vocabulary_keeps_the_toy_words_apart_and_pools_at_eot():
    import re

    from gen.toyworld import toy_clip, toy_image

    enc = TextEncoder(TextEncoderConfig(arch="tiny", hash_vocab=4096))
    assert enc.tower.token_embedding.weight.shape[0] == 4096
    captions = [toy_image(i, 4).caption for i in range(400)] + [toy_clip(i, 4, 1).caption for i in range(200)]
    words = sorted({w for c in captions for w in re.findall(r"[a-z]+", c)})
    raw = [tuple(enc.tokenizer.encode(w)) for w in words]
    folded = [tuple(enc.tokenize(w)[0, 1:1 + len(r)].tolist()) for w, r in zip(words, raw)]
    assert len(set(raw)) == len(words)
    assert len(set(folded)) == len(words), "two toy-world words share embedding rows"
    tokens = enc.tokenize(["a cat in a hat", "two red balls left of a house"])
    assert tokens.max() == 4095 and tokens.min() == 0
    assert torch.equal(enc.text_mask(tokens), tokens.ne(0) | (torch.arange(tokens.shape[1]) == 0))
    out = enc(tokens)
    # CLIP pooling reads the EOT position: the largest id after folding.
    eot = tokens.argmax(-1)
    assert torch.equal(eot, torch.tensor([len(enc.tokenizer.encode("a cat in a hat")) + 1,
                                          len(enc.tokenizer.encode("two red balls left of a house")) + 1]))
    assert out["pooled"].shape == (2, enc.pooled_dim)


def test_tokenizer_gives_open_clip_ids():
    """gen's BPE tokenizer against open_clip's SimpleTokenizer (the same bundled vocabulary):
    the toy grammar, then text that exercises cleaning, bytes outside Latin-1, digits,
    contractions, special-token strings and truncation."""
    from gen.toyworld import toy_clip, toy_image
    from models.tokenizer import CLIPTokenizer

    texts = [toy_image(i, 4, kind=k).caption for i in range(50) for k in ("single", "wearing", "relation", "count")]
    texts += [toy_clip(i, 4, 1).caption for i in range(50)]
    texts += ["A RED ball left of a blue house!!", "café   naïve — 3 dogs", "&amp;lt;b&gt; emoji 🐱🎩",
              "it's we'll 12345", "x" * 100, "", "   ", "ünïcödé ÀÉ ß", "hello<end_of_text>world <start_of_text>",
              "\x00\x01 tab\tnew\nline", "日本語のテキスト", "don't STOP-me now...", "a" + " a" * 80]
    ours, theirs = CLIPTokenizer(context_length=32), open_clip.SimpleTokenizer(context_length=32)
    assert torch.equal(ours(texts), theirs(texts))
    assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id) == (
        theirs.vocab_size, theirs.sot_token_id, theirs.eot_token_id)
    assert ours.encode("a cat in a hat") == theirs.encode("a cat in a hat")


def test_tower_equals_open_clips_text_transformer_for_the_same_weights():
    from open_clip.model import CLIPTextCfg, _build_text_tower

    from models.text import CLIPTextTower

    for quick_gelu, mlp_ratio in ((False, 4.0), (True, 2.0)):
        torch.manual_seed(3)
        ref = _build_text_tower(24, CLIPTextCfg(context_length=20, vocab_size=500, width=32, heads=4, layers=2,
                                                mlp_ratio=mlp_ratio, output_tokens=True), quick_gelu).eval()
        ours = CLIPTextTower(20, 500, 32, 4, 2, 24, quick_gelu=quick_gelu, mlp_ratio=mlp_ratio).eval()
        ours.load_state_dict(ref.state_dict())  # strict: the same parameter names and shapes
        tokens = torch.randint(1, 499, (3, 20))
        with torch.no_grad():
            for a, b in zip(ours(tokens), ref(tokens)):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_building_the_tiny_encoder_and_the_default_pipeline_does_not_import_open_clip():
    import subprocess
    import sys

    code = ("import sys; from gen.pipeline import Pipeline; p = Pipeline.from_pretrained('default'); "
            "p.encode_prompt(['a cat in a hat']); "
            "print(sorted(m for m in ('open_clip', 'torchvision', 'transformers', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_archs_whose_text_tower_is_not_clips_are_refused():
    with pytest.raises(ValueError, match="unlike CLIP's.*embed_cls"):
        TextEncoder(TextEncoderConfig(arch="coca_ViT-B-32"))
