"""lm-eval offline: the shipped example task runs on the tiny model; tasks that would download are refused."""

from __future__ import annotations

import pytest

from alignpipe.config import LmEvalSettings
from alignpipe.evaluation import harness

pytest.importorskip("lm_eval")


def test_example_task_data_is_built_from_the_demo_data(tmp_path):
    built = harness.build_example_task(tmp_path)
    assert built.read_text() == (harness.TASKS_DIR / "alignpipe_arith.jsonl").read_text()


def test_task_that_would_download_is_refused(tmp_path):
    (tmp_path / "mmlu_like.yaml").write_text("task: mmlu_like\ndataset_path: cais/mmlu\noutput_type: multiple_choice\n")
    with pytest.raises(harness.LmEvalError, match="refusing to run, it would download dataset_path 'cais/mmlu'"):
        harness.prepare_tasks(["mmlu_like"], str(tmp_path), tmp_path / "out")


def test_builtin_task_is_refused(tmp_path):
    with pytest.raises(harness.LmEvalError, match="'hellaswag' is not defined in .*built-in tasks download"):
        harness.prepare_tasks(["hellaswag"], None, tmp_path)


def test_missing_local_data_is_a_clear_error(tmp_path):
    (tmp_path / "t.yaml").write_text("task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: nope.jsonl\n")
    with pytest.raises(harness.LmEvalError, match="data file .*nope.jsonl not found"):
        harness.prepare_tasks(["t"], str(tmp_path), tmp_path)


def test_relative_data_files_resolve_beside_the_yaml(tmp_path):
    out = tmp_path / "derived"
    out.mkdir()
    harness.prepare_tasks(["alignpipe_arith"], None, out)
    text = (out / "alignpipe_arith.yaml").read_text()
    assert str(harness.TASKS_DIR / "alignpipe_arith.jsonl") in text and "include:" in text


def test_example_task_runs_offline_on_the_tiny_model():
    from alignpipe import models

    flat, docs = harness.run_model(models.resolve("tiny"), LmEvalSettings(tasks=["alignpipe_arith"], limit=8,
                                                                          batch_size=8))
    acc = flat["lm_eval/alignpipe_arith/acc"]
    assert 0.0 <= acc <= 1.0 and "lm_eval/alignpipe_arith/acc_stderr" in flat
    assert len(docs["lm_eval/alignpipe_arith/acc"]) == 8
    assert sum(docs["lm_eval/alignpipe_arith/acc"]) / 8 == pytest.approx(acc)
