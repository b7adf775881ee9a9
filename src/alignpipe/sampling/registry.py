"""Samplers by name: one class plus one decorator.

    from alignpipe.sampling import SAMPLERS, Sampler

    @SAMPLERS.register("hardest_first")
    class HardestFirst(Sampler):
        \"\"\"Lowest estimated pass rate first (shown by `alignpipe.sampling.describe()`).\"\"\"

        def select(self, n, step):
            est = self.store.estimates(self.ids)
            return sorted(range(len(self.ids)), key=lambda i: (est[i], self.rng.random()))[:n]

A config names it (`sampler.name: hardest_first`), or names a class outside the package by dotted path
(`my_pkg.mod:Class`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


class Registry:
    """name -> sampler class."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(cls: Any) -> Any:
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            cls.name = name
            self._items[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def get(self, name: str) -> Any:
        """The class registered as `name`, or `pkg.mod:Class` imported; ValueError with the choices otherwise."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            module, _, attr = name.partition(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ValueError(f"{self.kind} {name!r} cannot be imported ({e})") from None
        raise ValueError(f"unknown {self.kind} {name!r} (choose one of: {', '.join(self.names())}, "
                         "or a dotted path pkg.mod:Class)")


SAMPLERS = Registry("prompt sampler")
