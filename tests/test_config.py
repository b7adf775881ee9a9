"""The config schema: example files validate, overrides apply, bad settings fail with a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignpipe import config
from alignpipe.config import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
STAGE_OF = {"sft": "sft", "reward": "reward_model", "rl": "rl", "preference": "preference", "evaluate": "evaluate",
            "register": "register"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_configs_validate(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# alignpipe stage "), "first line must be the command that runs the file"
    stage = first.split()[3]
    assert stage == STAGE_OF[path.stem.split("_")[0]]
    config.load(stage, path)


def test_there_is_an_example_per_stage():
    stages = {p.read_text().split()[3] for p in CONFIGS}
    assert stages == set(config.STAGE_CONFIGS)


def test_overrides_are_typed_and_nested(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train_data: a.jsonl\noutput_dir: out\n")
    cfg = config.load("sft", f, ["training.max_steps=7", "lora.r=4", "packing=true", "loss=dft"])
    assert cfg.training.max_steps == 7 and cfg.lora.r == 4 and cfg.packing is True and cfg.loss == "dft"


@pytest.mark.parametrize("overrides,message", [
    (["trainng.max_steps=3"], "trainng: unknown key"),
    (["training.max_steps=0"], "training.max_steps: Input should be greater than or equal to 1"),
    (["loss=focal"], "loss: Input should be 'nll', 'dft' or 'asft'"),
    (["loss=asft", "lora.r=4"], "loss=asft keeps a frozen copy"),
    (["training.warmup_steps=50", "training.max_steps=10"], "warmup_steps (50) must be smaller than max_steps"),
    (["max_steps"], "override must look like key=value"),
])
def test_bad_sft_settings_name_file_field_and_fix(tmp_path, overrides, message):
    f = tmp_path / "c.yaml"
    f.write_text("train_data: a.jsonl\noutput_dir: out\n")
    with pytest.raises(ConfigError) as err:
        config.load("sft", f, overrides)
    text = str(err.value)
    assert text.startswith(str(f)) or text.startswith("<overrides>") or str(f) in text
    assert message in text


@pytest.mark.parametrize("data,message", [
    (dict(algorithm="ppo"), "algorithm=ppo is not yet supported"),
    (dict(rewards=[]), "rewards is empty"),
    (dict(rewards=[dict(name="reward_model")]), "reward_model is not set"),
    (dict(grpo=dict(num_generations=3), training=dict(batch_size=8)), "must be divisible by grpo.num_generations (3)"),
])
def test_bad_rl_settings(data, message):
    with pytest.raises(ConfigError) as err:
        config.validate("rl", dict(train_data="p.jsonl", output_dir="o", **data), source="rl.yaml")
    assert message in str(err.value) and str(err.value).startswith("rl.yaml: ")


def test_missing_required_field():
    with pytest.raises(ConfigError, match="train_data: required field is missing"):
        config.validate("sft", dict(output_dir="o"), source="x.yaml")


def test_invalid_yaml_and_missing_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        config.load("sft", f)
    with pytest.raises(ConfigError, match="no such config file"):
        config.load("sft", tmp_path / "nope.yaml")


def test_stage_mismatch_in_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("stage: rl\ntrain_data: a\noutput_dir: o\n")
    with pytest.raises(ConfigError, match="use `alignpipe stage rl`"):
        config.load("sft", f)


def test_schema_and_flatten():
    schema = config.json_schema("rl")
    assert schema["additionalProperties"] is False
    assert "description" in schema["properties"]["algorithm"]
    cfg = config.validate("rl", dict(train_data="p", output_dir="o"))
    flat = config.flatten(cfg)
    assert flat["grpo.num_generations"] == "8" and flat["rewards"].startswith("[")
    assert len(config.config_hash(cfg)) == 16
