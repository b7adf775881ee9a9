"""Checkpoints and resume of a 2-process run (issue 10 §1): the real SFT stage under torchrun (gloo, CPU),
inside a loopback-only network namespace (tests/netns.py), against a local state store.

One "pod" after another, each with an empty model cache and checkpoint folder, the same state store:
1. killed with SIGKILL (every process: the CLI, torchrun, both ranks) once checkpoint 3 is complete;
2. resumes from checkpoint 3, and gets SIGTERM on its main process (what Kubernetes sends a pod) once
   checkpoint 6 is complete: the CLI passes it on to the ranks, both checkpoint when the step in progress
   ends (they agree on the step), and the step exits 143 with nothing published;
3. resumes from that checkpoint and finishes: exactly STEPS optimizer steps, and the weights of an
   uninterrupted 2-process run with the same seed, bit for bit (gloo on the CPU is deterministic and the
   Trainer restores optimizer, scheduler, data position and every rank's RNG state).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import netns
from alignpipe.data.demo import write_demo_data

pytestmark = [pytest.mark.slow]

STEPS = 12
SAVE_EVERY = 3


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> dict[str, str]:
    return write_demo_data(tmp_path_factory.mktemp("data"), max_operand=20)


@pytest.fixture(scope="module")
def cache_seed(tmp_path_factory) -> Path:
    """The tiny model built once; each pod copies nothing from it but the built model (not a checkpoint)."""
    return tmp_path_factory.mktemp("cache")


def _config(tmp: Path, data: dict[str, str], out: Path) -> Path:
    cfg = {"model": "tiny", "output_dir": str(out), "train_data": data["sft_train"], "tracking": False,
           "max_length": 32,
           "training": {"max_steps": STEPS, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 1,
                        "lr_scheduler": "constant", "seed": 0, "save_steps": SAVE_EVERY, "save_minutes": None,
                        "sigterm_grace_s": 60},
           "distributed": {"gpus": 2}}
    path = tmp / f"{out.name}.json"
    path.write_text(json.dumps(cfg))
    return path


#: Each rank's optimizer step takes at least 0.4 s (the tiny model's take milliseconds), so that the signals
#: land while the run is training rather than after it has finished.
SLOW_STEPS = """
import os
if os.environ.get("RANK") is not None:
    import time
    from transformers import Trainer
    _step = Trainer.training_step
    def training_step(self, *args, **kwargs):
        time.sleep(0.4)
        return _step(self, *args, **kwargs)
    Trainer.training_step = training_step
"""


def _start(pod: Path, config: Path, state: Path, cache: Path, *extra: str) -> subprocess.Popen:
    (pod / "t").mkdir(parents=True)
    (pod / "hook").mkdir()
    (pod / "hook" / "sitecustomize.py").write_text(SLOW_STEPS)
    env = {**os.environ, "ALIGNPIPE_CACHE_DIR": str(cache), "ALIGNPIPE_CHECKPOINT_DIR": str(pod / "ckpt"),
           "ALIGNPIPE_STATE_URI": str(state), "ALIGNPIPE_PROGRESS": "0", "ALIGNPIPE_LAUNCH_TIMEOUT_S": "200",
           "TMPDIR": str(pod / "t"), "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{pod}/never.db",
           "PYTHONPATH": os.pathsep.join(p for p in (str(pod / "hook"), os.environ.get("PYTHONPATH")) if p)}
    cmd = netns.netns_command([sys.executable, "-m", "alignpipe.cli", "stage", "sft", "--config", str(config), *extra])
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=pod,
                            start_new_session=True)


def _complete(state: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in state.glob("checkpoints/*/*/checkpoint-*/MANIFEST.json"))


def _wait_for_checkpoint(proc: subprocess.Popen, state: Path, step: int, timeout_s: float = 200) -> None:
    deadline = time.monotonic() + timeout_s
    while step not in _complete(state):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before checkpoint {step}:\n{err[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no complete checkpoint {step} after {timeout_s} s")
        time.sleep(0.05)


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (torchrun runs in a session of its own, so not one process group)."""
    ps = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, timeout=10).stdout
    children: dict[int, list[int]] = {}
    for line in ps.split("\n"):
        if line.strip():
            c, parent = (int(x) for x in line.split())
            children.setdefault(parent, []).append(c)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _alive(pids: list[int]) -> list[int]:
    """The processes among `pids` still running (a zombie waiting for its reaper is not)."""
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if state not in ("Z", "X"):
            left.append(pid)
    return left


