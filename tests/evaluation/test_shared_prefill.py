"""Issue 15: the evaluate stage decodes greedy answers, pass@k / maj@k samples and KL from one prefill per prompt
(`HFGenerator.generate_eval`): the deterministic metrics are those of separate `generate` calls and teacher-forced
KL scoring, the sampled ones agree within sampling noise and repeat exactly under a seed, and the models read
far fewer tokens."""

from __future__ import annotations

import json
import math

import pytest

from alignpipe.config import EvaluateConfig
from alignpipe.models.generate import HFGenerator
from alignpipe.stages import evaluate

#: metrics computed from samples (the sampling stream differs between the two paths)
SAMPLED = ("pass@", "maj@", "distinct_", "kl_per_", "entropy")


def _run(demo_data, sft_model, tmp_path, name: str, monkeypatch, shared: bool, tokens: list | None = None) -> dict:
    from transformers.models.qwen2 import modeling_qwen2

    with monkeypatch.context() as m:
        if not shared:
            m.setattr(HFGenerator, "shares_prefill", lambda self: False)
        if tokens is not None:
            real = modeling_qwen2.Qwen2Model.forward

            def counting(self, input_ids=None, *args, **kwargs):
                tokens.append(input_ids.numel())
                return real(self, input_ids, *args, **kwargs)

            m.setattr(modeling_qwen2.Qwen2Model, "forward", counting)
        out = tmp_path / f"{name}.json"
        cfg = EvaluateConfig(models={"base": "tiny", "sft": sft_model}, data=demo_data["eval"], output=str(out),
                             k=4, max_new_tokens=5, limit=96, batch_size=32, tracking=False, bootstrap_resamples=200)
        evaluate.run(cfg)
    return json.loads(out.read_text())


def test_shared_prefill_keeps_the_greedy_metrics_and_reads_fewer_tokens(demo_data, sft_model, tmp_path, monkeypatch):
    separate_tokens: list[int] = []
    shared_tokens: list[int] = []
    separate = _run(demo_data, sft_model, tmp_path, "separate", monkeypatch, False, separate_tokens)
    shared = _run(demo_data, sft_model, tmp_path, "shared", monkeypatch, True, shared_tokens)
    for name in ("base", "sft"):
        old, new = separate["models"][name], shared["models"][name]
        assert set(old) == set(new)
        for key, value in old.items():
            if any(s in key for s in SAMPLED):
                continue
            assert new[key] == value or (math.isnan(value) and math.isnan(new[key])), (name, key, value, new[key])
        assert separate["examples"][name] == shared["examples"][name]  # the greedy answers themselves
        # sampled metrics: the same quantities on another sampling stream (96 prompts x 4 samples)
        assert new["pass@4"] == pytest.approx(old["pass@4"], abs=0.15)
        assert new["maj@4"] == pytest.approx(old["maj@4"], abs=0.15)
        assert new["entropy"] == pytest.approx(old["entropy"], rel=0.15)
    assert shared["models"]["base"]["kl_per_token"] == 0.0
    sft_old, sft_new = separate["models"]["sft"], shared["models"]["sft"]
    assert sft_new["kl_per_token"] > 0 and sft_new["kl_per_token"] == pytest.approx(sft_old["kl_per_token"], rel=0.2)
    assert shared["models"]["sft"]["accuracy"] > shared["models"]["base"]["accuracy"]
    # one prefill per prompt for greedy + 4 samples (+ the reference's on the same prompt) instead of one per row and
    # a second pass over every sample for KL: over 3x fewer token positions through the models
    assert sum(separate_tokens) > 3 * sum(shared_tokens), (sum(separate_tokens), sum(shared_tokens))


def test_shared_prefill_samples_repeat_under_the_seed(demo_data, sft_model, tmp_path, monkeypatch):
    first = _run(demo_data, sft_model, tmp_path, "a", monkeypatch, True)
    again = _run(demo_data, sft_model, tmp_path, "b", monkeypatch, True)
    assert first["models"] == again["models"] and first["ci"] == again["ci"]
