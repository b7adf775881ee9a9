"""DeepSpeed ZeRO presets (`distributed.deepspeed`) and the TrainingArguments they turn into.

The parse-through-DeepSpeed checks need the `gpu` extra (deepspeed) and are skipped without it; the
preset structure, the "auto" values and the early one-line error are checked everywhere."""

from __future__ import annotations

import json

import pytest

from alignpipe import distributed, launch
from alignpipe.config import ConfigError, DistributedSettings

AUTO_TOP = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")


def test_none_means_no_deepspeed():
    assert distributed.deepspeed_config("none") is None


def test_presets_match_the_config_schema():
    """Every preset the config accepts has a config, and nothing else does."""
    from typing import get_args

    accepted = get_args(DistributedSettings.model_fields["deepspeed"].annotation)
    assert set(accepted) == set(distributed.PRESETS)


@pytest.mark.parametrize("preset,stage,offload_opt,offload_param", [
    ("zero2", 2, False, False),
    ("zero2_offload", 2, True, False),
    ("zero3", 3, False, False),
    ("zero3_offload", 3, True, True),
])
def test_zero_presets(preset, stage, offload_opt, offload_param):
    cfg = distributed.deepspeed_config(preset)
    json.dumps(cfg)  # TrainingArguments(deepspeed=...) also accepts a JSON file of it
    zero = cfg["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) is offload_opt
    assert ("offload_param" in zero) is offload_param
    if offload_opt:
        assert zero["offload_optimizer"]["device"] == "cpu"
        # DeepSpeed's own AdamW (CPU Adam) does the host-side step; hyper-parameters come from the Trainer.
        assert cfg["optimizer"]["type"] == "AdamW"
        assert set(cfg["optimizer"]["params"].values()) == {"auto"}
    else:
        assert "optimizer" not in cfg  # the Trainer's optimizer
    assert "scheduler" not in cfg  # the Trainer's scheduler (training.lr_scheduler)
    for key in AUTO_TOP:
        assert cfg[key] == "auto", key
    assert cfg["bf16"]["enabled"] == "auto" and cfg["fp16"]["enabled"] == "auto"
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # later stages load a plain model
        assert zero["stage3_prefetch_bucket_size"] == "auto"


def test_presets_are_fresh_copies():
    a = distributed.deepspeed_config("zero3")
    a["zero_optimization"]["stage"] = 99
    assert distributed.deepspeed_config("zero3")["zero_optimization"]["stage"] == 3


def test_unknown_preset():
    with pytest.raises(ValueError, match="zero4"):
        distributed.deepspeed_config("zero4")


def test_missing_deepspeed_is_one_clear_config_error(monkeypatch):
    monkeypatch.setattr(distributed, "deepspeed_installed", lambda: False)
    dist = DistributedSettings(gpus=2, deepspeed="zero3_offload")
    with pytest.raises(ConfigError) as err:
        distributed.check_deepspeed(dist)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("distributed.deepspeed: zero3_offload needs DeepSpeed")
    assert "pip install 'alignpipe[gpu]'" in msg
    with pytest.raises(ConfigError):
        distributed.training_args(dist)
    distributed.check_deepspeed(DistributedSettings(gpus=2))  # no preset: nothing to check


def test_run_stage_checks_deepspeed_before_launching(monkeypatch):
    """The early check runs before torchrun is started (launch would need the netns)."""
    from alignpipe.config import SFTConfig

    monkeypatch.setattr(distributed, "deepspeed_installed", lambda: False)
    monkeypatch.setattr(launch, "launch", lambda *a, **k: pytest.fail("launched despite missing DeepSpeed"))
    cfg = SFTConfig(output_dir="/nowhere", train_data="/nowhere.jsonl",
                    distributed=DistributedSettings(gpus=2, deepspeed="zero2"))
    with pytest.raises(ConfigError, match="needs DeepSpeed"):
        launch.run_stage("sft", cfg)


def test_plan_one_process_torchrun_or_multinode(monkeypatch):
    from alignpipe.config import EvaluateConfig, SFTConfig

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    one = SFTConfig(output_dir="/o", train_data="/d.jsonl")
    assert launch.plan(one) == "single"
    two = SFTConfig(output_dir="/o", train_data="/d.jsonl", distributed=DistributedSettings(gpus=2))
    assert launch.plan(two) == "torchrun"
    nodes = SFTConfig(output_dir="s3://b/o", train_data="/d.jsonl", distributed=DistributedSettings(gpus=8, nodes=2))
    assert launch.plan(nodes) == "multinode"
    assert launch.plan(EvaluateConfig(models={"base": "tiny"}, data="/d.jsonl", output="/o.json")) == "single"
    monkeypatch.setenv("WORLD_SIZE", "2")  # already a rank of a torchrun world: train here
    assert launch.plan(two) == "single" and launch.plan(nodes) == "single"


def test_multinode_runs_are_handed_to_kubeflow_trainer(monkeypatch):
    """`distributed.nodes > 1` goes to trainjob.run_multinode with gpus per node and the GPU image."""
    from alignpipe import trainjob
    from alignpipe.base import StageResult
    from alignpipe.config import SFTConfig

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ALIGNPIPE_GPU_IMAGE", "registry.example/alignpipe-gpu:1")
    seen = {}

    def fake_run_multinode(stage, config, **kw):  # a stand-in for the Kubernetes API (no cluster here)
        seen.update(stage=stage, config=config, **kw)
        return StageResult(stage=stage, output=config["output_dir"])

    monkeypatch.setattr(trainjob, "run_multinode", fake_run_multinode)
    cfg = SFTConfig(output_dir="s3://b/o", train_data="/d.jsonl", distributed=DistributedSettings(gpus=4, nodes=3))
    result = launch.run_stage("sft", cfg)
    assert result.output == "s3://b/o"
    assert (seen["stage"], seen["nodes"], seen["gpus_per_node"]) == ("sft", 3, 4)
    assert seen["image"] == "registry.example/alignpipe-gpu:1"


def test_training_args(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed, "deepspeed_installed", lambda: True)
    assert distributed.training_args(None) == {"ddp_timeout": distributed.DEFAULT_DDP_TIMEOUT_S}
    args = distributed.training_args(DistributedSettings(gpus=2, deepspeed="zero2"))
    assert args["ddp_backend"] == "gloo"  # no CUDA here
    assert args["deepspeed"] == distributed.deepspeed_config("zero2")
    monkeypatch.setenv(distributed.DDP_TIMEOUT_ENV, "60")
    assert distributed.training_args(DistributedSettings())["ddp_timeout"] == 60


def test_launch_command_is_single_node_torchrun_without_restarts():
    cmd = launch.launch_command("rl", "/c.json", "/r.json", 4, status_dir="/s", log_dir="/l")
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=4" in cmd and "--max-restarts=0" in cmd
    assert cmd[cmd.index("-m", 3):][:3] == ["-m", "alignpipe.launch", "rl"]
    assert cmd[-6:] == ["--config", "/c.json", "--result", "/r.json", "--status-dir", "/s"]


# ---- with DeepSpeed installed (the gpu extra): the presets parse as DeepSpeed and transformers read them ----


@pytest.mark.parametrize("preset", ["zero2", "zero2_offload", "zero3", "zero3_offload"])
def test_presets_parse_in_transformers_and_deepspeed(preset, tmp_path):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4,
                             gradient_accumulation_steps=2, max_grad_norm=0.5, learning_rate=3e-4, report_to="none",
                             deepspeed=distributed.deepspeed_config(preset))
    hf = args.hf_deepspeed_config
    cfg = hf.config
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 2
    assert cfg["gradient_clipping"] == 0.5
    stage = 3 if preset.startswith("zero3") else 2
    assert hf.is_zero3() is (stage == 3)
    filled = json.loads(json.dumps(cfg))
    filled["train_batch_size"] = 8  # world size 1 here: micro x accumulation
    for k in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
        if filled["zero_optimization"].get(k) == "auto":  # filled from the model's hidden size at train time
            filled["zero_optimization"][k] = 1000
    ds = DeepSpeedConfig(filled)
    assert ds.zero_optimization_stage == stage
    assert ds.train_batch_size == 8
