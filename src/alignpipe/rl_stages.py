"""The RL stages of the `staged-rl` pipeline (AceReason: math-only RL, then code-only RL): one entry per stage of
its `stages` parameter, resolved against the pipeline's own RL parameters.

An entry is a mapping with any of `name`, `rl_data`, `rl_data_format`, `rewards`, `rl_config`, `rl_steps`,
`rl_learning_rate`; a key it leaves out takes the pipeline parameter of the same name (`name` defaults to
`stage<i>`). So `stages=[{"name": "math", "rl_data": "s3://d/math.jsonl"}, {"name": "code", "rl_data":
"s3://d/code.jsonl", "rewards": [{"name": "code_tests"}]}]` shares every other setting. `rl_config` replaces the
pipeline's `rl_config` whole (as every config dict parameter does). To train one stage on some domains of a mixed
data set, give it `rl_config: {sampler: {name: mixture, weights: {math: 1}}}`.

`resolve()` is what the pipeline's per-stage step runs; `check()` validates every entry (the RL config with the
ONE schema) at compile, run and submit time, before anything runs.
"""

from __future__ import annotations

import re
from typing import Any

from alignpipe.config import ConfigError

#: entry key -> the pipeline parameter it overrides.
KEYS = {"rl_data": "rl_data", "rl_data_format": "rl_data_format", "rewards": "rewards", "rl_config": "rl_config",
        "rl_steps": "rl_steps", "rl_learning_rate": "rl_learning_rate"}
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def resolve(stages: Any, index: int, defaults: dict[str, Any], count: int | None = None) -> dict[str, Any]:
    """Entry `index` (0-based) of `stages` with the pipeline's values for the keys it leaves out; ConfigError
    (one line naming `stages[i]`) for a malformed entry, or a list whose length is not `count`."""
    if not isinstance(stages, list):
        raise ConfigError(f"stages: must be a JSON list of stage mappings (got {type(stages).__name__})")
    if count is not None and len(stages) != count:
        raise ConfigError(f"stages: this staged-rl pipeline was compiled for {count} stages, got {len(stages)} (give "
                          f"{count} entries, or compile it with `staged_rl.build(num_stages={len(stages)})`)")
    if not 0 <= index < len(stages):
        raise ConfigError(f"stages: no stage {index + 1} (the list has {len(stages)})")
    entry = stages[index]
    where = f"stages[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping (e.g. {{\"name\": \"math\", \"rl_data\": \"...\"}})")
    unknown = sorted(set(entry) - set(KEYS) - {"name"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (choose from name, {', '.join(KEYS)})")
    name = entry.get("name", f"stage{index + 1}")
    if not isinstance(name, str) or not NAME.match(name) or name in ("base", "sft"):
        raise ConfigError(f"{where}: name {name!r}: use lowercase letters, digits and _ (not base or sft); it names "
                          "the stage's model in the evaluation")
    names = [s.get("name", f"stage{i + 1}") if isinstance(s, dict) else None for i, s in enumerate(stages)]
    if names.count(name) > 1:
        raise ConfigError(f"{where}: name {name!r} is used by more than one stage (give each stage its own name)")
    out = {"name": name}
    for key, param in KEYS.items():
        out[key] = entry.get(key, defaults.get(param))
    if not isinstance(out["rl_config"] or {}, dict):
        raise ConfigError(f"{where}: rl_config: must be a mapping of RL config keys")
    if not isinstance(out["rewards"], list):
        raise ConfigError(f"{where}: rewards: must be a list of {{name, weight}}")
    if isinstance(out["rl_steps"], float) and out["rl_steps"].is_integer():  # (KFP hands JSON numbers on as floats)
        out["rl_steps"] = int(out["rl_steps"])
    for key, kind in (("rl_steps", int), ("rl_learning_rate", (int, float))):
        if isinstance(out[key], bool) or not isinstance(out[key], kind):
            raise ConfigError(f"{where}: {key}: expected {'an integer' if kind is int else 'a number'} "
                              f"(got {out[key]!r})")
    if not isinstance(out["rl_data"] or "", str):
        raise ConfigError(f"{where}: rl_data: expected a data set URI string")
    return out


def rl_typed(stage: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The RL step's typed arguments for a resolved stage (the rest from the pipeline's `values`)."""
    from alignpipe.steps import STAGE_PARAMS

    typed = {t.arg: values.get(t.param) for t in STAGE_PARAMS["rl"].typed}
    typed.update({"rewards": stage["rewards"], "max_steps": int(stage["rl_steps"]),
                  "learning_rate": float(stage["rl_learning_rate"])})
    return typed


def check(values: dict[str, Any], count: int | None = None, placeholder_paths: dict[str, str] | None = None) -> list[dict]:
    """Every stage resolved and its RL config validated (ConfigError naming `stages[i]`); the resolved stages."""
    from alignpipe import steps

    out = []
    stages = values.get("stages")
    for i in range(len(stages) if isinstance(stages, list) else 1):
        stage = resolve(stages, i, values, count)
        steps.stage_config("rl", stage["rl_config"], rl_typed(stage, values), dict(placeholder_paths or {
            "model": "/validate/sft", "train_data": "/validate/rl", "output_dir": "/validate/rl"}),
            source=f"stages[{i}].rl_config")
        if stage["rl_data_format"] not in (None, ""):
            steps.check_format(f"stages[{i}].rl_data_format", stage["rl_data_format"])
        out.append(stage)
    return out
