"""Whole pipelines through kfp.local (SubprocessRunner), driven by the CLI as a user would."""

import json
from pathlib import Path

import numpy as np
import pytest

from alignpipe import cli
from conftest import TINY_PARAMS


def _param_args(params: dict) -> list[str]:
    out = []
    for k, v in params.items():
        out += ["--param", f"{k}={json.dumps(v)}"]
    return out


def test_rlhf_local_run_end_to_end(tmp_path, capsys):
    work = tmp_path / "rlhf"
    rc = cli.main(["run", "rlhf", "--local", "--workdir", str(work)] + _param_args(TINY_PARAMS))
    out = capsys.readouterr().out
    assert rc == 0, out
    s = json.loads((work / "summary.json").read_text())
    assert s["pipeline"] == "rlhf" and s["status"] == "succeeded"
    assert set(s["eval"]) == {"base", "sft", "rl"}
    for m in s["eval"].values():
        assert 0.0 <= m["accuracy"] <= 1.0 and "distinct_2" in m
    assert set(s["registry"]) >= {"model_name", "version", "alias", "promoted"}
    assert s["registry"]["alias"] in ("champion", "challenger")
    assert s["mlflow"]["tracking_uri"].startswith("sqlite:///") and s["mlflow"]["run_id"]
    assert s["seconds"] > 0 and set(s["stage_seconds"]) == {"sft", "reward_model", "rl", "evaluate", "register"}
    assert "eval/pairwise_accuracy" in s["reward_model"]
    for task in ("prepare-data", "sft", "reward-model", "rl", "evaluate", "register"):
        assert f"> {task} ..." in out and f"< {task}: ok" in out
        assert (work / "logs" / f"{task}.log").stat().st_size > 0
    assert "held-out evaluation" in out

    # MLflow: one parent run, the stage runs nested under it
    import mlflow

    mlflow.set_tracking_uri(s["mlflow"]["tracking_uri"])
    children = mlflow.search_runs(search_all_experiments=True,
                                  filter_string=f"tags.mlflow.parentRunId = '{s['mlflow']['run_id']}'")
    assert set(children["tags.alignpipe.stage"]) == {"sft", "reward_model", "rl", "evaluate", "register"}


