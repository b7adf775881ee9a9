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

from alignpipe.base import Registry

ADVANTAGES = Registry("advantage estimator")
LOSSES = Registry("policy loss")
KL_ESTIMATORS = Registry("KL estimator")
AGGREGATIONS = Registry("loss aggregation")
