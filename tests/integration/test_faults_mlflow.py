"""Faults around object storage and tracking, on the real servers: what fails, with which message, how fast,
and which consistent state it leaves.

The contract these tests pin down (README, "Faults, and the state they leave"):

- MLflow unreachable at registration: the model stays **published in S3** (complete MANIFEST.json) and
  **unregistered**; re-running the register step registers it (one version, the alias the gate decides).
- MLflow freezing in the middle of registration: while it hangs, nothing is registered (no version, no alias);
  the step fails within MLFLOW_HTTP_REQUEST_TIMEOUT. When the server resumes it may still complete the request
  it had received, leaving a version *without alias* that points at the same complete folder (harmless); the
  re-run registers the version that gets the alias. No alias ever points at an incomplete model.
- Data missing on S3: the stage fails before training with one line naming the URI; no run, nothing published.
- A model folder on S3 without MANIFEST.json (an upload that never finished) is refused by models.resolve and
  by register; nothing is trained on it, nothing is registered.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from alignpipe import models, storage, tracking
from alignpipe.config import RegisterConfig, SFTConfig
from alignpipe.stages import register

from . import services

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

BUCKET = "alignpipe"


def mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions(uri: str, name: str) -> list[Any]:
    return list(mlflow_client(uri).search_model_versions(f"name = '{name}'"))


def registered(uri: str, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client(uri).get_registered_model(name)
        return True
    except MlflowException:
        return False


def keys_under(s3: services.S3Server, uri: str) -> dict[str, int]:
    prefix = uri.removeprefix(f"s3://{BUCKET}/") + "/"
    r = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"][len(prefix):]: o["Size"] for o in r.get("Contents", [])}


def publish_policy(env: dict[str, Any], tmp_path: Path, accuracy: float = 0.5) -> tuple[str, Path]:
    """A complete model folder published to S3 (the embedded tiny model) and an eval metrics file for the gate."""
    uri = f"{env['prefix']}/models/rl"
    storage.publish_dir(models.resolve("tiny"), uri)
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"models": {"rl": {"accuracy": accuracy, "n": 50.0}}}))
    return uri, metrics


def half_published(env: dict[str, Any], name: str) -> str:
    """Every file of a model uploaded, MANIFEST.json never written: what a crashed upload leaves."""
    uri = f"{env['prefix']}/models/{name}"
    for f in Path(models.resolve("tiny")).iterdir():
        if f.is_file() and f.name != storage.MANIFEST_NAME:
            storage.upload_file(f, f"{uri}/{f.name}")
    return uri


def test_mlflow_down_at_registration_leaves_the_model_published_and_unregistered(
        mlflow_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    uri, metrics = publish_policy(mlflow_env, tmp_path)
    before = keys_under(mlflow_env["s3"], uri)
    cfg = RegisterConfig(model=uri, model_name=mlflow_env["name"], metrics=str(metrics), metrics_key="rl",
                         gate_threshold=0.3)
    port = services.free_port()  # nothing listens there: the tracking server is down
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    t = time.monotonic()
    with pytest.raises(register.RegistrationError) as e:
        register.run(cfg)
    assert time.monotonic() - t < 20, "registration against a dead server must fail in bounded time"
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "Connection refused" in msg, msg
    assert "stays published and unregistered" in msg and "\n" not in msg, msg

    # consistent state: published in S3 exactly as before, nothing in the registry
    assert storage.read_manifest(uri).files and keys_under(mlflow_env["s3"], uri) == before
    assert not registered(mlflow_env["mlflow"].tracking_uri, mlflow_env["name"])

    # the server is back: re-running the step registers it, once
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_env["mlflow"].tracking_uri)
    res = register.run(cfg)
    assert (res.lineage["version"], res.lineage["alias"], res.lineage["source"]) == ("1", "champion", uri)
    assert [v.source for v in versions(mlflow_env["mlflow"].tracking_uri, mlflow_env["name"])] == [uri]


def test_mlflow_freezing_mid_registration(
        mlflow_env: dict[str, Any], private_mlflow_server: services.MlflowServer,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The tracking server stops answering (SIGSTOP) just as the version is being created."""
    from mlflow.tracking import MlflowClient

    frozen = private_mlflow_server
    observer = mlflow_env["mlflow"].tracking_uri  # the session server: same PostgreSQL store, stays up
    uri, metrics = publish_policy(mlflow_env, tmp_path)
    name = mlflow_env["name"]
    cfg = RegisterConfig(model=uri, model_name=name, metrics=str(metrics), metrics_key="rl", gate_threshold=0.3)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", frozen.tracking_uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")

    original = MlflowClient.create_model_version

    def freeze_then_create(self: Any, *a: Any, **kw: Any) -> Any:
        os.killpg(frozen.service.pgid, signal.SIGSTOP)
        return original(self, *a, **kw)

    monkeypatch.setattr(MlflowClient, "create_model_version", freeze_then_create)
    t = time.monotonic()
    with pytest.raises(Exception) as e:  # noqa: PT011
        register.run(cfg)
    took = time.monotonic() - t
    assert took < 30, f"a frozen server held registration for {took:.0f}s"
    assert "timed out" in str(e.value).lower() and frozen.tracking_uri.split("//")[1] in str(e.value), str(e.value)

    # while the server hangs: the registered model exists (created before the freeze) but has no version,
    # and so no alias — nothing half-registered is visible
    assert registered(observer, name)
    assert versions(observer, name) == []
    assert storage.read_manifest(uri).files

    # the server resumes; it may finish the request it had received: at most one version, without alias
    os.killpg(frozen.service.pgid, signal.SIGCONT)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not versions(observer, name):
        time.sleep(0.2)
    ghosts = versions(observer, name)
    assert len(ghosts) <= 1 and all(not v.aliases and v.source == uri for v in ghosts), ghosts

    # the re-run registers the version that gets the alias
    monkeypatch.setattr(MlflowClient, "create_model_version", original)
    res = register.run(cfg)
    assert res.lineage["alias"] == "champion" and res.lineage["source"] == uri
    champ = mlflow_client(observer).get_model_version_by_alias(name, "champion")
    assert champ.version == res.lineage["version"] == str(len(ghosts) + 1)
    for v in versions(observer, name):  # every version points at the complete published folder
        assert v.source == uri
    assert storage.read_manifest(champ.source).digest == storage.read_manifest(uri).digest


