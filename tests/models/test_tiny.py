"""The embedded tiny model: deterministic, saved as safetensors, tokenizer reloads identically."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignpipe import models
from alignpipe.models.tiny import build_tiny_model, build_tokenizer

CONV = [{"role": "user", "content": "37+45="}, {"role": "assistant", "content": "28"}]


def test_same_seed_same_weights_other_seed_differs():
    a, _ = build_tiny_model(seed=3)
    b, _ = build_tiny_model(seed=3)
    c, _ = build_tiny_model(seed=4)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)
    n = sum(p.numel() for p in a.parameters())
    assert 100_000 <= n <= 2_000_000


def test_tokenizer_is_character_level_with_generation_markers():
    tok = build_tokenizer()
    ids = tok("37+45=", add_special_tokens=False)["input_ids"]
    assert len(ids) == 6 and tok.decode(ids) == "37+45="
    out = tok.apply_chat_template(CONV, return_assistant_tokens_mask=True, return_dict=True)
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(masked) == "28<|im_end|>"


def test_saved_model_reloads_with_auto_classes(tmp_path):
    path = models.save_tiny_model(tmp_path / "tiny", seed=1)
    assert not models.missing_files(path)
    assert not list(path.glob("*.bin")), "safetensors only"
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template(CONV, tokenize=False)
    assert tok(text)["input_ids"] == build_tokenizer()(text)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(path)
    enc = tok(tok.apply_chat_template(CONV[:1], tokenize=False, add_generation_prompt=True), return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 3 or tok.eos_token_id in out[0].tolist()


def test_resolve_builds_tiny_once_and_rejects_bad_paths(tmp_path):
    import pytest

    first = models.resolve("tiny:5")
    assert models.resolve("tiny:5") == first and not models.missing_files(first)
    with pytest.raises(models.ModelError, match="no such model directory"):
        models.resolve(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelError, match="incomplete model folder"):
        models.resolve(str(tmp_path / "empty"))
    assert models.resolve("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
