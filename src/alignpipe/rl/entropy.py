"""Entropy control (AceReason-Nemotron): adapt the sampling temperature so that the temperature-adjusted token
entropy stays near a target.

The engine measures, each rollout step, the mean entropy of the policy's next-token distribution *at the
sampling temperature* over the completion tokens it sampled (`train/entropy`). The controller then sets the
temperature of the next step multiplicatively:

    T <- clip(T * exp(rate * (target - H)), min_temperature, max_temperature)

Entropy rises with the temperature, so an entropy below the target raises T and one above it lowers T; the
update is proportional to the gap (no change at the target) and scale-free in T. The temperature is used
for sampling and for the log-probs of that step (old, new and reference alike), and logged as
`train/temperature`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TemperatureController:
    temperature: float
    target: float = 0.3
    rate: float = 0.5
    min_temperature: float = 0.3
    max_temperature: float = 2.0

    @classmethod
    def from_settings(cls, s, start: float) -> "TemperatureController":
        return cls(min(max(start, s.min_temperature), s.max_temperature), s.target, s.rate, s.min_temperature,
                   s.max_temperature)

    def update(self, entropy: float) -> float:
        """Fold one step's measured entropy in; returns the temperature for the next step."""
        t = self.temperature * math.exp(self.rate * (self.target - entropy))
        self.temperature = min(max(t, self.min_temperature), self.max_temperature)
        return self.temperature

    def state_dict(self) -> dict[str, float]:
        return {"temperature": self.temperature}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.temperature = float(state["temperature"])
