"""alignpipe's own on-policy RL engine (`engine: alignpipe` in the rl stage config).

One loop — sample prompts, generate k completions each, score them with the reward registry, compute
advantages, update the policy for several epochs x mini-batches — whose parts are named plug-ins:

- advantage estimators (`ADVANTAGES`): grpo, dr_grpo, rloo, reinforce_pp, gae (with a critic)
- policy losses (`LOSSES`): ppo_clip (with clip-higher), nft, copg, sft_on_positive, alol (A-LoL)
- loss aggregations (`AGGREGATIONS`): token_mean, seq_mean, token_sum_norm
- KL estimators (`KL_ESTIMATORS`): k1, k2, k3 — to a frozen reference, as a loss term or in the reward

Entropy control (`entropy.TemperatureController`: the sampling temperature follows a target entropy),
checkpoint/resume through the stage's checkpoint store (`state`), and the optional SFT<->RL loops and rollout
replay (`loops`: relift, hints, replay) are part of the loop.

Adding one is a function and a decorator (see `alignpipe.rl.registry`); `describe()` lists them all.
`algorithm: ppo` is gae + ppo_clip + a critic; `algorithm: grpo|rloo` on this engine is grpo|rloo + ppo_clip.
"""

from __future__ import annotations

from . import advantages, kl, losses  # noqa: F401  (register the built-in plug-ins)
from .advantages import AdvantageInput
from .engine import ALGORITHM_DEFAULTS, EngineResult, Plan, plan, train
from .losses import LossInput
from .registry import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, LOSSES, Registry


def describe() -> dict[str, dict[str, str]]:
    """{kind: {name: first docstring line}} for every registered plug-in."""
    out = {}
    for reg in (ADVANTAGES, LOSSES, AGGREGATIONS, KL_ESTIMATORS):
        out[reg.kind] = {n: ((reg.get(n).__doc__ or "").strip().splitlines() or [""])[0] for n in reg.names()}
    return out


__all__ = ["ADVANTAGES", "AGGREGATIONS", "ALGORITHM_DEFAULTS", "AdvantageInput", "EngineResult", "KL_ESTIMATORS",
           "LOSSES", "LossInput", "Plan", "Registry", "describe", "plan", "train"]
