"""RL settings that would be silently ignored or break sampling are refused; expert iteration's set-up
(issue 9 §4.11, §4.12)."""

from __future__ import annotations

import pytest

from alignpipe.config import ConfigError, RLConfig, validate
from alignpipe.stages import rl

BASE = dict(train_data="p.jsonl", output_dir="o")


@pytest.mark.parametrize("settings,message", [
    (dict(algorithm="rloo", grpo=dict(loss_type="dr_grpo")), "algorithm rloo (engine trl) does not use grpo.loss_type"),
    (dict(algorithm="rloo", grpo=dict(scale_rewards="batch")), "does not use grpo.scale_rewards"),
    (dict(algorithm="expert_iteration", grpo=dict(num_generations=4)),
     "algorithm expert_iteration (engine trl) does not use grpo.num_generations"),
    (dict(algorithm="grpo", expert_iteration=dict(rounds=5)), "algorithm grpo (engine trl) does not use expert_iteration"),
    (dict(algorithm="grpo", engine_settings=dict(epochs=2)), "does not use engine_settings"),
    (dict(algorithm="grpo", engine="alignpipe", grpo=dict(loss_type="bnpo")),
     "algorithm grpo (engine alignpipe) does not use grpo.loss_type"),
])
def test_settings_an_algorithm_does_not_use_are_refused(settings, message):
    # §4.12: RLOO silently ignored grpo.loss_type and scale_rewards
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate("rl", {**BASE, **settings})


def test_settings_an_algorithm_uses_are_accepted():
    validate("rl", {**BASE, "algorithm": "rloo", "grpo": dict(num_generations=4, beta=0.05, epsilon=0.3)})
    validate("rl", {**BASE, "algorithm": "grpo", "grpo": dict(loss_type="dr_grpo", scale_rewards="none")})
    validate("rl", {**BASE, "algorithm": "expert_iteration", "expert_iteration": dict(rounds=3)})
    # defaults written out are not "set": a pipeline passes its whole rl_config
    validate("rl", {**BASE, "algorithm": "rloo", "grpo": dict(loss_type="dapo", scale_rewards="group")})


@pytest.mark.parametrize("algorithm", ["grpo", "rloo", "expert_iteration"])
def test_near_zero_sampling_temperature_is_refused(algorithm):
    # §4.11: temperature 0 with several samples makes HF generate raise and GRPO groups identical
    with pytest.raises(ConfigError, match=r"generation.temperature 0.01 .* >= 0.05"):
        validate("rl", {**BASE, "algorithm": algorithm, "generation": dict(temperature=0.01)})


def test_evaluate_refuses_near_zero_temperature_for_k_samples():
    with pytest.raises(ConfigError, match=r"temperature 0.01 .* >= 0.05"):
        validate("evaluate", dict(models={"a": "tiny"}, data="x", output="y", k=4, temperature=0.01))
    validate("evaluate", dict(models={"a": "tiny"}, data="x", output="y", k=1, temperature=0.01))  # greedy only


def test_expert_iteration_policy_runs_on_the_ranks_device(monkeypatch):
    # §4.11: round 0 generated on the CPU when a GPU existed (the model was never moved). No GPU here:
    # torch.cuda.is_available is a MOCK (True); only the device choice is checked.
    import torch

    monkeypatch.setenv("LOCAL_RANK", "2")
    assert rl.policy_device() == ("cuda:2" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # mock: pretend a GPU is present
    assert rl.policy_device() == "cuda:2"


_calls = {"n": 0}


def _second_round_only(prompts, completions, **kwargs):
    """Round 0 keeps nothing (0.0 everywhere), later rounds keep everything (1.0)."""
    _calls["n"] += 1
    return [0.0 if _calls["n"] == 1 else 1.0] * len(completions)


def test_expert_iteration_attaches_lora_up_front(demo_data, tmp_path, weights, monkeypatch):
    # §4.11: LoRA was attached only when round 0 kept samples; a run whose round 0 kept none trained all weights
    from alignpipe import models
    from alignpipe.rewards import registry

    monkeypatch.setitem(registry._REGISTRY, "ei_second_round_only", _second_round_only)  # for this test only
    _calls["n"] = 0
    cfg = RLConfig(model="tiny", train_data=demo_data["rl_train"], output_dir=str(tmp_path / "ei"), tracking=False,
                   algorithm="expert_iteration", rewards=[dict(name="ei_second_round_only")],
                   generation=dict(max_new_tokens=3, temperature=1.0),
                   expert_iteration=dict(rounds=2, samples_per_prompt=2, prompts_per_round=8, sft_steps_per_round=2),
                   lora=dict(r=4, alpha=8, target_modules=["q_proj", "v_proj"]),
                   training=dict(learning_rate=1e-3, batch_size=4, warmup_steps=0))
    result = rl.run(cfg)
    assert [r["kept"] > 0 for r in result.history] == [False, True]
    changed = weights.changed(weights.load(models.resolve("tiny")), weights.load(result.output))
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed), changed
