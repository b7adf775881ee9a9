"""`stage rl` with engine: alignpipe publishes a trained model exactly where the TRL branch does."""

from __future__ import annotations

from pathlib import Path

from alignpipe import models
from alignpipe.config import load
from alignpipe.stages import rl as rl_stage


def test_stage_rl_ppo_on_the_alignpipe_engine_publishes_a_model(demo_data, tmp_path, weights):
    out = tmp_path / "rl-ppo"
    cfg = load("rl", None, [f"train_data={demo_data['rl_train']}", f"output_dir={out}", "model=tiny",
                            "algorithm=ppo", "engine=alignpipe", "training.logging_steps=1",
                            "generation.max_new_tokens=4", "grpo.num_generations=4", "training.batch_size=16",
                            "training.max_steps=2", "training.learning_rate=1e-3", "engine_settings.minibatches=2",
                            "rewards=[{name: exact_match}, {name: format, weight: 0.1, kwargs: {mode: search, "
                            "pattern: '[0-9]'}}]"])
    result = rl_stage.run(cfg)
    assert result.output == str(out) and not models.missing_files(out)
    assert weights.changed(weights.load(models.resolve("tiny")), weights.load(str(out)))
    assert result.metrics["train/steps"] == 2 and result.metrics["train/optimizer_steps"] == 4
    assert {"train/reward_first", "train/value_loss_first", "train/rewards/exact_match_first",
            "train/rewards/format_first"} <= set(result.metrics)
    assert result.lineage["engine"] == "alignpipe" and result.lineage["algorithm"] == "ppo"
    assert len(result.history) == 2 and "value_loss" in result.history[0]
    assert not list(Path(out).glob("critic*"))  # the published folder is a plain policy model
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(result.lineage["mlflow_run_id"])
    assert run.data.params["engine.advantage"] == "gae" and run.data.params["engine.loss"] == "ppo_clip"
    for key in ("train/reward", "train/value_loss", "train/clip_ratio", "train/entropy", "train/temperature",
                "train/advantages/std",
                "train/rewards/exact_match/mean"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key


def test_example_config_validates():
    root = Path(__file__).resolve().parents[2]
    cfg = load("rl", root / "configs" / "rl_ppo.yaml")
    assert (cfg.algorithm, cfg.engine) == ("ppo", "alignpipe")


def test_critic_can_start_from_a_reward_model(tmp_path):
    import torch
    from transformers import Qwen2ForSequenceClassification

    from alignpipe.models.tiny import build_config, build_tokenizer
    from alignpipe.rl import critic

    tok = build_tokenizer()
    rm = Qwen2ForSequenceClassification(build_config(len(tok), num_labels=1))
    rm.save_pretrained(tmp_path / "rm", safe_serialization=True)
    tok.save_pretrained(tmp_path / "rm")
    value_model = critic.from_reward_model(str(tmp_path / "rm"))
    ids = torch.tensor([[5, 6, 7]])
    values = value_model(input_ids=ids, attention_mask=torch.ones_like(ids))
    expected = rm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, 0]  # the RM's score at the last token
    assert values.shape == (1, 3) and torch.allclose(values[0, -1], expected, atol=1e-5)
