"""sft-rl-routed (issue 12 §2, DeReason-style): compiled graph and parameters, and a run through kfp.local on the
tiny model where the route step really splits the prompts by pass rate."""

import json
from pathlib import Path

import yaml

from alignpipe import cli, runs
from conftest import TINY_PARAMS

#: task -> the tasks it depends on (data edges).
EDGES = {"prepare-data": set(), "sft": {"prepare-data"}, "route": {"prepare-data", "sft"}, "sft-2": {"route", "sft"},
         "rl": {"route", "sft-2"}, "evaluate": {"prepare-data", "sft-2", "rl"}, "register": {"rl", "evaluate"}}


def _deps(task) -> set[str]:
    deps = set(task.get("dependentTasks", []))
    for a in task.get("inputs", {}).get("artifacts", {}).values():
        if "taskOutputArtifact" in a:
            deps.add(a["taskOutputArtifact"]["producerTask"])
    return deps


def test_compiles_with_the_route_step_and_its_parameters(tmp_path):
    path = runs.compile_one("sft-rl-routed", tmp_path / "routed.yaml", runs.platform_from("reg/cpu:1", "reg/gpu:1"))
    spec, plat = list(yaml.safe_load_all(path.read_text()))
    assert spec["pipelineInfo"]["name"] == "alignpipe-sft-rl-routed"
    tasks = spec["root"]["dag"]["tasks"]
    assert {t: _deps(v) for t, v in tasks.items()} == EDGES
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"route_k", "route_threshold", "route_config", "route_accelerator_type", "rewards", "rl_steps"} <= set(params)
    assert params["route_k"]["defaultValue"] == 8 and params["route_threshold"]["defaultValue"] == 0.5
    route = tasks["route"]
    assert route["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {"outputArtifactKey": "model", "producerTask": "sft"}
    assert route["inputs"]["artifacts"]["prompts"]["taskOutputArtifact"]["outputArtifactKey"] == "rl_train"
    assert route["inputs"]["parameters"]["rewards"]["componentInputParameter"] == "rewards"
    # the easy split feeds the second SFT (from the warm-up model), the hard split feeds RL
    assert tasks["sft-2"]["inputs"]["artifacts"]["train_data"]["taskOutputArtifact"]["outputArtifactKey"] == "easy"
    assert tasks["sft-2"]["inputs"]["artifacts"]["init_model"]["taskOutputArtifact"]["producerTask"] == "sft"
    assert tasks["rl"]["inputs"]["artifacts"]["train_data"]["taskOutputArtifact"]["outputArtifactKey"] == "hard"
    execu = spec["deploymentSpec"]["executors"][route["componentRef"]["name"].replace("comp-", "exec-")]["container"]
    assert execu["image"] == "reg/gpu:1" and execu["resources"]["accelerator"]["resourceType"].endswith(
        "route_accelerator_type']}}")
    assert route["retryPolicy"]["maxRetryCount"] == 2 and route["cachingOptions"].get("enableCache") is True
    assert tasks["sft"]["taskInfo"]["name"] != tasks["sft-2"]["taskInfo"]["name"]
    assert "exec-route" in plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _small_data(tmp_path, rows: int = 48) -> dict:
    from alignpipe.data.demo import write_demo_data

    files = write_demo_data(tmp_path / "demo", seed=0)
    out = {}
    for param, name in (("sft_data", "sft_train"), ("rl_data", "rl_train"), ("eval_data", "eval")):
        lines = Path(files[name]).read_text().splitlines()[:rows]
        out[param] = str(tmp_path / f"{param}.jsonl")
        Path(out[param]).write_text("\n".join(lines) + "\n")
    return out


def test_local_run_routes_easy_prompts_to_sft_and_hard_ones_to_rl(tmp_path, capsys):
    # A verifier the briefly trained tiny model passes on some samples: an answer holding a digit 0-4. (Exact match
    # needs minutes of SFT; what is tested here is the routing, whatever the verifier.)
    digits = [{"name": "format", "weight": 1.0, "kwargs": {"pattern": "[0-4]", "mode": "search"}}]
    tiny = {k: v for k, v in TINY_PARAMS.items() if not k.startswith("reward_model")}
    params = {**tiny, **_small_data(tmp_path), "sft_steps": 3, "rewards": digits, "route_k": 4,
              "route_threshold": 0.5, "route_config": {"max_new_tokens": 5, "batch_size": 64},
              "evaluate_config": {**TINY_PARAMS["evaluate_config"], "limit": 8, "bootstrap_resamples": 0, "kl": False}}
    work = tmp_path / "routed"
    args = ["run", "sft-rl-routed", "--local", "--workdir", str(work)]
    for k, v in params.items():
        args += ["--param", f"{k}={json.dumps(v)}"]
    rc = cli.main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    s = json.loads((work / "summary.json").read_text())
    assert s["status"] == "succeeded" and set(s["eval"]) == {"base", "sft", "rl"}
    run_dir = Path(s["kfp_run_dir"])

    rates = json.loads((run_dir / "route" / "pass_rates" / "pass_rates.json").read_text())
    counts = rates["counts"]
    assert counts["prompts"] == 48 and counts["easy"] + counts["hard"] == 48
    assert counts["easy"] > 0 and counts["hard"] > 0, counts
    records = rates["prompts"]
    assert all(r["pass_rate"] >= 0.5 for r in records if r["routed"] == "easy")
    assert all(r["pass_rate"] < 0.5 for r in records if r["routed"] == "hard")
    easy = [json.loads(x) for x in (run_dir / "route" / "easy").read_text().splitlines()]
    hard = [json.loads(x) for x in (run_dir / "route" / "hard").read_text().splitlines()]
    assert (len(easy), len(hard)) == (counts["easy"], counts["hard"])
    assert all(set(r) == {"prompt", "completion"} for r in easy)  # SFT rows: the prompt and its reference answer
    assert all({"answer", "domain", "difficulty", "pass_rate"} <= set(r) for r in hard)  # RL rows keep their columns

    # the second SFT trained on the easy split from the warm-up model; RL trained on the hard split from it
    execs = {t: json.loads((run_dir / t / "executor_output.json").read_text()) for t in ("route", "sft-2", "rl")}
    route_metrics = execs["route"]["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert (route_metrics["route/easy"], route_metrics["route/hard"]) == (counts["easy"], counts["hard"])
    sft2 = execs["sft-2"]["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert Path(sft2["parent_model"]) == run_dir / "sft" / "model"
    rl = execs["rl"]["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert Path(rl["parent_model"]) == run_dir / "sft-2" / "model"

    import mlflow

    mlflow.set_tracking_uri(s["mlflow"]["tracking_uri"])
    children = mlflow.search_runs(search_all_experiments=True,
                                  filter_string=f"tags.mlflow.parentRunId = '{s['mlflow']['run_id']}'")
    route_runs = children[children["tags.alignpipe.stage"] == "route"]
    assert len(route_runs) == 1 and route_runs["metrics.route/easy"].iloc[0] == counts["easy"]
