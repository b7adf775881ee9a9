"""staged-rl (issue 12 §2, AceReason-style): compiled graph and parameters, the `stages` checks, and a run through
kfp.local on the tiny model with the multi-domain demo data: stage 1 RL on add2 only, stage 2 RL on sub2 only,
stage 2 starting from stage 1's model."""

import json
from pathlib import Path

import pytest
import yaml

from alignpipe import cli, runs
from alignpipe.config import ConfigError
from alignpipe.pipelines import staged_rl
from conftest import TINY_PARAMS

EDGES = {"prepare-data": set(), "sft": {"prepare-data"}, "rl-stage": set(), "rl-stage-2": set(),
         "rl": {"sft", "rl-stage"}, "evaluate": {"prepare-data", "sft", "rl", "rl-stage"},
         "rl-2": {"rl", "rl-stage-2"}, "evaluate-2": {"prepare-data", "sft", "rl-2", "rl-stage-2"},
         "register": {"rl-2", "evaluate-2", "rl-stage-2"}}


def _deps(task) -> set[str]:
    deps = set(task.get("dependentTasks", []))
    for kind, key in (("artifacts", "taskOutputArtifact"), ("parameters", "taskOutputParameter")):
        for a in task.get("inputs", {}).get(kind, {}).values():
            if key in a:
                deps.add(a[key]["producerTask"])
    return deps


def test_compiles_stage_after_stage(tmp_path):
    path = runs.compile_one("staged-rl", tmp_path / "staged.yaml", runs.platform_from("reg/cpu:1", "reg/gpu:1"))
    spec = next(yaml.safe_load_all(path.read_text()))
    assert spec["pipelineInfo"]["name"] == "alignpipe-staged-rl"
    tasks = spec["root"]["dag"]["tasks"]
    assert {t: _deps(v) for t, v in tasks.items()} == EDGES
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["stages"]["defaultValue"] == [{"name": "stage1"}, {"name": "stage2"}]
    assert {"rl_data", "rewards", "rl_config", "rl_steps", "rl_learning_rate", "evaluate_k"} <= set(params)
    # stage 2 starts from stage 1's model; each stage's RL settings come from its rl-stage step
    assert tasks["rl-2"]["inputs"]["artifacts"]["sft_model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model", "producerTask": "rl"}
    for rl, st in (("rl", "rl-stage"), ("rl-2", "rl-stage-2")):
        p = tasks[rl]["inputs"]["parameters"]
        for arg, out in (("rewards", "rewards"), ("config", "rl_config"), ("max_steps", "rl_steps"),
                         ("learning_rate", "rl_learning_rate")):
            assert p[arg]["taskOutputParameter"] == {"outputParameterKey": out, "producerTask": st}, (rl, arg)
        assert tasks[rl]["inputs"]["artifacts"]["train_data"]["taskOutputArtifact"]["producerTask"] == st
        assert tasks[rl]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["evaluate-2"]["inputs"]["parameters"]["tuned_name"]["taskOutputParameter"]["producerTask"] == "rl-stage-2"
    assert tasks["register"]["inputs"]["parameters"]["metrics_key"]["taskOutputParameter"]["producerTask"] == "rl-stage-2"
    # three stages: compiled in
    three = staged_rl.build(runs.platform_from(), num_stages=3)
    assert len(runs.parameters(three)["stages"][1]) == 3


