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


# ---------------------------------------------------------------- review fixes (issue 9 §4)


class AnswerKeyGenerator:
    """A stand-in generator (a test double, not a model): answers each prompt with a fixed text."""

    def __init__(self, answers: dict, tokenizer):
        self.answers, self.tokenizer = answers, tokenizer

    def generate(self, prompts, n=1, **kwargs):
        return [[self.answers[p]] * n for p in prompts]


def test_accuracy_judges_each_row_by_the_rewards_that_apply():
    # §4.4: a row is correct when every reward that applies to it says so; rows no reward applies to are skipped
    # and counted (the threshold was the sum of all positive weights, so rows with a null reference never counted)
    from datasets import Dataset

    from alignpipe import models, rewards

    rows = [{"prompt": "a", "answer": "4", "label": None}, {"prompt": "b", "answer": None, "label": "yes"},
            {"prompt": "c", "answer": None, "label": None}, {"prompt": "d", "answer": "7", "label": "no"}]
    gen = AnswerKeyGenerator({"a": "4", "b": "yes", "c": "x", "d": "7"}, models.load_tokenizer("tiny"))
    funcs, weights = rewards.build([{"name": "exact_match"}, {"name": "label"}])
    cfg = EvaluateConfig(models={"m": "tiny"}, data="x", output="y", k=2, bootstrap_resamples=0, kl=False)
    ev = evaluate.evaluate_model(gen, Dataset.from_list(rows), funcs, weights, cfg)
    m = ev.metrics()
    assert m["accuracy"] == pytest.approx(2 / 3)  # a, b right; d: the label is wrong; c skipped
    assert m["skipped"] == 1.0 and m["n"] == 4.0
    assert m["pass@2"] == pytest.approx(2 / 3) and m["maj@2"] == pytest.approx(2 / 3)


def test_each_models_generator_is_released_before_the_next_loads(demo_data, tmp_path, monkeypatch):
    # §4.10: base + SFT + RL must fit: the previous model's generator (a vLLM engine on a GPU) is released before
    # the next one is built. Checked here on the HF backend with a spy around the real make_generator.
    import gc
    import weakref

    made: list = []

    def spy(*args, **kwargs):
        gc.collect()
        alive = [i for i, ref in enumerate(made) if ref() is not None]
        assert not alive, f"generators {alive} still alive when the next model loads"
        generator = real(*args, **kwargs)
        made.append(weakref.ref(generator))
        return generator

    real = evaluate.make_generator
    monkeypatch.setattr(evaluate, "make_generator", spy)
    cfg = EvaluateConfig(models={"a": "tiny", "b": "tiny:1", "c": "tiny:2"}, data=demo_data["eval"],
                         output=str(tmp_path / "e.json"), max_new_tokens=2, limit=4, tracking=False,
                         bootstrap_resamples=0, kl=False)
    evaluate.run(cfg)
    assert len(made) == 3


def test_release_shuts_a_vllm_engine_down():
    # §4.10 without a GPU: FakeEngineCore and FakeLLM are MOCKS of vLLM's LLM (no vLLM here); the check is
    # that release shuts the engine core down and drops the generator's reference to it.
    class FakeEngineCore:
        stopped = False

        def shutdown(self):
            FakeEngineCore.stopped = True

    class FakeLLM:
        def __init__(self):
            self.llm_engine = type("Engine", (), {"engine_core": FakeEngineCore()})()

    class Gen:
        llm = FakeLLM()

    gen = Gen()
    evaluate.release(gen)
    assert FakeEngineCore.stopped and gen.llm is None
