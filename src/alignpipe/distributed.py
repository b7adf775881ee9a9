"""Multi-process training inside one pod: a stage with `distributed.gpus > 1` re-launches itself
under `torchrun --standalone`, every rank trains, rank 0 saves, publishes and reports.

    parent (alignpipe stage sft ...)            maybe_launch -> launch
      └─ torchrun --standalone --nproc-per-node=N -m alignpipe.distributed sft --config ...
           ├─ rank 0: run the stage, publish the output, write the StageResult
           └─ rank k: run the stage (DDP / DeepSpeed peers)

Each rank writes a small status file; when a rank fails the parent raises one error that names the
failing rank, its exception and the tail of its log (torchrun keeps one log per rank). A ZeRO preset
is checked before anything starts: without DeepSpeed installed it fails with one line and the fix.

Multi-node runs are not launched here: the pipeline hands them to Kubeflow Trainer (see
`alignpipe.trainjob`), whose pods run `torchrun -m alignpipe.distributed STAGE --config ...`, the
same per-rank entry point used here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Printed (one line, stdout) by global rank 0 when the stage succeeded: how the multi-node runner reads
# the StageResult back from the master pod's log.
RESULT_MARKER = "ALIGNPIPE_RESULT_JSON: "
# Overall wall-clock limit of a local torchrun launch (seconds; unset: none). A hung collective is
# otherwise only caught by the process-group timeout below.
LAUNCH_TIMEOUT_ENV = "ALIGNPIPE_LAUNCH_TIMEOUT_S"
# Process-group (collective) timeout passed to TrainingArguments.ddp_timeout, seconds.
DDP_TIMEOUT_ENV = "ALIGNPIPE_DDP_TIMEOUT_S"
DEFAULT_DDP_TIMEOUT_S = 1800
LOG_TAIL_LINES = 20


class DistributedError(RuntimeError):
    """A multi-process launch failed; the message names the failing rank(s) and their last log lines."""


# --------------------------------------------------------------------------------------------------
# Where am I
# --------------------------------------------------------------------------------------------------


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op unless a process group is up). Rank 0 calls it before publishing, so
    that a step whose peer failed publishes nothing: torchrun stops the waiting rank instead."""
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def backend() -> str:
    """`nccl` where CUDA is available, else `gloo` (CPU)."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


# --------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO presets
# --------------------------------------------------------------------------------------------------

PRESETS = ("none", "zero2", "zero2_offload", "zero3", "zero3_offload")


def deepspeed_config(preset: str) -> dict[str, Any] | None:
    """The DeepSpeed config for a `distributed.deepspeed` preset (None for `none`).

    Values that the Hugging Face Trainer derives from TrainingArguments are "auto" (batch sizes,
    accumulation, clipping, precision, bucket sizes from the model's hidden size), so the preset never
    disagrees with `training.*`. Without offload the Trainer's own AdamW and scheduler are used; the
    offload presets name DeepSpeed's AdamW (its CPU Adam runs the optimizer step on the host) and keep
    the Trainer's scheduler.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown deepspeed preset {preset!r} (choose one of: {', '.join(PRESETS)})")
    if preset == "none":
        return None
    stage = 3 if preset.startswith("zero3") else 2
    offload = preset.endswith("_offload")
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 2:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True})
    else:
        zero.update({
            "sub_group_size": 1e9,
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            # Save a normal (unsharded) checkpoint: later stages load a plain model.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg: dict[str, Any] = {
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000,  # the Trainer logs; keep DeepSpeed quiet
        "wall_clock_breakdown": False,
    }
    if offload:
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                        "weight_decay": "auto"}}
    return cfg


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def check_deepspeed(dist) -> None:
    """Fail early, in one line, if a ZeRO preset is selected and DeepSpeed is not importable."""
    from alignpipe.config import ConfigError

    preset = getattr(dist, "deepspeed", "none")
    if preset != "none" and not deepspeed_installed():
        raise ConfigError(
            f"distributed.deepspeed: {preset} needs DeepSpeed, which is not installed here "
            "(install the gpu extra: pip install 'alignpipe[gpu]', use the GPU image, or set distributed.deepspeed: none)")