def test_rlhf_ppo_runs_with_a_critic_from_the_reward_model(tmp_path, capsys):
    """`rl_algorithm=ppo` in rlhf (issue 11): the RL step runs PPO on alignpipe's engine (the default rl_engine=trl
    does not apply to ppo, and the step says so) with the critic initialised from the reward model the pipeline
    trained, and the policy moves."""
    import mlflow
    from safetensors.numpy import load_file

    from alignpipe import steps

    from alignpipe.data.demo import write_demo_data

    files = write_demo_data(tmp_path / "demo", seed=0)
    data = {}
    for param, name in (("sft_data", "sft_train"), ("preference_data", "preference_train"),
                        ("preference_eval_data", "preference_eval"), ("rl_data", "rl_train"), ("eval_data", "eval")):
        rows = [json.loads(line) for line in Path(files[name]).read_text().splitlines()[:64]]  # small: a quick run
        if param == "sft_data":  # SFT data as another tool writes it (alpaca), detected and converted by prepare-data
            rows = [{"instruction": r["prompt"][0]["content"], "input": "", "output": r["completion"][0]["content"]}
                    for r in rows]
        data[param] = str(tmp_path / f"{param}.jsonl")
        Path(data[param]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = tmp_path / "ppo"
    params = {**TINY_PARAMS, **data, "rl_algorithm": "ppo", "rl_learning_rate": 1e-3, "sft_steps": 2,
              "reward_model_steps": 2, "evaluate_config": {**TINY_PARAMS["evaluate_config"], "limit": 8}}
    rc = cli.main(["run", "rlhf", "--local", "--workdir", str(work)] + _param_args(params))
    out = capsys.readouterr().out
    assert rc == 0, out
    s = json.loads((work / "summary.json").read_text())
    run_dir = Path(s["kfp_run_dir"])
    sft_data = json.loads((run_dir / "prepare-data" / "executor_output.json").read_text())
    sft_meta = sft_data["artifacts"]["sft_train"]["artifacts"][0]["metadata"]
    assert (sft_meta["source_format"], sft_meta["format"], sft_meta["rows"]) == ("alpaca", "messages", 64)
    rl_out = json.loads((run_dir / "rl" / "executor_output.json").read_text())
    meta = rl_out["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert (meta["algorithm"], meta["engine"], meta["critic"]) == ("ppo", "alignpipe", "reward_model")
    assert Path(meta["reward_model"]) == run_dir / "reward-model" / "model"
    log = (work / "logs" / "rl.log").read_text()
    assert steps.PPO_ENGINE_NOTE in log and steps.CRITIC_NOTE in log
    mlflow.set_tracking_uri(s["mlflow"]["tracking_uri"])
    run = mlflow.get_run(meta["mlflow_run_id"])
    p = run.data.params
    assert (p["cfg.algorithm"], p["cfg.engine"], p["cfg.engine_settings.critic.init"]) == ("ppo", "alignpipe",
                                                                                           "reward_model")
    assert (p["engine.advantage"], p["engine.loss"], p["engine.needs_critic"]) == ("gae", "ppo_clip", "True")
    assert "train/value_loss" in run.data.metrics
    sft_w = load_file(str(run_dir / "sft" / "model" / "model.safetensors"))
    rl_w = load_file(str(run_dir / "rl" / "model" / "model.safetensors"))
    assert sft_w.keys() == rl_w.keys()
    moved = [k for k in sft_w if not np.array_equal(sft_w[k], rl_w[k])]
    assert moved, "PPO left every weight of the SFT model unchanged"


def test_failed_task_is_named_with_its_log(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1="}\n')
    work = tmp_path / "failing"
    rc = cli.main(["run", "sft", "--local", "--workdir", str(work), "--param", f"sft_data={bad}",
                   "--param", f"eval_data={bad}", "--param", "base_model=tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    log = work / "logs" / "prepare-data.log"
    assert err[0].startswith("error: pipeline sft: task prepare-data failed") and str(log) in err[0]
    assert "bad.jsonl:1" in log.read_text()
    s = json.loads((work / "summary.json").read_text())
    assert s["status"] == "failed" and s["failed_task"] == "prepare-data"


@pytest.mark.slow
def test_demo_learns(tmp_path, capsys):
    """The calibrated demo (`alignpipe demo` = rlhf through kfp.local with the defaults) meets its targets."""
    work = tmp_path / "demo"
    assert cli.main(["demo", "--workdir", str(work)]) == 0
    s = json.loads((work / "summary.json").read_text())
    ev = s["eval"]
    assert ev["sft"]["accuracy"] >= ev["base"]["accuracy"] + 0.20, ev
    assert ev["rl"]["accuracy"] >= ev["sft"]["accuracy"] + 0.05, ev
    assert s["registry"]["promoted"] is True, s["registry"]


def test_rerun_reuses_unchanged_steps_and_retrains_changed_ones(tmp_path, monkeypatch):
    """Content-addressed reuse through the pipeline: the same inputs twice -> the second run's SFT step reuses
    the first one's model (`reused_from` in its metadata); one changed data row -> a new digest, trained again."""
    from pathlib import Path

    from alignpipe.data.demo import write_demo_data

    monkeypatch.delenv("ALIGNPIPE_FORCE_RERUN", raising=False)  # (the suite forces re-runs elsewhere)
    monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / "state"))  # this test's own reuse records
    files = write_demo_data(tmp_path / "data", seed=0)
    params = {"base_model": "tiny", "sft_data": str(files["sft_train"]), "eval_data": str(files["eval"]),
              "sft_steps": TINY_PARAMS["sft_steps"], "sft_config": TINY_PARAMS["sft_config"],
              "evaluate_k": 1, "evaluate_config": TINY_PARAMS["evaluate_config"]}
    work = tmp_path / "w"

    def sft_model_metadata() -> dict:
        assert cli.main(["run", "sft", "--local", "--workdir", str(work)] + _param_args(params)) == 0
        summary = json.loads((work / "summary.json").read_text())
        out = json.loads((Path(summary["kfp_run_dir"]) / "sft" / "executor_output.json").read_text())
        return out["artifacts"]["model"]["artifacts"][0]["metadata"]

    first = sft_model_metadata()
    assert "reused_from" not in first
    second = sft_model_metadata()
    assert second["reused_from"] and second["reuse_key"] and second["train_digest"] == first["train_digest"]
    rows = Path(files["sft_train"]).read_text().splitlines()
    row = json.loads(rows[0])
    row["completion"][0]["content"] += "0"  # one changed row
    Path(files["sft_train"]).write_text("\n".join([json.dumps(row)] + rows[1:]) + "\n")
    third = sft_model_metadata()
    assert "reused_from" not in third and third["train_digest"] != first["train_digest"]
