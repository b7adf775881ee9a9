"""Which prompts RL trains on: prompt samplers and the per-prompt pass-rate store (`sampler` in the rl config).

    smp = sampling.from_rows(cfg.sampler, rows, seed=0)     # or from_dataset(cfg.sampler, ds)
    idx = smp.select(8, step)                               # prompt indices for this step
    smp.observe(idx, group_rewards, step)                   # summed rewards per completion, one list per prompt
    smp.metrics()                                           # {"sampler/...": value} for MLflow
    smp.save(out_dir / "sampler_state.json")                # the store (and RNG/arm state, for a resume)

Samplers are registered by name (`SAMPLERS`; `describe()` lists them): uniform, difficulty_target (DOTS),
bandit (SEC), mixture, dynamic (DAPO). Both RL engines use them: alignpipe's engine calls `select`/`observe`
itself; TRL's GRPO/RLOO trainers get them through `alignpipe.sampling.trl` (their `_get_train_sampler` hook).
"""

from __future__ import annotations

from .registry import SAMPLERS, Registry
from .samplers import Bandit, DifficultyTarget, Dynamic, Mixture, Sampler, Uniform, group_abs_advantage
from .store import STATE_FILE, PassRateStore, PromptRecord, prompt_id


def build(settings, prompts: list, *, ids: list | None = None, domains: list | None = None,
          difficulties: list | None = None, seed: int = 0) -> Sampler:
    """The sampler `settings.name` over `prompts` (ids default to a hash of each prompt); with
    `settings.init_from` its store starts from a published sampler state. ValueError (one line) on a bad name."""
    cls = SAMPLERS.get(settings.name)
    n = len(prompts)
    ids = [str(i) for i in ids] if ids is not None else [prompt_id(p) for p in prompts]
    smp = cls(settings, ids, domains if domains is not None else [None] * n,
              difficulties if difficulties is not None else [None] * n, seed)
    if settings.init_from:
        smp.load_state_dict(read_state(settings.init_from), rng=False)
    return smp


def from_rows(settings, rows: list[dict], seed: int = 0) -> Sampler:
    """`build` over a list of data rows (`prompt`, optional `id`, `domain`, `difficulty`)."""
    def col(name):
        return [r.get(name) for r in rows] if rows and name in rows[0] else None

    return build(settings, [r["prompt"] for r in rows], ids=col("id"), domains=col("domain"),
                 difficulties=col("difficulty"), seed=seed)


def from_dataset(settings, ds, seed: int = 0) -> Sampler:
    """`build` over a `datasets.Dataset`."""
    def col(name):
        return list(ds[name]) if name in ds.column_names else None

    return build(settings, list(ds["prompt"]), ids=col("id"), domains=col("domain"),
                 difficulties=col("difficulty"), seed=seed)


def read_state(uri: str) -> dict:
    """A sampler state from a `sampler_state.json` path/URI, or from a folder/URI holding one."""
    import json

    from alignpipe import storage

    target = uri if str(uri).endswith(".json") else storage.join(uri, STATE_FILE)
    try:
        return json.loads(storage.read_text(target))
    except (OSError, ValueError) as e:
        raise ValueError(f"sampler.init_from: cannot read a sampler state at {target} ({e})") from None


def check(settings) -> None:
    """The sampler name resolves (ValueError with the choices otherwise); cheap, nothing loaded."""
    SAMPLERS.get(settings.name)


def describe() -> dict[str, str]:
    """{name: first docstring line} of every registered sampler."""
    return {n: ((SAMPLERS.get(n).__doc__ or "").strip().splitlines() or [""])[0] for n in SAMPLERS.names()}


__all__ = ["Bandit", "DifficultyTarget", "Dynamic", "Mixture", "PassRateStore", "PromptRecord", "Registry",
           "SAMPLERS", "STATE_FILE", "Sampler", "Uniform", "build", "check", "describe", "from_dataset", "from_rows",
           "group_abs_advantage", "prompt_id", "read_state"]
