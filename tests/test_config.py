"""The config schema: example files validate, overrides apply, bad settings fail with a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignpipe import config
from alignpipe.config import ConfigError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
STAGE_OF = {"sft": "sft", "reward": "reward_model", "rl": "rl", "preference": "preference", "evaluate": "evaluate",
            "register": "register", "route": "route"}


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


def test_defaults_suit_a_real_instruct_model():
    """Issue 9 §1: the schema's defaults are for a 0.5-8B instruct model, per stage, even when only part of
    `training` is given (before, `training: {max_steps: 10}` fell back to lr 1e-4 for every stage)."""
    base = dict(train_data="a.jsonl", output_dir="o")
    sft, rl = config.SFTConfig(**base), config.RLConfig(**base)
    assert (sft.training.learning_rate, sft.max_length) == (1e-5, 2048)
    assert (rl.training.learning_rate, rl.generation.max_new_tokens) == (1e-6, 1024)
    assert config.EvaluateConfig(models={"m": "tiny"}, data="d", output="o").max_new_tokens == 1024
    assert config.RewardModelConfig(**base).max_length == config.PreferenceConfig(**base).max_length == 2048
    assert config.RLConfig(**base, training=dict(max_steps=10)).training.learning_rate == 1e-6
    assert config.SFTConfig(**base, training=dict(max_steps=10)).training.learning_rate == 1e-5
    assert sft.training.warmup_steps == sft.training.max_steps * 3 // 100 > 0
    assert config.SFTConfig(**base, training=dict(max_steps=10)).training.warmup_steps == 0
    assert config.SFTConfig(**base, training=dict(max_steps=10, warmup_steps=2)).training.warmup_steps == 2
    for stage in ("sft", "reward_model", "rl", "preference", "evaluate"):
        for name, field in config.STAGE_CONFIGS[stage].model_fields.items():
            if name in ("max_length", "max_new_tokens"):
                assert field.description and ":" in field.description, f"{stage}.{name}: say why the default"
        training = config.STAGE_CONFIGS[stage].model_fields.get("training")
        if training is not None:
            for name in ("max_steps", "learning_rate"):
                assert ":" in training.annotation.model_fields[name].description, f"{stage}.training.{name}"


def test_toy_settings_on_a_real_model_warn(tmp_path):
    base = dict(train_data="a.jsonl", output_dir="o")
    hub = "Qwen/Qwen2.5-0.5B-Instruct"
    assert config.mismatch_warnings("sft", config.SFTConfig(**base, model="tiny", max_length=32)) == []
    [line] = config.mismatch_warnings("sft", config.SFTConfig(**base, model=hub, max_length=32))
    assert "max_length 32" in line and hub in line
    [line] = config.mismatch_warnings("rl", config.RLConfig(**base, model=hub, generation=dict(max_new_tokens=5)))
    assert "generation.max_new_tokens 5" in line
    assert config.mismatch_warnings("rl", config.RLConfig(**base, model=hub)) == []
    big = tmp_path / "big"
    big.mkdir()
    (big / "config.json").write_text('{"hidden_size": 896}')
    ev = config.EvaluateConfig(models={"base": "tiny", "rl": str(big)}, data="d", output="o", max_new_tokens=5)
    [line] = config.mismatch_warnings("evaluate", ev)
    assert "max_new_tokens 5" in line and str(big) in line


def test_run_stage_logs_the_mismatch_warning(monkeypatch, capsys):
    from alignpipe import launch
    from alignpipe.stages import sft

    monkeypatch.setattr(sft, "run", lambda cfg: "ran")
    cfg = config.SFTConfig(train_data="a.jsonl", output_dir="o", model="meta-llama/Llama-3.2-1B-Instruct",
                           max_length=32)
    assert launch.run_stage("sft", cfg) == "ran"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning: sft: max_length 32" in err[0]
