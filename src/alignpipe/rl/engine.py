"""The loop: sample prompts -> generate k completions each -> score -> advantages -> update.

One call of `train` runs `training.max_steps` rollout steps. Each step samples
`training.batch_size x gradient_accumulation_steps` completions (`grpo.num_generations` per prompt), scores
them with the configured rewards, computes advantages with the chosen estimator, and updates the policy
(and the critic, for `gae`) for `engine_settings.epochs` passes over `engine_settings.minibatches`
mini-batches (split along prompt groups, so group-wise losses see whole groups). Optional loops
(`engine_settings.relift`, `hints`, `replay`; `rl/loops.py`) add SFT steps on reference solutions, hinted SFT, and
rollout replay to the same loop.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from alignpipe import rewards as reward_lib
from alignpipe import sampling

from . import critic as critic_lib
from . import loops, rollout
from .entropy import TemperatureController
from .state import EngineCheckpoints, last_logged_step, load_policy_weights, policy_weights, rng_state, set_rng_state
from .advantages import AdvantageInput, masked_whiten
from .losses import LossInput
from .registry import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, LOSSES

#: What `algorithm` means on this engine when engine_settings leaves advantage/loss unset.
ALGORITHM_DEFAULTS = {"ppo": ("gae", "ppo_clip"), "grpo": ("grpo", "ppo_clip"), "rloo": ("rloo", "ppo_clip")}


@dataclass
class Plan:
    """The engine's resolved choices (names filled in from the algorithm's defaults)."""

    advantage: str
    loss: str
    aggregation: str
    kl_mode: str
    whiten: bool
    needs_critic: bool
    needs_reference: bool

    def as_params(self) -> dict[str, str]:
        return {f"engine.{k}": str(v) for k, v in self.__dict__.items()}


def plan(cfg) -> Plan:
    """Resolve and check the engine's plug-in names; ValueError (one line, with the fix) for a bad one."""
    es = cfg.engine_settings
    if cfg.algorithm not in ALGORITHM_DEFAULTS:
        raise ValueError(f"algorithm={cfg.algorithm} does not run on engine: alignpipe (choose one of: "
                         f"{', '.join(ALGORITHM_DEFAULTS)}; for rejection-sampling fine-tuning use "
                         "algorithm: grpo with engine_settings.loss: sft_on_positive)")
    adv_default, loss_default = ALGORITHM_DEFAULTS[cfg.algorithm]
    advantage, loss = es.advantage or adv_default, es.loss or loss_default
    estimator = _named(ADVANTAGES, advantage, "engine_settings.advantage")
    _named(LOSSES, loss, "engine_settings.loss")
    aggregation = es.aggregation or ("token_sum_norm" if advantage == "dr_grpo" else "token_mean")
    _named(AGGREGATIONS, aggregation, "engine_settings.aggregation")
    _named(KL_ESTIMATORS, es.kl.estimator, "engine_settings.kl.estimator")
    needs_critic = bool(getattr(estimator, "needs_critic", False))
    if needs_critic and es.critic is None:
        raise ValueError(f"engine_settings.advantage: {advantage} needs a critic but engine_settings.critic is null "
                         "(remove critic: null, or choose an advantage without a critic such as grpo)")
    if needs_critic and es.critic.init == "reward_model" and not cfg.reward_model:
        raise ValueError("engine_settings.critic.init: reward_model needs reward_model to be set "
                         "(set reward_model: <dir>, or critic.init: policy)")
    if es.replay is not None and needs_critic:
        raise ValueError(f"engine_settings.replay needs an advantage without a critic ({advantage} uses one): its "
                         "stored advantages would not match the critic's values (remove replay, or use grpo/rloo)")
    kl_mode = es.kl.mode or ("reward" if advantage in ("reinforce_pp", "gae") else "loss")
    whiten = es.normalize_advantages if es.normalize_advantages is not None else advantage == "gae"
    return Plan(advantage, loss, aggregation, kl_mode, whiten, needs_critic, es.kl.beta > 0)


def _named(registry, name: str, field_name: str):
    try:
        return registry.get(name)
    except ValueError as e:
        raise ValueError(f"{field_name}: {e}") from None


@dataclass
class EngineResult:
    """What `train` returns; `model` is the trained policy (LoRA still attached: `models.save` merges it)."""

    model: Any
    critic: Any
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    is_deepspeed_enabled: bool = False  # read by distributed.save_trained_model
    sampler: Any = None  # the prompt sampler and its pass-rate store (`alignpipe.sampling`)


