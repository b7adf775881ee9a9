"""The built-in prompt samplers. Each chooses prompt indices for a step (`select`) and learns from the scored
groups of the prompts it chose (`observe`); all share the pass-rate store (`alignpipe.sampling.store`).

- `uniform`: shuffled passes over the data (each prompt once per pass): the engines' behaviour before samplers.
- `difficulty_target` (DOTS): draw `pool` x n candidates, keep the n whose estimated pass rate is nearest
  `target`; `explore` of the batch is drawn uniformly so estimates stay fresh.
- `bandit` (SEC): arms are `domain` x `difficulty` bucket; an arm's reward is the mean absolute advantage of its
  prompts in a step, its value Q <- alpha r + (1 - alpha) Q (TD(0)), and each slot picks an arm with
  probability softmax(Q / temperature), then a prompt of that arm (shuffled passes within the arm).
- `mixture` (MoDoMoDo): each slot picks a domain with the fixed `weights`, then a prompt of that domain.
- `dynamic` (DAPO dynamic sampling): uniform, and the engine drops groups whose rewards are all equal and draws
  more prompts until the batch is full (at most `max_attempts` draws; still short -> filled with dropped groups).
"""

from __future__ import annotations

import bisect
import math
import random
import re
from typing import Any

from .registry import SAMPLERS
from .store import PassRateStore

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\- ]")


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", str(name)) or "_"


def group_abs_advantage(rewards: list[float]) -> float:
    """Mean |advantage| of a group under GRPO's rule ((r - mean) / std): 0 for a group whose rewards are equal."""
    n = len(rewards)
    if n < 2:
        return 0.0
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (n - 1))
    if std <= 1e-9:
        return 0.0
    return sum(abs(r - mean) for r in rewards) / n / (std + 1e-4)


class _Passes:
    """Shuffled passes over `items` (each item once per pass), popping from the end like the engine always did."""

    def __init__(self, items: list[int]):
        self.items, self.queue = list(items), []

    def take(self, rng: random.Random) -> int:
        if not self.queue:
            self.queue = list(self.items)
            rng.shuffle(self.queue)
        return self.queue.pop()


def _load_queues(passes: dict[str, _Passes], queues: dict) -> None:
    for key, queue in queues.items():
        if key in passes:
            members = set(passes[key].items)
            passes[key].queue = [i for i in queue if i in members]


