"""`alignpipe model kserve` and `alignpipe diff` on versions registered by the register stage in the real MLflow
server (PostgreSQL store) with their weights published to moto's S3: the InferenceService's storageUri is the
version's s3:// folder, and diff reads two registered versions from S3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file, save_file

from alignpipe import models, serving, storage
from alignpipe.config import RegisterConfig
from alignpipe.evaluation import diff
from alignpipe.stages import register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SCHEMA = json.loads((Path(__file__).parents[1] / "distributed" / "schemas" /
                     "inferenceservice.v1beta1.subset.schema.json").read_text())
UP = "model.layers.0.mlp.up_proj.weight"


def test_kserve_and_diff_of_registered_s3_versions(mlflow_env: dict[str, Any], tmp_path: Path) -> None:
    name, prefix = mlflow_env["name"], mlflow_env["prefix"]
    v1 = f"{prefix}/v1/model"
    storage.publish_dir(models.resolve("tiny"), v1)
    changed = tmp_path / "changed"
    shutil.copytree(models.resolve("tiny"), changed)
    (f,) = changed.glob("*.safetensors")
    state = load_file(str(f))
    state[UP].view(-1)[:7] += 0.25
    save_file(state, str(f), metadata={"format": "pt"})
    (changed / storage.MANIFEST_NAME).unlink(missing_ok=True)
    v2 = f"{prefix}/v2/model"
    storage.publish_dir(changed, v2)
    assert register.run(RegisterConfig(model=v1, model_name=name)).lineage["source"] == v1  # the register stage
    client = MlflowClient(mlflow_env["mlflow"].tracking_uri, mlflow_env["mlflow"].tracking_uri)
    assert client.create_model_version(name, source=v2).version == "2"  # a second version, directly (faster)

    sa, isvc = serving.kserve_manifests(f"models:/{name}/2", namespace="team-a",
                                        s3_endpoint="http://alignpipe-minio.team-a.svc:9000")
    kubernetes_validate.validate(sa, "1.30", strict=True)
    jsonschema.validate(isvc, SCHEMA)
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == v2
    assert isvc["metadata"]["annotations"]["alignpipe.io/model-version"] == "2"
    assert sa["secrets"] == [{"name": "alignpipe-s3"}]

    d = diff.diff_models(f"models:/{name}/1", f"models:/{name}/2")
    assert d.model_a["source"] == f"models:/{name}/1 = version 1, {v1}"
    assert d.overall["changed"] == 7 and d.overall["most_changed"] == UP
    assert [t["name"] for t in d.tensors if t["changed"]] == [UP]
