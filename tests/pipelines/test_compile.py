"""Compile every pipeline and check the graph, the cluster wiring and the defaults in the YAML."""

import json
import re

import pytest
import yaml
from kfp.components import load_component_from_file

from alignpipe import demo, kfp_local, platform

GPU_STEPS = {
    "rlhf": {"sft": "sft", "reward-model": "reward_model", "rl": "rl", "evaluate": "eval"},
    "rlvr": {"sft": "sft", "rl": "rl", "evaluate": "eval"},
    "preference": {"sft": "sft", "preference": "dpo", "evaluate": "eval"},
    "sft": {"sft": "sft", "evaluate": "eval"},
}
CPU_STEPS = {"prepare-data", "register"}
TRAINING = {"sft", "reward-model", "rl", "preference"}
#: task -> the tasks it must depend on (data edges), per pipeline.
EDGES = {
    "rlhf": {"prepare-data": set(), "sft": {"prepare-data"}, "reward-model": {"prepare-data", "sft"},
             "rl": {"prepare-data", "sft", "reward-model"},
             "evaluate": {"prepare-data", "sft", "rl", "reward-model"}, "register": {"rl", "evaluate"}},
    "rlvr": {"prepare-data": set(), "sft": {"prepare-data"}, "rl": {"prepare-data", "sft"},
             "evaluate": {"prepare-data", "sft", "rl"}, "register": {"rl", "evaluate"}},
    "preference": {"prepare-data": set(), "sft": {"prepare-data"}, "preference": {"prepare-data", "sft"},
                   "evaluate": {"prepare-data", "sft", "preference"}, "register": {"preference", "evaluate"}},
    "sft": {"prepare-data": set(), "sft": {"prepare-data"}, "evaluate": {"prepare-data", "sft"},
            "register": {"sft", "evaluate"}},
}
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE1234", "AWS_SECRET_ACCESS_KEY": "zzFakeSecretValue0123456789",
                    "MLFLOW_TRACKING_TOKEN": "fake-mlflow-token-98765"}
CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_TOKEN", "AWS_SESSION_TOKEN"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    with pytest.MonkeyPatch.context() as mp:  # credentials in the compiling shell must not leak into the YAML
        for k, v in FAKE_CREDENTIALS.items():
            mp.setenv(k, v)
        paths = kfp_local.compile_all(out, image="registry.example/alignpipe:cpu-1",
                                      gpu_image="registry.example/alignpipe:gpu-1")
    docs = {n: list(yaml.safe_load_all(p.read_text())) for n, p in paths.items()}
    return paths, docs


def _tasks(spec):
    return spec["root"]["dag"]["tasks"]


def _deps(task) -> set[str]:
    deps = set(task.get("dependentTasks", []))
    for a in task.get("inputs", {}).get("artifacts", {}).values():
        if "taskOutputArtifact" in a:
            deps.add(a["taskOutputArtifact"]["producerTask"])
    return deps


@pytest.mark.parametrize("name", list(EDGES))
def test_graph_and_edges(compiled, name):
    _, docs = compiled
    spec = docs[name][0]
    tasks = _tasks(spec)
    assert set(tasks) == set(EDGES[name])
    for t, deps in EDGES[name].items():
        assert _deps(tasks[t]) == deps, t
    assert spec["pipelineInfo"]["name"] == f"alignpipe-{name}"
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", spec["pipelineInfo"]["name"])


