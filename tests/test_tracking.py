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
