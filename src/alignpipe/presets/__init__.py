"""Presets: named sets of pipeline parameters, shipped as YAML files in this package.

    alignpipe run rlhf --local --preset demo         # the demo's calibrated settings on the tiny model
    alignpipe run rlvr --local --preset my.yaml      # a preset of your own: any YAML file of parameters
    alignpipe compile --preset demo                  # packages whose UI defaults are the preset's

A preset is a mapping `pipeline parameter -> value` (what `alignpipe params NAME` lists). A pipeline
takes the parameters it has and ignores the others (the same preset serves rlhf, rlvr, preference and
sft); `pipelines: {NAME: {...}}` overrides values for one pipeline. A parameter no pipeline has is an
error. `--param name=value` given with a preset wins over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alignpipe.config import ConfigError

PRESET_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def path_of(preset: str) -> Path:
    """The file of a preset: a shipped name (`demo`) or a YAML file path."""
    if preset in names():
        return PRESET_DIR / f"{preset}.yaml"
    p = Path(preset).expanduser()
    if p.is_file():
        return p
    raise ConfigError(f"--preset {preset}: neither a shipped preset ({', '.join(names())}) nor a YAML file "
                      "(check the name or the path)")


def label(preset: str) -> str:
    """A short name for file names: the preset's name or its file's stem."""
    return path_of(preset).stem


def load(preset: str) -> dict[str, Any]:
    path = path_of(preset)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of pipeline parameters (got {type(data).__name__})")
    per = data.get("pipelines", {})
    if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
        raise ConfigError(f"{path}: pipelines: must map a pipeline name to a mapping of parameters")
    return data


def values_for(preset: str, pipeline_name: str) -> dict[str, Any]:
    """The preset's parameters with `pipelines.<pipeline_name>` applied (not yet filtered to the pipeline's
    own parameters: `alignpipe.runs.preset_params` does that)."""
    data = load(preset)
    per = data.pop("pipelines", {})
    return {**data, **per.get(pipeline_name, {})}


def pipelines_named(preset: str) -> list[str]:
    """The pipelines a preset's `pipelines:` block names."""
    return sorted(load(preset).get("pipelines", {}))
