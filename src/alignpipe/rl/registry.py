"""Small name -> function registries, one per kind of RL plug-in.

A plug-in is one function plus one decorator::

    from alignpipe.rl import ADVANTAGES

    @ADVANTAGES.register("my_baseline")
    def my_baseline(inp):
        \"\"\"What it computes (shown by `alignpipe.rl.describe()`).\"\"\"
        ...

A config names it (`engine_settings.advantage: my_baseline`), or names a function outside the package by
dotted path (`my_pkg.mod:func`); the config check resolves every name before any model is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


class Registry:
    """Plug-ins of one kind: name -> function, with optional attributes (e.g. `needs_critic=True`)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

    def register(self, name: str, **attrs: Any) -> Callable[[Callable], Callable]:
        def deco(func: Callable) -> Callable:
            if name in self._items and self._items[name] is not func:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            for k, v in attrs.items():
                setattr(func, k, v)
            func.plugin_name = name  # type: ignore[attr-defined]
            self._items[name] = func
            return func

        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def get(self, name: str) -> Callable:
        """The function registered as `name`, or `pkg.mod:func` imported; ValueError with the choices otherwise."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            module, _, attr = name.partition(":")
            try:
                func = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ValueError(f"{self.kind} {name!r} cannot be imported ({e})") from None
            if not callable(func):
                raise ValueError(f"{self.kind} {name!r} is not a function")
            return func
        raise ValueError(f"unknown {self.kind} {name!r} (choose one of: {', '.join(self.names())}, "
                         "or a dotted path pkg.mod:func)")


ADVANTAGES = Registry("advantage estimator")
LOSSES = Registry("policy loss")
KL_ESTIMATORS = Registry("KL estimator")
AGGREGATIONS = Registry("loss aggregation")
