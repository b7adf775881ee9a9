"""Compile every pipeline and check the graph, the cluster wiring and the defaults in the YAML."""

import json
import re

import pytest
import yaml
from kfp.components import load_component_from_file

from alignpipe import config, platform, runs, steps
from alignpipe.base import UserError
from alignpipe.pipelines import common

GPU_STEPS = {
    "rlhf": {"sft": "sft", "reward-model": "reward_model", "rl": "rl", "evaluate": "evaluate"},
    "rlvr": {"sft": "sft", "rl": "rl", "evaluate": "evaluate"},
    "preference": {"sft": "sft", "preference": "preference", "evaluate": "evaluate"},
    "sft": {"sft": "sft", "evaluate": "evaluate"},
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
        paths = runs.compile_all(out, image="registry.example/alignpipe:cpu-1",
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


def test_defaults_come_from_the_schema_and_the_base_model_has_none(compiled):
    """The compiled packages' UI defaults are the schema's (settings for real models); no base model."""
    _, docs = compiled
    params = docs["rlhf"][0]["root"]["inputDefinitions"]["parameters"]
    assert params["base_model"]["defaultValue"] == ""
    for stage, sp in steps.STAGE_PARAMS.items():
        for t in sp.typed:
            if t.param in params and t.key != "model":
                want = config.default_value(stage, t.key)
                got = params[t.param].get("defaultValue", 0 if want == 0 else None)
                assert got == (pytest.approx(want) if isinstance(want, float) else want), t.param


def test_signatures_match_the_parameter_table():
    """Each component's typed arguments and each pipeline's typed parameters are the rows of
    steps.STAGE_PARAMS (a new knob is one row plus these explicit signatures)."""
    import inspect

    from alignpipe import components

    for stage, sp in steps.STAGE_PARAMS.items():
        comp = getattr(components, stage)
        args = set(inspect.signature(comp.python_func).parameters)
        assert {t.arg for t in sp.typed} <= args, stage
        assert "config" in args
    for name in runs.PIPELINES:
        params = set(runs.parameters(runs.load(name)))
        for stage, sp in steps.STAGE_PARAMS.items():
            if sp.config_param in params:
                missing = {t.param for t in sp.typed} - params
                assert not missing, f"{name}: {stage} parameters missing {missing}"
        typed = {t.param for sp in steps.STAGE_PARAMS.values() for t in sp.typed}
        other = params - typed - {sp.config_param for sp in steps.STAGE_PARAMS.values()}
        allowed = {*steps.DATA_PARAMS, *steps.FORMAT_PARAMS, "gpu_tolerations", "gpu_node_selector", "s3_secret",
                   "mlflow_secret", "reward_secret", "stages"}  # stages: staged-rl's list of RL stages
        acc = {f"{prefix}_accelerator_{k}" for prefix in common.ACCELERATOR_PREFIX.values() for k in ("type", "count")}
        assert other <= allowed | acc, f"{name}: parameters outside the tables: {other - allowed - acc}"


def test_demo_preset_compiles_into_the_package_defaults(tmp_path):
    paths = runs.compile_all(tmp_path, preset="demo", root="s3://team-bucket/pipelines")
    assert sorted(p.name for p in paths.values()) == ["preference-demo.yaml", "rlhf-demo.yaml", "rlvr-demo.yaml",
                                                      "sft-demo.yaml", "sft-rl-routed-demo.yaml", "staged-rl-demo.yaml"]
    docs = list(yaml.safe_load_all(paths["rlhf"].read_text()))
    params = docs[0]["root"]["inputDefinitions"]["parameters"]
    assert docs[0]["defaultPipelineRoot"] == "s3://team-bucket/pipelines"
    cfg = steps.preset_stage_configs(runs.preset_params("demo", "rlhf"))
    assert params["base_model"]["defaultValue"] == cfg["sft"]["model"] == "tiny"
    assert params["sft_steps"]["defaultValue"] == cfg["sft"]["training"]["max_steps"]
    assert params["sft_learning_rate"]["defaultValue"] == pytest.approx(cfg["sft"]["training"]["learning_rate"])
    assert params["reward_model_steps"]["defaultValue"] == cfg["reward_model"]["training"]["max_steps"]
    assert params["rl_steps"]["defaultValue"] == cfg["rl"]["training"]["max_steps"]
    assert params["rl_learning_rate"]["defaultValue"] == pytest.approx(cfg["rl"]["training"]["learning_rate"])
    assert params["rewards"]["defaultValue"] == cfg["rl"]["rewards"]
    assert params["evaluate_k"]["defaultValue"] == cfg["evaluate"]["k"]
    assert params["gate_threshold"]["defaultValue"] == pytest.approx(cfg["register"]["gate_threshold"])
    assert params["registry_model_name"]["defaultValue"] == cfg["register"]["model_name"]
    assert params["sft_config"]["defaultValue"]["training"]["batch_size"] == cfg["sft"]["training"]["batch_size"]
    assert params["rl_config"]["defaultValue"]["grpo"] == cfg["rl"]["grpo"]
    rlvr = list(yaml.safe_load_all(paths["rlvr"].read_text()))[0]["root"]["inputDefinitions"]["parameters"]
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
    monkeypatch.setenv("ALIGNPIPE_REWARD_SECRET", "team-reward-token")
    path = runs.compile_all(tmp_path, names=("rlvr",))["rlvr"]
    spec = next(yaml.safe_load_all(path.read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["rl_accelerator_type"]["defaultValue"] == "amd.com/gpu"
    assert params["gpu_node_selector"]["defaultValue"] == {"pool": "gpu"}
    assert params["gpu_tolerations"]["defaultValue"] == tol
    assert params["s3_secret"]["defaultValue"] == "team-s3"
    assert params["mlflow_secret"]["defaultValue"] == "team-mlflow"
    assert params["reward_secret"]["defaultValue"] == "team-reward-token"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"reg.example/a:1", "reg.example/a-gpu:1"}


def test_bad_platform_env_is_one_line(monkeypatch, tmp_path):
    from alignpipe.pipelines.common import PlatformError

    monkeypatch.setenv("ALIGNPIPE_GPU_TOLERATIONS", "{not json")
    with pytest.raises(PlatformError, match="ALIGNPIPE_GPU_TOLERATIONS: not valid JSON"):
        runs.compile_all(tmp_path, names=("sft",))


def test_check_params_validates_stage_configs():
    p = runs.load("rlhf")
    runs.check_params(p)  # defaults are valid
    with pytest.raises(Exception, match=r"rl_config: grpo.num_generations"):
        runs.check_params(p, {"rl_config": {"grpo": {"num_generations": 1}}})
    with pytest.raises(Exception, match=r"sft_config: training.max_steps: set by the pipeline parameter"):
        runs.check_params(p, {"sft_config": {"training": {"max_steps": 3}}})
    rlvr = runs.load("rlvr")
    with pytest.raises(Exception, match="reward_model is not set"):
        runs.check_params(rlvr, {"rewards": [{"name": "reward_model"}]})
    with pytest.raises(runs.PipelineError, match="expected an integer"):
        runs.parse_params(p, ["sft_steps=many"])
    with pytest.raises(runs.PipelineError, match="unknown parameter"):
        runs.parse_params(p, ["sft_stepz=3"])
    assert runs.parse_params(p, ["sft_steps=3", "gate_threshold=1", 'rewards=[{"name": "exact_match"}]']) == {
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
        assert "| `base_model` | string | `\"\"` |" in mod.params_table(docs[name][0])


def test_accelerator_count_is_the_gpu_count_and_nodes_reach_the_stage(compiled):
    """One knob: `<step>_accelerator_count` feeds both the pod's accelerator limit and the stage's
    distributed.gpus; `<step>_nodes` and `multinode_kind` reach the stage too."""
    _, docs = compiled
    tasks = docs["rlhf"][0]["root"]["dag"]["tasks"]
    for task, prefix in (("sft", "sft"), ("reward-model", "reward_model"), ("rl", "rl")):
        params = tasks[task]["inputs"]["parameters"]
        assert params["gpus"]["componentInputParameter"] == f"{prefix}_accelerator_count"
        assert params["nodes"]["componentInputParameter"] == f"{prefix}_nodes"
        assert params["multinode_kind"]["componentInputParameter"] == "multinode_kind"
    p = runs.load("rlhf")
    values = runs.check_params(p, {"rl_accelerator_count": 4, "rl_nodes": 2})
    typed = {t.arg: values[t.param] for t in steps.STAGE_PARAMS["rl"].typed}
    cfg = steps.stage_config("rl", values["rl_config"], typed, {"model": "/m", "train_data": "/d",
                                                                 "output_dir": "s3://b/rl"})
    assert (cfg.distributed.gpus, cfg.distributed.nodes, cfg.distributed.multinode) == (4, 2, "trainjob")
    with pytest.raises(UserError, match="distributed.gpus: set by the pipeline parameter sft_accelerator_count"):
        runs.check_params(p, {"sft_config": {"distributed": {"gpus": 8}}})


def test_training_steps_keep_their_state_under_the_pipeline_root(tmp_path, monkeypatch):
    """With a pipeline root on object storage, training pods get ALIGNPIPE_STATE_URI under it, so a retried pod
    (new, empty /cache) finds the checkpoints of its first attempt; without one nothing is set."""
    monkeypatch.delenv("ALIGNPIPE_STATE_URI", raising=False)
    monkeypatch.delenv("ALIGNPIPE_ARTIFACT_ROOT", raising=False)
    path = runs.compile_all(tmp_path / "a", names=("sft",), root="s3://team/pipelines")["sft"]
    execs = yaml.safe_load_all(path.read_text()).__next__()["deploymentSpec"]["executors"]
    env = {e["name"]: e["value"] for e in execs["exec-sft"]["container"].get("env", [])}
    assert env["ALIGNPIPE_STATE_URI"] == "s3://team/pipelines/alignpipe-state"
    plain = runs.compile_all(tmp_path / "b", names=("sft",))["sft"]
    execs = yaml.safe_load_all(plain.read_text()).__next__()["deploymentSpec"]["executors"]
    assert "ALIGNPIPE_STATE_URI" not in {e["name"] for e in execs["exec-sft"]["container"].get("env", [])}


# ------------------------------------------------------------------ the reward service's token (issue 13)


def _secret_env(plat: dict, task: dict) -> set[tuple]:
    k = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"][task["componentRef"]["name"].replace("comp-", "exec-")]
    return {(s["secretNameParameter"]["componentInputParameter"], kv["secretKey"], kv["envVar"], s["optional"])
            for s in k["secretAsEnv"] for kv in s["keyToEnv"]}


@pytest.mark.parametrize("name", list(EDGES))
def test_rl_and_evaluate_take_the_reward_token_optionally(compiled, name):
    """The RL and evaluate steps get ALIGNPIPE_REWARD_TOKEN (what alignpipe.rewards.code reads) from the Secret
    named by `reward_secret`, optional (a cluster without the reward service runs the same pipeline); the
    other steps never see it."""
    _, docs = compiled
    spec, plat = docs[name]
    for t, task in _tasks(spec).items():
        token = {e for e in _secret_env(plat, task) if e[2] == "ALIGNPIPE_REWARD_TOKEN"}
        if t in ("rl", "evaluate"):
            assert token == {("reward_secret", "ALIGNPIPE_REWARD_TOKEN", "ALIGNPIPE_REWARD_TOKEN", True)}, t
        else:
            assert not token, t
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["reward_secret"]["defaultValue"] == common.Platform().reward_secret == "alignpipe-reward-server"
    with pytest.raises(runs.PipelineError, match="reward_secret: 'Bad_Name' is not a Kubernetes Secret name"):
        runs.check_params(runs.load(name), {"reward_secret": "Bad_Name"})


def test_the_reward_secret_default_is_the_one_the_chart_creates():
    """The chart (release `alignpipe`, rewardServer.enabled) creates the token Secret under the pipelines' default
    name and key, in the namespace the pipelines run in."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec_ = importlib.util.spec_from_file_location("render_manifests", root / "scripts" / "render_manifests.py")
    rm = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(rm)
    values = yaml.safe_load((root / "helm" / "alignpipe" / "values.yaml").read_text())
    assert values["rewardServer"]["token"] == {"existingSecret": "", "key": "ALIGNPIPE_REWARD_TOKEN"}
    out = rm.render_chart({"rewardServer": {"enabled": True}}, name="alignpipe", namespace="kubeflow",
                          chart=root / "helm" / "alignpipe")
    secrets = [d for _, d in rm.split_docs(out) if d and d["kind"] == "Secret"
               and d["metadata"]["name"] == common.Platform().reward_secret]
    assert [d["metadata"]["namespace"] for d in secrets] == ["kubeflow"]
    assert set(secrets[0]["data"]) == set(common.REWARD_TOKEN_KEYS) == {values["rewardServer"]["token"]["key"]}
    assert set(common.REWARD_TOKEN_KEYS.values()) == {"ALIGNPIPE_REWARD_TOKEN"}
    # The pipeline-defaults ConfigMap (what the upload job compiles with) names the Secret the chart created,
    # or the existing Secret when one is given.
    def defaults_cm(rendered):
        return next(d for _, d in rm.split_docs(rendered) if d and d["kind"] == "ConfigMap"
                    and d["metadata"]["name"].endswith("pipeline-defaults"))

    assert defaults_cm(out)["data"]["ALIGNPIPE_REWARD_SECRET"] == secrets[0]["metadata"]["name"]
    mine = rm.render_chart({"rewardServer": {"enabled": True, "token": {"existingSecret": "mine"}}}, name="team",
                           namespace="kubeflow", chart=root / "helm" / "alignpipe")
    assert defaults_cm(mine)["data"]["ALIGNPIPE_REWARD_SECRET"] == "mine"


# ------------------------------------------------------------------------------ rl_engine, ppo (issue 11)


def _rl_cfg(name: str, given: dict):
    values = runs.check_params(runs.load(name), given)
    typed = {t.arg: values[t.param] for t in steps.STAGE_PARAMS["rl"].typed}
    paths = {"model": "/m", "train_data": "/d", "output_dir": "/o"}
    if name == "rlhf":
        paths["reward_model"] = "/rm"
    notes: list[str] = []
    return steps.stage_config("rl", values["rl_config"], typed, paths, notes=notes), notes


def test_rl_engine_and_ppo_in_rlhf_and_rlvr(compiled):
    _, docs = compiled
    for name in ("rlhf", "rlvr"):
        params = docs[name][0]["root"]["inputDefinitions"]["parameters"]
        assert params["rl_engine"]["defaultValue"] == "trl"
        assert docs[name][0]["root"]["dag"]["tasks"]["rl"]["inputs"]["parameters"]["engine"] == {
            "componentInputParameter": "rl_engine"}
    cfg, notes = _rl_cfg("rlhf", {})
    assert (cfg.algorithm, cfg.engine, notes) == ("grpo", "trl", [])
    cfg, notes = _rl_cfg("rlhf", {"rl_engine": "alignpipe"})
    assert (cfg.algorithm, cfg.engine, notes) == ("grpo", "alignpipe", [])
    # ppo: runs on alignpipe's engine (TRL has none); in rlhf the critic starts from the reward model
    cfg, notes = _rl_cfg("rlhf", {"rl_algorithm": "ppo"})
    assert (cfg.algorithm, cfg.engine, cfg.engine_settings.critic.init) == ("ppo", "alignpipe", "reward_model")
    assert notes == [steps.PPO_ENGINE_NOTE, steps.CRITIC_NOTE]
    cfg, notes = _rl_cfg("rlhf", {"rl_algorithm": "ppo", "rl_engine": "alignpipe",
                                  "rl_config": {"engine_settings": {"critic": {"init": "policy", "lam": 0.9}}}})
    assert (cfg.engine_settings.critic.init, cfg.engine_settings.critic.lam, notes) == ("policy", 0.9, [])
    cfg, notes = _rl_cfg("rlhf", {"rl_algorithm": "ppo", "rl_config": {"engine_settings": {"critic": {"lam": 0.9}}}})
    assert (cfg.engine_settings.critic.init, cfg.engine_settings.critic.lam) == ("reward_model", 0.9)
    cfg, notes = _rl_cfg("rlvr", {"rl_algorithm": "ppo"})  # no reward model: the critic is a copy of the policy
    assert (cfg.engine, cfg.engine_settings.critic.init, notes) == ("alignpipe", "policy", [steps.PPO_ENGINE_NOTE])
    with pytest.raises(UserError, match="rl_config: engine: set by the pipeline parameter rl_engine"):
        runs.check_params(runs.load("rlvr"), {"rl_config": {"engine": "alignpipe"}})
    with pytest.raises(runs.PipelineError, match="rl_engine"):
        runs.parse_params(runs.load("sft"), ["rl_engine=alignpipe"])
