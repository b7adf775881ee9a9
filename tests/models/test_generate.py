"""Issue 9 §3: generation stops where a turn ends and sees the prompt tokens training saw, on a tiny model with
Llama-3's properties (two stop ids, a turn end that is not EOS, a BOS); the vLLM path samples the same way."""

from __future__ import annotations

import torch
from trl.data_utils import _tokenize

from alignpipe.models.generate import (SAMPLING, HFGenerator, encode_prompt, hf_sampling_kwargs, stop_token_ids,
                                       vllm_sampling_kwargs)
from alignpipe.models.tiny import L3_BOS, L3_EOS, L3_EOT, build_llama3_like_model

CHAT = [{"role": "user", "content": "21+21="}]


def _bigram(model, tok, chain: list[str]) -> None:
    """Rig the model into a bigram chain: after token chain[i] it predicts chain[i+1] (the last repeats)."""
    ids = [tok.convert_tokens_to_ids(t) for t in chain]
    with torch.no_grad():
        for p in model.model.layers.parameters():
            p.zero_()  # every block adds nothing to the residual stream
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.zero_()
        head.zero_()
        for k, (cur, nxt) in enumerate(zip(ids, ids[1:] + ids[-1:])):
            emb[cur, k] = 1.0
            head[nxt, k] = 50.0


def test_the_llama3_like_model_has_two_stop_ids_a_non_eos_turn_end_and_a_bos():
    model, tok = build_llama3_like_model()
    eot, eos, bos = (tok.convert_tokens_to_ids(t) for t in (L3_EOT, L3_EOS, L3_BOS))
    assert tok.eos_token_id == eos != eot and tok.bos_token_id == bos
    assert sorted(model.generation_config.eos_token_id) == sorted([eos, eot])
    assert sorted(stop_token_ids(model.generation_config, tok)) == sorted([eos, eot])
    rendered = tok.apply_chat_template(CHAT + [{"role": "assistant", "content": "42"}], tokenize=False)
    assert rendered.startswith(L3_BOS) and rendered.endswith("42" + L3_EOT) and L3_EOS not in rendered


def test_generation_stops_at_the_turn_end_not_at_max_new_tokens():
    """Before: eos_token_id=tok.eos_token_id alone, so `<|eot_id|>` did not stop it and the next turn leaked in."""
    model, tok = build_llama3_like_model()
    # the generation prompt ends with "\n\n" (byte-level "Ċ"); then "42", the turn end, and a next turn
    _bigram(model, tok, ["Ċ", "4", "2", L3_EOT, "<|start_header_id|>", "u", "s", "e", "r"])
    out = HFGenerator(model, tok).generate([CHAT, CHAT], n=1, temperature=0.0, max_new_tokens=12)
    assert out == [["42"], ["42"]]
    assert HFGenerator(model, tok).generate([CHAT], n=2, temperature=1.0, max_new_tokens=12, seed=1)[0][0] == "42"


def test_prompt_tokens_at_generation_equal_those_at_training(monkeypatch):
    """TRL encodes chat prompts through the template (one BOS, from the template) and plain text with the
    tokenizer's BOS; before, plain-text prompts lost their BOS at evaluation."""
    model, tok = build_llama3_like_model()
    bos = tok.bos_token_id
    chat_ids = _tokenize(tok, CHAT, add_generation_prompt=True)["input_ids"]
    text_ids = _tokenize(tok, "21+21=")["input_ids"]
    assert encode_prompt(tok, CHAT) == chat_ids and chat_ids.count(bos) == 1
    assert encode_prompt(tok, "21+21=") == text_ids and text_ids[0] == bos
    seen = []
    real = model.generate

    def spy(input_ids, attention_mask, **kw):
        seen.extend(row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask))
        return real(input_ids=input_ids, attention_mask=attention_mask, **kw)

    monkeypatch.setattr(model, "generate", spy)
    HFGenerator(model, tok).generate([CHAT, "21+21="], max_new_tokens=2)
    assert seen == [chat_ids, text_ids]


def test_vllm_sampling_matches_hf_sampling():
    """Both backends: same stop ids, temperature, top-p, and the model's own top_k / repetition_penalty
    overridden (the HF path used to inherit them from the generation config, vLLM did not)."""
    model, tok = build_llama3_like_model()
    model.generation_config.top_k, model.generation_config.repetition_penalty = 20, 1.3
    stops = stop_token_ids(model.generation_config, tok)
    hf = hf_sampling_kwargs(0.7, 0.9)
    v = vllm_sampling_kwargs(4, 0.7, 0.9, 128, 0, stops)
    assert (hf["temperature"], hf["top_p"]) == (v["temperature"], v["top_p"]) == (0.7, 0.9)
    assert hf["top_k"] == 0 and v["top_k"] == -1  # both: no top-k
    assert hf["repetition_penalty"] == v["repetition_penalty"] == SAMPLING["repetition_penalty"] == 1.0
    assert hf["min_p"] == v["min_p"] and sorted(v["stop_token_ids"]) == sorted(stops)
    assert hf_sampling_kwargs(0.0, 0.9)["do_sample"] is False and vllm_sampling_kwargs(1, 0.0, 0.9, 8, 0, stops)[
        "temperature"] == 0.0
