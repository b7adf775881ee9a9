"""Entropy control (AceReason): the temperature controller's update rule, and a run in which it brings the logged
temperature-adjusted entropy toward its target."""

from __future__ import annotations

import math

import pytest

from alignpipe import rl
from alignpipe.config import RLConfig
from alignpipe.models import build_tiny_model
from alignpipe.rewards import completion_text
from alignpipe.rl.entropy import TemperatureController


def digit_share_reward(prompts, completions, **kwargs):
    return [sum(ch.isdigit() for ch in completion_text(c)) / 6 for c in completions]


def test_update_rule_is_multiplicative_in_the_entropy_gap_and_clipped():
    c = TemperatureController(1.0, target=0.3, rate=0.5, min_temperature=0.2, max_temperature=2.0)
    assert c.update(1.3) == pytest.approx(math.exp(-0.5))  # too much entropy: cooler
    assert c.update(0.3) == pytest.approx(math.exp(-0.5))  # at the target: unchanged
    assert c.update(0.1) == pytest.approx(math.exp(-0.5) * math.exp(0.1))  # too little: warmer
    assert c.update(100.0) == 0.2 and c.update(-100.0) == 2.0  # clipped to [min, max]
    restored = TemperatureController(1.0)
    restored.load_state_dict(c.state_dict())
    assert restored.temperature == 2.0


def test_the_controller_moves_the_logged_entropy_toward_the_target():
    target = 2.0
    cfg = RLConfig(model="tiny", train_data="unused", output_dir="unused", tracking=False, algorithm="grpo",
                   engine="alignpipe", generation=dict(max_new_tokens=6, temperature=1.0), grpo=dict(num_generations=8),
                   engine_settings=dict(temperature_control=dict(target=target, rate=0.3, min_temperature=0.05,
                                                                 max_temperature=4.0)),
                   training=dict(max_steps=8, learning_rate=1e-9, batch_size=32, lr_scheduler="constant", seed=0))
    model, tok = build_tiny_model(0)
    prompts = [{"prompt": [{"role": "user", "content": f"{a}+{b}="}]} for a in range(10) for b in range(10)]
    result = rl.train(cfg, model, tok, prompts, [digit_share_reward], [1.0])  # policy frozen in effect (lr 1e-9)
    ent = [h["entropy"] for h in result.history]
    temps = [h["temperature"] for h in result.history]
    # the untrained model is near-uniform at T = 1 (entropy ~5.5 nats); the controller cools it toward 2 nats
    assert ent[0] > 5.0 and temps[0] == 1.0, ent
    late = sum(ent[-4:]) / 4
    assert abs(late - target) < 0.25 * abs(ent[0] - target), (ent, temps)
    assert max(temps[1:]) < 1.0
    assert all(h["next_temperature"] == pytest.approx(n["temperature"]) for h, n in zip(result.history, result.history[1:]))
    assert "train/temperature_last" in result.metrics
