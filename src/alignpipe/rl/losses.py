"""Policy losses and how per-token losses are aggregated into one number.

A loss takes a `LossInput` and returns `(loss, metrics)`; `metrics` are floats logged per step (e.g.
`clip_ratio`). Token tensors are `[N, T]` over completion tokens; rows are grouped by prompt in groups of
`group_size`. `logp` carries the gradient; `old_logp` are the sampling policy's log-probs (fixed during
the epochs over one rollout batch); `ref_logp` the frozen reference's (None when no reference is loaded).

Aggregations (`engine_settings.aggregation`):
- `token_mean`: sum over all tokens / number of tokens (DAPO's token-level mean).
- `seq_mean`: mean over each completion's tokens, then mean over completions (GRPO's original form).
- `token_sum_norm`: sum over all tokens / (completions x max_new_tokens) — a constant, so no length bias (Dr. GRPO).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .registry import AGGREGATIONS, LOSSES


@AGGREGATIONS.register("token_mean")
def token_mean(x: torch.Tensor, mask: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """Mean over every completion token of the batch."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


@AGGREGATIONS.register("seq_mean")
def seq_mean(x: torch.Tensor, mask: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """Mean over each completion's tokens, then over completions (rows without tokens are skipped)."""
    n = mask.sum(-1)
    rows = n > 0
    if not rows.any():
        return (x * mask).sum()
    return ((x * mask).sum(-1)[rows] / n[rows]).mean()


@AGGREGATIONS.register("token_sum_norm")
def token_sum_norm(x: torch.Tensor, mask: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """Sum over tokens / (rows x max_tokens): a constant normaliser."""
    return (x * mask).sum() / (x.shape[0] * max_tokens)


@dataclass
class LossInput:
    logp: torch.Tensor  # [N, T], with grad
    old_logp: torch.Tensor  # [N, T]
    advantages: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T] float
    scores: torch.Tensor  # [N] sequence rewards (after shaping)
    group_size: int
    ref_logp: torch.Tensor | None = None
    aggregation: str = "token_mean"
    max_tokens: int = 1
    options: dict[str, Any] = field(default_factory=dict)  # clip_eps, clip_eps_high, positive_threshold, copg_beta

    def agg(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return AGGREGATIONS.get(self.aggregation)(x, self.mask if mask is None else mask, self.max_tokens)

    def opt(self, name: str, default: Any) -> Any:
        v = self.options.get(name)
        return default if v is None else v


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1))


