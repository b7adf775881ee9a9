"""The reward registry: names -> reward callables, plus dotted paths to user code (like TRL)."""

from __future__ import annotations

import importlib
from typing import Callable, TypeVar

RewardFunc = Callable[..., list]  # f(prompts, completions, **kwargs) -> list[float | None]
F = TypeVar("F", bound=Callable[..., list])

_REGISTRY: dict[str, Callable[..., list]] = {}

#: Rewards that need something built first (a model); `build` makes them, `get` explains.
FACTORIES = ("reward_model",)


def register(name: str) -> Callable[[F], F]:
    """Decorator: make `func` selectable as `name` in a stage config (`rewards: [{name: ...}]`)."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"reward name {name!r} must be a non-empty identifier (letters, digits, _)")

    def decorator(func: F) -> F:
        known = _REGISTRY.get(name)
        if name in FACTORIES or (known is not None and _origin(known) != _origin(func)):
            raise ValueError(f"reward name {name!r} is already taken; choose another name")
        _REGISTRY[name] = func
        return func

    return decorator


def _origin(func: Callable) -> tuple[str, str]:
    return getattr(func, "__module__", ""), getattr(func, "__qualname__", repr(func))


def names() -> list[str]:
    """All registered reward names (sorted), including `reward_model`."""
    return sorted([*_REGISTRY, *FACTORIES])


def get(name: str) -> Callable[..., list]:
    """The reward function registered as `name`, or user code given as `my_pkg.mod:func` / `my_pkg.mod.func`.

    Raises `ValueError` naming the choices for an unknown name, and for `reward_model`, which needs a
    trained model (use `reward_model_reward(path)` or `build(specs, reward_model_path=...)`).
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in FACTORIES:
        raise ValueError(
            f"reward {name!r} needs a trained reward model: use alignpipe.rewards.reward_model_reward(path) "
            "or build(specs, reward_model_path=...)"
        )
    if ":" in name or "." in name:
        return _import(name)
    raise ValueError(
        f"unknown reward {name!r}; choose one of: {', '.join(names())} "
        "(or give your own function as a dotted path, e.g. my_pkg.rewards:my_reward)"
    )


def _import(path: str) -> Callable[..., list]:
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"reward {path!r} is not a dotted path; write it as my_pkg.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import reward {path!r}: {exc} (is the package installed / on PYTHONPATH?)") from exc
    func = module
    for part in attr.split("."):
        if not hasattr(func, part):
            raise ValueError(f"cannot import reward {path!r}: module {module_name!r} has no attribute {attr!r}")
        func = getattr(func, part)
    if not callable(func):
        raise ValueError(f"reward {path!r} is not a function (it is of type {type(func).__name__})")
    return func
