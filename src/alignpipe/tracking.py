"""MLflow tracking: one parent run per pipeline run, one child run per stage, lineage tags.

- Tracking URI: `MLFLOW_TRACKING_URI`, else `sqlite:///<ALIGNPIPE_WORKDIR or cwd>/mlflow.db`
  (MLflow 3's file store is in maintenance mode, so the local default is sqlite).
- Experiment: `MLFLOW_EXPERIMENT_NAME`, default `alignpipe`.
- Parent run: `pipeline_run()` creates it and exports `ALIGNPIPE_PARENT_RUN_ID`, which every stage
  (same process, subprocess, or a KFP pod given the variable) uses to nest its child run.
- Retries: a stage's child run is keyed by (parent run, stage key); a retried stage re-attaches to
  its unfinished child run instead of creating a duplicate.
- TRL/transformers metrics stream into the active child run (`report_to=["mlflow"]`).
- Writes are batched: inside a stage run MLflow logs asynchronously, one background thread merging what was
  logged in each `BATCH_SECONDS` into one write (TRL's GRPO/RLOO otherwise commit each of their per-step
  profiling timers to the store synchronously: ~6 commits a step); the queue is flushed, in order, before
  the run ends. `MLFLOW_ENABLE_ASYNC_LOGGING=false` set by the user turns this off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

from alignpipe import settings

PARENT_ENV = "ALIGNPIPE_PARENT_RUN_ID"
KFP_RUN_ENV = "KFP_RUN_ID"  # set on pipeline pods from the `pipeline/runid` label (pipelines/common.py)
KFP_WORKFLOW_ENV = "KFP_WORKFLOW_NAME"
TAG_KFP_RUN = "kfp.run_id"
TAG_PARENT = "mlflow.parentRunId"
TAG_STAGE = "alignpipe.stage"
TAG_STAGE_KEY = "alignpipe.stage_key"


def tracking_uri() -> str:
    s = settings.current()
    if s.mlflow_tracking_uri:
        return s.mlflow_tracking_uri
    workdir = s.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{workdir / 'mlflow.db'}"


def experiment_name() -> str:
    return settings.current().mlflow_experiment_name


def git_sha() -> str | None:
    sha = settings.current().git_sha
    if sha:
        return sha
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _setup():
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri())
    exp = mlflow.set_experiment(experiment_name())
    return mlflow, exp


#: MLflow's own switches for asynchronous, merged writes, set for the duration of a stage run unless the user
#: set them: merge one second's writes into one batch, written by one thread (so in the order they were logged).
BATCH_SECONDS = 1
ASYNC_LOGGING_ENV = {"MLFLOW_ENABLE_ASYNC_LOGGING": "true",
                     "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS": str(BATCH_SECONDS),
                     "MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE": "1"}


@contextlib.contextmanager
def batched_writes(mlflow) -> Iterator[None]:
    """Log asynchronously and merged inside the block; on the way out every queued write is flushed and the
    environment restored. A variable the user set keeps the user's value."""
    saved = {k: os.environ.get(k) for k in ASYNC_LOGGING_ENV}
    os.environ.update({k: v for k, v in ASYNC_LOGGING_ENV.items() if saved[k] is None})
    ok = False
    try:
        yield
        ok = True
    finally:
        try:
            mlflow.flush_async_logging()
        except Exception as e:  # noqa: BLE001 - a failing stage keeps its own error (see _end_run)
            if ok:
                raise
            logging.getLogger(__name__).warning("could not flush MLflow writes: %s", e)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)


def flush() -> None:
    """Write every queued MLflow write now. Called before a checkpoint is published, so that the metrics of
    the steps a checkpoint covers are stored whenever the checkpoint is (a killed process loses at most the
    writes of the steps after its last checkpoint, which the resumed run logs again). No-op without MLflow."""
    import sys

    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    try:
        mlflow.flush_async_logging()
    except Exception as e:  # noqa: BLE001 - tracking trouble must not cost the checkpoint
        logging.getLogger(__name__).warning("could not flush MLflow writes: %s", e)


def metric_key(name: str) -> str:
    """MLflow accepts alphanumerics, `_-. :/` in metric names: `pass@4` becomes `pass_at_4`."""
    return name.replace("@", "_at_")


