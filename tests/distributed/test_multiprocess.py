"""The real SFT stage with `distributed.gpus=2` on the CPU: `alignpipe stage sft` re-launches itself under
torchrun (gloo), two ranks train the embedded tiny model, rank 0 publishes and reports.

Every launch runs inside a loopback-only network namespace (tests/netns.py): torch's c10d store binds
the wildcard address, so outside the namespace the test would listen on every interface.
Faults are injected into rank 1 only through a `sitecustomize` module on PYTHONPATH (torchrun sets
RANK in each worker's environment; the parent CLI and the torchrun agent have none).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import netns
from alignpipe.data.demo import write_demo_data
from alignpipe.base import RESULT_MARKER

pytestmark = [pytest.mark.slow]

STEPS = 10


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> dict[str, str]:
    return write_demo_data(tmp_path_factory.mktemp("data"), max_operand=20)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One model cache for the module: the tiny model is built once (by the first rank that needs it)."""
    return tmp_path_factory.mktemp("cache")


def _require_netns() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"multi-process tests run only inside a loopback-only network namespace: {reason}")


def _write_config(tmp: Path, data: dict[str, str], steps: int = STEPS, deepspeed: str = "none") -> Path:
    cfg = {
        "model": "tiny",
        "output_dir": str(tmp / "published" / "sft"),
        "train_data": data["sft_train"],
        "tracking": False,
        "max_length": 32,
        "training": {"max_steps": steps, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 1,
                     "lr_scheduler": "constant"},
        "distributed": {"gpus": 2, "deepspeed": deepspeed},
    }
    path = tmp / "sft.yaml"
    path.write_text(json.dumps(cfg))
    return path


def _run_stage(tmp: Path, config: Path, cache: Path, *, fault: str | None = None, launch_timeout_s: float = 150,
               timeout_s: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALIGNPIPE_CACHE_DIR": str(cache), "ALIGNPIPE_CHECKPOINT_DIR": str(tmp / "ckpt"),
           "ALIGNPIPE_PROGRESS": "0", "ALIGNPIPE_LAUNCH_TIMEOUT_S": str(launch_timeout_s), "TMPDIR": str(tmp / "t"),
           "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/never-used.db"}
    (tmp / "t").mkdir(exist_ok=True)
    if fault:
        hook = tmp / "hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(fault)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    cmd = netns.netns_command([sys.executable, "-m", "alignpipe.cli", "stage", "sft", "--config", str(config),
                               "--result", str(tmp / "result.json")])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=tmp)


def _no_leftover_processes(tmp: Path) -> None:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, timeout=10).stdout
    left = [ln for ln in ps.splitlines() if str(tmp) in ln and "ps -eo" not in ln]
    assert not left, f"processes left behind: {left}"


