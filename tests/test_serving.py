"""KServe manifests for a model (`src/alignpipe/serving.py`, `alignpipe model kserve`).

The ServiceAccount is checked with kubernetes-validate (the core Kubernetes schemas, strict); the
InferenceService against the v1beta1 openAPI schema extracted from KServe's own CRD
(`tests/distributed/schemas/inferenceservice.v1beta1.subset.schema.json`, see its `$comment`). The
registry case resolves `models:/NAME@champion` through a real MLflow Model Registry (the session's sqlite store).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from alignpipe import cli, serving

SCHEMA = json.loads((Path(__file__).parent / "distributed" / "schemas" /
                     "inferenceservice.v1beta1.subset.schema.json").read_text())
S3 = "s3://alignpipe/pipelines/rlhf-1a2b/rl/model"
ENDPOINT = "http://alignpipe-minio.team-a.svc:9000"


def check(docs: list[dict]) -> tuple[dict, dict]:
    sa, isvc = docs
    assert (sa["kind"], isvc["kind"]) == ("ServiceAccount", "InferenceService")
    kubernetes_validate.validate(sa, "1.30", strict=True)
    jsonschema.validate(isvc, SCHEMA)
    return sa, isvc


def test_schema_is_the_kserve_crd_and_catches_mistakes() -> None:
    assert "kserve/kserve" in SCHEMA["$comment"] and "serving.kserve.io_inferenceservices.yaml" in SCHEMA["$comment"]
    isvc = serving.kserve_manifests(S3, s3_endpoint=ENDPOINT)[1]
    bad = json.loads(json.dumps(isvc))
    bad["spec"]["predictor"]["model"]["storageURI"] = bad["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        jsonschema.validate(bad, SCHEMA)
    bad = json.loads(json.dumps(isvc))
    bad["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    bad = json.loads(json.dumps(isvc))
    del bad["spec"]["predictor"]["model"]["modelFormat"]["name"]
    with pytest.raises(jsonschema.ValidationError, match="'name' is a required property"):
        jsonschema.validate(bad, SCHEMA)


def test_explicit_s3_uri(monkeypatch) -> None:
    monkeypatch.setenv("ALIGNPIPE_S3_SECRET", "team-a-s3")
    sa, isvc = check(serving.kserve_manifests(S3, name="adder", namespace="team-a", gpus=2, s3_endpoint=ENDPOINT,
                                              max_model_len=2048))
    assert sa["metadata"] == {"name": "adder-s3", "namespace": "team-a",
                              "labels": {"app.kubernetes.io/part-of": "alignpipe",
                                         "app.kubernetes.io/component": "serving"},
                              "annotations": {"serving.kserve.io/s3-endpoint": "alignpipe-minio.team-a.svc:9000",
                                              "serving.kserve.io/s3-usehttps": "0",
                                              "serving.kserve.io/s3-region": "us-east-1"}}
    assert sa["secrets"] == [{"name": "team-a-s3"}]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["name"] == "adder"
    pred = isvc["spec"]["predictor"]
    assert pred["serviceAccountName"] == "adder-s3"
    m = pred["model"]
    assert m["modelFormat"] == {"name": "huggingface"} and m["storageUri"] == S3
    assert m["args"] == ["--model_name=adder", "--backend=vllm", "--tensor-parallel-size=2", "--max_model_len=2048"]
    assert m["resources"]["limits"]["nvidia.com/gpu"] == 2 == m["resources"]["requests"]["nvidia.com/gpu"]
    # the chart's default Secret name; https endpoint; AWS S3 (no endpoint annotations); CPU
    monkeypatch.delenv("ALIGNPIPE_S3_SECRET")
    for var in ("ALIGNPIPE_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    sa, isvc = check(serving.kserve_manifests("minio://alignpipe/m/policy", s3_endpoint="https://s3.example.com"))
    assert sa["secrets"] == [{"name": "alignpipe-s3"}]
    assert sa["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "1"
    assert isvc["metadata"]["name"] == "m-policy" and isvc["spec"]["predictor"]["model"]["storageUri"] == \
        "s3://alignpipe/m/policy"
    sa, isvc = check(serving.kserve_manifests(S3, gpus=0))
    assert "annotations" not in sa["metadata"]
    assert "nvidia.com/gpu" not in isvc["spec"]["predictor"]["model"]["resources"]["limits"]
    assert "--backend=huggingface" in isvc["spec"]["predictor"]["model"]["args"]


def register(source: str, alias: str = "champion") -> str:
    from mlflow.tracking import MlflowClient

    name = f"adder-{uuid.uuid4().hex[:6]}"
    client = MlflowClient()
    client.create_registered_model(name)
    mv = client.create_model_version(name, source=source)
    client.set_registered_model_alias(name, alias, mv.version)
    return name


def test_registered_champion_resolves_to_its_s3_folder(capsys) -> None:
    name = register(S3)
    assert cli.main(["model", "kserve", f"models:/{name}@champion", "--namespace", "team-a",
                     "--s3-endpoint", ENDPOINT, "--gpus", "1"]) == 0
    sa, isvc = check(list(yaml.safe_load_all(capsys.readouterr().out)))
    assert isvc["metadata"]["name"] == name and isvc["metadata"]["namespace"] == "team-a"
    assert isvc["metadata"]["annotations"] == {"alignpipe.io/model": f"models:/{name}@champion",
                                               "alignpipe.io/model-version": "1"}
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == S3
    assert sa["secrets"] == [{"name": "alignpipe-s3"}]


def test_unservable_inputs_are_one_line_errors(tmp_path, capsys) -> None:
    name = register(str(tmp_path))  # registered from a local folder: no s3:// source
    assert cli.main(["model", "kserve", f"{name}@champion", "--s3-endpoint", ENDPOINT]) == 2
    assert cli.main(["model", "kserve", S3, "--s3-endpoint", "http://127.0.0.1:9000"]) == 2
    assert cli.main(["model", "kserve", S3, "--name", "Bad_Name", "--s3-endpoint", ENDPOINT]) == 2
    assert cli.main(["model", "kserve", f"{name}@nope", "--s3-endpoint", ENDPOINT]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(e.startswith("error: ") for e in err)
    assert "is not an s3:// folder" in err[0] and "in-cluster" in err[1] and "Bad_Name" in err[2]
    assert "has no alias 'nope'" in err[3]
