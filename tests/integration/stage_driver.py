"""Runs one stage the way a pipeline pod does, with a fault injected at a chosen point (for the kill and
SIGTERM tests; not a test itself).

    python tests/integration/stage_driver.py SPEC.json

SPEC: {"stage": "sft", "config": {...}, "fault": null | {"kill": "step_end", "step": N}
       | {"kill": "upload", "step": N, "after_files": K}      SIGKILL once K files of checkpoint-N are uploaded
       | {"sigterm": "step_begin", "step": N}}                 SIGTERM to itself when step N+1 begins
The stage's StageResult is printed as JSON on the last line; the exit status is the stage's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading


def inject(fault: dict | None) -> None:
    if not fault:
        return
    from alignpipe import checkpoints
    from alignpipe.storage import transfer

    if fault.get("kill") == "step_end":
        original = checkpoints.CheckpointCallback.on_step_end

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == fault["step"]:
                print(f"driver: SIGKILL at the end of step {state.global_step}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, args, state, control, **kw)

        checkpoints.CheckpointCallback.on_step_end = on_step_end
    elif fault.get("kill") == "upload":
        original_upload = transfer.Transfer.upload
        done = []
        lock = threading.Lock()

        def upload(self, path, bucket, key, *a, **kw):
            r = original_upload(self, path, bucket, key, *a, **kw)
            if f"/checkpoint-{fault['step']}/" in key:
                with lock:
                    done.append(key)
                    if len(done) >= fault.get("after_files", 1):
                        print(f"driver: SIGKILL after uploading {len(done)} file(s) of checkpoint-{fault['step']}",
                              flush=True)
                        os.kill(os.getpid(), signal.SIGKILL)
            return r

        transfer.Transfer.upload = upload
    elif fault.get("sigterm") == "step_begin":
        from transformers import TrainerCallback

        class SigtermAt(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == fault["step"]:
                    print(f"driver: SIGTERM while step {state.global_step + 1} runs", flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)

        original_attach = checkpoints.Checkpoints.attach

        def attach(self, trainer, tracker=None):
            trainer.add_callback(SigtermAt())
            return original_attach(self, trainer, tracker)

        checkpoints.Checkpoints.attach = attach


def main() -> int:
    spec = json.loads(open(sys.argv[1]).read())
    from alignpipe import config, launch
    from alignpipe.base import UserError, report_user_error

    inject(spec.get("fault"))
    try:
        cfg = config.validate(spec["stage"], spec["config"])
        result = launch.run_stage(spec["stage"], cfg)
    except UserError as e:
        return report_user_error(e)
    print(json.dumps({"metrics": result.metrics, "lineage": result.lineage}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