@pytest.mark.parametrize("name", list(EDGES))
def test_resources_images_retries_caching_display_names(compiled, name):
    _, docs = compiled
    spec = docs[name][0]
    tasks = _tasks(spec)
    executors = spec["deploymentSpec"]["executors"]
    for t, task in tasks.items():
        execu = executors[task["componentRef"]["name"].replace("comp-", "exec-")]["container"]
        res = execu["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert res.get(key), (t, key)
        assert task["taskInfo"]["name"] != t, f"{t} has no display name"
        if t in GPU_STEPS[name]:
            prefix = GPU_STEPS[name][t]
            acc = res["accelerator"]
            assert acc["resourceType"] == f"{{{{$.inputs.parameters['pipelinechannel--{prefix}_accelerator_type']}}}}"
            assert acc["resourceCount"] == f"{{{{$.inputs.parameters['pipelinechannel--{prefix}_accelerator_count']}}}}"
            assert execu["image"] == "registry.example/alignpipe:gpu-1"
        else:
            assert t in CPU_STEPS and "accelerator" not in res
            assert execu["image"] == "registry.example/alignpipe:cpu-1"
        if t in TRAINING:
            assert task["retryPolicy"]["maxRetryCount"] == 2
        else:
            assert "retryPolicy" not in task
        assert bool(task.get("cachingOptions", {}).get("enableCache")) == (t in {"reward-model", "rl", "preference"}), t
        assert all(e["name"] not in CREDENTIAL_ENV for e in execu.get("env", []))


@pytest.mark.parametrize("name", list(EDGES))
def test_platform_spec(compiled, name):
    _, docs = compiled
    spec, plat = docs[name]
    executors = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    tasks = _tasks(spec)
    for t, task in tasks.items():
        k = executors[task["componentRef"]["name"].replace("comp-", "exec-")]
        secrets = {(s["secretNameParameter"]["componentInputParameter"], kv["envVar"], s["optional"])
                   for s in k["secretAsEnv"] for kv in s["keyToEnv"]}
        assert ("s3_secret", "AWS_ACCESS_KEY_ID", False) in secrets
        assert ("s3_secret", "AWS_SECRET_ACCESS_KEY", False) in secrets
        assert ("mlflow_secret", "MLFLOW_TRACKING_URI", False) in secrets
        mounts = {m["mountPath"]: m for m in k["emptyDirMounts"]}
        assert "/cache" in mounts
        field_env = {f["name"]: f["fieldPath"] for f in k["fieldPathAsEnv"]}
        assert field_env["KFP_RUN_ID"] == "metadata.labels['pipeline/runid']", "stages find their MLflow parent by it"
        if t in GPU_STEPS[name]:
            assert mounts["/dev/shm"]["medium"] == "Memory"
            assert k["tolerations"] == [{"tolerationJson": {"componentInputParameter": "gpu_tolerations"}}]
            assert k["nodeSelector"] == {"nodeSelectorJson": {"componentInputParameter": "gpu_node_selector"}}
        else:
            assert "/dev/shm" not in mounts and "tolerations" not in k
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["s3_secret"]["defaultValue"] == platform.S3_SECRET_NAME
    assert defaults["mlflow_secret"]["defaultValue"] == platform.MLFLOW_SECRET_NAME


@pytest.mark.parametrize("name", list(EDGES))
def test_no_credential_literal(compiled, name):
    paths, _ = compiled
    text = paths[name].read_text()
    for value in FAKE_CREDENTIALS.values():
        assert value not in text
    for pattern in (r"AKIA[0-9A-Z]{16}", r"minioadmin", r"(?i)password", r"(?i)bearer\s+\S", r"\btesting\b",
                    r"(?i)(secret|token)['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{16,}"):
        assert not re.search(pattern, text), pattern


@pytest.mark.parametrize("name", list(EDGES))
def test_yaml_loads_back_as_component(compiled, name):
    paths, docs = compiled
    comp = load_component_from_file(str(paths[name]))
    assert comp.name == f"alignpipe-{name}"
    assert set(comp.component_spec.inputs) == set(docs[name][0]["root"]["inputDefinitions"]["parameters"])


def test_defaults_are_the_demo_settings(compiled):
    _, docs = compiled
    params = docs["rlhf"][0]["root"]["inputDefinitions"]["parameters"]
    cfg = demo.demo_configs("/w", 0)
    assert params["base_model"]["defaultValue"] == cfg["sft"]["model"]
    assert params["sft_steps"]["defaultValue"] == cfg["sft"]["training"]["max_steps"]
    assert params["sft_learning_rate"]["defaultValue"] == pytest.approx(cfg["sft"]["training"]["learning_rate"])
    assert params["reward_model_steps"]["defaultValue"] == cfg["reward_model"]["training"]["max_steps"]
    assert params["rl_steps"]["defaultValue"] == cfg["rl"]["training"]["max_steps"]
    assert params["rl_learning_rate"]["defaultValue"] == pytest.approx(cfg["rl"]["training"]["learning_rate"])
    assert params["rewards"]["defaultValue"] == cfg["rl"]["rewards"]
    assert params["eval_k"]["defaultValue"] == cfg["evaluate"]["k"]
    assert params["gate_threshold"]["defaultValue"] == pytest.approx(cfg["register"]["gate_threshold"])
    assert params["registry_model_name"]["defaultValue"] == cfg["register"]["model_name"]
    assert params["sft_config"]["defaultValue"]["training"]["batch_size"] == cfg["sft"]["training"]["batch_size"]
    assert params["rl_config"]["defaultValue"]["grpo"] == cfg["rl"]["grpo"]
    rlvr = docs["rlvr"][0]["root"]["inputDefinitions"]["parameters"]
    assert all(r["name"] != "reward_model" for r in rlvr["rewards"]["defaultValue"])


def test_environment_sets_compile_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNPIPE_IMAGE", "reg.example/a:1")
    monkeypatch.setenv("ALIGNPIPE_GPU_IMAGE", "reg.example/a-gpu:1")
    monkeypatch.setenv("ALIGNPIPE_GPU_RESOURCE", "amd.com/gpu")
    monkeypatch.setenv("ALIGNPIPE_GPU_NODE_SELECTOR", json.dumps({"pool": "gpu"}))
    tol = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    monkeypatch.setenv("ALIGNPIPE_GPU_TOLERATIONS", json.dumps(tol))
    monkeypatch.setenv("ALIGNPIPE_S3_SECRET", "team-s3")
    monkeypatch.setenv("ALIGNPIPE_MLFLOW_SECRET", "team-mlflow")
    path = kfp_local.compile_all(tmp_path, names=("rlvr",))["rlvr"]
    spec = next(yaml.safe_load_all(path.read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["rl_accelerator_type"]["defaultValue"] == "amd.com/gpu"
    assert params["gpu_node_selector"]["defaultValue"] == {"pool": "gpu"}
    assert params["gpu_tolerations"]["defaultValue"] == tol
    assert params["s3_secret"]["defaultValue"] == "team-s3"
    assert params["mlflow_secret"]["defaultValue"] == "team-mlflow"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"reg.example/a:1", "reg.example/a-gpu:1"}


def test_bad_platform_env_is_one_line(monkeypatch, tmp_path):
    from alignpipe.pipelines.common import PlatformError

    monkeypatch.setenv("ALIGNPIPE_GPU_TOLERATIONS", "{not json")
    with pytest.raises(PlatformError, match="ALIGNPIPE_GPU_TOLERATIONS: not valid JSON"):
        kfp_local.compile_all(tmp_path, names=("sft",))


def test_check_params_validates_stage_configs():
    p = kfp_local.load("rlhf")
    kfp_local.check_params(p)  # defaults are valid
    with pytest.raises(Exception, match=r"rl_config: grpo.num_generations"):
        kfp_local.check_params(p, {"rl_config": {"grpo": {"num_generations": 1}}})
    with pytest.raises(Exception, match=r"sft_config: training.max_steps: set by the pipeline parameter"):
        kfp_local.check_params(p, {"sft_config": {"training": {"max_steps": 3}}})
    rlvr = kfp_local.load("rlvr")
    with pytest.raises(Exception, match="reward_model is not set"):
        kfp_local.check_params(rlvr, {"rewards": [{"name": "reward_model"}]})
    with pytest.raises(kfp_local.PipelineError, match="expected an integer"):
        kfp_local.parse_params(p, ["sft_steps=many"])
    with pytest.raises(kfp_local.PipelineError, match="unknown parameter"):
        kfp_local.parse_params(p, ["sft_stepz=3"])
    assert kfp_local.parse_params(p, ["sft_steps=3", "gate_threshold=1", 'rewards=[{"name": "exact_match"}]']) == {
        "sft_steps": 3, "gate_threshold": 1.0, "rewards": [{"name": "exact_match"}]}


def test_graph_script_draws_every_compiled_edge(compiled):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "pipeline_graphs.py"
    spec_ = importlib.util.spec_from_file_location("pipeline_graphs", path)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    _, docs = compiled
    for name, edges in EDGES.items():
        chart = mod.mermaid(docs[name][0])
        for task, deps in edges.items():
            for dep in deps:
                assert re.search(rf"\b{dep.replace('-', '_')} -- \w+ --> {task.replace('-', '_')}\b", chart), (name, dep, task)
        assert "| `base_model` | string | `\"tiny:0\"` |" in mod.params_table(docs[name][0])
