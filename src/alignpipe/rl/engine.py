"""The loop: sample prompts -> generate k completions each -> score -> advantages -> update.

One call of `train` runs `training.max_steps` rollout steps. Each step samples
`training.batch_size x gradient_accumulation_steps` completions (`grpo.num_generations` per prompt), scores
them with the configured rewards, computes advantages with the chosen estimator, and updates the policy
(and the critic, for `gae`) for `engine_settings.epochs` passes over `engine_settings.minibatches`
mini-batches (split along prompt groups, so group-wise losses see whole groups). Optional loops
(`engine_settings.relift`, `hints`, `replay`; `rl/loops.py`) add SFT steps on reference solutions, hinted SFT, and
rollout replay to the same loop.

Under torchrun (`distributed.gpus > 1`) the loop is data-parallel (`rl/parallel.py`): `training.batch_size` is per
rank, every rank draws the same global batch from its (identical) sampler and trains on its own slice, gradients
are averaged before each optimizer step, and per-prompt outcomes and metrics are gathered, so every rank's
sampler, loop buffers, temperature and history stay the same.
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
from . import loops, parallel, rollout
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


def _moments(prefix: str, x: torch.Tensor, mask: torch.Tensor) -> tuple[dict, dict]:
    """({prefix/sum, prefix/sq: (sum, count)}, {prefix/max, prefix/negmin}) of x over the masked tokens, to be added
    up over the ranks (`parallel.combine`) and turned into mean/std/min/max by `_stats`."""
    vals = x[mask > 0].double()
    if vals.numel() == 0:
        return {}, {}
    n = float(vals.numel())
    return ({f"{prefix}/sum": (float(vals.sum()), n), f"{prefix}/sq": (float((vals ** 2).sum()), n)},
            {f"{prefix}/max": float(vals.max()), f"{prefix}/negmin": -float(vals.min())})


def _var(sums: dict, prefix: str) -> float:
    s, n = sums[f"{prefix}/sum"]
    s2, _ = sums[f"{prefix}/sq"]
    return max(0.0, (s2 - s * s / n) / (n - 1)) if n > 1 else 0.0


def _stats(prefix: str, sums: dict, maxima: dict) -> dict[str, float]:
    if f"{prefix}/sum" not in sums:
        return {}
    s, n = sums[f"{prefix}/sum"]
    return {f"{prefix}/mean": s / n, f"{prefix}/std": math.sqrt(_var(sums, prefix)),
            f"{prefix}/min": -maxima[f"{prefix}/negmin"], f"{prefix}/max": maxima[f"{prefix}/max"]}


def minibatch_loss(li: LossInput, p: Plan, loss_fn, agg_fn, kl_fn, kl_beta: float, entropy_coef: float,
                   ent: torch.Tensor | None, comm: parallel.Comm) -> tuple[torch.Tensor, dict[str, float], float]:
    """One mini-batch's loss as this rank backpropagates it: the policy loss (+ beta x KL to the reference when
    kl.mode is loss, - entropy_coef x entropy), times this rank's weight: under token_mean aggregation its share of
    the mini-batch's tokens over all ranks (`Comm.token_weight`), else 1 (every rank holds as many completions).
    Averaging the ranks' gradients of it gives the gradient of the single-process loss over all ranks' mini-batches.
    Returns (weighted loss, metrics with the weighted `policy_loss` first, the weight)."""
    loss, lm = loss_fn(li)
    policy = loss.item()
    if li.ref_logp is not None and p.kl_mode == "loss":
        loss = loss + kl_beta * agg_fn(kl_fn(li.logp, li.ref_logp), li.mask, li.max_tokens)
    if entropy_coef:
        loss = loss - entropy_coef * agg_fn(ent, li.mask, li.max_tokens)
    w = comm.token_weight(float(li.mask.sum())) if p.aggregation == "token_mean" else 1.0
    return loss * w, {"policy_loss": policy * w, **lm}, w


def train(cfg, model, tokenizer, train_data, funcs, weights, tracker=None, log=None, sampler=None,
          ckpt=None) -> EngineResult:
    """Run the engine on `model` (trained in place unless LoRA wraps it) and return the result. Prompts are
    drawn by `sampler` (default: `cfg.sampler` built over `train_data`, see `alignpipe.sampling`). With `ckpt`
    (the stage's `alignpipe.checkpoints.Checkpoints`) the run resumes from the newest complete checkpoint and
    writes new ones (see `alignpipe.rl.state`). Under torchrun every rank calls it and joins the process group
    here (`alignpipe.rl.parallel`); every rank returns the same result."""
    from transformers import get_scheduler

    from alignpipe.base import is_main_process, local_device

    p = plan(cfg)
    es, t, gen = cfg.engine_settings, cfg.training, cfg.generation
    k = cfg.grpo.num_generations
    n_prompts = (t.batch_size * t.gradient_accumulation_steps) // k  # this rank's groups per step
    if n_prompts < 1:
        raise ValueError(f"training.batch_size ({t.batch_size}) is smaller than grpo.num_generations ({k})")
    rows = _rows(train_data)
    if not rows:
        raise ValueError("train_data has no rows")
    columns = [c for c in rows[0] if c != "prompt"]
    parallel.init()
    comm = parallel.Comm()
    torch.manual_seed(t.seed)
    device = torch.device(local_device(torch.cuda.is_available()))
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
        comm.broadcast_module(critic)
    if cfg.lora is not None:
        from peft import get_peft_model

        from alignpipe import models

        model = get_peft_model(model, models.lora_config(cfg.lora))
    comm.broadcast_module(model)  # every rank starts from rank 0's weights (and LoRA initialisation)
    if comm.rank:  # each rank samples its own completions
        torch.manual_seed(t.seed + comm.rank)
    model.eval()  # no dropout: the ratio pi/pi_old is exactly 1 on the first pass over a batch

    n_mb = min(es.minibatches, n_prompts)
    total_updates = t.max_steps * es.epochs * n_mb
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    sched = get_scheduler(t.lr_scheduler, opt, num_warmup_steps=t.warmup_steps, num_training_steps=total_updates)
    copt = None
    cparams = list(critic.parameters()) if critic is not None else []
    if critic is not None:
        copt = torch.optim.AdamW(cparams, lr=es.critic.learning_rate, weight_decay=t.weight_decay)

    def synced(sft: loops.SFTer) -> loops.SFTer:
        """Every rank runs the loops' SFT steps on the same examples; averaging their gradients before each step
        keeps the ranks' weights identical where kernels are not bit-reproducible."""
        if comm.on:
            sft.opt.register_step_pre_hook(lambda *_: comm.average_grads(sft.params))
        return sft

    smp = sampler if sampler is not None else sampling.from_rows(cfg.sampler, rows, seed=t.seed)
    controller = (TemperatureController.from_settings(es.temperature_control, gen.temperature)
                  if es.temperature_control is not None else None)
    threshold = cfg.sampler.success_threshold
    relift = relift_sft = None
    if es.relift is not None:  # ReLIFT (rl/loops.py): failed prompts -> buffer -> SFT steps on their references
        relift = loops.ReliftBuffer(es.relift, threshold)
        relift_sft = synced(loops.SFTer(params, es.relift.learning_rate, t.seed + 1, t.weight_decay))
    replay = loops.ReplayBuffer(es.replay) if es.replay is not None else None  # DOTS rollout replay (per rank)
    hints_sft = None
    hint_counts = {"rounds": 0, "prompts": 0, "generated": 0, "kept": 0}
    if es.hints is not None:  # ReGFT-style: hinted generation for never-solved prompts -> verified -> SFT
        hints_sft = synced(loops.SFTer(params, es.hints.learning_rate, t.seed + 2, t.weight_decay))

    history: list[dict[str, float]] = []
    updates = start = 0
    saver = EngineCheckpoints(ckpt, t)
    restored = saver.restore()
    found = comm.gather(restored["step"] if restored is not None else -1)
    if len(set(found)) > 1:
        raise RuntimeError(f"the ranks restored different checkpoints (step per rank, -1 = none: {found}); every "
                           "rank must see the checkpoint folder rank 0 restores into (ALIGNPIPE_CHECKPOINT_DIR)")
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
        if hints_sft is not None and looped.get("hints") is not None:
            hints_sft.load_state_dict(looped["hints"]["sft"])
            hint_counts.update(looped["hints"]["counts"])
        per_rank = restored.get("ranks") or [{"rng": restored["rng"], "replay": looped.get("replay")}]
        if len(per_rank) != comm.world:
            raise ValueError(f"checkpoint {restored['step']} was written by {len(per_rank)} process(es) and this run "
                             f"has {comm.world} (resume with the same distributed.gpus)")
        mine = per_rank[comm.rank]
        if replay is not None and mine.get("replay") is not None:
            replay.load_state_dict(mine["replay"])
        set_rng_state(mine["rng"])
        start, updates, history = restored["step"], restored["optimizer_steps"], restored["history"]
    logged = last_logged_step(tracker) if restored is not None else -1

    def state(done: int) -> dict[str, Any] | None:
        """The checkpoint (rank 0; None on the others): shared state once, each rank's RNG and replay buffer."""
        ranks = comm.gather({"rng": rng_state(), "replay": replay.state_dict() if replay is not None else None})
        if not is_main_process():
            return None
        return {"step": done, "optimizer_steps": updates, "history": history, "policy": policy_weights(model),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "critic": critic.state_dict() if critic is not None else None,
                "critic_optimizer": copt.state_dict() if copt is not None else None,
                "sampler": smp.state_dict(), "temperature": controller.state_dict() if controller else None,
                "loops": loop_state(), "rng": ranks[0]["rng"], "ranks": ranks}

    def loop_state() -> dict[str, Any]:
        out: dict[str, Any] = {}
        if relift is not None:
            out["relift"] = {"buffer": relift.state_dict(), "sft": relift_sft.state_dict()}
        if replay is not None:  # rank 0's (each rank's is under "ranks")
            out["replay"] = replay.state_dict()
        if hints_sft is not None:
            out["hints"] = {"sft": hints_sft.state_dict(), "counts": dict(hint_counts)}
        return out

    def hint_round(temperature: float) -> loops.HintRound:
        """Prompts seen but never solved (most recently seen first, up to hints.prompts): k completions each after
        the hint (the first `fraction` of the reference's characters, placed as the start of the answer); the full
        answer hint + completion is scored with the stage's rewards against the un-hinted prompt and kept when its
        summed reward reaches the success threshold, as the pair (un-hinted prompt, hint + completion). The prompts
        are shared out over the ranks; every rank gets all ranks' kept pairs."""
        hs = es.hints
        never = []
        for i, row in enumerate(rows):
            rec = smp.store.records.get(smp.ids[i])
            if rec is not None and rec.attempts > 0 and rec.successes == 0 and loops.reference_text(row) is not None:
                never.append((-(rec.last_step if rec.last_step is not None else -1), i))
        pick = [i for _, i in sorted(never)][:hs.prompts or n_prompts * comm.world]
        if not pick:
            return loops.HintRound(0, 0, [])
        mine = pick[comm.rank::comm.world]
        kept: list[tuple] = []
        if mine:
            prompts = [rows[i]["prompt"] for i in mine]
            hints = [loops.hint_of(loops.reference_text(rows[i]), hs.fraction) for i in mine]
            hro = rollout.sample(model, tokenizer, prompts, k, gen.max_new_tokens, temperature, gen.top_p,
                                 prefixes=hints)
            conts = tokenizer.batch_decode(hro.completion_ids, skip_special_tokens=True)
            full = [hints[j // k] + conts[j] for j in range(len(conts))]
            flat_prompts = [pr for pr in prompts for _ in range(k)]
            cols = {c: [rows[i].get(c) for i in mine for _ in range(k)] for c in columns}
            sc = reward_lib.score(funcs, weights, flat_prompts, _completion_objs(flat_prompts, full), **cols)
            kept = [(flat_prompts[j], full[j]) for j, v in enumerate(sc["total"])
                    if not math.isnan(v) and v >= threshold]
        parts = comm.gather((len(mine) * k, kept))
        return loops.HintRound(len(pick), sum(g for g, _ in parts), [x for _, kk in parts for x in kk])

    def draw(step: int, temperature: float, need: int):
        """(prompt indices, rollout, scores) of this rank's `need` groups. Every rank draws the same global batch
        from its sampler (the ranks' shortfalls, in rank order) and takes its own slice. With drops_equal_groups
        (DAPO dynamic sampling) groups whose rewards are all equal are dropped and more prompts drawn, at most
        smp.max_attempts times; a batch still short is filled with dropped groups (never a short batch)."""
        kept: list[tuple] = []  # (prompt index, rollout part, position in part, scored part)
        dropped: list[tuple] = []
        drawn = 0
        for attempt in range(smp.max_attempts if smp.drops_equal_groups else 1):
            shorts = comm.gather(need - len(kept))
            if sum(shorts) <= 0:
                break
            first = sum(shorts[:comm.rank])
            idx = smp.select(sum(shorts), step)[first:first + shorts[comm.rank]]
            if not idx:
                continue
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
        if smp.drops_equal_groups:
            fill, rest = dropped[:need - len(kept)], dropped[need - len(kept):]
            rest_groups = [(int(i), [0.0 if math.isnan(v) else v for v in sc["total"][j * k:(j + 1) * k]])
                           for i, _, j, sc in rest]
            parts = comm.gather((len(dropped), drawn, rest_groups))
            smp.record_drops(sum(x[0] for x in parts), sum(x[1] for x in parts))
            every = [g for x in parts for g in x[2]]
            smp.observe([i for i, _ in every], [g for _, g in every], step, [0.0] * len(every))
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
                                                       es.critic.lam if es.critic else 0.95, all_sum=comm.all_sum))
            if p.whiten:
                adv = masked_whiten(adv, mask, all_sum=comm.all_sum)
            adv = adv.detach()
            seq_abs_adv = (adv.abs() * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            # Every rank's outcomes, in rank order: the sampler and the loop buffers learn the same on every rank.
            outcomes = comm.gather(([int(i) for i in chosen], raw.view(n_fresh, k).tolist(),
                                    seq_abs_adv.view(n_fresh, k).mean(-1).tolist()))
            all_chosen = [i for o in outcomes for i in o[0]]
            all_raw = [g for o in outcomes for g in o[1]]
            smp.observe(all_chosen, all_raw, step, [a for o in outcomes for a in o[2]])

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
                    loss, lm, w = minibatch_loss(li, p, loss_fn, agg_fn, kl_fn, es.kl.beta, es.entropy_coef, ent, comm)
                    for name, v in lm.items():
                        add(name, v)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    comm.average_grads(params)
                    add("grad_norm", torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm).item())
                    opt.step()
                    sched.step()
                    updates += 1
                    add("loss", loss.item())
                    if critic is not None:  # a token mean: weighted by the rank's share of the tokens
                        cw = w if p.aggregation == "token_mean" else comm.token_weight(float(m.sum()))
                        v_new = rollout.token_values(critic, sub)
                        vl, vclip = critic_lib.value_loss(v_new, values[idx], returns[idx], m, es.critic.value_clip)
                        copt.zero_grad(set_to_none=True)
                        (vl * cw).backward()
                        comm.average_grads(cparams)
                        torch.nn.utils.clip_grad_norm_(cparams, t.max_grad_norm)
                        copt.step()
                        add("value_loss", vl.item() * cw)
                        add("value_clip_ratio", vclip)

            # The step's metrics over every rank: (sum, count) pairs and maxima, combined in one all-gather.
            n_seq, n_tok = float(raw.numel()), float(mask.sum())
            part: dict[str, tuple[float, float]] = {
                "reward/sum": (float(raw.double().sum()), n_seq), "reward/sq": (float((raw.double() ** 2).sum()), n_seq),
                "shaped_reward": (float(scores.sum()), n_seq), "entropy": (float((entropy * mask).sum()), n_tok),
                "completion_length": (float(lengths.sum()), n_seq)}
            maxima: dict[str, float] = {"step_seconds": time.perf_counter() - t0}
            for name, vals in scored.items():
                finite = [v for v in vals if not math.isnan(v)]
                if name != "total" and finite:
                    part[f"rewards/{name}/mean"] = (sum(finite), float(len(finite)))
            if kl_tok is not None:
                part["kl"] = (float(kl_tok.sum()), n_tok)
            moments = [_moments("advantages", adv, mask)]
            if values is not None:
                moments.append(_moments("values", values, mask))
                if returns is not None:
                    moments += [_moments("returns", returns, mask), _moments("residual", returns - values, mask)]
            for s_, m_ in moments:
                part.update(s_)
                maxima.update(m_)
            part.update({f"update/{name}": (sums[name] / counts[name], 1.0) for name in sums})
            if replay is not None:
                part.update({"replay/groups": (float(len(replayed)), 1.0), "replay/buffer": (float(len(replay.groups)), 1.0),
                             "replay/replayed_total": (float(replay.replayed), 1.0)})
            tot, mx = parallel.combine(comm, part, maxima)

            def mean(name: str) -> float:
                s_, c_ = tot[name]
                return s_ / c_ if c_ else 0.0

            entry: dict[str, float] = {"step": float(step + 1), "reward": mean("reward/sum"),
                                       "reward_std": math.sqrt(_var(tot, "reward")),
                                       "shaped_reward": mean("shaped_reward"), "entropy": mean("entropy"),
                                       "completion_length": mean("completion_length"),
                                       "learning_rate": float(sched.get_last_lr()[0]), "optimizer_steps": float(updates),
                                       "step_seconds": mx["step_seconds"]}
            entry.update({name: mean(name) for name in tot if name.startswith("rewards/")})
            if kl_tok is not None:
                entry["kl"] = mean("kl")
            entry.update(_stats("advantages", tot, mx))
            if values is not None:
                entry.update(_stats("values", tot, mx))
                if returns is not None:  # explained variance: 1 - Var(returns - values) / Var(returns), over tokens
                    entry.update(_stats("returns", tot, mx))
                    var = _var(tot, "returns") if "returns/sum" in tot else 0.0
                    if var > 0:
                        entry["value_explained_variance"] = 1 - _var(tot, "residual") / var
            entry.update({name.removeprefix("update/"): mean(name) for name in tot if name.startswith("update/")})
            if replay is not None:
                entry["sampler/replay_share"] = tot["replay/groups"][0] / (n_prompts * comm.world)
                entry["replay/groups"] = tot["replay/groups"][0]
                entry["replay/buffer"] = tot["replay/buffer"][0]
                entry["replay/replayed_total"] = tot["replay/replayed_total"][0]
            if relift is not None:
                relift.admit(all_chosen, all_raw, rows)
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
            if saver.enabled:  # the ranks agree: any rank's SIGTERM or due clock checkpoints them all
                preempted, due = (v > 0 for v in comm.sum([saver.preempted, saver.due(step + 1, t.max_steps)]))
                if preempted and not saver.preempted:
                    saver.note_peer_sigterm()
                if due or preempted:
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
