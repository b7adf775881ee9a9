"""Evaluation metrics: accuracy, pass@k, maj@k, RM score, length, diversity, KL, CIs and deltas;
several models at once; forgetting sets and lm-eval benchmarks."""

from __future__ import annotations

import json

import pytest

from alignpipe.config import EvaluateConfig
from alignpipe.stages import evaluate
from alignpipe.stages.evaluate import distinct_n


def test_distinct_n():
    assert distinct_n([[1, 2, 3], [1, 2, 3]], 1) == 0.5
    assert distinct_n([[1, 2, 3]], 2) == 1.0
    assert distinct_n([[]], 2) == 0.0


def test_n_below_k_is_a_config_error():
    with pytest.raises(ValueError, match=r"n \(2\) must be >= k \(4\)"):
        EvaluateConfig(models={"a": "tiny"}, data="x", output="y", k=4, n=2)


def test_evaluate_compares_models(demo_data, sft_model, tmp_path):
    out = tmp_path / "eval.json"
    cfg = EvaluateConfig(models={"base": "tiny", "sft": sft_model}, data=demo_data["eval"], output=str(out),
                         k=4, n=6, max_new_tokens=5, limit=64, tracking=False, bootstrap_resamples=500)
    result = evaluate.run(cfg)
    data = json.loads(out.read_text())
    base, sft = data["models"]["base"], data["models"]["sft"]
    assert base["accuracy"] == 0.0
    assert sft["accuracy"] > base["accuracy"]
    for m in (base, sft):
        assert {"accuracy", "pass@4", "maj@4", "response_length", "distinct_1", "distinct_2", "kl_per_token",
                "kl_per_sequence", "entropy", "accuracy_per_1k_tokens", "tokens_to_correct"} <= set(m)
        assert 0.0 <= m["pass@4"] <= 1.0 and 0.0 <= m["maj@4"] <= 1.0
    # KL to the reference (the baseline) is 0 for the baseline itself, > 0 after training
    assert base["kl_per_token"] == pytest.approx(0.0, abs=1e-6)
    assert sft["kl_per_token"] > 0 and sft["kl_per_sequence"] >= sft["kl_per_token"]
    assert sft["entropy"] > 0
    # CIs bracket the value; the delta of sft vs base comes with a paired CI
    lo, hi = data["ci"]["sft"]["accuracy"]
    assert lo <= sft["accuracy"] <= hi
    d = data["deltas"]["sft"]["base"]["accuracy"]
    assert d["delta"] == pytest.approx(sft["accuracy"] - base["accuracy"])
    assert d["ci_low"] <= d["delta"] <= d["ci_high"] and d["ci_low"] > 0
    assert data["baseline"] == "base" and "base" not in data["deltas"]
    assert result.metrics["sft/accuracy"] == sft["accuracy"]
    assert result.metrics["sft/delta_vs_base/accuracy_ci_low"] == d["ci_low"]
    assert data["data_digest"] and len(data["examples"]["sft"]) > 0


def test_forgetting_and_lm_eval(demo_data, tmp_path):
    pytest.importorskip("lm_eval")
    out = tmp_path / "eval.json"
    cfg = EvaluateConfig(models={"base": "tiny", "other": "tiny:1", "third": "tiny:2"}, data=demo_data["eval"],
                         output=str(out), max_new_tokens=3, limit=8, tracking=False, bootstrap_resamples=100,
                         forgetting_data={"train": demo_data["rl_train"]},
                         lm_eval={"tasks": ["alignpipe_arith"], "limit": 8})
    result = evaluate.run(cfg)
    data = json.loads(out.read_text())
    for name in ("base", "other", "third"):
        m = data["models"][name]
        assert "forgetting/train/accuracy" in m and "lm_eval/alignpipe_arith/acc" in m
        assert "lm_eval/alignpipe_arith/acc_stderr" in m
    # deltas vs the baseline and vs the previous model, per-document for lm-eval metrics
    assert set(data["deltas"]["third"]) == {"base", "other"}
    assert "lm_eval/alignpipe_arith/acc" in data["deltas"]["third"]["other"]
    assert "forgetting/train/accuracy" in data["deltas"]["other"]["base"]
    assert "other/lm_eval/alignpipe_arith/acc" in result.metrics


def test_lm_eval_task_that_would_download_fails_before_any_model_runs(demo_data, tmp_path):
    pytest.importorskip("lm_eval")
    (tmp_path / "hub.yaml").write_text("task: hub_task\ndataset_path: openai/gsm8k\n")
    cfg = EvaluateConfig(models={"base": "tiny"}, data=demo_data["eval"], output=str(tmp_path / "e.json"),
                         tracking=False, lm_eval={"tasks": ["hub_task"], "include_path": str(tmp_path)})
    from alignpipe.evaluation.harness import LmEvalError

    with pytest.raises(LmEvalError, match="would download dataset_path 'openai/gsm8k'"):
        evaluate.run(cfg)
    assert not (tmp_path / "e.json").exists()
