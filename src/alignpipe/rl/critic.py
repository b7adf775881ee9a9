"""The critic for `gae`: a scalar value head on a transformer backbone.

`init: policy` copies the policy's backbone (the head starts at zero); `init: reward_model` takes a trained
reward model's backbone and its score head (the value starts at the reward model's estimate). The critic
has its own optimizer and learning rate; its loss is PPO's clipped value loss.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ValueModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1)


def _backbone(model: nn.Module) -> nn.Module:
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if base is None:
        raise ValueError(f"{type(model).__name__} has no backbone attribute to put a value head on")
    return base


def from_policy(policy: nn.Module) -> ValueModel:
    backbone = copy.deepcopy(_backbone(policy)).float()
    head = nn.Linear(policy.config.hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return ValueModel(backbone, head)


def from_reward_model(path: str, trust_remote_code: bool = False) -> ValueModel:
    from alignpipe import models

    rm, _ = models.load_reward_model(path, trust_remote_code, precision="fp32")
    score = getattr(rm, "score", None) or getattr(rm, "classifier", None)
    if not isinstance(score, nn.Linear):
        raise ValueError(f"{path}: reward model has no linear score head to start the critic from")
    return ValueModel(_backbone(rm), score)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None) -> tuple[torch.Tensor, float]:
    """0.5 * max((V - R)^2, (V_clipped - R)^2), token mean; V_clipped = V_old + clip(V - V_old, -c, c).

    Returns (loss, fraction of tokens where the clipped term was the larger)."""
    n = mask.sum().clamp(min=1)
    err = (values - returns) ** 2
    if clip is None:
        return 0.5 * (err * mask).sum() / n, 0.0
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    err_c = (clipped - returns) ** 2
    frac = float(((err_c > err).float() * mask).sum() / n)
    return 0.5 * (torch.maximum(err, err_c) * mask).sum() / n, frac
