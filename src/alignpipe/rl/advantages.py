"""Advantage estimators: from rewards (and values, for `gae`) to one advantage per completion token.

An estimator takes an `AdvantageInput` and returns `(advantages [N, T], returns [N, T] or None)`;
`returns` are the critic's regression targets (only estimators with `needs_critic=True` produce them).
Rows are completions, grouped by prompt: rows `g*k .. g*k+k-1` share a prompt (`group_size` = k).
`token_rewards` holds the sequence reward on each completion's last token plus any per-token reward
(the KL penalty when `kl.mode: reward`); `seq_rewards` is its row sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .registry import ADVANTAGES

EPS = 1e-6


@dataclass
class AdvantageInput:
    token_rewards: torch.Tensor  # [N, T] float, zero on padding
    mask: torch.Tensor  # [N, T] float, 1 on completion tokens
    group_size: int
    values: torch.Tensor | None = None  # [N, T] critic values of the state before each token
    gamma: float = 1.0
    lam: float = 0.95
    # sums a tensor over the ranks of a multi-process run, for estimators that normalise over the whole batch
    all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def seq_rewards(self) -> torch.Tensor:
        return (self.token_rewards * self.mask).sum(-1)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n % self.group_size:
            raise ValueError(f"{n} completions are not a whole number of groups of {self.group_size}")
        return x.view(n // self.group_size, self.group_size)

    def broadcast(self, seq_adv: torch.Tensor) -> torch.Tensor:
        return seq_adv[:, None] * self.mask


@ADVANTAGES.register("grpo")
def grpo(inp: AdvantageInput):
    """GRPO: (r - mean of the prompt's group) / (std of the group + eps), the same for every token."""
    r = inp.grouped(inp.seq_rewards)
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True, unbiased=True) + EPS)
    return inp.broadcast(adv.reshape(-1)), None


@ADVANTAGES.register("dr_grpo")
def dr_grpo(inp: AdvantageInput):
    """Dr. GRPO: r - group mean (no division by the std; pair with aggregation `token_sum_norm`, no length norm)."""
    r = inp.grouped(inp.seq_rewards)
    return inp.broadcast((r - r.mean(1, keepdim=True)).reshape(-1)), None


@ADVANTAGES.register("rloo")
def rloo(inp: AdvantageInput):
    """REINFORCE leave-one-out: r_i - mean of the other k-1 rewards of the group."""
    r = inp.grouped(inp.seq_rewards)
    k = r.shape[1]
    if k < 2:
        raise ValueError("rloo needs at least 2 completions per prompt")
    baseline = (r.sum(1, keepdim=True) - r) / (k - 1)
    return inp.broadcast((r - baseline).reshape(-1)), None


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{s >= t} gamma^(s-t) r_s within each completion."""
    out = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        running = token_rewards[:, t] * mask[:, t] + gamma * running * mask[:, t]
        out[:, t] = running
    return out * mask


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, all_sum=None) -> torch.Tensor:
    """(x - mean) / std over the masked tokens; with `all_sum` (see `AdvantageInput`) over every rank's tokens."""
    total = all_sum or (lambda t: t)
    n = total(mask.sum()).clamp(min=1)
    mean = total((x * mask).sum()) / n
    var = total((((x - mean) * mask) ** 2).sum()) / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8) if shift_mean else x * torch.rsqrt(var + 1e-8)
    return out * mask


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(inp: AdvantageInput):
    """REINFORCE++: per-token returns (KL penalty in the token rewards) normalised over the whole batch."""
    return masked_whiten(discounted_returns(inp.token_rewards, inp.mask, inp.gamma), inp.mask,
                         all_sum=inp.all_sum), None


@ADVANTAGES.register("gae", needs_critic=True)
def gae(inp: AdvantageInput):
    """PPO's generalised advantage estimation: delta_t = r_t + gamma V_{t+1} - V_t, A_t = sum (gamma lam)^l delta_{t+l}.

    V after a completion's last token is 0. Returns (the critic's targets) are A + V."""
    if inp.values is None:
        raise ValueError("advantage gae needs a critic's values (engine_settings.critic must not be null)")
    values = inp.values * inp.mask
    rewards = inp.token_rewards * inp.mask
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    T = values.shape[1]
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + inp.gamma * next_v - values[:, t]
        last = (delta + inp.gamma * inp.lam * last) * inp.mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * inp.mask