class Tracker:
    """The active stage run; a disabled tracker accepts the same calls and does nothing."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.enabled and metrics:
            import mlflow

            mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()}, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled and params:
            import mlflow

            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled and tags:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})

    def log_dict(self, data: dict, name: str) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_dict(data, name)

    def log_input(self, uri: str, digest: str, context: str) -> None:
        """Dataset lineage: an MLflow dataset input with its source URI and content digest."""
        if not self.enabled:
            return
        import mlflow
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.http_dataset_source import HTTPDatasetSource

        try:
            from mlflow.data.dataset_source_registry import resolve_dataset_source

            source = resolve_dataset_source(uri)
        except Exception:  # noqa: BLE001 - any source we cannot resolve is recorded as a plain URI
            source = HTTPDatasetSource(url=uri)
        mlflow.log_input(MetaDataset(source=source, name=Path(uri).name, digest=digest[:36]), context=context)
        mlflow.set_tag(f"alignpipe.data.{context}", f"{uri}@{digest[:16]}")


@contextlib.contextmanager
def pipeline_run(pipeline: str, tags: dict[str, str] | None = None, enabled: bool = True) -> Iterator[Tracker]:
    """The parent run of a local pipeline run; children nest under it through ALIGNPIPE_PARENT_RUN_ID.
    (On a cluster the stages find their parent by the KFP run id instead: `kfp_parent_run`.)"""
    if not enabled:
        yield Tracker(None)
        return
    mlflow, _ = _setup()
    run = mlflow.start_run(run_name=pipeline, tags={"alignpipe.pipeline": pipeline, **(tags or {})})
    previous = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = run.info.run_id
    status = "FAILED"
    try:
        yield Tracker(run.info.run_id)
        status = "FINISHED"
    finally:
        _end_run(mlflow, run.info.run_id, status)
        if previous is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous


def _end_run(mlflow, run_id: str, status: str) -> None:
    """End the run; if the tracking server is gone while a stage is already failing, keep the stage's
    own error (it says what to fix) instead of replacing it with the server's."""
    try:
        mlflow.end_run(status=status)
    except Exception as e:  # noqa: BLE001
        if status == "FINISHED":
            raise
        logging.getLogger(__name__).warning("could not mark MLflow run %s %s: %s", run_id, status, e)


def kfp_parent_run(client, experiment_id: str) -> str | None:
    """On a cluster, the parent run of this KFP run: found by its `kfp.run_id` tag, else created.

    Stages of one pipeline run are separate pods with no shared process; they meet through this tag.
    The parent is a grouping run, marked FINISHED at creation (its children carry the work)."""
    s = settings.current()
    kfp_run = s.kfp_run_id
    if not kfp_run:
        return None
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_KFP_RUN}` = '{kfp_run}' and "
                               f"tags.`alignpipe.pipeline` != ''", max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id
    workflow = s.kfp_workflow_name or ""
    pipeline = workflow.rsplit("-", 1)[0] if "-" in workflow else (workflow or "kfp-run")
    run = client.create_run(experiment_id, run_name=workflow or f"kfp-{kfp_run[:8]}",
                            tags={"alignpipe.pipeline": pipeline, TAG_KFP_RUN: kfp_run, "kfp.workflow": workflow})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _find_unfinished_child(client, experiment_id: str, parent: str, key: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_PARENT}` = '{parent}' and tags.`{TAG_STAGE_KEY}` = '{key}'",
        max_results=10,
    )
    for r in runs:
        if r.info.status in ("RUNNING", "FAILED", "KILLED", "SCHEDULED"):
            return r.info.run_id
    return None


@contextlib.contextmanager
def stage_run(stage: str, cfg=None, enabled: bool = True, run_name: str | None = None,
              key: str | None = None) -> Iterator[Tracker]:
    """A child run for one stage (a top-level run when there is no parent). Only rank 0 of a
    multi-process run tracks."""
    from alignpipe.base import is_main_process

    if not enabled or not is_main_process():
        yield Tracker(None)
        return
    from mlflow.tracking import MlflowClient

    from alignpipe.config import config_hash, flatten

    mlflow, exp = _setup()
    parent = settings.current().parent_run_id or kfp_parent_run(MlflowClient(), exp.experiment_id)
    key = key or stage
    tags = {TAG_STAGE: stage, TAG_STAGE_KEY: key}
    if parent:
        tags[TAG_PARENT] = parent
    resume_id = _find_unfinished_child(MlflowClient(), exp.experiment_id, parent, key) if parent else None
    nested = mlflow.active_run() is not None  # in-process chain: the parent run is the active run
    if resume_id:
        run = mlflow.start_run(run_id=resume_id, nested=nested)
        mlflow.set_tag("alignpipe.resumed", "true")
    else:
        run = mlflow.start_run(run_name=run_name or stage, tags=tags, nested=nested)
    tracker = Tracker(run.info.run_id)
    status = "FAILED"
    try:
        with batched_writes(mlflow):
            if cfg is not None and not resume_id:
                tracker.log_params({f"cfg.{k}": v for k, v in flatten(cfg).items()})
                tracker.set_tags({"alignpipe.config_hash": config_hash(cfg), "alignpipe.git_sha": git_sha()})
            yield tracker
        status = "FINISHED"
    finally:
        _end_run(mlflow, tracker.run_id, status)
