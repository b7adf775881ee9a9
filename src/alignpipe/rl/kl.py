"""Per-token KL estimators between the policy and a frozen reference (Schulman, "Approximating KL divergence").

Each takes the token log-probs of the sampled tokens under the policy (`logp`) and the reference (`ref_logp`)
and returns a per-token estimate of KL(policy || reference); with `log_ratio = logp - ref_logp`:

- `k1`: `log_ratio` — unbiased, high variance, can be negative.
- `k2`: `log_ratio**2 / 2` — biased, low variance, >= 0.
- `k3`: `exp(-log_ratio) - 1 + log_ratio` — unbiased, low variance, >= 0 (GRPO's choice).
"""

from __future__ import annotations

import torch

from .registry import KL_ESTIMATORS


@KL_ESTIMATORS.register("k1")
def k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log pi(y)/pi_ref(y) per token."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """(log pi/pi_ref)^2 / 2 per token."""
    return 0.5 * (logp - ref_logp) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """pi_ref/pi - 1 - log(pi_ref/pi) per token."""
    log_ratio = (logp - ref_logp).clamp(-20.0, 20.0)
    return torch.exp(-log_ratio) - 1.0 + log_ratio