def test_stages_are_checked_before_anything_runs():
    p = runs.load("staged-rl")
    runs.check_params(p, {"stages": [{"name": "math", "rl_steps": 5}, {"name": "code", "rewards": [{"name": "format"}]}]})
    with pytest.raises(ConfigError, match=r"compiled for 2 stages, got 1"):
        runs.check_params(p, {"stages": [{"name": "math"}]})
    with pytest.raises(ConfigError, match=r"stages\[1\].rl_config: grpo.num_generations"):
        runs.check_params(p, {"stages": [{}, {"rl_config": {"grpo": {"num_generations": 1}}}]})
    with pytest.raises(ConfigError, match=r"stages\[0\]: unknown key\(s\) rl_dataa"):
        runs.check_params(p, {"stages": [{"rl_dataa": "x"}, {}]})
    with pytest.raises(ConfigError, match=r"stages\[0\]: name 'a' is used by more than one stage"):
        runs.check_params(p, {"stages": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match=r"stages\[0\].rl_config: training.max_steps: set by"):
        runs.check_params(p, {"stages": [{"rl_config": {"training": {"max_steps": 3}}}, {}]})


def _multi_data(tmp_path, rows: int = 64) -> dict:
    from alignpipe.data.demo import write_demo_data

    files = write_demo_data(tmp_path / "demo", seed=0, multi_train_per_domain=200, multi_eval_per_domain=20)
    out = {}
    for param, name in (("sft_data", "multi_sft_train"), ("rl_data", "multi_rl_train"), ("eval_data", "multi_eval")):
        lines = Path(files[name]).read_text().splitlines()[:rows]
        out[param] = str(tmp_path / f"{param}.jsonl")
        Path(out[param]).write_text("\n".join(lines) + "\n")
    return out


def test_local_run_trains_stage_two_from_stage_one(tmp_path, capsys):
    data = _multi_data(tmp_path)
    only = lambda domain: {**TINY_PARAMS["rl_config"], "sampler": {"name": "mixture", "weights": {domain: 1.0}}}  # noqa: E731
    stages = [{"name": "add2", "rl_config": only("add2")},
              {"name": "sub2", "rl_config": only("sub2"), "rl_steps": 3, "rewards": [{"name": "exact_match", "weight": 2.0}]}]
    tiny = {k: v for k, v in TINY_PARAMS.items() if not k.startswith("reward_model")}
    params = {**tiny, **data, "stages": stages, "sft_steps": 3,
              "evaluate_config": {**TINY_PARAMS["evaluate_config"], "limit": 8, "bootstrap_resamples": 0, "kl": False}}
    work = tmp_path / "staged"
    args = ["run", "staged-rl", "--local", "--workdir", str(work)]
    for k, v in params.items():
        args += ["--param", f"{k}={json.dumps(v)}"]
    rc = cli.main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    s = json.loads((work / "summary.json").read_text())
    assert s["status"] == "succeeded" and set(s["eval"]) == {"base", "sft", "sub2"}  # the last stage's evaluation
    run_dir = Path(s["kfp_run_dir"])
    meta = {t: json.loads((run_dir / t / "executor_output.json").read_text())["artifacts"]["model"]["artifacts"][0]["metadata"]
            for t in ("sft", "rl", "rl-2")}
    # lineage: SFT -> stage 1 -> stage 2
    assert Path(meta["rl"]["parent_model"]) == run_dir / "sft" / "model"
    assert Path(meta["rl-2"]["parent_model"]) == run_dir / "rl" / "model"
    # each stage trained on its own domain only (the sampler's per-prompt store says what was drawn)
    for task, domain in (("rl", "add2"), ("rl-2", "sub2")):
        state = json.loads((run_dir / task / "model" / "sampler_state.json").read_text())
        drawn = {r["domain"] for r in state["records"] if r["attempts"]}
        assert drawn == {domain}, (task, drawn)
    # each stage its own settings: stage 2 ran 3 steps with exact_match weight 2 (stage 1: the shared 2 steps)
    import mlflow

    mlflow.set_tracking_uri(s["mlflow"]["tracking_uri"])
    p1, p2 = (mlflow.get_run(meta[t]["mlflow_run_id"]).data.params for t in ("rl", "rl-2"))
    assert (p1["cfg.training.max_steps"], p2["cfg.training.max_steps"]) == ("2", "3")
    assert "2.0" in p2["cfg.rewards"] and "2.0" not in p1["cfg.rewards"]
    # every stage evaluated, under its own name
    ev1 = json.loads((run_dir / "evaluate" / "results").read_text())
    ev2 = json.loads((run_dir / "evaluate-2" / "results").read_text())
    assert set(ev1["models"]) == {"base", "sft", "add2"} and set(ev2["models"]) == {"base", "sft", "sub2"}
    assert Path(ev2["model_uris"]["sub2"]) == run_dir / "rl-2" / "model"
    reg = json.loads((run_dir / "register" / "executor_output.json").read_text())
    assert reg["parameterValues"]["Output"]["model_name"]
