"""Kubeflow pipelines composed of the components; cluster wiring lives here (see common.py).

Each module has `build(Platform) -> pipeline` and a module-level pipeline built from the environment.
`PIPELINES` is the one list of pipelines: the CLI names (`alignpipe run NAME`), which are also the
module names (with `-` as `_`: `sft-rl-routed` is `sft_rl_routed.py`). Importing this package imports
nothing else (the CLI reads the list for its help).
"""

PIPELINES = ("rlhf", "rlvr", "preference", "sft", "sft-rl-routed", "staged-rl")
