"""Rewards chosen in a config, with weights: `build` for trainers, `score` for evaluation."""

from __future__ import annotations

import functools
import inspect
import math
import os
from typing import Any, Callable, Iterable

from .registry import FACTORIES, get

_POSITIONAL = ("prompts", "completions")


def _field(spec: Any, name: str, default: Any = None) -> Any:
    if isinstance(spec, dict):
        return spec.get(name, default)
    return getattr(spec, name, default)


def _options_of(func: Callable) -> set[str] | None:
    """Names a reward accepts as options (keyword parameters besides prompts/completions)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None  # builtins/C callables: cannot tell, accept anything
    return {
        p.name for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _POSITIONAL
    }


def _bind(func: Callable, name: str, options: dict[str, Any]) -> Callable[..., list]:
    """`func` with `options` fixed, named `name` (TRL logs `rewards/<__name__>/mean`)."""

    @functools.wraps(func)
    def reward(prompts: list, completions: list, **kwargs: Any) -> list:
        return func(prompts, completions, **{**kwargs, **options})

    reward.__name__ = reward.__qualname__ = name
    reward.options = dict(options)  # type: ignore[attr-defined]
    return reward


def _unique(name: str, taken: dict[str, int]) -> str:
    taken[name] = taken.get(name, 0) + 1
    return name if taken[name] == 1 else f"{name}_{taken[name]}"


def build(specs: Iterable[Any], reward_model_path: str | os.PathLike[str] | None = None) -> tuple[list[Callable], list[float]]:
    """Reward callables and their weights from config specs (objects or dicts with `name`, `weight`, `kwargs`).

    Names are registry names (`names()`), `reward_model`, or dotted paths to user functions. Each callable's
    `__name__` is the spec name (a path gives its function's name; repeats get `_2`, `_3`). Options in
    `kwargs` must be keyword parameters of the function. `reward_model` loads the model at
    `kwargs.model` or `reward_model_path`; its other kwargs go to `reward_model_reward`
    (batch_size, device, max_length). Raises `ValueError` with the fix for any bad spec.
    """
    funcs: list[Callable] = []
    weights: list[float] = []
    taken: dict[str, int] = {}
    specs = list(specs)
    if not specs:
        raise ValueError("no rewards configured; give at least one, e.g. rewards: [{name: exact_match}]")
    for spec in specs:
        name = _field(spec, "name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"reward spec {spec!r} has no name")
        weight = _field(spec, "weight", 1.0)
        try:
            weight = float(1.0 if weight is None else weight)
        except (TypeError, ValueError):
            raise ValueError(f"reward '{name}': weight {weight!r} is not a number") from None
        if not math.isfinite(weight):
            raise ValueError(f"reward '{name}': weight must be a finite number, got {weight}")
        options = dict(_field(spec, "kwargs", None) or {})
        if name in FACTORIES:
            func = _build_reward_model(options, reward_model_path)
            func.__name__ = func.__qualname__ = _unique(name, taken)
        else:
            base = get(name)
            accepted = _options_of(base)
            unknown = sorted(set(options) - accepted) if accepted is not None else []
            if unknown:
                choices = ", ".join(sorted(accepted)) or "none"
                raise ValueError(f"reward '{name}' got unknown option(s) {', '.join(unknown)} (its options: {choices})")
            check = getattr(base, "check_options", None)
            if check is not None:
                check(**options)
            display = name if (":" not in name and "." not in name) else getattr(base, "__name__", name.split(":")[-1].split(".")[-1])
            func = _bind(base, _unique(display, taken), options)
        funcs.append(func)
        weights.append(weight)
    return funcs, weights


def _build_reward_model(options: dict[str, Any], reward_model_path: Any) -> Callable:
    from .reward_model import reward_model_reward

    path = options.pop("model", None) or reward_model_path
    if path is None:
        raise ValueError(
            "reward 'reward_model' needs a trained reward model: pass reward_model_path (the reward-model stage's "
            "output) or set kwargs: {model: PATH} on the reward"
        )
    allowed = {"tokenizer", "batch_size", "device", "max_length"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"reward 'reward_model' got unknown option(s) {', '.join(unknown)} "
                         f"(its options: model, {', '.join(sorted(allowed))})")
    return reward_model_reward(path, **options)


def score(
    funcs: list[Callable],
    weights: list[float],
    prompts: list,
    completions: list,
    **columns: Any,
) -> dict[str, list[float]]:
    """Each reward's values (key = its `__name__`) and their weighted sum under `total`.

    `columns` are the data set's columns (e.g. `answer=[...]`), passed to every reward as TRL does.
    A reward's None (not applicable) is NaN here; `total` sums the weighted values that are not NaN
    (as TRL's GRPO does) and is NaN only when no reward applies to that completion.
    """
    if len(funcs) != len(weights):
        raise ValueError(f"{len(funcs)} reward functions but {len(weights)} weights")
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts for {n} completions")
    out: dict[str, list[float]] = {}
    taken: dict[str, int] = {}
    rows: list[tuple[float, list[float]]] = []
    for func, weight in zip(funcs, weights):
        name = getattr(func, "__name__", None) or type(func).__name__
        if name == "total":
            raise ValueError("a reward may not be named 'total' (that key holds the weighted sum)")
        values = list(func(prompts=prompts, completions=completions, **columns))
        if len(values) != n:
            raise ValueError(f"reward '{name}' returned {len(values)} values for {n} completions")
        values = [math.nan if v is None else float(v) for v in values]
        out[_unique(name, taken)] = values
        rows.append((float(weight), values))
    total: list[float] = []
    for i in range(n):
        terms = [w * values[i] for w, values in rows if not math.isnan(values[i])]
        total.append(math.fsum(terms) if terms else math.nan)
    out["total"] = total
    return out