def training_args(dist=None) -> dict[str, Any]:
    """TrainingArguments fields for a stage's `distributed` settings: backend, collective timeout and the
    DeepSpeed config of the preset. Meant to be merged into `stages.common.trainer_kwargs`."""
    out: dict[str, Any] = {"ddp_timeout": int(os.environ.get(DDP_TIMEOUT_ENV, DEFAULT_DDP_TIMEOUT_S))}
    if world_size() > 1 or (dist is not None and dist.gpus > 1):
        out["ddp_backend"] = backend()
    ds = deepspeed_config(dist.deepspeed) if dist is not None else None
    if ds is not None:
        check_deepspeed(dist)
        out["deepspeed"] = ds
    return out


def is_zero3(trainer) -> bool:
    """Whether `trainer` (an HF/TRL Trainer) runs DeepSpeed ZeRO-3, i.e. holds only a shard of each parameter."""
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return False
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


def save_trained_model(trainer, tokenizer, out_dir) -> None:
    """Save a trained model from EVERY rank (call it on all of them); rank 0 writes the files.

    Under ZeRO-3 each rank holds a shard, so `model.save_pretrained` would write empty tensors: the
    Trainer's `save_model` gathers the full weights collectively (the presets set
    `stage3_gather_16bit_weights_on_model_save`). Otherwise this is `alignpipe.models.save`."""
    from alignpipe import models

    if not is_zero3(trainer):
        models.save(trainer.model, tokenizer, out_dir)
        return
    trainer.save_model(str(out_dir))  # collective: every rank must call it
    if is_main_process():
        (Path(out_dir) / "training_args.bin").unlink(missing_ok=True)  # a pickle; not part of a model
        tokenizer.save_pretrained(out_dir)
        missing = models.missing_files(out_dir)
        if missing:
            raise models.ModelError(f"{out_dir}: ZeRO-3 save produced an incomplete folder, missing {', '.join(missing)}")


# --------------------------------------------------------------------------------------------------
# Launch (parent side)
# --------------------------------------------------------------------------------------------------


