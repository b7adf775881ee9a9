"""Kubeflow pipelines composed of the components; cluster wiring lives here (see common.py).

Each module has `build(Platform) -> pipeline` and a module-level pipeline built from the environment.
`PIPELINES` maps the CLI name (`alignpipe run NAME`) to its module name.
"""

PIPELINES = {"rlhf": "rlhf", "rlvr": "rlvr", "preference": "preference", "sft": "sft"}
