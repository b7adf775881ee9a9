"""engine: alignpipe settings are checked before any model is loaded: one line with the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alignpipe import config
from alignpipe.config import ConfigError


def _validate(**data):
    return config.validate("rl", dict(train_data="p.jsonl", output_dir="o", **data), source="rl.yaml")


def test_ppo_runs_on_the_alignpipe_engine_with_gae_and_ppo_clip():
    from alignpipe import rl

    cfg = _validate(algorithm="ppo", engine="alignpipe")
    p = rl.plan(cfg)
    assert (p.advantage, p.loss, p.needs_critic, p.needs_reference, p.kl_mode) == ("gae", "ppo_clip", True, False,
                                                                                    "reward")
    assert rl.plan(_validate(engine="alignpipe", engine_settings=dict(advantage="dr_grpo"))).aggregation == \
        "token_sum_norm"
    assert _validate().engine == "trl"  # today's behaviour stays the default


@pytest.mark.parametrize("data,message", [
    (dict(algorithm="ppo"), "algorithm=ppo is not yet supported on engine: trl"),
    (dict(algorithm="ppo", engine="alignpipe", engine_settings=dict(critic=None)), "gae needs a critic but "
     "engine_settings.critic is null"),
    (dict(algorithm="ppo", engine="alignpipe", engine_settings=dict(critic=dict(init="reward_model"))),
     "critic.init: reward_model needs reward_model"),
    (dict(engine="alignpipe", algorithm="expert_iteration"), "does not run on engine: alignpipe"),
    (dict(engine="alignpipe", grpo=dict(beta=0.04)), "set engine_settings.kl.beta"),
    (dict(engine="alignpipe", distributed=dict(gpus=2, deepspeed="zero3")),
     "distributed.deepspeed: zero3 is not supported on engine: alignpipe"),
    (dict(engine="alignpipe", distributed=dict(gpus=2, nodes=2)), "distributed.nodes > 1 is not supported on engine"),
])
def test_bad_engine_settings(data, message):
    with pytest.raises(ConfigError) as err:
        _validate(**data)
    text = str(err.value)
    assert message in text and text.startswith("rl.yaml: ") and "\n" not in text


@pytest.mark.parametrize("settings,message", [
    (dict(advantage="gea"), "engine_settings.advantage: unknown advantage estimator 'gea' (choose one of: dr_grpo, "
     "gae, grpo"),
    (dict(loss="ppo"), "engine_settings.loss: unknown policy loss 'ppo'"),
    (dict(kl=dict(beta=0.1, estimator="K3")), "engine_settings.kl.estimator: unknown KL estimator 'K3' (choose one "
     "of: k1, k2, k3"),
    (dict(aggregation="mean"), "engine_settings.aggregation: unknown loss aggregation 'mean'"),
])
def test_unknown_plugin_names_are_caught_by_the_stage_before_loading(settings, message):
    from alignpipe.stages import rl as rl_stage

    cfg = _validate(engine="alignpipe", engine_settings=settings)  # train_data p.jsonl does not even exist
    with pytest.raises(ConfigError) as err:
        rl_stage.run(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("settings,message", [
    ("engine_settings: {kl: {beta: 0.1, estimator: k4}}",
     "rl config: engine_settings.kl.estimator: unknown KL estimator 'k4'"),
    ("engine_settings: {loss: ppo_clipp}", "rl config: engine_settings.loss: unknown policy loss 'ppo_clipp'"),
    ("engine_settings: {critic: null}", "engine_settings.advantage: gae needs a critic but engine_settings.critic is null"),
], ids=["misspelt-kl-estimator", "unknown-loss", "gae-without-critic"])
def test_cli_exits_2_before_loading_a_model(tmp_path, settings, message):
    cfg = tmp_path / "rl.yaml"
    # neither the data nor the model exists: any attempt to load one would fail with another message
    cfg.write_text(f"algorithm: ppo\nengine: alignpipe\nmodel: {tmp_path / 'no-model'}\ntrain_data: missing.jsonl\n"
                   f"output_dir: o\n{settings}\n")
    proc = subprocess.run([sys.executable, "-m", "alignpipe.cli", "stage", "rl", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_several_processes_on_one_node_are_accepted():
    cfg = _validate(engine="alignpipe", algorithm="ppo", distributed=dict(gpus=4))
    assert cfg.distributed.gpus == 4  # data-parallel on the engine (alignpipe.rl.parallel)