class Sampler:
    """Base class: `select(n, step)` -> prompt indices; `observe(...)` after the prompts' groups are scored."""

    name = "base"
    #: the engine drops groups whose rewards are all equal and draws more (DAPO); the config may override it
    drops_equal_groups = False

    def __init__(self, settings, ids: list[str], domains: list[Any], difficulties: list[Any], seed: int = 0,
                 store: PassRateStore | None = None):
        self.settings = settings
        self.ids = list(ids)
        self.n = len(self.ids)
        if not self.n:
            raise ValueError("the sampler has no prompts (train_data is empty)")
        self.domains = ["default" if d is None else str(d) for d in domains]
        self.difficulties = list(difficulties)
        self.store = store or PassRateStore(settings.success_threshold, settings.ema)
        for i, dom, dif in zip(self.ids, self.domains, self.difficulties):
            self.store.add(i, dom, dif)
        self.rng = random.Random(seed)
        if settings.drop_equal_groups is not None:
            self.drops_equal_groups = settings.drop_equal_groups
        self.max_attempts = settings.max_attempts
        self._groups = self._equal = self._drawn = self._dropped = 0

    # ---- to implement ------------------------------------------------------------------------------------
    def select(self, n: int, step: int) -> list[int]:
        raise NotImplementedError

    def learn(self, indices: list[int], group_rewards: list[list[float]], abs_advantages: list[float],
              step: int) -> None:
        """Sampler-specific learning from a step's scored groups (the store is already updated)."""

    def extra_metrics(self) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # ---- shared ------------------------------------------------------------------------------------------
    def observe(self, indices: list[int], group_rewards: list[list[float]], step: int,
                abs_advantages: list[float] | None = None) -> None:
        """Fold scored groups (summed rewards per completion, one list per chosen prompt) into the store and the
        sampler. `abs_advantages`: mean |advantage| per group from the engine (default: GRPO's rule)."""
        if abs_advantages is None:
            abs_advantages = [group_abs_advantage(rs) for rs in group_rewards]
        for i, rs in zip(indices, group_rewards):
            self.store.update(self.ids[i], rs, step)
            self._groups += 1
            self._equal += int(bool(rs) and max(rs) - min(rs) <= 1e-9)
        self.learn(list(indices), group_rewards, list(abs_advantages), step)

    def observe_flat(self, indices: list[int], rewards: list[float], group_size: int, step: int) -> None:
        """`observe` for flat lists, `group_size` consecutive completions per prompt (TRL's layout)."""
        idx, groups = [], []
        for s in range(0, len(rewards) - group_size + 1, group_size):
            idx.append(int(indices[s]))
            groups.append([0.0 if r is None or math.isnan(r) else float(r) for r in rewards[s:s + group_size]])
        self.observe(idx, groups, step)

    def record_drops(self, dropped: int, drawn: int) -> None:
        self._dropped += dropped
        self._drawn += drawn

    def metrics(self) -> dict[str, float]:
        """Sampler state for MLflow since the last call: pass-rate histogram, zero-signal and drop rates, and the
        sampler's own (arm probabilities, domain shares, ...). Keys `sampler/...`."""
        out = self.store.summary(self.ids)
        if self._groups:
            out["sampler/zero_signal_rate"] = self._equal / self._groups
        if self._drawn:
            out["sampler/drop_rate"] = self._dropped / self._drawn
        out.update(self.extra_metrics())
        self._groups = self._equal = self._drawn = self._dropped = 0
        return out

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"sampler": self.name, "rng": [version, list(internal), gauss], "extra": self.extra_state(),
                **self.store.to_dict()}

    def load_state_dict(self, state: dict, rng: bool = True) -> None:
        """Take the store's records (and, for a resume of the same sampler, its RNG and own state)."""
        self.store.merge(PassRateStore.from_dict(state))
        if rng and state.get("sampler") == self.name:
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))
            self.load_extra_state(state.get("extra") or {})

    def save(self, path) -> Any:
        import json
        from pathlib import Path

        from alignpipe import storage

        storage.write_text(path, json.dumps(self.state_dict()))  # atomic: temp file + rename
        return Path(path)


@SAMPLERS.register("uniform")
class Uniform(Sampler):
    """Shuffled passes over the data, each prompt once per pass (the default)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passes = _Passes(list(range(self.n)))

    def select(self, n: int, step: int) -> list[int]:
        return [self.passes.take(self.rng) for _ in range(n)]

    def extra_state(self) -> dict:
        return {"queue": self.passes.queue}

    def load_extra_state(self, state: dict) -> None:
        self.passes.queue = [i for i in state.get("queue", []) if 0 <= i < self.n]


@SAMPLERS.register("dynamic")
class Dynamic(Uniform):
    """DAPO dynamic sampling: uniform draws; groups whose rewards are all equal are dropped and more drawn."""

    drops_equal_groups = True


@SAMPLERS.register("difficulty_target")
class DifficultyTarget(Sampler):
    """DOTS: prompts whose estimated pass rate is nearest `target` (unseen: estimated from similar seen ones)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._gap: list[float] = []

    def select(self, n: int, step: int) -> list[int]:
        s = self.settings
        est = self.store.estimates(self.ids)
        # stochastic rounding: the `explore` share holds in expectation for batches too small for a whole
        # uniform slot (int(0.1 x 8) would be 0: no exploration at all); no draw when the share is whole
        exact = s.explore * n
        n_explore = int(exact)
        if exact - n_explore > 1e-9 and self.rng.random() < exact - n_explore:
            n_explore += 1
        pool = self.rng.sample(range(self.n), min(self.n, s.pool * n))
        keyed = sorted(pool, key=lambda i: (abs(est[i] - s.target), self.rng.random()))
        chosen = keyed[:n - n_explore]
        taken = set(chosen)
        rest = [i for i in range(self.n) if i not in taken]
        chosen += self.rng.sample(rest, min(len(rest), n - len(chosen)))
        while len(chosen) < n:  # fewer prompts than slots
            chosen.append(self.rng.randrange(self.n))
        self._gap += [abs(est[i] - s.target) for i in chosen]
        return chosen

    def extra_metrics(self) -> dict[str, float]:
        out = {"sampler/target_gap": sum(self._gap) / len(self._gap)} if self._gap else {}
        self._gap = []
        return out


