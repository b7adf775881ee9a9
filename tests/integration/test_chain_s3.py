"""The whole rlhf chain on real servers: every stage reads and writes s3:// on moto (IAM auth on), tracked in
an MLflow server with a PostgreSQL store and artifacts proxied to S3; then the registered model is pulled
back through the registry and generates.

The chain runs once per module (tiny budgets: SFT 20 steps, RM 10, GRPO 4, eval on 50 prompts); the tests
below each check one promise about what it left behind.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from alignpipe import config, models, registry, storage, tracking

from . import services

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # the first test also runs the chain

BUCKET = "alignpipe"
MODEL_NAME = "alignpipe-demo"
STAGES = ["sft", "reward_model", "rl", "evaluate", "register"]
DATA_CONTEXTS = {  # stage -> {context: demo split} that stage logs as MLflow dataset inputs
    "sft": {"train": "sft_train"},
    "reward_model": {"train": "preference_train", "eval": "preference_eval"},
    "rl": {"train": "rl_train"},
    "evaluate": {"eval": "eval"},
}


def _sha256(p: str | Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def server_env(mp: pytest.MonkeyPatch, s3: services.S3Server, mlflow: services.MlflowServer, cache: Path,
               experiment: str) -> None:
    """What a KFP pod gets: S3 endpoint + keys, the tracking server, bounded MLflow HTTP retries."""
    for k, v in s3.env.items():
        mp.setenv(k, v)
    mp.delenv("AWS_SESSION_TOKEN", raising=False)
    mp.setenv("MLFLOW_TRACKING_URI", mlflow.tracking_uri)
    mp.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    mp.setenv("ALIGNPIPE_CACHE_DIR", str(cache))
    mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    mp.delenv(tracking.PARENT_ENV, raising=False)


def chain_configs(workdir: Path, data: dict[str, str], runs: str) -> dict[str, dict]:
    """The demo preset's stage configs with s3:// data and outputs, and step budgets a 2-core CI box runs in
    seconds."""
    from alignpipe import runs as pipeline_runs
    from alignpipe import steps

    cfgs = steps.preset_stage_configs(pipeline_runs.preset_params("demo", "rlhf"))
    m = {s: f"{runs}/models/{s}" for s in ("sft", "reward_model", "rl")}
    cfgs["sft"].update(model="tiny", train_data=data["sft_train"], output_dir=m["sft"], stop_at_accuracy=None,
                       training={**cfgs["sft"]["training"], "max_steps": 20, "batch_size": 32, "logging_steps": 5,
                                 "warmup_steps": 2})
    cfgs["reward_model"].update(model=m["sft"], train_data=data["preference_train"],
                                eval_data=data["preference_eval"], output_dir=m["reward_model"],
                                training={**cfgs["reward_model"]["training"], "max_steps": 10, "batch_size": 16,
                                          "warmup_steps": 1, "logging_steps": 5})
    cfgs["rl"].update(model=m["sft"], train_data=data["rl_train"], reward_model=m["reward_model"],
                      output_dir=m["rl"], grpo={**cfgs["rl"]["grpo"], "num_generations": 4},
                      training={**cfgs["rl"]["training"], "max_steps": 4, "batch_size": 8, "logging_steps": 1})
    cfgs["evaluate"].update(models={"base": "tiny", "sft": m["sft"], "rl": m["rl"]}, data=data["eval"],
                            reward_model=m["reward_model"], limit=50, output=str(workdir / "eval.json"),
                            k=2)
    cfgs["register"].update(model=m["rl"], metrics=str(workdir / "eval.json"), metrics_key="rl",
                            model_name=MODEL_NAME, gate_threshold=0.0)
    return cfgs


@pytest.fixture(scope="module")
def chain(s3_server: services.S3Server, mlflow_server: services.MlflowServer,
          tmp_path_factory: pytest.TempPathFactory) -> Any:
    import importlib

    from alignpipe.data.demo import write_demo_data

    rid = uuid.uuid4().hex[:8]
    work = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as mp:
        server_env(mp, s3_server, mlflow_server, work / "cache", f"chain-{rid}")
        local = write_demo_data(work / "data", max_operand=20, preference_pairs=200, eval_pairs=50)
        data = {}
        for name, path in local.items():
            data[name] = f"s3://{BUCKET}/datasets/{rid}/{Path(path).name}"
            storage.upload_file(path, data[name])
        runs = f"s3://{BUCKET}/runs/{rid}"
        cfgs = chain_configs(work, data, runs)
        results = {}
        with tracking.pipeline_run("rlhf", tags={"kfp.run_id": "test-run"}) as parent:
            for name in STAGES:
                cfg = config.validate(name, cfgs[name], source=f"test:{name}")
                results[name] = importlib.import_module(f"alignpipe.stages.{name}").run(cfg)
        print("chain stage seconds:", {n: round(r.seconds, 1) for n, r in results.items()})
        yield {"rid": rid, "work": work, "local": local, "data": data, "runs": runs, "cfgs": cfgs,
               "results": results, "parent": parent.run_id, "experiment": f"chain-{rid}",
               "s3": s3_server, "mlflow": mlflow_server}


@pytest.fixture
def env(chain: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    server_env(monkeypatch, chain["s3"], chain["mlflow"], tmp_path / "cache", chain["experiment"])
    return chain


def client(chain: Any) -> Any:
    from mlflow.tracking import MlflowClient

    uri = chain["mlflow"].tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def children(chain: Any) -> dict[str, Any]:
    c = client(chain)
    exp = c.get_experiment_by_name(chain["experiment"])
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{chain['parent']}'")
    by_stage: dict[str, Any] = {}
    for r in runs:
        stage = r.data.tags.get(tracking.TAG_STAGE)
        assert stage not in by_stage, f"two child runs for stage {stage}"
        by_stage[stage] = r
    return by_stage


# ------------------------------------------------------------------------------------------------ tests


def test_every_stage_published_a_complete_folder_to_s3(env: Any) -> None:
    s3 = env["s3"].client()
    for stage in ("sft", "reward_model", "rl"):
        uri = f"{env['runs']}/models/{stage}"
        assert env["results"][stage].output == uri
        m = storage.read_manifest(uri)  # raises unless complete and self-consistent
        prefix = f"runs/{env['rid']}/models/{stage}/"
        listed = {o["Key"][len(prefix):]: o["Size"]
                  for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
        assert listed.pop(storage.MANIFEST_NAME) > 0
        assert listed == {f.path: f.size for f in m.files}, "bucket holds exactly the manifest's files"
        body = s3.get_object(Bucket=BUCKET, Key=prefix + "config.json")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == next(f.sha256 for f in m.files if f.path == "config.json")
        assert models.missing_files(storage.fetch(uri)) == [], f"{stage}: incomplete model folder"
    # the stages really read their inputs from S3: the data objects are the demo files, byte for byte
    for name, uri in env["data"].items():
        assert storage.read_bytes(uri) == Path(env["local"][name]).read_bytes()


def test_registered_version_points_at_the_s3_uri(env: Any) -> None:
    c = client(env)
    reg = env["results"]["register"].lineage
    assert reg["alias"] == "champion" and reg["promoted"] == "true", reg
    mv = c.get_model_version_by_alias(MODEL_NAME, "champion")
    rl_uri = f"{env['runs']}/models/rl"
    assert mv.source == rl_uri == reg["source"]
    assert mv.version == reg["version"]
    assert mv.run_id == children(env)["register"].info.run_id
    assert mv.tags["alignpipe.model_uri"] == rl_uri
    assert mv.tags["alignpipe.gate_metric"] == "accuracy"
    evals = json.loads(Path(env["cfgs"]["evaluate"]["output"]).read_text())["models"]["rl"]
    assert float(mv.tags["alignpipe.gate_value"]) == pytest.approx(evals["accuracy"])
    assert float(mv.tags["eval.pass_at_2"]) == pytest.approx(evals["pass@2"])  # '@' is not allowed in tag keys
    # registration copied nothing: no model artifacts were logged to the register run
    assert c.list_artifacts(mv.run_id) == []


def test_parent_and_child_runs_carry_lineage_tags(env: Any) -> None:
    c = client(env)
    parent = c.get_run(env["parent"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kfp.run_id"] == "test-run"
    assert parent.data.tags["alignpipe.pipeline"] == "rlhf"
    kids = children(env)
    assert sorted(kids) == sorted(STAGES)
    for stage, run in kids.items():
        assert run.info.status == "FINISHED", stage
        assert run.data.tags[tracking.TAG_PARENT] == env["parent"]
        assert run.data.tags[tracking.TAG_STAGE_KEY] == stage
        assert run.data.tags["alignpipe.config_hash"], stage
        assert env["results"][stage].lineage["mlflow_run_id"] == run.info.run_id
    # the trainers' own metrics streamed into the child runs
    assert kids["sft"].data.metrics["train/steps"] == 20
    assert kids["reward_model"].data.metrics["train/steps"] == 10
    assert kids["rl"].data.metrics["train/steps"] == 4
    assert "eval/rl/accuracy" in kids["evaluate"].data.metrics
    assert kids["register"].data.metrics["registry/promoted"] == 1.0
    assert kids["sft"].data.params["cfg.output_dir"] == f"{env['runs']}/models/sft"


def test_dataset_inputs_were_logged_with_digests(env: Any) -> None:
    kids = children(env)
    for stage, contexts in DATA_CONTEXTS.items():
        inputs = kids[stage].inputs.dataset_inputs
        got = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}
        assert sorted(got) == sorted(contexts), stage
        for context, split in contexts.items():
            ds = got[context]
            uri, sha = env["data"][split], _sha256(env["local"][split])
            assert ds.digest == sha[:36], (stage, context)
            assert ds.source_type == "s3", (stage, context)
            assert uri in ds.source, (stage, context, ds.source)
            assert kids[stage].data.tags[f"alignpipe.data.{context}"] == f"{uri}@{sha[:16]}"


def test_mlflow_artifacts_are_proxied_into_the_bucket(env: Any) -> None:
    run = children(env)["evaluate"]
    exp_id = run.info.experiment_id
    key = f"{env['mlflow'].artifact_prefix}/{exp_id}/{run.info.run_id}/artifacts/eval.json"
    body = env["s3"].client().get_object(Bucket=env["mlflow"].artifact_bucket, Key=key)["Body"].read()
    assert json.loads(body)["models"]["rl"]["n"] == 50


def test_pull_champion_loads_and_generates(env: Any, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = registry.pull(f"{MODEL_NAME}@champion", tmp_path / "champion")
    assert dest == tmp_path / "champion"
    published = storage.read_manifest(f"{env['runs']}/models/rl")
    assert storage.read_manifest(dest).digest == published.digest
    for f in published.files:
        assert _sha256(dest / f.path) == f.sha256
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"

    model = AutoModelForCausalLM.from_pretrained(dest).eval()
    tok = AutoTokenizer.from_pretrained(dest)
    ids = tok("12+7=", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0, ids["input_ids"].shape[1]:]), str)

    # the same version by number and by MLflow's URI form
    version = env["results"]["register"].lineage["version"]
    for ref in (f"{MODEL_NAME}/{version}", f"models:/{MODEL_NAME}@champion"):
        d = registry.pull(ref, tmp_path / ref.replace("/", "_").replace(":", "").replace("@", "_"))
        assert storage.read_manifest(d).digest == published.digest


def test_model_pull_cli_hook(env: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`alignpipe model pull` (argparse in the CLI, errors through its one UserError boundary)."""
    from alignpipe.cli import main

    dest = tmp_path / "m"
    argv = ["model", "pull", f"{MODEL_NAME}@champion", str(dest)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"pulled {MODEL_NAME} v") and f"{env['runs']}/models/rl" in out and str(dest) in out
    assert models.missing_files(dest) == []
    # pulling again into the (now non-empty) folder is refused with one line; --force replaces it
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not empty" in err and "\n" not in err
    assert main(argv + ["--force"]) == 0


