"""The per-prompt pass-rate store: what every scored group of rollouts teaches about its prompt.

One `PromptRecord` per prompt id (the data's `id` column, else a hash of the prompt, so a store published by
one run matches the same prompts in another data set or order): domain, difficulty, attempts (completions
scored), successes (completions whose summed reward reached `success_threshold`), the recent pass rate and
recent mean reward (exponential moving averages over groups, weight `ema` on the newest), the last step it was
seen and whether its last group's rewards were all equal. Saved as JSON (`sampler_state.json`).

Unseen prompts get an estimated pass rate from the seen ones: the mean recent pass rate of seen prompts with the
same (domain, difficulty), else the same difficulty, else the same domain, else all seen prompts, else 0.5.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from alignpipe import storage

FORMAT = "alignpipe.sampler_state/1"
STATE_FILE = "sampler_state.json"
PRIOR = 0.5


def prompt_id(prompt: Any) -> str:
    """A stable id for a prompt (string or message list): sha1 of its canonical JSON, 16 hex digits."""
    return hashlib.sha1(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass
class PromptRecord:
    id: str
    domain: str = "default"
    difficulty: Any = None
    attempts: int = 0
    successes: int = 0
    recent_pass_rate: float | None = None
    recent_reward: float | None = None
    last_step: int | None = None
    last_all_equal: bool = False

    @property
    def pass_rate(self) -> float | None:
        return self.successes / self.attempts if self.attempts else None


class PassRateStore:
    """id -> PromptRecord, updated from scored groups; JSON round-trip with `save`/`load`."""

    def __init__(self, success_threshold: float = 1.0, ema: float = 0.5):
        self.success_threshold, self.ema = success_threshold, ema
        self.records: dict[str, PromptRecord] = {}

    def add(self, id: str, domain: Any = None, difficulty: Any = None) -> PromptRecord:
        """The record of `id`, created if new (an existing record keeps its statistics)."""
        rec = self.records.get(id)
        if rec is None:
            rec = self.records[id] = PromptRecord(id, "default" if domain is None else str(domain), difficulty)
        return rec

    def update(self, id: str, rewards: list[float], step: int) -> PromptRecord:
        """Fold one scored group (the summed rewards of one prompt's completions) into its record."""
        rec = self.add(id)
        if not rewards:
            return rec
        solved = sum(1 for r in rewards if r >= self.success_threshold)
        rec.attempts += len(rewards)
        rec.successes += solved
        rate, mean = solved / len(rewards), sum(rewards) / len(rewards)
        a = self.ema
        rec.recent_pass_rate = rate if rec.recent_pass_rate is None else a * rate + (1 - a) * rec.recent_pass_rate
        rec.recent_reward = mean if rec.recent_reward is None else a * mean + (1 - a) * rec.recent_reward
        rec.last_step = step
        rec.last_all_equal = max(rewards) - min(rewards) <= 1e-9
        return rec

    # ---- estimates -----------------------------------------------------------------------------------
    def estimates(self, ids: list[str]) -> list[float]:
        """Estimated pass rate of each id: its recent pass rate, or (unseen) the mean of similar seen prompts."""
        sums: dict[tuple, list[float]] = {}

        def add(key: tuple, v: float) -> None:
            s = sums.setdefault(key, [0.0, 0])
            s[0] += v
            s[1] += 1

        for rec in self.records.values():
            if rec.recent_pass_rate is not None:
                d = _key(rec.difficulty)
                for key in (("dd", rec.domain, d), ("f", d), ("d", rec.domain), ("all",)):
                    add(key, rec.recent_pass_rate)
        out = []
        for i in ids:
            rec = self.records.get(i)
            if rec is not None and rec.recent_pass_rate is not None:
                out.append(rec.recent_pass_rate)
                continue
            dom, dif = (rec.domain, _key(rec.difficulty)) if rec is not None else ("default", None)
            for key in (("dd", dom, dif), ("f", dif), ("d", dom), ("all",)):
                if key in sums and (key[0] in ("d", "all") or dif is not None):
                    out.append(sums[key][0] / sums[key][1])
                    break
            else:
                out.append(PRIOR)
        return out

    def summary(self, ids: list[str] | None = None, bins: int = 5) -> dict[str, float]:
        """Share of prompts seen, mean recent pass rate, and the histogram of recent pass rates (share per bin)."""
        recs = [self.records[i] for i in dict.fromkeys(ids)] if ids is not None else list(self.records.values())
        seen = [r.recent_pass_rate for r in recs if r.recent_pass_rate is not None]
        out = {"sampler/seen": len(seen) / max(1, len(recs))}
        if seen:
            out["sampler/pass_rate/mean"] = sum(seen) / len(seen)
            counts = [0] * bins
            for v in seen:
                counts[min(bins - 1, int(v * bins))] += 1
            for b, c in enumerate(counts):
                out[f"sampler/pass_rate_hist/{b / bins:.1f}-{(b + 1) / bins:.1f}"] = c / len(seen)
        return out

    # ---- persistence ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "success_threshold": self.success_threshold, "ema": self.ema,
                "records": [asdict(r) for r in self.records.values()]}

    @classmethod
    def from_dict(cls, data: dict) -> "PassRateStore":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a sampler state (format {data.get('format')!r}, expected {FORMAT!r})")
        store = cls(data.get("success_threshold", 1.0), data.get("ema", 0.5))
        names = {f.name for f in fields(PromptRecord)}
        for r in data["records"]:
            store.records[r["id"]] = PromptRecord(**{k: v for k, v in r.items() if k in names})
        return store

    def merge(self, other: "PassRateStore") -> None:
        """Take `other`'s statistics for every id it knows (domain/difficulty stay this store's when set)."""
        for i, rec in other.records.items():
            mine = self.records.get(i)
            if mine is None:
                self.records[i] = PromptRecord(**asdict(rec))
            else:
                for f in ("attempts", "successes", "recent_pass_rate", "recent_reward", "last_step", "last_all_equal"):
                    setattr(mine, f, getattr(rec, f))

    def save(self, path: str | Path) -> Path:
        storage.write_text(path, json.dumps(self.to_dict()))  # atomic: temp file + rename
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "PassRateStore":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _key(difficulty: Any) -> Any:
    return None if difficulty is None else str(difficulty)
