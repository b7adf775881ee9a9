"""Offline preference optimisation with TRL's DPOTrainer (sigmoid, IPO, hinge, robust, ... losses).

The reference model is a frozen copy of the input model unless `ref_model` names another.
Reported: the implicit-reward margin (chosen minus rejected) and preference accuracy, at the start
and end of training, and on held-out pairs when `eval_data` is given.
"""

from __future__ import annotations

from alignpipe import checkpoints, models, reuse, tracking
from alignpipe.distributed import save_trained_model
from alignpipe.config import PreferenceConfig
from alignpipe.stages.common import (StageResult, Timer, base_lineage, load_data, log_history_summary,
                                     published_output, trainer_kwargs)


def run(cfg: PreferenceConfig) -> StageResult:
    from trl import DPOConfig, DPOTrainer

    train, report = load_data(cfg.train_data, "preference")
    evald, eval_report = load_data(cfg.eval_data, "preference") if cfg.eval_data else (None, None)
    step = reuse.Step("preference", cfg, train_data=report.digest,
                      eval_data=eval_report.digest if eval_report else None)
    if (reused := step.reused()) is not None:
        return reused
    model, tokenizer = models.load_policy(cfg.model, cfg.trust_remote_code, cfg.training.precision, train=True)
    ref = models.load_policy(cfg.ref_model, cfg.trust_remote_code, cfg.training.precision)[0] if cfg.ref_model else None
    run_name = cfg.run_name or "dpo"
    ckpt = checkpoints.Checkpoints("preference", cfg, step.key)

    with Timer() as timer, tracking.stage_run("preference", cfg, cfg.tracking, run_name) as tr, \
            published_output(cfg.output_dir) as out_dir:
        tr.log_input(cfg.train_data, report.digest, "train")
        args = DPOConfig(
            **trainer_kwargs(cfg.training, str(ckpt.local_dir), tr.enabled, run_name, cfg.distributed),
            beta=cfg.beta, loss_type=list(cfg.loss_type), max_length=cfg.max_length,
            eval_strategy="no",
        )
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=train, eval_dataset=evald,
                             processing_class=tokenizer,
                             peft_config=models.lora_config(cfg.lora) if cfg.lora else None)
        metrics: dict[str, float] = {}
        if evald is not None:
            before = trainer.evaluate()
            metrics["eval/margin_before"] = float(before.get("eval_rewards/margins", 0.0))
        trainer.train(resume_from_checkpoint=ckpt.attach(trainer, tr))
        history = trainer.state.log_history
        metrics["train/steps"] = float(trainer.state.global_step)
        for key, name in [("loss", "train/loss"), ("rewards/margins", "train/margin"),
                          ("rewards/accuracies", "train/preference_accuracy")]:
            s = log_history_summary(history, key)
            if s:
                metrics[f"{name}_first"], metrics[f"{name}_last"] = s["first"], s["last"]
        if evald is not None:
            tr.log_input(cfg.eval_data, eval_report.digest, "eval")
            after = trainer.evaluate()
            metrics["eval/margin"] = float(after.get("eval_rewards/margins", 0.0))
            metrics["eval/preference_accuracy"] = float(after.get("eval_rewards/accuracies", 0.0))
        tr.log_metrics(metrics)
        save_trained_model(trainer, tokenizer, out_dir)
    lineage = base_lineage("preference", cfg, train_data=cfg.train_data, train_digest=report.digest,
                           ref_model=cfg.ref_model, mlflow_run_id=tr.run_id)
    result = StageResult("preference", cfg.output_dir, metrics, lineage, history, timer.seconds)
    step.record(result)
    ckpt.clear()
    return result