def _rows(data) -> list[dict]:
    return data.to_list() if hasattr(data, "to_list") else list(data)


def _completion_objs(prompts: list, texts: list[str]) -> list:
    return [[{"role": "assistant", "content": t}] if isinstance(p, list) else t for p, t in zip(prompts, texts)]


def _concat(parts: list[rollout.Rollout], pad_id: int) -> rollout.Rollout:
    """Rollouts of several draws as one (prompts left-padded, completions right-padded to the longest)."""
    if len(parts) == 1:
        return parts[0]
    p, t = max(r.prompt_ids.shape[1] for r in parts), max(r.completion_ids.shape[1] for r in parts)

    def pad(x, width, value, left):
        extra = width - x.shape[1]
        if not extra:
            return x
        fill = torch.full((x.shape[0], extra), value, dtype=x.dtype)
        return torch.cat([fill, x] if left else [x, fill], 1)

    return rollout.Rollout(torch.cat([pad(r.prompt_ids, p, pad_id, True) for r in parts]),
                           torch.cat([pad(r.prompt_mask, p, 0, True) for r in parts]),
                           torch.cat([pad(r.completion_ids, t, pad_id, False) for r in parts]),
                           torch.cat([pad(r.completion_mask, t, 0, False) for r in parts]),
                           [x for r in parts for x in r.texts])