def _buckets(difficulties: list[Any], k: int) -> list[str]:
    """Numeric difficulties -> k quantile buckets `d0..d{k-1}`; labels stay as they are; missing -> `any`."""
    nums = sorted(float(d) for d in difficulties if isinstance(d, (int, float)) and not isinstance(d, bool))
    out = []
    for d in difficulties:
        if d is None:
            out.append("any")
        elif isinstance(d, (int, float)) and not isinstance(d, bool):
            q = bisect.bisect_left(nums, float(d)) / len(nums)
            out.append(f"d{min(k - 1, int(q * k))}")
        else:
            out.append(str(d))
    return out


@SAMPLERS.register("bandit")
class Bandit(Sampler):
    """SEC: Boltzmann choice over domain x difficulty-bucket arms valued by recent mean |advantage| (TD(0))."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        buckets = _buckets(self.difficulties, self.settings.buckets)
        self.arm_of = [f"{_safe(d)}/{_safe(b)}" for d, b in zip(self.domains, buckets)]
        members: dict[str, list[int]] = {}
        for i, arm in enumerate(self.arm_of):
            members.setdefault(arm, []).append(i)
        self.arms = sorted(members)
        self.passes = {a: _Passes(members[a]) for a in self.arms}
        self.q = {a: 0.0 for a in self.arms}

    def probabilities(self) -> dict[str, float]:
        t = self.settings.temperature
        m = max(self.q.values())
        e = {a: math.exp((v - m) / t) for a, v in self.q.items()}
        z = sum(e.values())
        return {a: v / z for a, v in e.items()}

    def select(self, n: int, step: int) -> list[int]:
        p = self.probabilities()
        arms = self.rng.choices(self.arms, weights=[p[a] for a in self.arms], k=n)
        return [self.passes[a].take(self.rng) for a in arms]

    def learn(self, indices, group_rewards, abs_advantages, step) -> None:
        per_arm: dict[str, list[float]] = {}
        for i, adv in zip(indices, abs_advantages):
            per_arm.setdefault(self.arm_of[i], []).append(adv)
        a = self.settings.alpha
        for arm, vals in per_arm.items():
            self.q[arm] = a * (sum(vals) / len(vals)) + (1 - a) * self.q[arm]

    def extra_metrics(self) -> dict[str, float]:
        out = {f"sampler/arm_prob/{a}": p for a, p in self.probabilities().items()}
        out.update({f"sampler/arm_value/{a}": v for a, v in self.q.items()})
        return out

    def extra_state(self) -> dict:
        return {"q": self.q, "queues": {a: p.queue for a, p in self.passes.items()}}

    def load_extra_state(self, state: dict) -> None:
        self.q.update({a: float(v) for a, v in state.get("q", {}).items() if a in self.q})
        _load_queues(self.passes, state.get("queues", {}))


@SAMPLERS.register("mixture")
class Mixture(Sampler):
    """Fixed domain weights (`weights`), uniform passes within each domain."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        members: dict[str, list[int]] = {}
        for i, d in enumerate(self.domains):
            members.setdefault(d, []).append(i)
        weights = self.settings.weights or {}
        missing = sorted(set(weights) - set(members))
        if missing:
            raise ValueError(f"sampler.weights names domain(s) {', '.join(missing)} that train_data does not have "
                             f"(its domains: {', '.join(sorted(members))})")
        self.domain_names = [d for d in sorted(weights) if weights[d] > 0]
        self.weights = [weights[d] for d in self.domain_names]
        self.passes = {d: _Passes(members[d]) for d in self.domain_names}
        self._drawn_domains: dict[str, int] = {}

    def select(self, n: int, step: int) -> list[int]:
        doms = self.rng.choices(self.domain_names, weights=self.weights, k=n)
        for d in doms:
            self._drawn_domains[d] = self._drawn_domains.get(d, 0) + 1
        return [self.passes[d].take(self.rng) for d in doms]

    def extra_state(self) -> dict:
        return {"queues": {d: p.queue for d, p in self.passes.items()}}

    def load_extra_state(self, state: dict) -> None:
        _load_queues(self.passes, state.get("queues", {}))

    def extra_metrics(self) -> dict[str, float]:
        total = sum(self._drawn_domains.values())
        out = {f"sampler/domain_share/{_safe(d)}": c / total for d, c in self._drawn_domains.items()} if total else {}
        self._drawn_domains = {}
        return out
