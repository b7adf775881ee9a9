"""Checkpoint/resume of the engine: a PPO run stopped right after its mid-run checkpoint and resumed in a fresh
process with empty local folders ends with the same weights as an uninterrupted run of the same config and seed.

The checkpoint holds the policy, its optimizer and scheduler, the critic and its optimizer, the python/numpy/torch
RNG states, the prompt sampler's state and the temperature controller's, so the resumed run samples the same
completions and mini-batch orders: on the CPU, with one torch thread in every process, the weights are
bit-identical (no tolerance needed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignpipe.rl import state


class Killed(Exception):
    pass

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("engine_driver.py")
STEPS = 4


def _config(data: str, out: str) -> dict:
    return {"model": "tiny", "train_data": data, "output_dir": out, "tracking": False, "algorithm": "ppo",
            "engine": "alignpipe", "rewards": [{"name": "digit_share"}],
            "generation": {"max_new_tokens": 6, "temperature": 1.0}, "grpo": {"num_generations": 4},
            "sampler": {"name": "difficulty_target", "success_threshold": 0.3},
            "engine_settings": {"minibatches": 2, "critic": {"learning_rate": 1e-3},
                                "temperature_control": {"target": 3.0, "rate": 0.2, "min_temperature": 0.5}},
            "training": {"max_steps": STEPS, "save_steps": 2, "save_minutes": None, "batch_size": 8,
                         "learning_rate": 3e-3, "lr_scheduler": "linear", "warmup_steps": 1, "logging_steps": 1,
                         "seed": 0}}


def _pod(tmp: Path, name: str, spec: dict, state_uri: str) -> subprocess.CompletedProcess:
    pod = tmp / name
    pod.mkdir()
    (pod / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "ALIGNPIPE_CACHE_DIR": str(pod / "cache"), "ALIGNPIPE_CHECKPOINT_DIR": str(pod / "ckpt"),
           "ALIGNPIPE_WORKDIR": str(pod), "ALIGNPIPE_STATE_URI": state_uri, "ALIGNPIPE_FORCE_RERUN": "1"}
    return subprocess.run([sys.executable, str(DRIVER), str(pod / "spec.json")], env=env, capture_output=True,
                          text=True, timeout=180, cwd=ROOT)


def test_killed_ppo_run_resumes_to_the_same_weights(demo_data, tmp_path, weights, monkeypatch):
    sys.path.insert(0, str(DRIVER.parent))
    import engine_driver

    from alignpipe import config
    from alignpipe.stages import rl as rl_stage

    engine_driver.register_reward()
    monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / "ref-state"))
    ref = rl_stage.run(config.validate("rl", _config(demo_data["rl_train"], str(tmp_path / "ref"))))
    want = weights.load(str(tmp_path / "ref"))

    # The interrupted run: stopped (an exception, as a kill would) as soon as checkpoint 2 is published.
    store = str(tmp_path / "store")
    cfg = _config(demo_data["rl_train"], str(tmp_path / "out"))
    monkeypatch.setenv("ALIGNPIPE_STATE_URI", store)
    original = state.EngineCheckpoints.save

    def save_then_stop(self, done, st):
        original(self, done, st)
        raise Killed(done)

    monkeypatch.setattr(state.EngineCheckpoints, "save", save_then_stop)
    with pytest.raises(Killed):
        rl_stage.run(config.validate("rl", cfg))
    monkeypatch.undo()
    ckpts = sorted(p.name for p in Path(store).rglob("checkpoint-*") if (p / "MANIFEST.json").exists())
    assert ckpts == ["checkpoint-2"], ckpts
    assert not Path(tmp_path / "out").exists()  # nothing published

    second = _pod(tmp_path, "pod2", {"config": cfg, "kill_after_checkpoint": None}, store)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from checkpoint 2" in second.stderr + second.stdout
    history = json.loads(second.stdout.strip().splitlines()[-1])

    assert [h["step"] for h in history] == [float(s) for s in range(1, STEPS + 1)]  # each step once, none lost
    assert history[-1]["optimizer_steps"] == STEPS * 2
    for key in ("reward", "value_loss", "temperature", "entropy"):
        assert [h[key] for h in history] == [h[key] for h in ref.history], key
    assert len({h["temperature"] for h in history}) > 2  # the controller moved it, and its state was restored
    got = weights.load(str(tmp_path / "out"))
    assert got.keys() == want.keys()
    assert [k for k in want if not torch.equal(got[k], want[k])] == []
    assert weights.changed(weights.load(str(tmp_path / "ref")), weights.load(str(tmp_path / "out"))) == []
    assert not list(Path(store).rglob("checkpoint-*"))  # cleared once the output is published


def test_sigterm_checkpoints_when_the_step_ends_and_exits_143(tmp_path, monkeypatch):
    """SIGTERM during a rollout step: the step finishes, its checkpoint is published, Preempted (exit 143) is raised;
    a second run resumes after it and runs only the remaining steps."""
    import os
    import signal

    from alignpipe import checkpoints, rl
    from alignpipe.config import RLConfig
    from alignpipe.models import build_tiny_model

    sys.path.insert(0, str(DRIVER.parent))
    from engine_driver import digit_share_reward

    monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("ALIGNPIPE_CHECKPOINT_DIR", str(tmp_path / "local"))
    cfg = RLConfig(model="tiny", train_data="unused", output_dir=str(tmp_path / "out"), tracking=False,
                   algorithm="grpo", engine="alignpipe", generation=dict(max_new_tokens=4), grpo=dict(num_generations=4),
                   training=dict(max_steps=3, learning_rate=1e-3, batch_size=8, save_steps=None, save_minutes=None))
    prompts = [{"prompt": f"{a}+{a}="} for a in range(10)]

    def run(log=None):
        model, tok = build_tiny_model(0)
        store = checkpoints.Checkpoints("rl", cfg, "k" * 16)
        return rl.train(cfg, model, tok, prompts, [digit_share_reward], [1.0], log=log, ckpt=store)

    def sigterm_in_step_2(entry):
        if entry["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives as step 2 ends (log is called inside the step)

    with pytest.raises(checkpoints.Preempted) as err:
        run(sigterm_in_step_2)
    assert err.value.code == 143 and err.value.step == 2
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was put back
    ran: list[dict] = []
    resumed = run(ran.append)
    assert [h["step"] for h in ran] == [3.0]  # only the step after the checkpoint ran again
    assert [h["step"] for h in resumed.history] == [1.0, 2.0, 3.0]
    assert resumed.history[-1]["optimizer_steps"] == 3


def test_lora_run_resumes_to_the_same_adapter(tmp_path, monkeypatch):
    """With LoRA the checkpoint holds the adapter weights (not the frozen base); a run stopped after checkpoint 1
    and resumed ends with the same adapter as an uninterrupted one."""
    from alignpipe import checkpoints, rl
    from alignpipe.config import RLConfig
    from alignpipe.models import build_tiny_model

    from alignpipe.rewards import completion_text

    def distinct_chars(prompts, completions, **kwargs):  # varies from the first step, so the adapter moves
        return [len(set(completion_text(c))) / 4 for c in completions]

    monkeypatch.setenv("ALIGNPIPE_CHECKPOINT_DIR", str(tmp_path / "local"))
    cfg = RLConfig(model="tiny", train_data="unused", output_dir=str(tmp_path / "out"), tracking=False,
                   algorithm="grpo", engine="alignpipe", generation=dict(max_new_tokens=4), grpo=dict(num_generations=4),
                   lora=dict(r=4, alpha=8, dropout=0.0),
                   training=dict(max_steps=2, learning_rate=1e-2, batch_size=8, save_steps=1, save_minutes=None))
    prompts = [{"prompt": f"{a}+{a}="} for a in range(10)]

    def run(store_dir):
        monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / store_dir))
        model, tok = build_tiny_model(0)
        return rl.train(cfg, model, tok, prompts, [distinct_chars], [1.0],
                        ckpt=checkpoints.Checkpoints("rl", cfg, "k" * 16))

    want = run("ref").model
    original = state.EngineCheckpoints.save

    def save_then_stop(self, done, st):
        assert all("lora_" in name for name in st["policy"]), list(st["policy"])[:3]  # the adapter only
        original(self, done, st)
        raise Killed(done)

    monkeypatch.setattr(state.EngineCheckpoints, "save", save_then_stop)
    with pytest.raises(Killed):
        run("store")
    monkeypatch.setattr(state.EngineCheckpoints, "save", original)
    got = run("store").model
    adapters = {n: p for n, p in want.named_parameters() if p.requires_grad}
    assert adapters and all(torch.equal(p, dict(got.named_parameters())[n]) for n, p in adapters.items())
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in adapters.items() if "lora_B" in n)  # it trained


def test_expert_iteration_resumes_after_its_last_complete_round(demo_data, tmp_path, weights, monkeypatch, capfd):
    """Expert iteration checkpoints after every round (policy, the round sampler's and the global RNG states, the
    history): a run stopped right after round 1's checkpoint and resumed with an empty local folder runs rounds 2
    and 3 only and ends with the weights of an uninterrupted run."""
    sys.path.insert(0, str(DRIVER.parent))
    import engine_driver

    from alignpipe import config
    from alignpipe.stages import rl as rl_stage

    engine_driver.register_reward()

    def cfg(out: str) -> dict:
        return {"model": "tiny", "train_data": demo_data["rl_train"], "output_dir": out, "tracking": False,
                "algorithm": "expert_iteration", "rewards": [{"name": "digit_share"}],
                "generation": {"max_new_tokens": 6, "temperature": 1.0},
                "expert_iteration": {"rounds": 3, "prompts_per_round": 8, "samples_per_prompt": 2, "min_reward": 0.3,
                                     "sft_steps_per_round": 2},
                "training": {"max_steps": 6, "batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1, "seed": 0}}

    monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / "ref-state"))
    ref = rl_stage.run(config.validate("rl", cfg(str(tmp_path / "ref"))))
    assert ref.metrics["train/steps"] > 0  # some rounds kept samples and trained

    monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("ALIGNPIPE_CHECKPOINT_DIR", str(tmp_path / "pod1"))
    original = state.EngineCheckpoints.save

    def save_then_stop(self, done, st):
        original(self, done, st)
        raise Killed(done)

    monkeypatch.setattr(state.EngineCheckpoints, "save", save_then_stop)
    with pytest.raises(Killed):
        rl_stage.run(config.validate("rl", cfg(str(tmp_path / "out"))))
    monkeypatch.setattr(state.EngineCheckpoints, "save", original)
    assert sorted(p.name for p in (tmp_path / "store").rglob("checkpoint-*") if (p / "MANIFEST.json").exists()) == [
        "checkpoint-1"]

    monkeypatch.setenv("ALIGNPIPE_CHECKPOINT_DIR", str(tmp_path / "pod2"))  # a new pod: empty local folder
    capfd.readouterr()
    resumed = rl_stage.run(config.validate("rl", cfg(str(tmp_path / "out"))))
    assert "expert iteration: resuming after round 1 of 3" in capfd.readouterr().err
    assert [h["round"] for h in resumed.history] == [0, 1, 2]
    assert resumed.history == ref.history and resumed.metrics["train/steps"] == ref.metrics["train/steps"]
    got, want = weights.load(str(tmp_path / "out")), weights.load(str(tmp_path / "ref"))
    assert [k for k in want if not torch.equal(got[k], want[k])] == []
    assert not list((tmp_path / "store").rglob("checkpoint-*"))  # cleared once the output is published
