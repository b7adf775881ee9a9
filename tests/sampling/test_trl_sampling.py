"""Samplers in TRL's GRPO/RLOO trainers (the `_get_train_sampler` hook) and through the rl stage on both engines:
the store is fed from every scored generation batch, saved in checkpoints, loaded on resume, published with
the model, and its metrics reach the training log / MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignpipe import sampling
from alignpipe.config import SamplerSettings, load
from alignpipe.models import build_tiny_model
from alignpipe.sampling.trl import INDEX_COLUMN, sampling_trainer
from alignpipe.stages import rl as rl_stage


def equal_for_low_reward(prompts, completions, low=None, **kwargs):
    """0 for every completion of a `low` prompt (all-equal groups); the completion's length parity otherwise."""
    from alignpipe.rewards import completion_text

    return [0.0 if lo else float(len(completion_text(c)) % 2) for c, lo in zip(completions, low)]


def _trainer(tmp_path, smp, ds, **args):
    from trl import GRPOConfig, GRPOTrainer

    model, tok = build_tiny_model(0)
    cfg = GRPOConfig(output_dir=str(tmp_path / "ckpt"), use_cpu=True, bf16=False, report_to="none", logging_steps=1,
                     max_steps=4, per_device_train_batch_size=8, num_generations=4, max_completion_length=4,
                     gradient_checkpointing=False, save_strategy="steps", save_steps=2, seed=0, **args)
    cls = sampling_trainer(GRPOTrainer, smp)
    return cls(model=model, reward_funcs=[equal_for_low_reward], args=cfg, processing_class=tok,
               train_dataset=ds.add_column(INDEX_COLUMN, list(range(len(ds)))))


def _data():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"{a}+{b}="}], "low": a < 5,
                               "domain": "low" if a < 5 else "high", "difficulty": 1}
                              for a in range(10) for b in range(4)])


def test_grpo_draws_through_the_bandit_feeds_it_back_and_checkpoints_it(tmp_path):
    ds = _data()
    smp = sampling.from_dataset(SamplerSettings(name="bandit", temperature=0.1), ds, seed=0)
    trainer = _trainer(tmp_path, smp, ds)
    trainer.train()
    attempts = sum(smp.store.records[i].attempts for i in smp.ids)
    assert attempts == 4 * 8  # 4 steps x 2 prompts x 4 completions, every scored completion counted once
    p = smp.probabilities()
    assert p["high/d0"] > 0.9, p  # `low` prompts give all-equal groups: |advantage| 0
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert "sampler/arm_prob/high/d0" in logs[-1] and "sampler/zero_signal_rate" in logs[0]
    saved = json.loads((tmp_path / "ckpt" / "checkpoint-2" / sampling.STATE_FILE).read_text())
    assert saved["sampler"] == "bandit" and sum(r["attempts"] for r in saved["records"]) == 2 * 8

    # resume from checkpoint-2: the sampler continues from the saved state, not from scratch
    smp2 = sampling.from_dataset(SamplerSettings(name="bandit", temperature=0.1), ds, seed=0)
    trainer2 = _trainer(tmp_path, smp2, ds)
    trainer2.train(resume_from_checkpoint=str(tmp_path / "ckpt" / "checkpoint-2"))
    assert trainer2.state.global_step == 4 and trainer2.args.ignore_data_skip
    assert sum(smp2.store.records[i].attempts for i in smp2.ids) == 4 * 8


@pytest.mark.parametrize("engine", ["trl", "alignpipe"])
def test_the_rl_stage_publishes_the_pass_rate_store_with_the_model(demo_data, tmp_path, engine):
    out = tmp_path / f"rl-{engine}"
    cfg = load("rl", None, [f"train_data={demo_data['rl_train']}", f"output_dir={out}", "model=tiny",
                            f"engine={engine}", "generation.max_new_tokens=4", "grpo.num_generations=4",
                            "training.batch_size=8", "training.max_steps=2", "training.logging_steps=1",
                            "training.save_steps=null",
                            "sampler.name=difficulty_target"])
    result = rl_stage.run(cfg)
    state = json.loads((Path(out) / sampling.STATE_FILE).read_text())
    assert state["sampler"] == "difficulty_target"
    assert sum(r["attempts"] for r in state["records"]) == 2 * 8
    assert {r["domain"] for r in state["records"]} == {"arithmetic"}
    assert "train/sampler/pass_rate/mean" in result.metrics and "train/sampler/seen" in result.metrics
    from mlflow.tracking import MlflowClient

    run = MlflowClient().get_run(result.lineage["mlflow_run_id"])
    assert "train/sampler/seen" in run.data.metrics
    # a later run starts from the published store
    smp = sampling.from_rows(SamplerSettings(name="bandit", init_from=str(out)),
                             [json.loads(line) for line in Path(demo_data["rl_train"]).read_text().splitlines()])
    assert sum(smp.store.records[i].attempts for i in smp.ids) == 2 * 8
