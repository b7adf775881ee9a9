"""Samplers inside alignpipe's RL engine on the tiny model: they change which prompts are drawn, and
`dynamic` drops all-equal groups without ever returning a short batch."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from alignpipe import rl, sampling
from alignpipe.config import RLConfig, SamplerSettings
from alignpipe.models import build_tiny_model
from alignpipe.rewards import completion_text

K, PROMPTS_PER_STEP = 8, 4


def pass_prob_reward(prompts, completions, p=None, **kwargs):
    """1 with the prompt's probability `p` (a hash of the completion and its position decides)."""
    def u(text):
        return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 16 ** 8

    return [1.0 if u(f"{completion_text(c)}|{i}") < float(q) else 0.0 for i, (c, q) in enumerate(zip(completions, p))]


def _rows(domains=("easy", "mid", "hard")):
    # easy: always solved, hard: never (both give all-equal groups); mid: solved half the time
    # (distinct prompts: equal prompt texts share one pass-rate record)
    first = {"easy": 0, "mid": 10, "hard": 20}
    return [{"prompt": f"{first[dom] + a}+{b}=", "p": {"easy": 1.0, "mid": 0.5, "hard": 0.0}[dom], "domain": dom,
             "difficulty": {"easy": 1, "mid": 2, "hard": 3}[dom]}
            for dom in domains for a in range(4) for b in range(4)]


class Recording(sampling.Dynamic):
    """A uniform sampler (dropping all-equal groups) that records every observe call of the engine."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[tuple[int, list[int], list[int]]] = []
        self.equal: list[tuple[int, bool]] = []

    def observe(self, indices, group_rewards, step, abs_advantages=None):
        self.calls.append((step, list(indices), [len(g) for g in group_rewards]))
        self.equal.extend((step, max(g) == min(g)) for g in group_rewards)
        super().observe(indices, group_rewards, step, abs_advantages)


def _train(sampler: dict, rows, steps, smp=None):
    cfg = RLConfig(model="tiny", train_data="unused", output_dir="unused", tracking=False, algorithm="grpo",
                   engine="alignpipe", generation=dict(max_new_tokens=4, temperature=1.0), grpo=dict(num_generations=K),
                   sampler=sampler, training=dict(max_steps=steps, learning_rate=1e-4, lr_scheduler="constant",
                                                  batch_size=K * PROMPTS_PER_STEP, seed=0))
    model, tok = build_tiny_model(0)
    return rl.train(cfg, model, tok, rows, [pass_prob_reward], [1.0], sampler=smp)


def _recording(rows, **settings):
    return Recording(SamplerSettings(name="dynamic", **settings), [sampling.prompt_id(r["prompt"]) for r in rows],
                     [r["domain"] for r in rows], [r["difficulty"] for r in rows], seed=0)


@pytest.mark.parametrize("name", ["bandit", "difficulty_target"])
def test_a_sampler_changes_which_prompts_the_engine_draws(name):
    """uniform draws every domain alike; bandit (|advantage| is 0 for all-equal groups) and difficulty_target
    (estimated pass rate nearest 0.5) turn to the `mid` prompts within a few rollout steps."""
    share = {}
    for s in ("uniform", name):
        rows = _rows()
        smp = sampling.from_rows(SamplerSettings(name=s), rows, seed=0)
        chosen: list[list[int]] = []
        select = smp.select
        smp.select = lambda n, step: chosen.append(select(n, step)) or chosen[-1]
        result = _train({"name": s}, rows, steps=6, smp=smp)
        later = Counter(rows[i]["domain"] for idx in chosen[3:] for i in idx)
        share[s] = later["mid"] / sum(later.values())
        assert result.sampler is smp and "sampler/pass_rate/mean" in result.history[-1]
    assert share["uniform"] < 0.6 and share[name] >= 0.75, share
    if name == "bandit":
        assert result.history[-1]["sampler/arm_prob/mid/d1"] > 0.8, result.history[-1]


def test_dynamic_drops_all_equal_groups_and_never_returns_a_short_batch():
    rows = _rows()
    smp = _recording(rows, max_attempts=4)
    result = _train({"name": "dynamic"}, rows, steps=3, smp=smp)
    last_of_step = {step: idx for step, idx, _ in smp.calls}  # the batch trained on is observed last
    assert all(len(idx) == PROMPTS_PER_STEP for idx in last_of_step.values()), smp.calls
    assert all(n == K for _, _, sizes in smp.calls for n in sizes)
    kept = Counter(rows[i]["domain"] for idx in last_of_step.values() for i in idx)
    assert kept["mid"] >= 10, kept  # all-equal easy/hard groups were dropped for mid ones
    rates = [h["sampler/drop_rate"] for h in result.history]
    expected = [sum(e for s, e in smp.equal if s == step) / sum(1 for s, _ in smp.equal if s == step)
                for step in range(3)]  # every all-equal group drawn in a step counts as dropped
    assert rates == expected and max(rates) > 0.3, (rates, expected)


def test_dynamic_fills_the_batch_with_dropped_groups_when_every_group_is_equal():
    rows = _rows(("easy", "hard"))
    smp = _recording(rows, max_attempts=2)
    result = _train({"name": "dynamic"}, rows, steps=2, smp=smp)
    assert [h["sampler/drop_rate"] for h in result.history] == [1.0, 1.0]
    drawn = sum(len(idx) for _, idx, _ in smp.calls)
    assert drawn == 2 * 2 * PROMPTS_PER_STEP  # 2 steps x 2 draws, each prompt observed once
    assert {step: len(idx) for step, idx, _ in smp.calls} == {0: PROMPTS_PER_STEP, 1: PROMPTS_PER_STEP}