def _finish(proc: subprocess.Popen, timeout_s: float = 240) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, err


def _weights(out: Path) -> dict:
    return load_file(str(out / "model.safetensors"))


def test_two_ranks_resume_after_sigkill_and_sigterm_with_the_weights_of_an_uninterrupted_run(
        tmp_path, demo_data, cache_seed):
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"multi-process tests run only inside a loopback-only network namespace: {reason}")

    # The uninterrupted run (its own state store, so nothing is reused or resumed).
    ref_out = tmp_path / "ref-model"
    proc = _start(tmp_path / "ref", _config(tmp_path, demo_data, ref_out), tmp_path / "ref-state", cache_seed)
    rc, err = _finish(proc)
    assert rc == 0, err[-4000:]
    reference = _weights(ref_out)

    state, out = tmp_path / "state", tmp_path / "model"
    config = _config(tmp_path, demo_data, out)  # same training settings, another output

    # Pod 1: SIGKILL to every process once checkpoint 3 is complete.
    pod1 = tmp_path / "pod1"
    proc = _start(pod1, config, state, cache_seed)
    _wait_for_checkpoint(proc, state, SAVE_EVERY)
    pids = _tree(proc.pid)
    assert len(pids) >= 4, f"expected the CLI, torchrun and two ranks, found {pids}"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, err = proc.communicate(timeout=30)
    time.sleep(1)
    assert not _alive(pids[1:]), "processes of the killed pod are still running"
    assert not (out / "MANIFEST.json").exists(), f"a killed run published its model:\n{err[-5000:]}"
    killed_at = max(_complete(state))
    assert killed_at < STEPS
    # Both ranks' RNG states are in the checkpoint.
    ckpt = next(state.glob(f"checkpoints/*/*/checkpoint-{killed_at}"))
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in ckpt.iterdir()}, sorted(os.listdir(ckpt))

    # Pod 2: resumes, then SIGTERM (to the main process only, as Kubernetes does) after the next checkpoint.
    pod2 = tmp_path / "pod2"
    proc = _start(pod2, config, state, cache_seed)
    _wait_for_checkpoint(proc, state, killed_at + SAVE_EVERY)
    pids = _tree(proc.pid)
    proc.send_signal(signal.SIGTERM)
    rc, err = _finish(proc)
    assert f"resuming from checkpoint {killed_at}" in err, err[-4000:]
    assert rc == 143, f"rc {rc}\n{err[-4000:]}"
    assert "SIGTERM: passing it on to the ranks" in err
    assert "preempted: ranks [0, 1] checkpointed" in err, err[-4000:]
    preempted_at = max(_complete(state))
    assert killed_at + SAVE_EVERY <= preempted_at <= STEPS, _complete(state)
    assert not (out / "MANIFEST.json").exists(), "a preempted run published its model"
    time.sleep(1)
    assert not _alive(pids[1:]), "processes of the preempted pod are still running"

    # Pod 3: resumes from the preemption checkpoint and finishes.
    proc = _start(tmp_path / "pod3", config, state, cache_seed, "--result", str(tmp_path / "result.json"))
    rc, err = _finish(proc)
    assert rc == 0, err[-4000:]
    assert json.loads((tmp_path / "result.json").read_text())["metrics"]["train/steps"] == STEPS
    assert f"resuming from checkpoint {preempted_at}" in err, err[-4000:]
    got = _weights(out)
    assert got.keys() == reference.keys()
    different = [k for k in reference if not torch.equal(got[k], reference[k])]
    assert not different, f"weights differ from the uninterrupted 2-process run: {different[:5]}"
    assert not _complete(state), "the checkpoints were not deleted after the model was published"
