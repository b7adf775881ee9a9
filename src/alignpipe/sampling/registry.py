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

from alignpipe.base import Registry

SAMPLERS = Registry("prompt sampler", name_attr="name", example="pkg.mod:Class", what="a class")