@LOSSES.register("ppo_clip")
def ppo_clip(inp: LossInput):
    """PPO's clipped surrogate: max(-A r, -A clip(r, 1-eps, 1+eps_high)), r = pi/pi_old per token.

    `clip_eps_high` > `clip_eps` is DAPO's clip-higher (more room for raising unlikely tokens)."""
    eps = float(inp.opt("clip_eps", 0.2))
    eps_high = float(inp.opt("clip_eps_high", eps))
    ratio = torch.exp((inp.logp - inp.old_logp).clamp(-20.0, 20.0))
    unclipped = -inp.advantages * ratio
    clipped = -inp.advantages * ratio.clamp(1.0 - eps, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    clip_frac = _masked_mean((clipped > unclipped).float(), inp.mask)
    return inp.agg(per_token), {"clip_ratio": clip_frac, "ratio_mean": _masked_mean(ratio.detach(), inp.mask)}


def _positive(inp: LossInput) -> torch.Tensor:
    return (inp.scores >= float(inp.opt("positive_threshold", 1.0))).float()


@LOSSES.register("sft_on_positive")
def sft_on_positive(inp: LossInput):
    """Rejection-sampling fine-tuning as a loss: negative log-likelihood of completions whose reward reaches
    `positive_threshold`, aggregated over their tokens only (0 when none does)."""
    pos = _positive(inp)
    mask = inp.mask * pos[:, None]
    if mask.sum() == 0:
        return (inp.logp * 0.0).sum(), {"positive_fraction": 0.0}
    return inp.agg(-inp.logp, mask), {"positive_fraction": float(pos.mean())}


@LOSSES.register("nft")
def nft(inp: LossInput):
    """Negative-aware fine-tuning (NFT, Chen et al. 2025).

    Correct completions (reward >= `positive_threshold`): -log R_t, R_t = pi/pi_old per token (no gradient
    once R_t > 1 + clip_eps_high). Wrong ones are trained through the implicit negative policy:
    -log max((1 - rhat R_t) / (1 - rhat), nft_eps), rhat = the prompt's share of correct completions.
    With rhat = 0 a wrong completion has no gradient (nothing to contrast with)."""
    pos = _positive(inp)
    k = inp.group_size
    rhat = pos.view(-1, k).mean(1, keepdim=True).expand(-1, k).reshape(-1)[:, None]
    log_ratio = (inp.logp - inp.old_logp).clamp(-20.0, 20.0)
    eps_high = float(inp.opt("clip_eps_high", inp.opt("clip_eps", 0.2)))
    pos_tok = -torch.minimum(log_ratio, torch.full_like(log_ratio, torch.log1p(torch.tensor(eps_high)).item()))
    ratio = torch.exp(log_ratio)
    floor = float(inp.opt("nft_eps", 1e-2))
    neg_tok = -torch.log(((1.0 - rhat * ratio) / (1.0 - rhat).clamp(min=1e-6)).clamp(min=floor))
    per_token = torch.where(pos[:, None] > 0, pos_tok, neg_tok)
    return inp.agg(per_token), {"positive_fraction": float(pos.mean())}


def _pairs(group_size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    ii, jj = torch.triu_indices(group_size, group_size, offset=1)
    starts = torch.arange(0, n, group_size)
    return (starts[:, None] + ii[None]).reshape(-1), (starts[:, None] + jj[None]).reshape(-1)


@LOSSES.register("copg")
def copg(inp: LossInput):
    """Contrastive policy gradient (CoPG, Flet-Berliac et al. 2024) over every pair (y, y') of a prompt's group.

    With L(y) = log pi(y)/pi_ref(y) summed over tokens (reference: the frozen reference model, else the
    sampling policy), loss = mean over pairs of (R(y) - R(y') - beta (L(y) - L(y')))^2 / (2 beta): its gradient
    is -(R(y) - R(y') - beta (L(y) - L(y'))) (grad log pi(y) - grad log pi(y')), a policy gradient with the
    other completion as baseline, regularised toward the reference. `copg_beta` is beta."""
    beta = float(inp.opt("copg_beta", 0.1))
    ref = inp.ref_logp if inp.ref_logp is not None else inp.old_logp
    seq_lr = ((inp.logp - ref) * inp.mask).sum(-1)
    i, j = _pairs(inp.group_size, inp.logp.shape[0])
    delta = (inp.scores[i] - inp.scores[j]) - beta * (seq_lr[i] - seq_lr[j])
    return (delta ** 2).mean() / (2.0 * beta), {"copg_residual": float(delta.detach().abs().mean())}


@LOSSES.register("alol")
def alol(inp: LossInput):
    """Advantage-weighted offline policy gradient (A-LoL, Baheti et al. 2024), sequence-level variant.

    Each completion is one action with advantage A = the mean of its token advantages. Rows with A <= 0 are
    dropped; a kept row is trained with -A w log pi(y|x), w = pi(y|x) / pi_b(y|x) the sequence importance weight
    against the behaviour policy (the frozen reference when one is loaded, else the sampling policy), detached and
    clipped to [1 - clip_eps, 1 + clip_eps_high], so the gradient is A-LoL's A w grad log pi. The per-token terms
    -A w log pi_t are aggregated over the kept rows' tokens (0 when no row is kept)."""
    eps = float(inp.opt("clip_eps", 0.2))
    eps_high = float(inp.opt("clip_eps_high", eps))
    n = inp.mask.sum(-1)
    seq_adv = (inp.advantages * inp.mask).sum(-1) / n.clamp(min=1)
    keep = ((seq_adv > 0) & (n > 0)).float()
    behaviour = inp.ref_logp if inp.ref_logp is not None else inp.old_logp
    log_w = ((inp.logp.detach() - behaviour) * inp.mask).sum(-1).clamp(-20.0, 20.0)
    w = torch.exp(log_w)
    w_clipped = w.clamp(1.0 - eps, 1.0 + eps_high)
    kept = float(keep.sum())
    metrics = {"kept_fraction": float(keep.mean()),
               "importance_weight_mean": float((w * keep).sum() / max(kept, 1.0)),
               "importance_weight_clip_ratio": float(((w != w_clipped).float() * keep).sum() / max(kept, 1.0))}
    mask = inp.mask * keep[:, None]
    if mask.sum() == 0:
        return (inp.logp * 0.0).sum(), metrics
    per_token = -(seq_adv * w_clipped)[:, None] * inp.logp
    return inp.agg(per_token, mask), metrics
