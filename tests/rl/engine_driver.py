"""Runs the rl stage on engine: alignpipe in a fresh process, the way a (retried) pipeline pod does, for the
resume test; not a test itself.

    python tests/rl/engine_driver.py SPEC.json

SPEC: {"config": {...}, "kill_after_checkpoint": N | null}: with N, the process SIGKILLs itself as soon as
checkpoint N is published (before step N+1 starts). The StageResult's history is printed as JSON on the last line.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def digit_share_reward(prompts, completions, **kwargs):
    """Share of digits in a completion (a reward the untrained tiny model can climb)."""
    from alignpipe.rewards import completion_text

    return [sum(ch.isdigit() for ch in completion_text(c)) / 6 for c in completions]


def register_reward() -> None:
    from alignpipe import rewards

    try:
        rewards.register("digit_share")(digit_share_reward)
    except ValueError:  # already registered in this process
        pass


def main() -> int:
    import torch

    torch.set_num_threads(1)  # as the in-process reference run (tests/rl/conftest.py): same float results
    spec = json.loads(open(sys.argv[1]).read())
    register_reward()
    from alignpipe import config
    from alignpipe.rl import state
    from alignpipe.stages import rl as rl_stage

    kill = spec.get("kill_after_checkpoint")
    if kill is not None:
        original = state.EngineCheckpoints.save

        def save(self, done, st):
            original(self, done, st)
            if done == kill:
                print(f"driver: SIGKILL after checkpoint {done}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

        state.EngineCheckpoints.save = save
    result = rl_stage.run(config.validate("rl", spec["config"]))
    print(json.dumps(result.history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