def test_missing_data_on_s3_fails_before_training_naming_the_uri(
        mlflow_env: dict[str, Any], tmp_path: Path) -> None:
    from alignpipe.data import DataError
    from alignpipe.stages import sft

    out = f"{mlflow_env['prefix']}/models/sft"
    cases = {
        f"{mlflow_env['prefix']}/datasets/sft_train.jsonl": "does not exist",
        "s3://no-such-bucket-here/datasets/sft_train.jsonl": "no-such-bucket-here",
    }
    with tracking.pipeline_run("rlhf", tags={"kfp.run_id": f"kfp-{mlflow_env['rid']}"}) as parent:
        for data_uri, why in cases.items():
            cfg = SFTConfig(model="tiny", train_data=data_uri, output_dir=out, training={"max_steps": 2})
            t = time.monotonic()
            with pytest.raises(DataError) as e:
                sft.run(cfg)
            assert time.monotonic() - t < 30
            msg = str(e.value)
            assert "\n" not in msg and msg.startswith(data_uri) and why in msg, msg
    # nothing was trained, tracked as a stage or published
    kids = mlflow_client(mlflow_env["mlflow"].tracking_uri).search_runs(
        [mlflow_client(mlflow_env["mlflow"].tracking_uri).get_run(parent.run_id).info.experiment_id],
        filter_string=f"tags.`{tracking.TAG_PARENT}` = '{parent.run_id}'")
    assert kids == []
    assert keys_under(mlflow_env["s3"], out) == {}


def test_s3_model_without_manifest_is_refused(mlflow_env: dict[str, Any], tmp_path: Path) -> None:
    from alignpipe.stages import sft
    from alignpipe.stages.register import RegistrationError

    half = half_published(mlflow_env, "rl")
    assert "config.json" in keys_under(mlflow_env["s3"], half)  # the files are there, the manifest is not

    with pytest.raises(storage.StorageError, match=rf"^{half}: no complete MANIFEST\.json — the upload did not "
                                                   r"finish; re-run the step that publishes it$"):
        models.resolve(half)

    with pytest.raises(RegistrationError, match=rf"^refusing to register {half}: {half}: no complete MANIFEST"):
        register.run(RegisterConfig(model=half, model_name=mlflow_env["name"]))
    assert not registered(mlflow_env["mlflow"].tracking_uri, mlflow_env["name"])

    # a stage given it as its starting model stops before training and publishes nothing
    out = f"{mlflow_env['prefix']}/models/sft"
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1=", "completion": str(i + 1)}) + "\n" for i in range(8)))
    with pytest.raises(storage.StorageError, match=rf"^{half}: no complete MANIFEST\.json"):
        sft.run(SFTConfig(model=half, train_data=str(data), output_dir=out, tracking=False,
                          training={"max_steps": 2}))
    assert keys_under(mlflow_env["s3"], out) == {}
