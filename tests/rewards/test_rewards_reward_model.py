"""Reward-model scoring with a tiny sequence-classification model built locally (no downloads)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForSequenceClassification

from alignpipe.models.tiny import build_tokenizer
from alignpipe.rewards import build, reward_model_reward, score

PROMPTS_CONV = [[{"role": "user", "content": "What is 2+2?"}]] * 3
COMPLETIONS_CONV = [
    [{"role": "assistant", "content": "4"}],
    [{"role": "assistant", "content": "It is five, surely."}],
    [{"role": "assistant", "content": "4"}],
]
PROMPTS_PLAIN = ["2+2=", "2+2=", "Name a color: "]
COMPLETIONS_PLAIN = ["4", "five hundred", "blue"]


@pytest.fixture(scope="module")
def tiny_rm():
    tokenizer = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(config)
    return model, tokenizer


def _check(values, n):
    assert len(values) == n
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)


def test_scores_conversational_and_plain(tiny_rm):
    model, tokenizer = tiny_rm
    reward = reward_model_reward(model, tokenizer=tokenizer)
    assert reward.__name__ == "reward_model"
    conv = reward(PROMPTS_CONV, COMPLETIONS_CONV)
    _check(conv, 3)
    assert conv[0] != conv[1]  # different completions, different scores
    assert conv[0] == pytest.approx(conv[2], abs=1e-5)  # same input, same score (padding does not leak)
    plain = reward(PROMPTS_PLAIN, COMPLETIONS_PLAIN)
    _check(plain, 3)
    assert plain[0] != plain[1]
    # a conversational prompt with string completions (as some callers pass) is wrapped as an assistant turn
    assert reward(PROMPTS_CONV[:1], ["4"]) == pytest.approx(conv[:1], abs=1e-5)


def test_batching_does_not_change_scores(tiny_rm):
    model, tokenizer = tiny_rm
    one = reward_model_reward(model, tokenizer=tokenizer, batch_size=1)(PROMPTS_PLAIN, COMPLETIONS_PLAIN)
    all_at_once = reward_model_reward(model, tokenizer=tokenizer, batch_size=16)(PROMPTS_PLAIN, COMPLETIONS_PLAIN)
    assert all_at_once == pytest.approx(one, abs=1e-5)


def test_scores_match_a_direct_forward_pass(tiny_rm):
    """Conversational input is the chat template over prompt + completion, scored at the last token."""
    model, tokenizer = tiny_rm
    messages = PROMPTS_CONV[0] + COMPLETIONS_CONV[1]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    got = reward_model_reward(model, tokenizer=tokenizer)(PROMPTS_CONV[1:2], COMPLETIONS_CONV[1:2])
    assert got == pytest.approx([expected], abs=1e-5)


def test_no_grad_and_eval_mode(tiny_rm):
    model, tokenizer = tiny_rm
    model.train()
    reward = reward_model_reward(model, tokenizer=tokenizer)
    assert not reward.model.training
    reward(PROMPTS_PLAIN, COMPLETIONS_PLAIN)
    assert all(p.grad is None for p in model.parameters())


def test_build_from_saved_dir_and_score(tiny_rm, tmp_path):
    model, tokenizer = tiny_rm
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    specs = [SimpleNamespace(name="reward_model", weight=0.5, kwargs={"batch_size": 2}),
             SimpleNamespace(name="exact_match", weight=1.0, kwargs={})]
    funcs, weights = build(specs, reward_model_path=str(tmp_path / "rm"))
    assert [f.__name__ for f in funcs] == ["reward_model", "exact_match"]
    result = score(funcs, weights, PROMPTS_CONV, COMPLETIONS_CONV, answer=["4", "4", "5"])
    _check(result["reward_model"], 3)
    direct = reward_model_reward(model, tokenizer=tokenizer)(PROMPTS_CONV, COMPLETIONS_CONV)
    assert result["reward_model"] == pytest.approx(direct, abs=1e-5)
    expected_total = [0.5 * r + e for r, e in zip(result["reward_model"], [1.0, 0.0, 0.0])]
    assert result["total"] == pytest.approx(expected_total)


def test_bad_inputs(tiny_rm, tmp_path):
    model, tokenizer = tiny_rm
    with pytest.raises(ValueError, match="is not a directory"):
        reward_model_reward(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="needs the tokenizer"):
        reward_model_reward(model)
    with pytest.raises(ValueError, match="unknown option"):
        build([SimpleNamespace(name="reward_model", weight=1.0, kwargs={"model": "x", "temperature": 1})])


def test_max_length_keeps_the_last_tokens(tiny_rm):
    model, tokenizer = tiny_rm
    text = PROMPTS_PLAIN[1] + COMPLETIONS_PLAIN[1] + tokenizer.eos_token
    ids = tokenizer(text)["input_ids"][-5:]
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    got = reward_model_reward(model, tokenizer=tokenizer, max_length=5)(PROMPTS_PLAIN[1:2], COMPLETIONS_PLAIN[1:2])
    assert got == pytest.approx([expected], abs=1e-5)


def test_reward_model_defaults_to_the_ranks_local_device(monkeypatch):
    # §4.9: under torchrun each rank scores on its own GPU (cuda:LOCAL_RANK), not all on cuda:0. No GPU here:
    # torch.cuda.is_available is a MOCK (monkeypatched to True); only the device choice is checked.
    from alignpipe.base import local_device
    from alignpipe.rewards import reward_model as rm

    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device(cuda=True) == "cuda:3" and local_device(cuda=False) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # mock: pretend a GPU is present
    assert rm.default_device() == "cuda:3"
    monkeypatch.delenv("LOCAL_RANK")
    assert rm.default_device() == "cuda:0"
