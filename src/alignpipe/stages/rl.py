"""RL fine-tuning with rewards: GRPO and RLOO (TRL trainers) and expert iteration.

- `grpo`: TRL GRPOTrainer; loss variants grpo / dr_grpo / dapo / bnpo; KL `beta` to a frozen copy
  of the input model.
- `rloo`: TRL RLOOTrainer (leave-one-out baseline), same reward functions.
- `expert_iteration`: for `rounds` rounds, sample k completions per prompt, keep those whose summed
  reward reaches `min_reward`, and fine-tune on them (rejection-sampling fine-tuning).
- `ppo`: alignpipe's own engine (`engine: alignpipe`; TRL 1.x removed PPOTrainer): GAE with a critic and
  the clipped PPO loss.

`engine: alignpipe` runs ppo / grpo / rloo on `alignpipe.rl` instead of TRL, with plug-in advantage
estimators, policy losses and KL estimators chosen in `engine_settings` (see `alignpipe.rl`).

Rewards come from `alignpipe.rewards` by name, with weights; TRL logs each as
`rewards/<name>/mean` and the weighted sum as `reward`.

Adding an algorithm: write `_run_<name>(cfg, model, tokenizer, train, reward_funcs, weights, tracker,
run_name, ckpt) -> (trainer, metrics, history)` below (`ckpt`: the stage's `alignpipe.checkpoints.Checkpoints`), add the name to `RLConfig.algorithm`, and register it in `ALGORITHMS`.
"""

from __future__ import annotations

import math
import random

from alignpipe import checkpoints, models, reuse, rewards, tracking
from alignpipe.distributed import save_trained_model
from alignpipe.config import RLConfig
from alignpipe.models.generate import vllm_usable
from alignpipe import sampling
from alignpipe.stages.common import (StageResult, Timer, base_lineage, checkpoint_dir, load_data,
                                     log_history_summary, published_output, trainer_kwargs)


def _group_args(cfg: RLConfig, tr, run_name: str, ckpt) -> dict:
    args = trainer_kwargs(cfg.training, str(ckpt.local_dir), tr.enabled, run_name, cfg.distributed)
    args.update(
        num_generations=cfg.grpo.num_generations,
        max_completion_length=cfg.generation.max_new_tokens,
        temperature=cfg.generation.temperature,
        top_p=cfg.generation.top_p,
        beta=cfg.grpo.beta,
        num_iterations=cfg.grpo.num_iterations,
        use_vllm=vllm_usable(),
    )
    if vllm_usable():
        args["vllm_mode"] = "colocate"
    return args


def policy_device() -> str:
    """Where a policy that alignpipe moves itself runs: this rank's GPU (`cuda:LOCAL_RANK`), else the CPU."""
    import torch

    from alignpipe.base import local_device

    return local_device(torch.cuda.is_available())


