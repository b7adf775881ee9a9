"""Checkpoint/resume of the engine, through the project's checkpoint store (`alignpipe.checkpoints`).

A checkpoint folder `checkpoint-<step>/` (step = rollout steps done) holds `engine_state.pt`:
- the policy's weights (with LoRA: the trainable adapter weights only), its optimizer and scheduler;
- the critic's weights and optimizer (for `gae`);
- the RNG states (python `random`, numpy, torch CPU, and CUDA when present), so the resumed run samples the
  same completions and mini-batch orders as an uninterrupted one — one set per rank under torchrun (`ranks`, with
  that rank's replay buffer), gathered by rank 0, which alone writes and publishes the checkpoint;
- the step and optimizer-step counters, the metric history (so the result holds each step once), the prompt
  sampler's state (pass-rate store, its RNG and data position) and the temperature controller's state.

It is published with `Checkpoints.publish` (files first, `MANIFEST.json` last; the newest
`training.save_total_limit` kept) every `training.save_steps` rollout steps and when `training.save_minutes`
have passed, not after the last step (the stage publishes the model). On SIGTERM the step in progress
finishes, a checkpoint is published and `Preempted` (exit 143) is raised; after `training.sigterm_grace_s`
without one the process exits at once. On start the newest complete checkpoint is restored (`Checkpoints.restore`:
downloaded, checked against its manifest) and the loop continues after its step. The reference model is
a copy of the *input* model, which the stage loads again, so it is not saved.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "engine_state.pt"


def rng_state() -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def policy_weights(model) -> dict[str, torch.Tensor]:
    """The weights that train: every tensor of a full model, the trainable (adapter) ones under LoRA."""
    if hasattr(model, "peft_config"):
        return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().cpu().clone() for n, t in model.state_dict().items()}


def load_policy_weights(model, weights: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise ValueError(f"checkpoint does not fit the model: unexpected weights {unexpected[:3]}")
    if not hasattr(model, "peft_config") and missing:
        own = set(model.state_dict())
        absent = [m for m in missing if m in own and not m.endswith("inv_freq")]
        if absent:
            raise ValueError(f"checkpoint does not fit the model: missing weights {absent[:3]}")


class EngineCheckpoints:
    """When to checkpoint, and saving/restoring the engine's state through a `Checkpoints` store (or none)."""

    def __init__(self, store, training):
        self.store, self.training = store, training
        self.every_s = training.save_minutes * 60 if training.save_minutes else None
        self.preempted = False
        self._last = time.monotonic()
        self._timer: threading.Timer | None = None
        self._previous = None

    @property
    def enabled(self) -> bool:
        return self.store is not None

    # ---- SIGTERM ---------------------------------------------------------------------------------------
    def __enter__(self) -> "EngineCheckpoints":
        self._last = time.monotonic()
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        if self._timer is not None:
            self._timer.cancel()

    def _on_sigterm(self, signum, frame) -> None:
        from alignpipe.checkpoints import PREEMPTED_EXIT
        from alignpipe.reuse import say

        if self.preempted:
            return
        self.preempted = True
        grace = self.training.sigterm_grace_s
        say(f"{self.store.stage}: SIGTERM: checkpointing when this step ends (grace {grace:g} s), then exiting "
            f"with {PREEMPTED_EXIT} so the step is retried")
        self._timer = threading.Timer(grace, lambda: os._exit(PREEMPTED_EXIT))
        self._timer.daemon = True
        self._timer.start()

    # ---- saving ----------------------------------------------------------------------------------------
    def due(self, done: int, max_steps: int) -> bool:
        """Whether to checkpoint after `done` rollout steps (never after the last: the stage publishes)."""
        if not self.enabled:
            return False
        if self.preempted:
            return True
        if done >= max_steps:
            return False
        t = self.training
        if t.save_steps and done % t.save_steps == 0:
            return True
        return self.every_s is not None and time.monotonic() - self._last >= self.every_s

    def note_peer_sigterm(self) -> None:
        """Another rank got SIGTERM: checkpoint and exit with it (the ranks agree on the step)."""
        from alignpipe.reuse import say

        self.preempted = True
        say(f"{self.store.stage}: another rank got SIGTERM: checkpointing when this step ends")

    def save(self, done: int, state: dict[str, Any] | None) -> None:
        """Write `state` as checkpoint-<done> and publish it; after a SIGTERM, raise `Preempted`. Under torchrun
        every rank calls it (at the same step); rank 0 writes and publishes (its `state` holds every rank's
        part, the others pass None) while the others wait."""
        from alignpipe import tracking
        from alignpipe.base import barrier, is_main_process
        from alignpipe.checkpoints import PREFIX, Preempted
        from alignpipe.reuse import say

        local = Path(self.store.local_dir) / f"{PREFIX}{done}"
        if is_main_process():
            local.mkdir(parents=True, exist_ok=True)
            torch.save(state, local / STATE_FILE)
            tracking.flush()  # the metrics of the steps this checkpoint covers are stored before it is
            self.store.publish(local, done)
            for old in Path(self.store.local_dir).glob(f"{PREFIX}*"):
                if old != local:
                    import shutil

                    shutil.rmtree(old, ignore_errors=True)
        barrier()
        uri = self.store.step_uri(done)
        self._last = time.monotonic()
        if self.preempted:
            if self._timer is not None:
                self._timer.cancel()
            say(f"{self.store.stage}: preempted: checkpoint {done} is complete; exiting with 143")
            raise Preempted(done, uri)

    def restore(self) -> dict[str, Any] | None:
        """The newest complete checkpoint's state, or None to start from step 0."""
        if not self.enabled:
            return None
        path = self.store.restore()
        if path is None:
            return None
        return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)


def last_logged_step(tracker) -> int:
    """The highest step of any metric the (re-opened) MLflow run already holds; -1 when none or no tracking."""
    if tracker is None or not getattr(tracker, "enabled", False) or not getattr(tracker, "run_id", None):
        return -1
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    keys = list(client.get_run(tracker.run_id).data.metrics)
    return max((m.step for k in keys for m in client.get_metric_history(tracker.run_id, k)), default=-1)
