"""Reward-model training with TRL's RewardTrainer (Bradley-Terry on chosen/rejected pairs).

The model is loaded as a sequence classifier with one output (a new score head on top of the
input model). Held-out pairwise accuracy — the share of eval pairs where the chosen answer
scores higher than the rejected one — is the headline metric.
"""

from __future__ import annotations

from alignpipe import checkpoints, models, reuse, tracking
from alignpipe.distributed import save_trained_model
from alignpipe.config import RewardModelConfig
from alignpipe.stages.common import (StageResult, Timer, base_lineage, load_data, log_history_summary,
                                     published_output, trainer_kwargs)


def pairwise_accuracy(model, tokenizer, dataset, batch_size: int = 64) -> tuple[float, float]:
    """(accuracy, mean margin) of chosen-over-rejected scores on a preference dataset."""
    from alignpipe.rewards import reward_model_reward

    score = reward_model_reward(model, tokenizer, batch_size=batch_size)
    if "prompt" in dataset.column_names:
        prompts = list(dataset["prompt"])
    else:  # implicit prompt: the pair is the whole text or conversation, encoded as RewardTrainer did (an empty
        # message list makes a conversation go through the chat template; "" + text + EOS for plain text)
        prompts = [[] if isinstance(c, list) else "" for c in dataset["chosen"]]
    chosen = score(prompts=prompts, completions=list(dataset["chosen"]))
    rejected = score(prompts=prompts, completions=list(dataset["rejected"]))
    wins = [c > r for c, r in zip(chosen, rejected)]
    margin = sum(c - r for c, r in zip(chosen, rejected)) / max(1, len(wins))
    return sum(wins) / max(1, len(wins)), margin


def run(cfg: RewardModelConfig) -> StageResult:
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    train, report = load_data(cfg.train_data, "preference")
    evald, eval_report = load_data(cfg.eval_data, "preference") if cfg.eval_data else (None, None)
    step = reuse.Step("reward_model", cfg, train_data=report.digest,
                      eval_data=eval_report.digest if eval_report else None)
    if (reused := step.reused()) is not None:
        return reused
    set_seed(cfg.training.seed)  # the new score head is initialised at load: seed it, so runs are reproducible
    model, tokenizer = models.load_reward_model(cfg.model, cfg.trust_remote_code, cfg.training.precision, train=True)
    run_name = cfg.run_name or "reward_model"
    ckpt = checkpoints.Checkpoints("reward_model", cfg, step.key)

    with Timer() as timer, tracking.stage_run("reward_model", cfg, cfg.tracking, run_name) as tr, \
            published_output(cfg.output_dir) as out_dir:
        tr.log_input(cfg.train_data, report.digest, "train")
        args = RewardConfig(
            **trainer_kwargs(cfg.training, str(ckpt.local_dir), tr.enabled, run_name, cfg.distributed),
            max_length=cfg.max_length,
            center_rewards_coefficient=cfg.center_rewards_coefficient,
        )
        trainer = RewardTrainer(
            model=model, args=args, train_dataset=train, processing_class=tokenizer,
            peft_config=models.lora_config(cfg.lora, "SEQ_CLS") if cfg.lora else None)
        metrics: dict[str, float] = {}
        if evald is not None:
            metrics["eval/pairwise_accuracy_before"], _ = pairwise_accuracy(trainer.model, tokenizer, evald)
        trainer.train(resume_from_checkpoint=ckpt.attach(trainer, tr))
        history = trainer.state.log_history
        metrics["train/steps"] = float(trainer.state.global_step)
        loss = log_history_summary(history, "loss")
        if loss:
            metrics["train/loss_first"], metrics["train/loss_last"] = loss["first"], loss["last"]
        train_sample = train.select(range(min(len(train), 512)))
        metrics["train/pairwise_accuracy"], _ = pairwise_accuracy(trainer.model, tokenizer, train_sample)
        if evald is not None:
            tr.log_input(cfg.eval_data, eval_report.digest, "eval")
            metrics["eval/pairwise_accuracy"], metrics["eval/margin"] = pairwise_accuracy(
                trainer.model, tokenizer, evald)
        tr.log_metrics(metrics)
        save_trained_model(trainer, tokenizer, out_dir)
    lineage = base_lineage("reward_model", cfg, train_data=cfg.train_data, train_digest=report.digest,
                           eval_digest=eval_report.digest if eval_report else None, mlflow_run_id=tr.run_id)
    result = StageResult("reward_model", cfg.output_dir, metrics, lineage, history, timer.seconds)
    step.record(result)
    ckpt.clear()
    return result