def _summary(history: list[dict]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key in ["reward"] + sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")}):
        s = log_history_summary(history, key)
        if s:
            name = "train/reward" if key == "reward" else "train/" + key.removesuffix("/mean")
            metrics[f"{name}_first"], metrics[f"{name}_last"] = s["first"], s["last"]
    return metrics


def _run_trl(trainer_cls, config_cls, extra: dict, cfg, model, tokenizer, train, funcs, weights, tr, run_name, ckpt):
    args = config_cls(**_group_args(cfg, tr, run_name, ckpt), reward_weights=weights, **extra)
    from alignpipe.sampling.trl import INDEX_COLUMN, sampling_trainer

    smp = sampling.from_dataset(cfg.sampler, train, seed=cfg.training.seed)
    train = train.add_column(INDEX_COLUMN, list(range(len(train))))  # the prompt index reaches the rewards
    trainer = sampling_trainer(trainer_cls, smp)(model=model, reward_funcs=funcs, args=args, train_dataset=train,
                          processing_class=tokenizer,
                          peft_config=models.lora_config(cfg.lora) if cfg.lora else None)
    trainer.train(resume_from_checkpoint=ckpt.attach(trainer, tr))
    history = trainer.state.log_history
    metrics = {"train/steps": float(trainer.state.global_step), **_summary(history)}
    return trainer, metrics, history


def _run_grpo(cfg, model, tokenizer, train, funcs, weights, tr, run_name, ckpt):
    from trl import GRPOConfig, GRPOTrainer

    extra = dict(loss_type=cfg.grpo.loss_type, epsilon=cfg.grpo.epsilon, scale_rewards=cfg.grpo.scale_rewards)
    return _run_trl(GRPOTrainer, GRPOConfig, extra, cfg, model, tokenizer, train, funcs, weights, tr, run_name, ckpt)


def _run_rloo(cfg, model, tokenizer, train, funcs, weights, tr, run_name, ckpt):
    from trl import RLOOConfig, RLOOTrainer

    return _run_trl(RLOOTrainer, RLOOConfig, dict(epsilon=cfg.grpo.epsilon), cfg, model, tokenizer, train, funcs,
                    weights, tr, run_name, ckpt)


def _run_expert_iteration(cfg, model, tokenizer, train, funcs, weights, tr, run_name, ckpt=None):
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from alignpipe.models.generate import HFGenerator

    ei = cfg.expert_iteration
    rng = random.Random(cfg.training.seed)
    columns = [c for c in train.column_names if c != "prompt"]
    history: list[dict] = []
    metrics: dict[str, float] = {}
    steps = 0
    trainer = None
    # Round 0 samples before any trainer has placed the model: put it on this rank's device first.
    model = model.to(policy_device())
    if cfg.lora:  # attached up front, so every round trains the adapters, whichever round first keeps samples
        from peft import get_peft_model

        model = get_peft_model(model, models.lora_config(cfg.lora))
    # A checkpoint after every round (each round's SFT starts a fresh optimizer, so a round boundary is an exact
    # restart point): the policy (the adapter under LoRA), the round sampler's and the global RNG states, the
    # history. SIGTERM mid-round: the grace period runs, then the retry resumes after the last complete round.
    from alignpipe.reuse import say
    from alignpipe.rl.state import EngineCheckpoints, load_policy_weights, policy_weights, rng_state, set_rng_state

    saver = EngineCheckpoints(ckpt, cfg.training)
    start = 0
    if (state := saver.restore()) is not None:
        load_policy_weights(model, state["policy"])
        rng.setstate(state["round_rng"])
        set_rng_state(state["rng"])
        start, steps, history = state["round"], state["steps"], state["history"]
        say(f"rl: expert iteration: resuming after round {start} of {ei.rounds} ({steps} SFT steps done)")
    with saver:  # SIGTERM: noted; the round in progress ends (within the grace period), is saved, exit 143
        for rnd in range(start, ei.rounds):
            idx = rng.sample(range(len(train)), min(ei.prompts_per_round, len(train)))
            batch = train.select(idx)
            prompts = list(batch["prompt"])
            samples = HFGenerator(model, tokenizer, batch_size=64).generate(
                prompts, n=ei.samples_per_prompt, temperature=cfg.generation.temperature,
                max_new_tokens=cfg.generation.max_new_tokens, top_p=cfg.generation.top_p, seed=cfg.training.seed + rnd)
            flat_prompts = [p for p, outs in zip(prompts, samples) for _ in outs]
            flat_completions = [c for outs in samples for c in outs]
            flat_cols = {c: [v for v, outs in zip(batch[c], samples) for _ in outs] for c in columns}
            scores = rewards.score(funcs, weights, flat_prompts, flat_completions, **flat_cols)["total"]
            kept, seen = [], set()
            for p, c, s in zip(flat_prompts, flat_completions, scores):
                key = (str(p), c)
                if s is not None and s >= ei.min_reward and key not in seen:
                    seen.add(key)
                    conv = isinstance(p, list)
                    kept.append({"prompt": p, "completion": [{"role": "assistant", "content": c}] if conv else c})
            success = sum(1 for s in scores if s is not None and s >= ei.min_reward) / max(1, len(scores))
            finite = [s for s in scores if not math.isnan(s)]
            entry = {"round": rnd, "success_rate": success, "kept": len(kept),
                     "mean_reward": sum(finite) / max(1, len(finite))}
            if kept:
                args = TRLSFTConfig(**{**trainer_kwargs(cfg.training, str(checkpoint_dir(f"rl-ei-{rnd}", cfg.output_dir)),
                                                       tr.enabled, f"{run_name}-round{rnd}", cfg.distributed),
                                       "max_steps": ei.sft_steps_per_round, "save_strategy": "no",
                                       # warm-up scales with the round, not with training.max_steps (3% by default)
                                       "warmup_steps": (cfg.training.warmup_steps or 0) * ei.sft_steps_per_round
                                       // max(1, cfg.training.max_steps)},
                                    completion_only_loss=True, max_length=1024)
                trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(kept),
                                     processing_class=tokenizer)
                trainer.train()
                model = trainer.model
                steps += trainer.state.global_step
                losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
                if losses:
                    entry["sft_loss_last"] = losses[-1]
            history.append(entry)
            tr.log_metrics({f"ei/{k}": v for k, v in entry.items() if k != "round"}, step=rnd)
            if saver.enabled and (rnd + 1 < ei.rounds or saver.preempted):
                saver.save(rnd + 1, {"round": rnd + 1, "steps": steps, "history": history,
                                     "policy": policy_weights(model), "round_rng": rng.getstate(), "rng": rng_state()})
    if trainer is None and start > 0:  # resumed, and no later round kept samples: the restored policy is the model
        from types import SimpleNamespace

        trainer = SimpleNamespace(model=model)
    metrics["train/steps"] = float(steps)
    metrics["train/success_rate_first"] = history[0]["success_rate"]
    metrics["train/success_rate_last"] = history[-1]["success_rate"]
    return trainer, metrics, history


def _run_alignpipe(cfg, model, tokenizer, train, funcs, weights, tr, run_name, ckpt=None):
    """alignpipe's own engine (`alignpipe.rl`): returns its result as the `trainer` (it has `.model`)."""
    from alignpipe import rl

    tr.log_params(rl.plan(cfg).as_params())
    result = rl.train(cfg, model, tokenizer, train, funcs, weights, tracker=tr, ckpt=ckpt)
    return result, result.metrics, result.history


ALGORITHMS = {"grpo": _run_grpo, "rloo": _run_rloo, "expert_iteration": _run_expert_iteration}


def check(cfg: RLConfig) -> None:
    """What the config schema cannot check: on engine: alignpipe, every plug-in name resolves in `alignpipe.rl`'s
    registries, and the sampler name resolves in `alignpipe.sampling`'s. Raises ConfigError (one line, with the
    choices) before any data or model is loaded."""
    from alignpipe.config import ConfigError

    try:
        sampling.check(cfg.sampler)
    except ValueError as e:
        raise ConfigError(f"rl config: sampler.name: {e}") from None
    if cfg.algorithm == "expert_iteration" and cfg.sampler.name != "uniform":
        raise ConfigError("rl config: sampler.name applies to grpo, rloo and ppo; expert_iteration draws its "
                          "prompts uniformly (set sampler.name: uniform)")
    if cfg.engine != "alignpipe":
        return
    from alignpipe import rl

    try:
        rl.plan(cfg)
    except ValueError as e:
        raise ConfigError(f"rl config: {e}") from None


def run(cfg: RLConfig) -> StageResult:
    check(cfg)
    train, report = load_data(cfg.train_data, "prompts")
    step = reuse.Step("rl", cfg, train_data=report.digest)
    if (reused := step.reused()) is not None:
        return reused
    reward_model_path = models.resolve(cfg.reward_model) if cfg.reward_model else None
    funcs, weights = rewards.build(cfg.rewards, reward_model_path=reward_model_path)
    model, tokenizer = models.load_policy(cfg.model, cfg.trust_remote_code, cfg.training.precision, train=True)
    run_name = cfg.run_name or (f"rl-{cfg.algorithm}" if cfg.engine == "trl" else f"rl-{cfg.algorithm}-alignpipe")
    ckpt = checkpoints.Checkpoints("rl", cfg, step.key)
    with Timer() as timer, tracking.stage_run("rl", cfg, cfg.tracking, run_name) as tr, \
            published_output(cfg.output_dir) as out_dir:
        tr.log_input(cfg.train_data, report.digest, "train")
        algo = _run_alignpipe if cfg.engine == "alignpipe" else ALGORITHMS[cfg.algorithm]
        trainer, metrics, history = algo(cfg, model, tokenizer, train, funcs, weights, tr, run_name, ckpt)
        if (smp := getattr(trainer, "sampler", None)) is not None:  # the pass-rate store, published with the model
            smp.save(out_dir / sampling.STATE_FILE)
            metrics.update({f"train/{k}": v for k, v in smp.metrics().items()})
        tr.log_metrics(metrics)
        if trainer is not None:
            save_trained_model(trainer, tokenizer, out_dir)
        else:  # expert iteration kept no sample in any round: the policy is unchanged
            models.save(model, tokenizer, out_dir)
    lineage = base_lineage("rl", cfg, algorithm=cfg.algorithm, engine=cfg.engine, train_data=cfg.train_data, train_digest=report.digest,
                           reward_model=cfg.reward_model, rewards=",".join(f"{r.name}:{r.weight}" for r in cfg.rewards),
                           mlflow_run_id=tr.run_id)
    result = StageResult("rl", cfg.output_dir, metrics, lineage, history, timer.seconds)
    step.record(result)
    ckpt.clear()
    return result