def _stats(prefix: str, x: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    vals = x[mask > 0]
    if vals.numel() == 0:
        return {}
    return {f"{prefix}/mean": float(vals.mean()), f"{prefix}/std": float(vals.std()) if vals.numel() > 1 else 0.0,
            f"{prefix}/min": float(vals.min()), f"{prefix}/max": float(vals.max())}


def train(cfg, model, tokenizer, train_data, funcs, weights, tracker=None, log=None, sampler=None,
          ckpt=None) -> EngineResult:
    """Run the engine on `model` (trained in place unless LoRA wraps it) and return the result. Prompts are
    drawn by `sampler` (default: `cfg.sampler` built over `train_data`, see `alignpipe.sampling`). With `ckpt`
    (the stage's `alignpipe.checkpoints.Checkpoints`) the run resumes from the newest complete checkpoint and
    writes new ones (see `alignpipe.rl.state`)."""
    from transformers import get_scheduler

    p = plan(cfg)
    es, t, gen = cfg.engine_settings, cfg.training, cfg.generation
    k = cfg.grpo.num_generations
    n_prompts = (t.batch_size * t.gradient_accumulation_steps) // k
    if n_prompts < 1:
        raise ValueError(f"training.batch_size ({t.batch_size}) is smaller than grpo.num_generations ({k})")
    rows = _rows(train_data)
    if not rows:
        raise ValueError("train_data has no rows")
    columns = [c for c in rows[0] if c != "prompt"]
    torch.manual_seed(t.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)

    advantage_fn, loss_fn = ADVANTAGES.get(p.advantage), LOSSES.get(p.loss)
    agg_fn, kl_fn = AGGREGATIONS.get(p.aggregation), KL_ESTIMATORS.get(es.kl.estimator)

    ref = None
    if p.needs_reference:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
    critic = None
    if p.needs_critic:
        if es.critic.init == "reward_model":
            from alignpipe import models

            critic = critic_lib.from_reward_model(models.resolve(cfg.reward_model), cfg.trust_remote_code)
        else:
            critic = critic_lib.from_policy(model)
        critic.to(device).eval()
    if cfg.lora is not None:
        from peft import get_peft_model

        from alignpipe import models

        model = get_peft_model(model, models.lora_config(cfg.lora))
    model.eval()  # no dropout: the ratio pi/pi_old is exactly 1 on the first pass over a batch

    n_mb = min(es.minibatches, n_prompts)
    total_updates = t.max_steps * es.epochs * n_mb
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    sched = get_scheduler(t.lr_scheduler, opt, num_warmup_steps=t.warmup_steps, num_training_steps=total_updates)
    copt = None
    if critic is not None:
        copt = torch.optim.AdamW(critic.parameters(), lr=es.critic.learning_rate, weight_decay=t.weight_decay)

    smp = sampler if sampler is not None else sampling.from_rows(cfg.sampler, rows, seed=t.seed)
    controller = (TemperatureController.from_settings(es.temperature_control, gen.temperature)
                  if es.temperature_control is not None else None)
    threshold = cfg.sampler.success_threshold
    relift = relift_sft = None
    if es.relift is not None:  # ReLIFT (rl/loops.py): failed prompts -> buffer -> SFT steps on their references
        relift = loops.ReliftBuffer(es.relift, threshold)
        relift_sft = loops.SFTer(params, es.relift.learning_rate, t.seed + 1, t.weight_decay)
    replay = loops.ReplayBuffer(es.replay) if es.replay is not None else None  # DOTS rollout replay
    hints_sft = None
    hint_counts = {"rounds": 0, "prompts": 0, "generated": 0, "kept": 0}
    if es.hints is not None:  # ReGFT-style: hinted generation for never-solved prompts -> verified -> SFT
        hints_sft = loops.SFTer(params, es.hints.learning_rate, t.seed + 2, t.weight_decay)

    history: list[dict[str, float]] = []
    updates = start = 0
    saver = EngineCheckpoints(ckpt, t)
    restored = saver.restore()
    if restored is not None:
        load_policy_weights(model, restored["policy"])
        opt.load_state_dict(restored["optimizer"])
        sched.load_state_dict(restored["scheduler"])
        if critic is not None:
            critic.load_state_dict(restored["critic"])
            copt.load_state_dict(restored["critic_optimizer"])
        smp.load_state_dict(restored["sampler"])
        if controller is not None and restored.get("temperature") is not None:
            controller.load_state_dict(restored["temperature"])
        looped = restored.get("loops") or {}
        if relift is not None and looped.get("relift") is not None:
            relift.load_state_dict(looped["relift"]["buffer"])
            relift_sft.load_state_dict(looped["relift"]["sft"])
        if replay is not None and looped.get("replay") is not None:
            replay.load_state_dict(looped["replay"])
        if hints_sft is not None and looped.get("hints") is not None:
            hints_sft.load_state_dict(looped["hints"]["sft"])
            hint_counts.update(looped["hints"]["counts"])
        set_rng_state(restored["rng"])
        start, updates, history = restored["step"], restored["optimizer_steps"], restored["history"]
    logged = last_logged_step(tracker) if restored is not None else -1

    def state(done: int) -> dict[str, Any]:
        return {"step": done, "optimizer_steps": updates, "history": history, "policy": policy_weights(model),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "critic": critic.state_dict() if critic is not None else None,
                "critic_optimizer": copt.state_dict() if copt is not None else None,
                "sampler": smp.state_dict(), "temperature": controller.state_dict() if controller else None,
                "loops": loop_state(), "rng": rng_state()}

    def loop_state() -> dict[str, Any]:
        out: dict[str, Any] = {}
        if relift is not None:
            out["relift"] = {"buffer": relift.state_dict(), "sft": relift_sft.state_dict()}
        if replay is not None:
            out["replay"] = replay.state_dict()
        if hints_sft is not None:
            out["hints"] = {"sft": hints_sft.state_dict(), "counts": dict(hint_counts)}
        return out

    def hint_round(temperature: float) -> loops.HintRound:
        """Prompts seen but never solved (most recently seen first, up to hints.prompts): k completions each after
        the hint (the first `fraction` of the reference's characters, placed as the start of the answer); the full
        answer hint + completion is scored with the stage's rewards against the un-hinted prompt and kept when its
        summed reward reaches the success threshold, as the pair (un-hinted prompt, hint + completion)."""
        hs = es.hints
        never = []
        for i, row in enumerate(rows):
            rec = smp.store.records.get(smp.ids[i])
            if rec is not None and rec.attempts > 0 and rec.successes == 0 and loops.reference_text(row) is not None:
                never.append((-(rec.last_step if rec.last_step is not None else -1), i))
        pick = [i for _, i in sorted(never)][:hs.prompts or n_prompts]
        if not pick:
            return loops.HintRound(0, 0, [])
        prompts = [rows[i]["prompt"] for i in pick]
        hints = [loops.hint_of(loops.reference_text(rows[i]), hs.fraction) for i in pick]
        hro = rollout.sample(model, tokenizer, prompts, k, gen.max_new_tokens, temperature, gen.top_p, prefixes=hints)
        conts = tokenizer.batch_decode(hro.completion_ids, skip_special_tokens=True)
        full = [hints[j // k] + conts[j] for j in range(len(conts))]
        flat_prompts = [pr for pr in prompts for _ in range(k)]
        cols = {c: [rows[i].get(c) for i in pick for _ in range(k)] for c in columns}
        sc = reward_lib.score(funcs, weights, flat_prompts, _completion_objs(flat_prompts, full), **cols)
        kept = [(flat_prompts[j], full[j]) for j, v in enumerate(sc["total"]) if not math.isnan(v) and v >= threshold]
        return loops.HintRound(len(pick), len(full), kept)

    def draw(step: int, temperature: float, n_prompts: int):
        """(prompt indices, rollout, scores) of a full batch; with drops_equal_groups (DAPO dynamic sampling)
        groups whose rewards are all equal are dropped and more prompts drawn, at most smp.max_attempts times;
        a batch still short is filled with dropped groups (never a short batch)."""
        kept: list[tuple] = []  # (prompt index, rollout part, position in part, scored part)
        dropped: list[tuple] = []
        drawn = 0
        for attempt in range(smp.max_attempts if smp.drops_equal_groups else 1):
            idx = smp.select(n_prompts - len(kept), step)
            prompts = [rows[i]["prompt"] for i in idx]
            ro = rollout.sample(model, tokenizer, prompts, k, gen.max_new_tokens, temperature, gen.top_p)
            flat_prompts = [pr for pr in prompts for _ in range(k)]
            cols = {c: [rows[i].get(c) for i in idx for _ in range(k)] for c in columns}
            sc = reward_lib.score(funcs, weights, flat_prompts, _completion_objs(flat_prompts, ro.texts), **cols)
            drawn += len(idx)
            for j, i in enumerate(idx):
                g = [0.0 if math.isnan(v) else v for v in sc["total"][j * k:(j + 1) * k]]
                equal = max(g) - min(g) <= 1e-9
                (dropped if smp.drops_equal_groups and equal else kept).append((i, ro, j, sc))
            if len(kept) >= n_prompts:
                break
        if smp.drops_equal_groups:
            smp.record_drops(len(dropped), drawn)
            fill, rest = dropped[:n_prompts - len(kept)], dropped[n_prompts - len(kept):]
            smp.observe([d[0] for d in rest], [[0.0 if math.isnan(v) else v for v in sc["total"][j * k:(j + 1) * k]]
                                               for _, _, j, sc in rest], step, [0.0] * len(rest))
            kept += fill  # observed with the batch below
        parts, scored = [], {}
        for i, ro, j, sc in kept:
            parts.append(ro.select(torch.arange(j * k, (j + 1) * k)))
            for name, vals in sc.items():
                scored.setdefault(name, []).extend(vals[j * k:(j + 1) * k])
        return [d[0] for d in kept], _concat(parts, tokenizer.pad_token_id), scored

    with saver:
        for step in range(start, t.max_steps):
            temp = controller.temperature if controller is not None else gen.temperature
            t0 = time.perf_counter()
            replayed = replay.take(replay.slots(n_prompts), step) if replay is not None else []
            chosen, ro, scored = draw(step, temp, n_prompts - len(replayed))
            n_fresh = len(chosen)
            mask = ro.completion_mask
            raw = torch.tensor([0.0 if math.isnan(v) else v for v in scored["total"]])
            scores = raw.clone()
            lengths = mask.sum(-1)
            if es.length_bonus:
                scores = scores + es.length_bonus * lengths / gen.max_new_tokens
            if es.reward_clip is not None:
                scores = scores.clamp(-es.reward_clip, es.reward_clip)

            with torch.no_grad():
                old_logp, entropy = rollout.token_logprobs(model, ro, temp, entropy=True)
                ref_logp = rollout.token_logprobs(ref, ro, temp)[0] if ref is not None else None
                values = rollout.token_values(critic, ro) if critic is not None else None
            token_rewards = torch.zeros_like(old_logp)
            last = (lengths - 1).clamp(min=0).long()
            token_rewards[torch.arange(len(last)), last] = scores
            kl_tok = kl_fn(old_logp, ref_logp) * mask if ref_logp is not None else None
            if kl_tok is not None and p.kl_mode == "reward":
                token_rewards = token_rewards - es.kl.beta * kl_tok
            adv, returns = advantage_fn(AdvantageInput(token_rewards, mask, k, values, es.critic.gamma if es.critic else 1.0,
                                                       es.critic.lam if es.critic else 0.95))
            if p.whiten:
                adv = masked_whiten(adv, mask)
            adv = adv.detach()
            seq_abs_adv = (adv.abs() * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            smp.observe(chosen, raw.view(n_fresh, k).tolist(), step, seq_abs_adv.view(n_fresh, k).mean(-1).tolist())

            # The update's batch: the fresh groups, then the replayed ones with their stored behaviour log-probs,
            # advantages and shaped rewards (the loss's ratio pi / pi_behaviour, clipped as it clips, corrects them).
            u_ro, u_old, u_adv, u_scores, u_ref = ro, old_logp, adv, scores, ref_logp
            if replayed:
                u_ro = _concat([ro] + [g.ro for g in replayed], tokenizer.pad_token_id)
                width = u_ro.completion_ids.shape[1]

                def wide(x):
                    return torch.nn.functional.pad(x, (0, width - x.shape[1]))

                u_old = torch.cat([wide(old_logp)] + [wide(g.old_logp) for g in replayed])
                u_adv = torch.cat([wide(adv)] + [wide(g.adv) for g in replayed])
                u_scores = torch.cat([scores] + [g.scores for g in replayed])
                if ref is not None:
                    with torch.no_grad():
                        u_ref = rollout.token_logprobs(ref, u_ro, temp)[0]
            u_mask = u_ro.completion_mask
            if replay is not None:
                replay.evict(step)
                for j, i in enumerate(chosen):
                    rows_j = torch.arange(j * k, (j + 1) * k)
                    replay.admit(loops.ReplayGroup(int(i), step, ro.select(rows_j), old_logp[rows_j], adv[rows_j],
                                                   scores[rows_j], raw[rows_j]))

            sums: dict[str, float] = {}
            counts: dict[str, int] = {}

            def add(name: str, v: float) -> None:
                sums[name] = sums.get(name, 0.0) + float(v)
                counts[name] = counts.get(name, 0) + 1

            options = dict(clip_eps=es.clip_eps, clip_eps_high=es.clip_eps_high, positive_threshold=es.positive_threshold,
                           copg_beta=es.copg_beta)
            for _epoch in range(es.epochs):
                groups = torch.randperm(n_prompts)
                for chunk in torch.tensor_split(groups, n_mb):
                    idx = (chunk[:, None] * k + torch.arange(k)[None]).reshape(-1)
                    sub = u_ro.select(idx)
                    logp, ent = rollout.token_logprobs(model, sub, temp, entropy=es.entropy_coef > 0)
                    m = u_mask[idx]
                    li = LossInput(logp=logp, old_logp=u_old[idx], advantages=u_adv[idx], mask=m, scores=u_scores[idx],
                                   group_size=k, ref_logp=u_ref[idx] if u_ref is not None else None,
                                   aggregation=p.aggregation, max_tokens=gen.max_new_tokens, options=options)
                    loss, lm = loss_fn(li)
                    add("policy_loss", loss.item())
                    for name, v in lm.items():
                        add(name, v)
                    if u_ref is not None and p.kl_mode == "loss":
                        kl = agg_fn(kl_fn(logp, u_ref[idx]), m, gen.max_new_tokens)
                        loss = loss + es.kl.beta * kl
                    if es.entropy_coef:
                        loss = loss - es.entropy_coef * agg_fn(ent, m, gen.max_new_tokens)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    add("grad_norm", torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm).item())
                    opt.step()
                    sched.step()
                    updates += 1
                    add("loss", loss.item())
                    if critic is not None:
                        v_new = rollout.token_values(critic, sub)
                        vl, vclip = critic_lib.value_loss(v_new, values[idx], returns[idx], m, es.critic.value_clip)
                        copt.zero_grad(set_to_none=True)
                        vl.backward()
                        torch.nn.utils.clip_grad_norm_(critic.parameters(), t.max_grad_norm)
                        copt.step()
                        add("value_loss", vl.item())
                        add("value_clip_ratio", vclip)

            entry: dict[str, float] = {"step": float(step + 1), "reward": float(raw.mean()),
                                       "reward_std": float(raw.std()) if raw.numel() > 1 else 0.0,
                                       "shaped_reward": float(scores.mean()),
                                       "entropy": float((entropy * mask).sum() / mask.sum().clamp(min=1)),
                                       "completion_length": float(lengths.mean()),
                                       "learning_rate": float(sched.get_last_lr()[0]), "optimizer_steps": float(updates),
                                       "step_seconds": time.perf_counter() - t0}
            for name, vals in scored.items():
                if name != "total":
                    finite = [v for v in vals if not math.isnan(v)]
                    if finite:
                        entry[f"rewards/{name}/mean"] = sum(finite) / len(finite)
            if kl_tok is not None:
                entry["kl"] = float(kl_tok.sum() / mask.sum().clamp(min=1))
            entry.update(_stats("advantages", adv, mask))
            if values is not None:
                entry.update(_stats("values", values, mask))
                if returns is not None:  # explained variance: 1 - Var(returns - values) / Var(returns), over tokens
                    entry.update(_stats("returns", returns, mask))
                    on = mask > 0
                    var = returns[on].var() if on.sum() > 1 else torch.tensor(0.0)
                    if var > 0:
                        entry["value_explained_variance"] = float(1 - (returns[on] - values[on]).var() / var)
            entry.update({name: sums[name] / counts[name] for name in sums})
            if replay is not None:
                entry["sampler/replay_share"] = len(replayed) / n_prompts
                entry["replay/groups"] = float(len(replayed))
                entry["replay/buffer"] = float(len(replay.groups))
                entry["replay/replayed_total"] = float(replay.replayed)
            if relift is not None:
                relift.admit(chosen, raw.view(len(chosen), k).tolist(), rows)
                entry["relift/buffer"] = float(len(relift.items))
                if relift.due(step + 1):
                    demos = relift.take(rows)
                    nlls = relift_sft.run(model, tokenizer, demos, es.relift.sft_steps, es.relift.batch_size,
                                          t.max_grad_norm)
                    entry["relift/nll"] = sum(nlls) / len(nlls)
                    entry["relift/prompts"] = float(len(demos))
                entry["relift/sft_steps"] = float(relift_sft.steps)
            if hints_sft is not None and (step + 1) % es.hints.every == 0:
                hr = hint_round(temp)
                hint_counts["rounds"] += 1
                hint_counts["prompts"] += hr.prompts
                hint_counts["generated"] += hr.generated
                hint_counts["kept"] += len(hr.kept)
                entry.update({"hints/prompts": float(hr.prompts), "hints/generated": float(hr.generated),
                              "hints/kept": float(len(hr.kept))})
                if hr.kept:
                    nlls = hints_sft.run(model, tokenizer, hr.kept, es.hints.sft_steps, es.hints.batch_size,
                                         t.max_grad_norm)
                    entry["hints/nll"] = sum(nlls) / len(nlls)
            if hints_sft is not None:
                entry["hints/sft_steps"] = float(hints_sft.steps)
                entry["hints/kept_total"] = float(hint_counts["kept"])
            entry.update(smp.metrics())
            entry["temperature"] = temp
            if controller is not None:
                entry["next_temperature"] = controller.update(entry["entropy"])
            history.append(entry)
            if tracker is not None and step + 1 > logged and (step % max(1, t.logging_steps) == 0
                                                                or step == t.max_steps - 1):
                tracker.log_metrics({f"train/{name}": v for name, v in entry.items() if name != "step"}, step=step + 1)
            if log is not None:
                log(entry)
            if saver.due(step + 1, t.max_steps):
                saver.save(step + 1, state(step + 1))

    return EngineResult(model, critic, _summary(history, updates), history, sampler=smp)


def _first_last(history: list[dict], key: str) -> tuple[float, float] | None:
    vals = [h[key] for h in history if key in h]
    if not vals:
        return None
    n = max(1, len(vals) // 10)
    return sum(vals[:n]) / n, sum(vals[-n:]) / n


def _summary(history: list[dict], updates: int) -> dict[str, float]:
    metrics = {"train/steps": float(len(history)), "train/optimizer_steps": float(updates)}
    keys = ["reward", "kl", "entropy", "temperature", "value_loss", "clip_ratio"]
    keys += sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    for key in keys:
        fl = _first_last(history, key)
        if fl:
            name = "train/" + key.removesuffix("/mean")
            metrics[f"{name}_first"], metrics[f"{name}_last"] = fl
    return metrics