def launch_command(stage: str, config_path: str, result_path: str, nproc: int, *,
                   status_dir: str | None = None, log_dir: str | None = None) -> list[str]:
    """torchrun, one node, `nproc` ranks, no restarts, each running this module's per-rank entry point."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--max-restarts=0", "--monitor-interval=1"]
    if log_dir:
        # Every rank's stdout/stderr both on the console (prefixed [rankN]) and in LOG_DIR/.../N/std*.log.
        cmd += [f"--log-dir={log_dir}", "--redirects=3", "--tee=3"]
    cmd += ["-m", "alignpipe.distributed", stage, "--config", config_path, "--result", result_path]
    if status_dir:
        cmd += ["--status-dir", status_dir]
    return cmd


def maybe_launch(stage: str, cfg):
    """If the config asks for several processes and we are not yet distributed, run the stage under
    torchrun and return its StageResult (rank 0's); else return None and let the caller train here.

    A ZeRO preset without DeepSpeed installed fails here, before anything is loaded."""
    dist = getattr(cfg, "distributed", None)
    if dist is None:
        return None
    check_deepspeed(dist)
    if dist.gpus <= 1 or world_size() > 1:
        return None
    return launch(stage, cfg)


def _check_devices(nproc: int) -> None:
    import torch

    from alignpipe.config import ConfigError

    if torch.cuda.is_available():
        have = torch.cuda.device_count()
        if have < nproc:
            raise ConfigError(f"distributed.gpus: {nproc} processes but this pod sees {have} GPU(s) "
                              f"(request {nproc} GPUs for the step, or set distributed.gpus: {have})")


def _timeout_s() -> float | None:
    raw = os.environ.get(LAUNCH_TIMEOUT_ENV)
    return float(raw) if raw else None


def _log(msg: str) -> None:
    print(f"alignpipe: {msg}", file=sys.stderr, flush=True)


def launch(stage: str, cfg, *, timeout_s: float | None = None):
    """Run `stage` with `cfg.distributed.gpus` ranks under torchrun; return rank 0's StageResult."""
    from alignpipe.stages.common import StageResult

    nproc = cfg.distributed.gpus
    _check_devices(nproc)
    timeout_s = timeout_s if timeout_s is not None else _timeout_s()
    with tempfile.TemporaryDirectory(prefix="alignpipe-launch-") as tmp:
        tmp_path = Path(tmp)
        config_path = tmp_path / "config.json"
        # JSON is valid YAML: the ranks read it with the same loader as any config file.
        config_path.write_text(json.dumps(cfg.model_dump(mode="json")))
        result_path = tmp_path / "result.json"
        status_dir = tmp_path / "status"
        status_dir.mkdir()
        log_dir = tmp_path / "logs"
        cmd = launch_command(stage, str(config_path), str(result_path), nproc,
                             status_dir=str(status_dir), log_dir=str(log_dir))
        env = {**os.environ, "ALIGNPIPE_PROGRESS": os.environ.get("ALIGNPIPE_PROGRESS", "1")}
        _log(f"{stage}: launching {nproc} processes with torchrun (backend {backend()}, "
             f"deepspeed {cfg.distributed.deepspeed})")
        started = time.monotonic()
        rc = _run_group(cmd, env, timeout_s)
        statuses = _read_statuses(status_dir)
        if rc is None:
            raise DistributedError(
                f"{stage}: torchrun with {nproc} processes ran past {timeout_s:g} s and was stopped "
                f"({LAUNCH_TIMEOUT_ENV} sets the limit){_rank_summary(statuses)}")
        if rc != 0 or not result_path.is_file():
            _raise_failure(stage, nproc, rc, statuses, log_dir)
        data = json.loads(result_path.read_text())
    result = StageResult(**data)
    result.lineage = {**result.lineage, "world_size": str(nproc), "deepspeed": cfg.distributed.deepspeed}
    _log(f"{stage}: {nproc} ranks finished in {time.monotonic() - started:.1f} s")
    return result


def _run_group(cmd: list[str], env: dict[str, str], timeout_s: float | None) -> int | None:
    """Run `cmd` in its own process group; None if it ran past `timeout_s` (the group is then killed)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None
    except BaseException:  # Ctrl-C, or the caller being torn down: take the ranks with us
        _kill_group(proc)
        raise


def _kill_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _read_statuses(status_dir: Path) -> dict[int, dict]:
    out = {}
    for f in sorted(status_dir.glob("rank-*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        out[int(data["rank"])] = data
    return out


def _rank_log_tail(log_dir: Path, r: int, n: int = LOG_TAIL_LINES) -> list[str]:
    """Last lines of rank r's stderr (else stdout) as torchrun wrote them under --log-dir."""
    for name in ("stderr.log", "stdout.log"):
        files = sorted(log_dir.glob(f"**/attempt_*/{r}/{name}"), key=lambda p: p.stat().st_mtime)
        if files:
            lines = [ln for ln in files[-1].read_text(errors="replace").splitlines() if ln.strip()]
            if lines:
                return lines[-n:]
    return []


def _rank_summary(statuses: dict[int, dict]) -> str:
    done = sorted(r for r, s in statuses.items() if s.get("state") == "ok")
    running = sorted(r for r, s in statuses.items() if s.get("state") == "started")
    return f"; ranks finished: {done or 'none'}, still running: {running or 'none'}"


def _failing_ranks(statuses: dict[int, dict], nproc: int) -> list[tuple[int, str]]:
    """(rank, one-line reason) for ranks that failed, failed ones first, then ranks that never reported."""
    # Root cause first: the earliest failure (peers of a crashed rank fail after it, e.g. "Connection
    # closed by peer" in a collective).
    failed = [(r, f"{s.get('type', 'Error')}: {s.get('message', '')}".strip())
              for r, s in sorted(statuses.items(), key=lambda kv: (kv[1].get("time", 0.0), kv[0]))
              if s.get("state") == "failed"]
    silent = [(r, "exited without reporting (killed, crashed or stopped after a peer failed)")
              for r in range(nproc) if r not in statuses or statuses[r].get("state") == "started"]
    return failed + silent


def _raise_failure(stage: str, nproc: int, rc: int, statuses: dict[int, dict], log_dir: Path):
    # A user error (bad config/data/model/storage) in a rank is re-raised as itself: one line, exit 2.
    for r, s in sorted(statuses.items()):
        if s.get("state") == "failed" and s.get("user_error"):
            cls = _import_type(s.get("module", ""), s.get("type", ""))
            if cls is not None:
                raise cls(f"rank {r} of {nproc}: {s.get('message', '')}")
    failing = _failing_ranks(statuses, nproc) or [(0, "no rank reported (torchrun failed before start)")]
    first, reason = failing[0]
    tail = _rank_log_tail(log_dir, first)
    msg = (f"{stage}: rank {first} of {nproc} failed: {reason} (torchrun exit {rc}"
           + (f"; other failing ranks: {', '.join(str(r) for r, _ in failing[1:])}" if failing[1:] else "")
           + ")")
    if tail:
        msg += f"\n--- last {len(tail)} lines of rank {first}'s log ---\n" + "\n".join(tail)
    raise DistributedError(msg)


def _import_type(module: str, name: str):
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


# --------------------------------------------------------------------------------------------------
# Per-rank entry point: `python -m alignpipe.distributed STAGE --config PATH` (under torchrun)
# --------------------------------------------------------------------------------------------------


def _write_status(status_dir: str | None, **fields: Any) -> None:
    if not status_dir:
        return
    r = rank()
    path = Path(status_dir) / f"rank-{r}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": r, "world_size": world_size(), "host": socket.gethostname(),
                               "pid": os.getpid(), "time": time.time(), **fields}))
    tmp.replace(path)


