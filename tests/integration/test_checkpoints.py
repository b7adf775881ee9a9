"""Checkpoints in object storage (issue 10 §1) against the real moto S3 and MLflow servers.

A training stage runs as a subprocess, the way a pipeline pod does (tests/integration/stage_driver.py), and
is killed at chosen points; each restart gets an empty local cache and checkpoint folder (a new pod). The
final weights are compared with an uninterrupted run of the same config in this process: on the CPU the
Trainer's resume (optimizer, scheduler, RNG states, data position) makes them bit-identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "integration" / "stage_driver.py"
MAX_STEPS = 8


def sft_config(data: str, output_dir: str, tracking: bool) -> dict[str, Any]:
    return {"model": "tiny", "train_data": data, "output_dir": output_dir, "max_length": 32, "tracking": tracking,
            "training": {"max_steps": MAX_STEPS, "save_steps": 2, "save_minutes": None, "batch_size": 4,
                         "learning_rate": 1e-3, "warmup_steps": 0, "logging_steps": 1, "seed": 0}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    from alignpipe.data.demo import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("ckpt-data"), seed=0, max_operand=20, preference_pairs=10,
                           eval_pairs=10)["sft_train"]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict:
    """The uninterrupted run: its final weights."""
    from alignpipe import config
    from alignpipe.stages import sft

    out = tmp_path_factory.mktemp("ckpt-ref") / "model"
    sft.run(config.validate("sft", sft_config(data, str(out), tracking=False)))
    return load_weights(str(out))


def load_weights(uri: str) -> dict:
    from safetensors.torch import load_file

    from alignpipe import storage

    return load_file(str(storage.fetch(uri) / "model.safetensors"))


def assert_same_weights(got: dict, want: dict) -> None:
    import torch

    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"


class Pods:
    """Runs the stage as successive pods: fresh cache and checkpoint folder each time, the same store."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.tmp, self.env, self.n = tmp_path, env, 0

    def run(self, cfg: dict, fault: dict | None = None) -> subprocess.CompletedProcess:
        self.n += 1
        pod = self.tmp / f"pod{self.n}"
        pod.mkdir()
        spec = pod / "spec.json"
        spec.write_text(json.dumps({"stage": "sft", "config": cfg, "fault": fault}))
        env = {**os.environ, **self.env, "ALIGNPIPE_CACHE_DIR": str(pod / "cache"),
               "ALIGNPIPE_CHECKPOINT_DIR": str(pod / "checkpoints"), "ALIGNPIPE_WORKDIR": str(pod)}
        return subprocess.run([sys.executable, str(DRIVER), str(spec)], env=env, capture_output=True, text=True,
                              timeout=240, cwd=ROOT)


def checkpoints_in(s3, bucket: str, prefix: str) -> tuple[list[int], list[int]]:
    """(complete, partial) checkpoint steps under an s3 prefix, from a raw listing."""
    keys = [o["Key"] for p in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in p.get("Contents", [])]
    dirs: dict[int, set[str]] = {}
    for k in keys:
        parts = k[len(prefix):].split("/")
        name = next((p for p in parts if p.startswith("checkpoint-")), None)
        if name:
            dirs.setdefault(int(name.split("-")[1]), set()).add(parts[-1])
    complete = sorted(s for s, files in dirs.items() if "MANIFEST.json" in files)
    partial = sorted(s for s, files in dirs.items() if "MANIFEST.json" not in files)
    return complete, partial


def test_killed_step_resumes_from_the_last_complete_checkpoint(mlflow_env, data, reference, tmp_path):
    """SIGKILL at three points (one mid-upload of a checkpoint), each restart in a fresh 'pod': the run resumes
    from the newest complete checkpoint, ends at exactly max_steps with the uninterrupted run's weights, and
    MLflow holds one child run whose step metrics are not duplicated."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from alignpipe import storage, tracking

    s3, prefix = mlflow_env["s3"], mlflow_env["prefix"]
    state = f"{prefix}/state"
    state_key = state.removeprefix("s3://alignpipe/") + "/checkpoints/"
    with tracking.pipeline_run("kill-test") as parent:
        pass
    pods = Pods(tmp_path, {"ALIGNPIPE_STATE_URI": state, "ALIGNPIPE_PARENT_RUN_ID": parent.run_id})
    out = f"{prefix}/sft-model"
    cfg = sft_config(data, out, tracking=True)

    r = pods.run(cfg, {"kill": "step_end", "step": 3})
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert checkpoints_in(s3, "alignpipe", state_key) == ([2], [])

    r = pods.run(cfg, {"kill": "upload", "step": 4, "after_files": 1})  # mid-upload of checkpoint-4
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert "resuming from checkpoint 2" in r.stderr
    assert checkpoints_in(s3, "alignpipe", state_key) == ([2], [4])

    r = pods.run(cfg, {"kill": "step_end", "step": 7})
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert "ignoring partial checkpoint" in r.stderr and "checkpoint-4" in r.stderr
    assert "resuming from checkpoint 2" in r.stderr
    assert checkpoints_in(s3, "alignpipe", state_key) == ([4, 6], [])  # keep the last 2
    with pytest.raises(storage.StorageError):
        storage.read_manifest(out)  # no model published yet

    r = pods.run(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from checkpoint 6" in r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["metrics"]["train/steps"] == MAX_STEPS
    assert_same_weights(load_weights(out), reference)
    assert checkpoints_in(s3, "alignpipe", state_key) == ([], [])  # cleared once the model is published

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    exp = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
    assert len(children) == 1, [c.info.run_id for c in children]
    child = children[0]
    assert child.info.status == "FINISHED" and child.data.tags.get("alignpipe.resumed") == "true"
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss")]
    assert sorted(steps) == list(range(1, MAX_STEPS + 1)), steps


def test_sigterm_checkpoints_at_the_end_of_the_step_and_exits_non_zero(s3_env, data, reference, tmp_path):
    """SIGTERM mid-step: the step finishes, its checkpoint is published within the grace period, the process
    exits 143 with no model published; the retry resumes from that step and ends with the same weights."""
    from alignpipe import storage

    prefix = f"s3://alignpipe/it/sigterm-{tmp_path.name}"
    state = f"{prefix}/state"
    state_key = state.removeprefix("s3://alignpipe/") + "/checkpoints/"
    pods = Pods(tmp_path, {"ALIGNPIPE_STATE_URI": state})
    out = f"{prefix}/sft-model"
    cfg = sft_config(data, out, tracking=False)
    cfg["training"]["sigterm_grace_s"] = 15

    r = pods.run(cfg, {"sigterm": "step_begin", "step": 4})  # SIGTERM while step 5 runs
    assert r.returncode == 143, r.stderr[-3000:]
    assert "SIGTERM: checkpointing when this step ends" in r.stderr
    assert "preempted: checkpoint 5 is complete" in r.stderr
    assert checkpoints_in(s3_env, "alignpipe", state_key) == ([4, 5], [])
    with pytest.raises(storage.StorageError):
        storage.read_manifest(out)

    r = pods.run(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from checkpoint 5" in r.stderr
    assert_same_weights(load_weights(out), reference)
