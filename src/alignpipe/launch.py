"""The one dispatcher that runs a stage: in this process, under torchrun inside the pod, or on
several nodes through Kubeflow Trainer. The CLI (`alignpipe stage`), the KFP components
(`alignpipe.steps.run_component`) and the per-rank entry point all call `run_stage`; stages
themselves never launch anything.

    run_stage(stage, cfg)
      ├─ distributed.nodes > 1 (and not yet a rank)  -> alignpipe.trainjob.run_multinode (TrainJob/PyTorchJob)
      ├─ distributed.gpus > 1 (and not yet a rank)   -> launch(): torchrun --standalone -m alignpipe.launch ...
      │     ├─ rank 0: run the stage, publish the output, write the StageResult
      │     └─ rank k: run the stage (DDP / DeepSpeed peers)
      └─ otherwise                                   -> alignpipe.stages.<stage>.run(cfg)

Each rank writes a small status file; when a rank fails the parent raises one error that names the
failing rank, its exception and the tail of its log (torchrun keeps one log per rank). A ZeRO preset
is checked before anything starts: without DeepSpeed installed it fails with one line and the fix.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from alignpipe import config, distributed, settings
from alignpipe.base import (
    PREEMPTED_EXIT,
    RESULT_MARKER,
    StageResult,
    UserError,
    local_rank,
    rank,
    report_user_error,
    world_size,
)
from alignpipe.config import ConfigError

# Overall wall-clock limit of a local torchrun launch (seconds; unset: none). A hung collective is
# otherwise only caught by the process-group timeout (ALIGNPIPE_DDP_TIMEOUT_S).
LAUNCH_TIMEOUT_ENV = "ALIGNPIPE_LAUNCH_TIMEOUT_S"
LOG_TAIL_LINES = 20
#: Training stages: the ones with `distributed` settings.
TRAINING_STAGES = ("sft", "reward_model", "rl", "preference")


class DistributedError(UserError, RuntimeError):
    """A multi-process launch failed; the message names the failing rank(s) and their last log lines."""


def quiet_libraries() -> None:
    """Environment defaults that keep the ML libraries quiet and offline-friendly; set by the entry
    points (CLI main, rank main, component runner) before anything heavy is imported, never on import."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------


def plan(cfg) -> str:
    """How `cfg` runs from here: `single` (this process), `torchrun` (N ranks in this pod) or `multinode`."""
    dist = getattr(cfg, "distributed", None)
    if dist is None or world_size() > 1:  # not a training stage, or already one rank of a launch
        return "single"
    if getattr(dist, "nodes", 1) > 1:
        return "multinode"
    return "torchrun" if dist.gpus > 1 else "single"


def run_stage(stage: str, cfg) -> StageResult:
    """Run `stage` with its validated config `cfg` the way `cfg.distributed` asks; return its StageResult
    (rank 0's when several processes train). A ZeRO preset without DeepSpeed fails here, before anything
    is loaded."""
    dist = getattr(cfg, "distributed", None)
    if dist is not None:
        distributed.check_deepspeed(dist)
    if world_size() <= 1:  # once per launch, not once per rank
        for line in config.mismatch_warnings(stage, cfg):
            _log(f"warning: {line}")
    how = plan(cfg)
    if how == "torchrun":
        return launch(stage, cfg)
    if how == "multinode":
        return _multinode(stage, cfg)
    return importlib.import_module(f"alignpipe.stages.{stage}").run(cfg)


def multinode_job_name(stage: str) -> str:
    """The job's name: derived from the KFP run id and the stage when in a pipeline, so a retried launcher pod
    finds (re-attaches to) the job its first attempt started; random otherwise."""
    import hashlib

    from alignpipe import settings, trainjob

    run_id = settings.current().kfp_run_id
    suffix = hashlib.sha256(f"{run_id}/{stage}".encode()).hexdigest()[:10] if run_id else None
    return trainjob.job_name(stage, suffix)


def _multinode(stage: str, cfg, api_client=None) -> StageResult:
    """`distributed.nodes` nodes x `distributed.gpus` GPUs as a TrainJob or PyTorchJob (`distributed.multinode`)
    running this same entry point; the pods get the step's image and its S3/MLflow Secrets (and, for rl, the
    reward service's token, optional as on the step itself)."""
    from alignpipe import platform, settings, trainjob

    dist, s = cfg.distributed, settings.current()
    optional: dict[str, dict[str, str]] = {s.s3_secret: dict(platform.S3_OPTIONAL_KEYS)}
    optional.setdefault(s.mlflow_secret, {}).update(platform.MLFLOW_OPTIONAL_KEYS)
    if stage == "rl":
        optional.setdefault(s.reward_secret, {}).update(platform.REWARD_TOKEN_KEYS)
    _log(f"{stage}: handing {dist.nodes} nodes x {dist.gpus} GPUs to a {dist.multinode}")
    return trainjob.run_multinode(
        stage, cfg.model_dump(mode="json"), nodes=dist.nodes, gpus_per_node=dist.gpus, image=platform.gpu_image(),
        kind=dist.multinode, name=multinode_job_name(stage), gpu_resource=s.gpu_resource,
        service_account=s.pipeline_service_account,
        secrets={s.s3_secret: platform.S3_REQUIRED_KEYS, s.mlflow_secret: platform.MLFLOW_REQUIRED_KEYS},
        optional_secrets=optional,
        node_selector=s.gpu_node_selector or None, tolerations=s.gpu_tolerations or None, reattach=True,
        api_client=api_client, on_status=lambda st: _log(f"{stage}: {st['name']} {st['state']}"))