@pytest.mark.timeout(180)
def test_retried_stage_reattaches_to_its_unfinished_child_run(
        s3_server: services.S3Server, mlflow_server: services.MlflowServer, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """A KFP retry of a failed step (a new pod: only ALIGNPIPE_PARENT_RUN_ID links it) continues the same child
    run. Attempt 1 fails inside its run: its model is an s3:// folder whose upload never finished (no manifest)."""
    from mlflow.tracking import MlflowClient

    from alignpipe.data.demo import write_demo_data
    from alignpipe.stages import evaluate

    rid = uuid.uuid4().hex[:8]
    server_env(monkeypatch, s3_server, mlflow_server, tmp_path / "cache", f"retry-{rid}")
    data = write_demo_data(tmp_path / "data", max_operand=5, preference_pairs=10, eval_pairs=10)
    half = f"s3://{BUCKET}/runs/{rid}/models/rl"  # files uploaded, MANIFEST.json never written
    tiny = Path(models.resolve("tiny"))
    for f in tiny.iterdir():
        if f.is_file() and f.name != storage.MANIFEST_NAME:
            storage.upload_file(f, f"{half}/{f.name}")

    c = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    exp_id = c.create_experiment(f"retry-{rid}")
    parent = c.create_run(exp_id, run_name="rlhf", tags={"kfp.run_id": f"kfp-{rid}"}).info.run_id
    monkeypatch.setenv(tracking.PARENT_ENV, parent)

    def cfg(model: str) -> Any:
        return config.validate("evaluate", {"models": {"policy": model}, "data": data["eval"], "limit": 4,
                                            "max_new_tokens": 3, "output": str(tmp_path / "eval.json")})

    with pytest.raises(storage.StorageError, match=rf"{half}: no complete MANIFEST\.json"):
        evaluate.run(cfg(half))
    first = c.search_runs([exp_id], filter_string=f"tags.`{tracking.TAG_PARENT}` = '{parent}'")
    assert [(r.data.tags[tracking.TAG_STAGE_KEY], r.info.status) for r in first] == [("evaluate", "FAILED")]
    assert not (tmp_path / "eval.json").exists()

    result = evaluate.run(cfg("tiny"))  # the retry
    runs = c.search_runs([exp_id], filter_string=f"tags.`{tracking.TAG_PARENT}` = '{parent}'")
    assert len(runs) == 1, "the retry created a second child run"
    run = runs[0]
    assert run.info.run_id == first[0].info.run_id == result.lineage["mlflow_run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["alignpipe.resumed"] == "true"
    assert run.data.metrics["eval/policy/n"] == 4