def rank_main(argv: list[str] | None = None) -> int:
    """Run one rank of a stage. Global rank 0 writes the StageResult (`--result`) and prints it after
    RESULT_MARKER; every rank records `started` / `ok` / `failed` in `--status-dir` if given."""
    p = argparse.ArgumentParser(prog="python -m alignpipe.distributed",
                                description="one rank of a distributed alignpipe stage (run under torchrun)")
    p.add_argument("stage")
    p.add_argument("--config", required=True)
    p.add_argument("--result", help="rank 0 writes the StageResult JSON here")
    p.add_argument("--status-dir", help="each rank writes rank-N.json here (local launches)")
    args = p.parse_args(argv)

    from alignpipe import cli, config  # cli sets the quiet-library environment defaults

    r, n = rank(), world_size()
    started = time.monotonic()
    _write_status(args.status_dir, state="started")
    _log(f"{args.stage}: rank {r} of {n} started (local rank {local_rank()}, pid {os.getpid()}, "
         f"host {socket.gethostname()}, backend {backend()})")
    user_errors = cli._user_errors()
    try:
        cfg = config.load(args.stage, args.config)
        result = importlib.import_module(f"alignpipe.stages.{args.stage}").run(cfg)
    except BaseException as e:
        _write_status(args.status_dir, state="failed", type=type(e).__name__, module=type(e).__module__,
                      message=str(e), user_error=isinstance(e, user_errors), seconds=time.monotonic() - started)
        if isinstance(e, user_errors):
            for line in str(e).splitlines() or [type(e).__name__]:
                print(f"error: rank {r}: {line}", file=sys.stderr, flush=True)
            return 2
        raise
    _write_status(args.status_dir, state="ok", seconds=time.monotonic() - started)
    _log(f"{args.stage}: rank {r} of {n} done in {time.monotonic() - started:.1f} s")
    if r == 0:
        if args.result:
            result.save(args.result)
        print(RESULT_MARKER + json.dumps(result.to_dict(), default=str), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through torchrun in tests/distributed
    sys.exit(rank_main())