# --------------------------------------------------------------------------------------------------
# torchrun inside the pod (parent side)
# --------------------------------------------------------------------------------------------------


def launch_command(stage: str, config_path: str, result_path: str, nproc: int, *,
                   status_dir: str | None = None, log_dir: str | None = None) -> list[str]:
    """torchrun, one node, `nproc` ranks, no restarts, each running this module's per-rank entry point."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--max-restarts=0", "--monitor-interval=1"]
    if log_dir:
        # Every rank's stdout/stderr both on the console (prefixed [rankN]) and in LOG_DIR/.../N/std*.log.
        cmd += [f"--log-dir={log_dir}", "--redirects=3", "--tee=3"]
    cmd += ["-m", "alignpipe.launch", stage, "--config", config_path, "--result", result_path]
    if status_dir:
        cmd += ["--status-dir", status_dir]
    return cmd


def _check_devices(nproc: int) -> None:
    import torch

    if torch.cuda.is_available():
        have = torch.cuda.device_count()
        if have < nproc:
            raise ConfigError(f"distributed.gpus: {nproc} processes but this pod sees {have} GPU(s) "
                              f"(request {nproc} GPUs for the step, or set distributed.gpus: {have})")


def _timeout_s() -> float | None:
    return settings.current().launch_timeout_s  # LAUNCH_TIMEOUT_ENV


def _log(msg: str) -> None:
    print(f"alignpipe: {msg}", file=sys.stderr, flush=True)


def launch(stage: str, cfg, *, timeout_s: float | None = None):
    """Run `stage` with `cfg.distributed.gpus` ranks under torchrun; return rank 0's StageResult."""
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
        env = {**os.environ, "ALIGNPIPE_PROGRESS": "1" if settings.current().progress else "0"}
        _log(f"{stage}: launching {nproc} processes with torchrun (backend {distributed.backend()}, "
             f"deepspeed {cfg.distributed.deepspeed})")
        started = time.monotonic()
        sigterm: list[int] = []
        rc = _run_group(cmd, env, timeout_s, sigterm)
        statuses = _read_statuses(status_dir)
        if sigterm and rc != 0:
            preempted = sorted(r for r, st in statuses.items() if st.get("type") == "Preempted")
            _log(f"{stage}: preempted: ranks {preempted or 'none'} checkpointed before exiting; exiting with "
                 f"{PREEMPTED_EXIT} so the step is retried")
            raise SystemExit(PREEMPTED_EXIT)
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


def _run_group(cmd: list[str], env: dict[str, str], timeout_s: float | None,
               sigterm: list[int] | None = None) -> int | None:
    """Run `cmd` in its own process group; None if it ran past `timeout_s` (the group is then killed).

    SIGTERM to this process (what Kubernetes sends the pod's main process on preemption or eviction) is
    passed on to the whole group and the wait goes on: the ranks checkpoint when their step ends and exit
    (`training.sigterm_grace_s`); torchrun stops the rest. Each forwarded signal is appended to `sigterm`."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def forward(signum, frame):
        if sigterm is not None:
            sigterm.append(signum)
        _log(f"SIGTERM: passing it on to the ranks' process group (pid {proc.pid})")
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None
    except BaseException:  # Ctrl-C, or the caller being torn down: take the ranks with us
        _kill_group(proc)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
    p = argparse.ArgumentParser(prog="python -m alignpipe.launch",
                                description="one rank of a distributed alignpipe stage (run under torchrun)")
    p.add_argument("stage")
    p.add_argument("--config", required=True)
    p.add_argument("--result", help="rank 0 writes the StageResult JSON here")
    p.add_argument("--status-dir", help="each rank writes rank-N.json here (local launches)")
    args = p.parse_args(argv)
    quiet_libraries()

    r, n = rank(), world_size()
    started = time.monotonic()
    _write_status(args.status_dir, state="started")
    _log(f"{args.stage}: rank {r} of {n} started (local rank {local_rank()}, pid {os.getpid()}, "
         f"host {socket.gethostname()}, backend {distributed.backend()})")
    try:
        cfg = config.load(args.stage, args.config)
        result = run_stage(args.stage, cfg)
    except BaseException as e:
        user_error = isinstance(e, UserError)
        _write_status(args.status_dir, state="failed", type=type(e).__name__, module=type(e).__module__,
                      message=str(e), user_error=user_error, seconds=time.monotonic() - started)
        if user_error:
            return report_user_error(e, prefix=f"rank {r}: ")
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
