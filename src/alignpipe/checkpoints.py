"""Training checkpoints in object storage, so a retried or preempted step resumes in a new pod.

Where: ``<state root>/checkpoints/<run identity>/<content key>/checkpoint-<step>/`` (state root: see
``ALIGNPIPE_STATE_URI``; a local folder or ``s3://``). The run identity is ``kfp-<KFP run id>-<stage>`` in a
pipeline pod (stable across the step's retries), else derived from the output URI; the content key
(:mod:`alignpipe.reuse`) hashes the resolved config and the input digests, so a changed config never
resumes a foreign checkpoint.

What: the folder the transformers ``Trainer`` writes — weights (or adapter), optimizer, scheduler, grad
scaler, RNG states (every rank's), trainer state (global step, log history; the data position follows from
it: the Trainer skips the batches already seen) — published like a model: files first, ``MANIFEST.json``
last (:func:`alignpipe.storage.publish_dir`). The newest ``training.save_total_limit`` complete checkpoints
are kept; older ones are deleted only after a newer one is complete.

When: every ``training.save_steps`` optimizer steps and when ``training.save_minutes`` have passed since the
last checkpoint (:class:`CheckpointCallback`). Not at the last step: the stage publishes the model itself.
On SIGTERM the callback saves when the current step ends, publishes, and exits with 143 (so KFP retries);
if that takes longer than ``training.sigterm_grace_s`` it exits at once without one.

Resume (:meth:`Checkpoints.attach`): the newest *complete* checkpoint is downloaded (every byte checked
against its manifest) into the local checkpoint folder and handed to ``trainer.train(resume_from_checkpoint=...)``;
partial ones (no manifest: the upload did not finish) are ignored and reported. The stage's MLflow child run
is re-opened by :func:`alignpipe.tracking.stage_run`; metrics of steps that run already holds are not logged
again. After the stage has published its output, :meth:`Checkpoints.clear` deletes the checkpoints.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

from transformers import TrainerCallback

from alignpipe import settings, storage, tracking
from alignpipe.base import PREEMPTED_EXIT, barrier, is_main_process
from alignpipe.reuse import say, state_root

PREFIX = "checkpoint-"
_STEP = re.compile(rf"^\.?{PREFIX}(\d+)(?:\.staging-[0-9a-f]+)?$")


class Preempted(SystemExit):
    """Raised after the SIGTERM checkpoint is published: the process exits non-zero so the step is retried."""

    def __init__(self, step: int, uri: str):
        super().__init__(PREEMPTED_EXIT)
        self.step, self.uri = step, uri


def run_identity(stage: str, output_uri: str) -> str:
    """``kfp-<run id>-<stage>`` in a pipeline pod, else ``<stage>-<hash of the output URI>``."""
    run_id = settings.current().kfp_run_id
    if run_id:
        return f"kfp-{re.sub(r'[^A-Za-z0-9_.-]', '_', run_id)}-{stage}"
    return f"{stage}-{hashlib.sha256(str(output_uri).encode()).hexdigest()[:16]}"


class Checkpoints:
    """The checkpoint store of one stage run (see the module docstring)."""

    def __init__(self, stage: str, cfg, key: str):
        self.stage, self.training = stage, cfg.training
        self.uri = storage.join(state_root(), "checkpoints", run_identity(stage, cfg.output_dir), key[:16])
        self.local_dir = settings.current().checkpoint_dir / f"{stage}-{hashlib.sha256(self.uri.encode()).hexdigest()[:12]}"
        self.local_dir.mkdir(parents=True, exist_ok=True)
        self.restored_step: int | None = None

    def step_uri(self, step: int) -> str:
        return storage.join(self.uri, f"{PREFIX}{step}")

    # ---- the store ----------------------------------------------------------------------------
    def scan(self) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """(complete, partial) checkpoints as (step, uri), oldest first."""
        found: dict[int, set[str]] = {}
        if storage.is_remote(self.uri):
            base = self.uri.rstrip("/") + "/"
            for u in storage.list_uris(self.uri):
                parts = u[len(base):].split("/")
                m = _STEP.match(parts[0])
                if m and len(parts) > 1:
                    found.setdefault(int(m.group(1)), set()).add(parts[0])
        else:
            root = storage.to_path(self.uri)
            for p in root.iterdir() if root.is_dir() else []:
                m = _STEP.match(p.name)
                if m and p.is_dir():
                    found.setdefault(int(m.group(1)), set()).add(p.name)
        complete, partial = [], []
        for step in sorted(found):
            for name in sorted(found[step]):
                uri = storage.join(self.uri, name)
                ok = False
                if name == f"{PREFIX}{step}":
                    try:
                        storage.read_manifest(uri)
                        ok = True
                    except storage.StorageError:
                        pass
                (complete if ok else partial).append((step, uri))
        return complete, partial

    def publish(self, local: Path, step: int) -> str:
        start = time.perf_counter()
        uri = self.step_uri(step)
        m = storage.publish_dir(local, uri)
        say(f"{self.stage}: checkpoint {step} published to {uri} ({m.total_bytes / 1e6:.1f} MB, "
            f"{time.perf_counter() - start:.1f} s)")
        self.prune(step)
        return uri

    def prune(self, newest: int) -> None:
        """Keep the newest `save_total_limit` complete checkpoints; drop partial ones older than `newest`."""
        try:
            complete, partial = self.scan()
            doomed = [u for _, u in complete[: max(0, len(complete) - self.training.save_total_limit)]]
            doomed += [u for s, u in partial if s < newest]
            for u in doomed:
                storage.delete_dir(u)
        except storage.StorageError as e:  # a later prune tries again
            say(f"{self.stage}: could not delete old checkpoints under {self.uri}: {e}")

    def clear(self) -> None:
        """Delete every checkpoint of this run (after its output is published)."""
        if not is_main_process():
            return
        try:
            complete, partial = self.scan()
            for _, u in partial + complete:
                storage.delete_dir(u)
        except storage.StorageError as e:
            say(f"{self.stage}: could not delete the checkpoints under {self.uri}: {e}")
        shutil.rmtree(self.local_dir, ignore_errors=True)

    def restore(self) -> str | None:
        """Download the newest complete checkpoint into the local folder; its path, or None to start fresh.
        Rank 0 downloads (ranks of one node share the folder); the others wait and use what it restored."""
        path = self._restore() if is_main_process() else None
        barrier()
        if not is_main_process():
            found = sorted(self.local_dir.glob(f"{PREFIX}*"), key=lambda p: int(p.name[len(PREFIX):]))
            path = str(found[-1]) if found else None
        return path

    def _restore(self) -> str | None:
        complete, partial = self.scan()
        newest = complete[-1][0] if complete else -1
        for step, uri in partial:
            say(f"{self.stage}: ignoring partial checkpoint {uri} (no complete MANIFEST.json: its upload did not "
                "finish)" + (f"; resuming from step {newest}" if newest >= 0 else ""))
        for p in self.local_dir.glob(f"{PREFIX}*"):  # local leftovers are not trusted: the store is the truth
            shutil.rmtree(p, ignore_errors=True)
        for step, uri in reversed(complete):
            target = self.local_dir / f"{PREFIX}{step}"
            tmp = self.local_dir / f".restore-{uuid.uuid4().hex[:8]}"
            try:
                storage.download_dir(uri, tmp)
                os.replace(tmp, target)
            except storage.StorageError as e:
                say(f"{self.stage}: cannot restore checkpoint {uri} ({e}); trying an older one")
                continue
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            say(f"{self.stage}: resuming from checkpoint {step} ({uri})")
            self.restored_step = step
            return str(target)
        return None

    # ---- the trainer --------------------------------------------------------------------------
    def attach(self, trainer, tracker=None) -> str | None:
        """Add the checkpoint callback to `trainer`, restore the newest complete checkpoint; returns the
        path for ``trainer.train(resume_from_checkpoint=...)`` (None: start from step 0)."""
        trainer.add_callback(CheckpointCallback(self))
        path = self.restore()
        if path and tracker is not None and getattr(tracker, "enabled", False):
            _skip_logged_steps(trainer, tracker.run_id)
        return path


def _skip_logged_steps(trainer, run_id: str) -> None:
    """On resume, metrics of steps the (re-opened) MLflow run already holds are not logged a second time."""
    from mlflow.tracking import MlflowClient
    from transformers.integrations import MLflowCallback

    client = MlflowClient()
    keys = list(client.get_run(run_id).data.metrics)
    last = max((m.step for k in keys for m in client.get_metric_history(run_id, k)), default=-1)
    if last < 0:
        return
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, MLflowCallback):
            original = cb.on_log

            def on_log(args, state, control, logs=None, model=None, _original=original, **kw):
                if state.global_step <= last:
                    return None
                return _original(args, state, control, logs, model=model, **kw)

            cb.on_log = on_log


def agree_any(*flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over the ranks of the process group (one small all-reduce); as given on one process."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return tuple(bool(f) for f in flags)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


class CheckpointCallback(TrainerCallback):
    """Saves by steps and by time, publishes each checkpoint the Trainer writes, and handles SIGTERM."""

    def __init__(self, store: Checkpoints):
        self.store = store
        t = store.training
        self.every_s = t.save_minutes * 60 if t.save_minutes else None
        self.grace_s = t.sigterm_grace_s
        self.preempted = False
        self._last = time.monotonic()
        self._timer: threading.Timer | None = None
        self._previous = None

    # SIGTERM: note it; the step in progress finishes, then on_step_end asks for a save.
    def _on_sigterm(self, signum, frame) -> None:
        if self.preempted:
            return
        self.preempted = True
        say(f"{self.store.stage}: SIGTERM: checkpointing when this step ends (grace {self.grace_s:g} s), then "
            f"exiting with {PREEMPTED_EXIT} so the step is retried")
        self._timer = threading.Timer(self.grace_s, self._expired)
        self._timer.daemon = True
        self._timer.start()

    def _expired(self) -> None:
        say(f"{self.store.stage}: SIGTERM grace period ({self.grace_s:g} s) over before a checkpoint was complete: "
            "exiting without one (the retry resumes from the previous checkpoint)")
        os._exit(PREEMPTED_EXIT)

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def on_step_end(self, args, state, control, **kwargs):
        due = self.every_s is not None and time.monotonic() - self._last >= self.every_s
        # Every rank must take the same decision at the same step (saving is collective: barriers, ZeRO
        # shards); SIGTERM and the clock can reach the ranks at different steps, so any rank's wins.
        preempted, due = agree_any(self.preempted, due)
        if preempted and not self.preempted:
            self.preempted = True
            say(f"{self.store.stage}: another rank got SIGTERM: checkpointing when this step ends")
        if self.preempted:
            control.should_save = True
            control.should_training_stop = True
        elif state.global_step >= state.max_steps:
            control.should_save = False  # the stage publishes the final model itself
        elif due:
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        step = state.global_step
        barrier()  # every rank has written its part (RNG state, ZeRO shards) before rank 0 uploads
        uri = self.store.step_uri(step)
        if is_main_process():
            tracking.flush()  # the metrics of the steps this checkpoint covers are stored before it is
            self.store.publish(Path(args.output_dir) / f"{PREFIX}{step}", step)
        barrier()
        self._last = time.monotonic()
        if self.preempted:
            if self._timer is not None:
                self._timer.cancel()
            say(f"{self.store.stage}: preempted: checkpoint {step} is complete; exiting with {PREEMPTED_EXIT}")
            raise Preempted(step, uri)
        return control
