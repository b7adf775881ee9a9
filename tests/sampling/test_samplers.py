"""Each sampler's choice rule on hand-made pass-rate tables and reward streams (deterministic under a seed)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from alignpipe import sampling
from alignpipe.config import ConfigError, RLConfig, SamplerSettings
from alignpipe.sampling import PassRateStore


def _rows(n=60, domains=("math", "code"), levels=(1, 2, 3)):
    return [{"prompt": f"q{i}", "domain": domains[i % len(domains)], "difficulty": levels[i % len(levels)]}
            for i in range(n)]


def _smp(name, rows=None, seed=0, **kw):
    return sampling.from_rows(SamplerSettings(name=name, **kw), rows or _rows(), seed=seed)


def test_uniform_is_the_engines_old_shuffled_passes():
    import random

    rng, queue, old = random.Random(3), [], []
    smp = sampling.from_rows(SamplerSettings(), _rows(10), seed=3)
    for _ in range(25):
        if not queue:
            queue = list(range(10))
            rng.shuffle(queue)
        old.append(queue.pop())
    assert smp.select(25, 0) == old
    assert sorted(old[:10]) == list(range(10))  # every prompt once per pass


def test_difficulty_target_prefers_prompts_near_the_target_pass_rate():
    rows = [{"prompt": f"q{i}"} for i in range(40)]
    smp = _smp("difficulty_target", rows, explore=0.0, pool=40)
    rate = {i: (i % 5) / 4 for i in range(40)}  # pass rates 0, .25, .5, .75, 1
    for i in range(40):
        k = round(rate[i] * 4)
        smp.observe([i], [[1.0] * k + [0.0] * (4 - k)], step=0)
    chosen = smp.select(8, step=1)
    assert all(rate[i] == 0.5 for i in chosen), [rate[i] for i in chosen]
    smp2 = _smp("difficulty_target", rows, explore=0.0, pool=40, target=0.25)
    smp2.load_state_dict(smp.state_dict(), rng=False)
    assert all(rate[i] == 0.25 for i in smp2.select(8, step=1))
    assert smp.metrics()["sampler/target_gap"] == 0.0


def test_difficulty_target_explores_its_share_in_small_batches():
    """explore x n below one slot (0.25 x 2 prompts) still draws that share uniformly in expectation (it used to
    round down to no exploration at all)."""
    rows = [{"prompt": f"q{i}"} for i in range(40)]
    smp = _smp("difficulty_target", rows, explore=0.25, pool=20)
    for i in range(40):  # even prompts at the target pass rate, odd ones never solved
        smp.observe([i], [[1.0, 0.0] if i % 2 == 0 else [0.0, 0.0]], step=0)
    chosen = [i for step in range(1, 801) for i in smp.select(2, step)]
    far = sum(i % 2 for i in chosen) / len(chosen)
    # a uniform slot in half of the selects, half of those an odd prompt: 0.125 of the draws
    assert 0.09 < far < 0.16, far


def test_difficulty_target_estimates_unseen_prompts_from_seen_ones_by_difficulty_and_domain():
    rows = _rows(60)
    smp = _smp("difficulty_target", rows, explore=0.0, pool=60)
    # seen: difficulty 1 always solved, 2 half solved, 3 never solved (one prompt each, domain math)
    seen = {1: 0, 2: 4, 3: 2}  # index of a math prompt with that difficulty (i % 3 -> level, i % 2 -> domain)
    for level, i in seen.items():
        assert rows[i]["difficulty"] == level and rows[i]["domain"] == "math"
        smp.observe([i], [{1: [1.0] * 4, 2: [1.0, 1.0, 0.0, 0.0], 3: [0.0] * 4}[level]], step=0)
    est = smp.store.estimates(smp.ids)
    assert est[6] == 1.0 and est[10] == 0.5 and est[8] == 0.0  # unseen math prompts of each level
    assert est[7] == 0.5  # code, difficulty 2: no code prompt seen -> same difficulty
    picked = Counter(rows[i]["difficulty"] for i in smp.select(12, step=1))
    assert picked == {2: 12}


def test_bandit_arm_probabilities_move_toward_the_arm_with_the_largest_absolute_advantage():
    rows = _rows(60)
    smp = _smp("bandit", rows, temperature=0.2, alpha=0.5, seed=1)
    assert len(smp.arms) == 6  # math/code x 3 difficulty buckets
    p0 = smp.probabilities()
    assert max(p0.values()) - min(p0.values()) < 1e-12
    target = "code/d1"
    for step in range(6):
        idx = smp.select(24, step)
        # |advantage| per group: target 0.87, math/d0 0.75, the rest 0 (all-equal rewards)
        groups = [[1.0, 0.0, 1.0, 0.0] if smp.arm_of[i] == target else
                  [1.0, 1.0, 1.0, 0.0] if smp.arm_of[i] == "math/d0" else [1.0] * 4 for i in idx]
        smp.observe(idx, groups, step)
    p = smp.probabilities()
    assert max(p, key=p.get) == target and p[target] > 0.5 and p["math/d0"] > p["code/d0"], p
    m = smp.metrics()
    assert m[f"sampler/arm_prob/{target}"] == p[target] and f"sampler/arm_value/{target}" in m
    later = Counter(smp.arm_of[i] for i in smp.select(200, 7))
    assert later.most_common(1)[0][0] == target


def test_bandit_uses_the_engines_advantages_when_given():
    smp = _smp("bandit", _rows(12, domains=("a", "b"), levels=(None,)))
    a = [i for i in range(12) if smp.arm_of[i] == "a/any"][:2]
    b = [i for i in range(12) if smp.arm_of[i] == "b/any"][:2]
    smp.observe(a + b, [[1, 0]] * 4, step=0, abs_advantages=[0.0, 0.0, 2.0, 2.0])
    assert smp.q == {"a/any": 0.0, "b/any": 1.0}


def test_mixture_follows_the_fixed_domain_weights():
    smp = _smp("mixture", weights={"math": 3.0, "code": 1.0})
    c = Counter(smp.domains[i] for i in smp.select(4000, 0))
    assert 0.72 < c["math"] / 4000 < 0.78
    assert abs(smp.metrics()["sampler/domain_share/math"] - c["math"] / 4000) < 1e-12
    with pytest.raises(ValueError, match="weights names domain.*physics"):
        _smp("mixture", weights={"physics": 1.0})
    with pytest.raises(ValueError, match="mixture needs sampler.weights"):
        SamplerSettings(name="mixture")


def test_dynamic_reports_its_drop_rate_and_zero_signal_groups():
    smp = _smp("dynamic")
    assert smp.drops_equal_groups and not _smp("uniform").drops_equal_groups
    assert _smp("difficulty_target", drop_equal_groups=True).drops_equal_groups
    smp.observe([0, 1, 2, 3], [[1, 1], [0, 0], [1, 0], [0, 1]], step=0)
    smp.record_drops(2, 4)
    m = smp.metrics()
    assert m["sampler/zero_signal_rate"] == 0.5 and m["sampler/drop_rate"] == 0.5
    assert "sampler/drop_rate" not in smp.metrics()  # per logging interval


def test_store_round_trips_and_a_resumed_sampler_continues_identically(tmp_path):
    rows = _rows(30)
    a = _smp("bandit", rows, seed=4)
    for step in range(3):
        idx = a.select(6, step)
        a.observe(idx, [[float(i % 2), 0.0, 1.0] for i in idx], step)
    path = a.save(tmp_path / "sampler_state.json")
    data = json.loads(path.read_text())
    assert data["format"] == "alignpipe.sampler_state/1" and len(data["records"]) == 30
    rec = next(r for r in data["records"] if r["attempts"])
    assert set(rec) >= {"id", "domain", "difficulty", "attempts", "successes", "recent_reward", "last_step"}
    store = PassRateStore.load(path)
    assert {k: v.__dict__ for k, v in store.records.items()} == {k: v.__dict__ for k, v in a.store.records.items()}
    b = _smp("bandit", rows, seed=99)
    b.load_state_dict(json.loads(path.read_text()))
    assert b.q == a.q and b.select(10, 3) == a.select(10, 3)
    # a later run starts from the published store (statistics only, its own RNG)
    c = sampling.from_rows(SamplerSettings(name="difficulty_target", init_from=str(tmp_path)), rows, seed=0)
    assert c.store.records[a.ids[0]].__dict__ == a.store.records[a.ids[0]].__dict__


def test_prompt_ids_are_stable_and_an_id_column_wins():
    p = [{"role": "user", "content": "1+1="}]
    assert sampling.prompt_id(p) == sampling.prompt_id([dict(p[0])]) != sampling.prompt_id("1+1=")
    smp = sampling.from_rows(SamplerSettings(), [{"prompt": "x", "id": 7}, {"prompt": "y", "id": "b"}])
    assert smp.ids == ["7", "b"]


def test_the_store_counts_attempts_successes_and_recent_means():
    st = PassRateStore(success_threshold=1.0, ema=0.5)
    st.add("p", "math", 2)
    st.update("p", [1.0, 0.0, 0.0, 0.0], step=3)
    st.update("p", [1.0, 1.0, 1.0, 1.0], step=5)
    r = st.records["p"]
    assert (r.attempts, r.successes, r.last_step, r.pass_rate) == (8, 5, 5, 5 / 8)
    assert r.recent_pass_rate == 0.5 * 1.0 + 0.5 * 0.25 and r.recent_reward == r.recent_pass_rate
    assert r.last_all_equal


def test_the_rl_stage_refuses_an_unknown_sampler_before_loading_anything():
    from alignpipe.stages import rl as rl_stage

    cfg = RLConfig(model="tiny", train_data="missing.jsonl", output_dir="x", sampler={"name": "nope"})
    with pytest.raises(ConfigError, match="unknown prompt sampler 'nope'.*bandit"):
        rl_stage.run(cfg)
    cfg = RLConfig(model="tiny", train_data="missing.jsonl", output_dir="x", algorithm="expert_iteration",
                   sampler={"name": "bandit"})
    with pytest.raises(ConfigError, match="expert_iteration draws its prompts uniformly"):
        rl_stage.run(cfg)
