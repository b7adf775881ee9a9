"""Tracking: child runs nest under a parent — in-process, through the env, and on a cluster by KFP run id."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from alignpipe import tracking


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 't.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tracking-test")
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 't.db'}")


def _runs(client):
    exp = client.get_experiment_by_name("tracking-test")
    return client.search_runs([exp.experiment_id])


def test_stages_of_one_kfp_run_share_a_parent_found_by_run_id(store, monkeypatch):
    monkeypatch.setenv(tracking.KFP_RUN_ENV, "3f2a-run")
    monkeypatch.setenv(tracking.KFP_WORKFLOW_ENV, "alignpipe-rlhf-x7k2p")
    for stage in ("sft", "rl"):  # two pods: no shared process, only the env KFP gives them
        with tracking.stage_run(stage) as tr:
            tr.log_metrics({"train/loss": 1.0})
    runs = _runs(store)
    parents = [r for r in runs if r.data.tags.get("kfp.run_id") == "3f2a-run"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["alignpipe.pipeline"] == "alignpipe-rlhf"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["alignpipe.stage"] for r in children) == ["rl", "sft"]


def test_failed_stage_is_resumed_not_duplicated(store):
    with tracking.pipeline_run("rlhf") as parent:
        with pytest.raises(RuntimeError):
            with tracking.stage_run("evaluate"):
                raise RuntimeError("boom")
        with tracking.stage_run("evaluate") as again:
            pass
    runs = [r for r in _runs(store) if r.data.tags.get("alignpipe.stage") == "evaluate"]
    assert len(runs) == 1 and runs[0].info.run_id == again.run_id
    assert runs[0].data.tags.get("alignpipe.resumed") == "true"
    assert runs[0].data.tags["mlflow.parentRunId"] == parent.run_id


def test_metric_keys_are_mlflow_safe():
    assert tracking.metric_key("eval/rl/pass@4") == "eval/rl/pass_at_4"


def test_stage_writes_are_batched_and_every_metric_lands_in_order(store, monkeypatch):
    import os

    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for k in tracking.ASYNC_LOGGING_ENV:
        monkeypatch.delenv(k, raising=False)
    writes = []  # one entry per metrics write to the store (one transaction each)
    log_metrics = SqlAlchemyStore._log_metrics

    def counting_log_metrics(self, run_id, metrics):
        writes.append(len(metrics))
        return log_metrics(self, run_id, metrics)

    monkeypatch.setattr(SqlAlchemyStore, "_log_metrics", counting_log_metrics)
    n = 300
    with tracking.stage_run("rl") as tr:
        assert os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] == "true"
        for step in range(n):
            mlflow.log_metrics({"profiling/Time taken: _generate": float(step)}, step=step)  # as TRL's timers do
            tr.log_metrics({"train/loss": 1.0 / (step + 1), "pass@4": 0.5}, step=step)
    for k in tracking.ASYNC_LOGGING_ENV:  # the environment is restored after the stage
        assert k not in os.environ
    run = store.get_run(tr.run_id)
    assert run.info.status == "FINISHED"
    timer = store.get_metric_history(tr.run_id, "profiling/Time taken: _generate")
    assert [m.step for m in timer] == list(range(n)) and [m.value for m in timer] == [float(s) for s in range(n)]
    loss = store.get_metric_history(tr.run_id, "train/loss")
    assert [m.step for m in loss] == list(range(n)) and loss[-1].value == 1.0 / n
    assert len(store.get_metric_history(tr.run_id, "pass_at_4")) == n
    assert sum(writes) == 3 * n
    assert len(writes) < n // 10, f"{len(writes)} writes for {3 * n} metrics: not batched"


def test_a_user_can_keep_mlflow_writes_synchronous(store, monkeypatch):
    import os

    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    with tracking.stage_run("sft") as tr:
        assert os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] == "false"
        tr.log_metrics({"train/loss": 1.0}, step=1)
    assert os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] == "false"
    assert store.get_run(tr.run_id).data.metrics["train/loss"] == 1.0