def test_two_ranks_train_and_rank0_publishes_once(tmp_path, demo_data, cache_dir):
    _require_netns()
    config = _write_config(tmp_path, demo_data)
    proc = _run_stage(tmp_path, config, cache_dir)
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"stage failed (rc {proc.returncode}):\n{logs[-6000:]}"

    # Both ranks ran, in one world of two, under torchrun.
    for r in (0, 1):
        assert f"sft: rank {r} of 2 started" in proc.stderr, logs[-4000:]
        assert f"sft: rank {r} of 2 done" in proc.stderr, logs[-4000:]
    assert "launching 2 processes with torchrun (backend gloo" in proc.stderr
    # Only rank 0 reported a result.
    assert sum(RESULT_MARKER in ln for ln in proc.stdout.splitlines()) == 1

    # The result JSON came back through the parent.
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["stage"] == "sft"
    assert result["lineage"]["world_size"] == "2"
    assert result["metrics"]["train/steps"] == STEPS
    assert result["metrics"]["train/loss_last"] < result["metrics"]["train/loss_first"], result["metrics"]

    # Exactly one published output, complete, with its manifest; nothing half-written beside it.
    out = Path(result["output"])
    assert out == tmp_path / "published" / "sft"
    assert sorted(p.name for p in out.parent.iterdir()) == ["sft"]
    manifest = json.loads((out / "MANIFEST.json").read_text())
    listed = json.dumps(manifest)
    assert "model.safetensors" in listed and "config.json" in listed
    assert not list((tmp_path / "t").glob("alignpipe-out-*")), "a rank left a staging folder behind"
    assert not list((tmp_path / "t").glob("alignpipe-launch-*")), "the launch folder was not removed"

    # The parameters moved away from the tiny model's initial weights.
    before = load_file(str(cache_dir / "models" / "tiny-seed0" / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    moved = [k for k in before if not before[k].equal(after[k])]
    assert len(moved) > len(before) // 2, f"only {len(moved)} of {len(before)} tensors changed"
    _no_leftover_processes(tmp_path)


LATE_FAULT_ON_RANK1 = """
import os
if os.environ.get("RANK") == "1":
    import alignpipe.models as m
    def save(*args, **kwargs):
        raise RuntimeError("injected fault while saving on rank 1")
    m.save = save
"""


def test_failing_rank_is_named_and_nothing_is_published(tmp_path, demo_data, cache_dir):
    """Rank 1 fails at the very end (while saving): the error names rank 1 and its exception, and rank 0
    does not publish a model for a step that failed."""
    _require_netns()
    config = _write_config(tmp_path, demo_data, steps=2)
    proc = _run_stage(tmp_path, config, cache_dir, fault=LATE_FAULT_ON_RANK1)
    assert proc.returncode != 0, proc.stderr[-4000:]
    assert "rank 1 of 2 failed: RuntimeError: injected fault while saving on rank 1" in proc.stderr, proc.stderr[-4000:]
    assert "last" in proc.stderr and "lines of rank 1's log" in proc.stderr
    assert not (tmp_path / "result.json").exists()
    assert not (tmp_path / "published" / "sft").exists(), "a failed distributed step published its output"
    _no_leftover_processes(tmp_path)


HANG_ON_RANK1 = """
import os, time
if os.environ.get("RANK") == "1":
    time.sleep(600)
"""


def test_hung_rank_is_stopped_by_the_launch_timeout(tmp_path, demo_data, cache_dir):
    _require_netns()
    config = _write_config(tmp_path, demo_data, steps=2)
    proc = _run_stage(tmp_path, config, cache_dir, fault=HANG_ON_RANK1, launch_timeout_s=6, timeout_s=90)
    assert proc.returncode != 0
    assert "torchrun with 2 processes ran past 6 s and was stopped" in proc.stderr, proc.stderr[-3000:]
    _no_leftover_processes(tmp_path)


def test_zero_preset_without_deepspeed_fails_in_one_line(tmp_path, demo_data):
    """distributed.deepspeed=zero2 with gpus=2 and no DeepSpeed: exit 2, one line naming the fix, nothing launched."""
    _require_netns()
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here; this checks the message shown where it is not")
    config = _write_config(tmp_path, demo_data, deepspeed="zero2")
    cmd = netns.netns_command([sys.executable, "-m", "alignpipe.cli", "stage", "sft", "--config", str(config)])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "ALIGNPIPE_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["error: distributed.deepspeed: zero2 needs DeepSpeed, which is not installed here (install the "
                     "gpu extra: pip install 'alignpipe[gpu]', use the GPU image, or set distributed.deepspeed: none)"]
    assert "launching" not in proc.stderr
    assert not (tmp_path / "cache").exists(), "the model was loaded before the DeepSpeed check"


def test_zero3_two_ranks_publish_full_weights(tmp_path, demo_data, cache_dir):
    """ZeRO-3 shards every parameter: the published model must still hold the full, trained weights.

    Needs the gpu extra (deepspeed). The first run on a machine JIT-compiles DeepSpeed's CPU comm op
    (about 2 minutes on 2 cores, cached in ~/.cache/torch_extensions)."""
    _require_netns()
    pytest.importorskip("deepspeed")
    config = _write_config(tmp_path, demo_data, deepspeed="zero3")
    proc = _run_stage(tmp_path, config, cache_dir, launch_timeout_s=400, timeout_s=480)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert "deepspeed zero3" in proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["lineage"]["deepspeed"] == "zero3"
    out = Path(result["output"])
    before = load_file(str(cache_dir / "models" / "tiny-seed0" / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in after.items()} == {k: tuple(v.shape) for k, v in before.items()}
    assert sum(not before[k].equal(after[k]) for k in before) > len(before) // 2
    assert not (out / "training_args.bin").exists()
