"""The engine moves the tiny model toward the reward: digits in the completion.

The freshly initialised tiny model writes almost uniformly random characters (~5% digits); the reward is the
share of digits in a 6-token completion. Every estimator and loss raises it within a few rollout steps on a CPU.
"""

from __future__ import annotations

import pytest

from alignpipe import rl
from alignpipe.config import RLConfig
from alignpipe.models import build_tiny_model
from alignpipe.rewards import completion_text


def digit_share_reward(prompts, completions, **kwargs):
    return [sum(ch.isdigit() for ch in completion_text(c)) / 6 for c in completions]


def _train(algorithm, steps=10, lr=3e-3, **engine_settings):
    engine_settings = {"epochs": 2, "minibatches": 2, **engine_settings}
    cfg = RLConfig(model="tiny", train_data="unused", output_dir="unused", tracking=False, algorithm=algorithm,
                   engine="alignpipe", generation=dict(max_new_tokens=6, temperature=1.0),
                   grpo=dict(num_generations=8), engine_settings=engine_settings,
                   training=dict(max_steps=steps, learning_rate=lr, batch_size=32, lr_scheduler="constant", seed=0))
    model, tok = build_tiny_model(0)
    prompts = [{"prompt": [{"role": "user", "content": f"{a}+{b}="}], "answer": str(a + b)}
               for a in range(10) for b in range(10)]
    return rl.train(cfg, model, tok, prompts, [digit_share_reward], [1.0])


def _rewards(result):
    return [round(h["reward"], 3) for h in result.history]


def test_ppo_with_a_gae_critic_learns():
    result = _train("ppo", critic=dict(learning_rate=1e-3))
    r = _rewards(result)
    assert r[0] < 0.15 and r[-1] > 0.5, r
    h = result.history[-1]
    assert {"value_loss", "value_clip_ratio", "clip_ratio", "advantages/mean", "advantages/std", "values/mean",
            "entropy", "completion_length", "grad_norm", "rewards/digit_share_reward/mean"} <= set(h)
    assert "kl" not in h  # beta 0: no reference model
    assert result.metrics["train/optimizer_steps"] == 10 * 2 * 2
    assert result.history[-1]["entropy"] < result.history[0]["entropy"]


def test_the_critic_fits_the_returns_of_a_fixed_policy():
    result = _train("ppo", steps=8, lr=1e-12, critic=dict(learning_rate=3e-3))  # policy frozen in effect
    losses = [h["value_loss"] for h in result.history]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:2]) / 2, losses


def test_grpo_learns():
    r = _rewards(_train("grpo"))
    assert r[0] < 0.15 and r[-1] > 0.5, r


@pytest.mark.parametrize("settings", [
    dict(loss="copg"),
    dict(loss="nft", positive_threshold=0.15),
    dict(loss="sft_on_positive", positive_threshold=0.15),
    dict(loss="alol"),
    dict(advantage="rloo"),
    dict(advantage="dr_grpo"),
    dict(advantage="reinforce_pp", kl=dict(beta=0.01, estimator="k1")),
    dict(kl=dict(beta=0.01, estimator="k3", mode="loss"), clip_eps_high=0.28, aggregation="seq_mean"),
], ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items() if k in ("loss", "advantage", "aggregation")))
def test_every_plugin_moves_the_policy_toward_the_reward(settings):
    result = _train("grpo", steps=8, **settings)
    r = _rewards(result)
    assert r[0] < 0.15 and max(r[-2:]) > 0.25, r
    if "kl" in settings:
        assert result.history[-1]["kl"] > 0
