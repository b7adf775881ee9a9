"""The engine's rollouts encode prompts and stop like training and evaluation do (issue 9 §3 on the RL engine)."""

from __future__ import annotations

import torch

from alignpipe.models.generate import encode_prompt
from alignpipe.models.tiny import L3_EOT, build_llama3_like_model
from alignpipe.rl.rollout import completion_mask, sample


def test_completion_mask_stops_at_any_stop_id():
    ids = torch.tensor([[5, 7, 9, 7], [5, 6, 6, 6], [8, 5, 5, 5]])
    assert completion_mask(ids, [7, 8]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert completion_mask(ids, 9).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]


def test_rollout_prompts_carry_the_bos_and_stop_at_the_turn_end():
    model, tok = build_llama3_like_model(seed=0)
    eot = tok.convert_tokens_to_ids(L3_EOT)
    assert eot != tok.eos_token_id
    torch.manual_seed(0)
    bias = torch.zeros(model.lm_head.out_features)
    bias[eot] = 100.0  # the turn end is by far the likeliest next token: every sample must stop on it
    model.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)
    prompts = ["2+2=", [{"role": "user", "content": "2+2="}]]
    ro = sample(model, tok, prompts, k=2, max_new_tokens=6, temperature=1.0)
    for i, p in enumerate(prompts):
        want = encode_prompt(tok, p)
        got = [t for t, m in zip(ro.prompt_ids[2 * i].tolist(), ro.prompt_mask[2 * i].tolist()) if m]
        assert got == want and want[0] == tok.bos_token_id
    assert (ro.completion_ids[:, 0] == eot).all()  # the turn end (not the tokenizer's EOS) ends the completion
    assert ro.completion_mask.sum(1).tolist() == [1.0] * 4
