"""alignpipe.registry.pull against the real MLflow server (PostgreSQL store, proxied S3 artifacts) and moto S3.

Both kinds of version source are pulled (an s3:// published folder, and files logged to MLflow's artifact
store), and every way a pull can go wrong ends in one line, within bounded time, with no folder left behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from alignpipe import models, registry, storage
from alignpipe.config import RegisterConfig
from alignpipe.registry import RegistryError
from alignpipe.stages import register

from . import services

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BUCKET = "alignpipe"


def tiny_dir() -> Path:
    return Path(models.resolve("tiny"))


def client(env: dict[str, Any]) -> Any:
    from mlflow.tracking import MlflowClient

    uri = env["mlflow"].tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def no_leftovers(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


def test_pull_s3_source_by_alias_and_version(mlflow_env: dict[str, Any], tmp_path: Path) -> None:
    uri = f"{mlflow_env['prefix']}/policy"
    published = storage.publish_dir(tiny_dir(), uri)
    res = register.run(RegisterConfig(model=uri, model_name=mlflow_env["name"]))
    assert res.lineage["alias"] == "challenger"  # no metrics -> no gate value -> never champion
    assert res.lineage["source"] == uri

    got = registry.pull_model(f"{mlflow_env['name']}@challenger", tmp_path / "a")
    assert (got.version, got.source, got.aliases) == ("1", uri, ("challenger",))
    assert got.files == len(published.files) and got.total_bytes == published.total_bytes
    assert storage.read_manifest(got.path).digest == published.digest
    assert models.missing_files(got.path) == []
    d = registry.pull(f"models:/{mlflow_env['name']}/1", tmp_path / "b")
    assert storage.read_manifest(d).digest == published.digest
    # a bare name means @champion, which this model does not have: the message lists the aliases it has
    with pytest.raises(RegistryError, match=r"has no alias 'champion' .*\(its aliases: challenger\)"):
        registry.pull(mlflow_env["name"], tmp_path / "c")
    assert not (tmp_path / "c").exists()
    no_leftovers(tmp_path)


def test_pull_mlflow_artifact_source(mlflow_env: dict[str, Any], tmp_path: Path) -> None:
    """A model registered from a local folder: its files were logged to the run (proxied into the S3 bucket)."""
    local = tmp_path / "published"
    storage.publish_dir(tiny_dir(), local)
    res = register.run(RegisterConfig(model=str(local), model_name=mlflow_env["name"]))
    mv = client(mlflow_env).get_model_version(mlflow_env["name"], res.lineage["version"])
    assert mv.source.startswith("mlflow-artifacts:/"), mv.source
    # the logged files really are objects in the artifact bucket behind the tracking server
    keys = [o["Key"] for o in mlflow_env["s3"].client().list_objects_v2(
        Bucket=mlflow_env["mlflow"].artifact_bucket, Prefix=mlflow_env["mlflow"].artifact_prefix)["Contents"]]
    assert any(mv.run_id in k and k.endswith("/artifacts/model/config.json") for k in keys)

    dest = registry.pull(f"{mlflow_env['name']}@challenger", tmp_path / "pulled")
    assert models.missing_files(dest) == []
    assert (dest / "config.json").read_bytes() == (local / "config.json").read_bytes()
    assert storage.read_manifest(dest).digest == storage.read_manifest(local).digest
    no_leftovers(tmp_path)


def test_pull_unknown_model_alias_version_and_bad_refs(mlflow_env: dict[str, Any], tmp_path: Path) -> None:
    uri = f"{mlflow_env['prefix']}/policy"
    storage.publish_dir(tiny_dir(), uri)
    register.run(RegisterConfig(model=uri, model_name=mlflow_env["name"]))
    name, where = mlflow_env["name"], mlflow_env["mlflow"].tracking_uri
    cases = {
        f"nope-{mlflow_env['rid']}@champion": rf"no registered model 'nope-{mlflow_env['rid']}' at {where}",
        f"{name}@gold": rf"model '{name}' has no alias 'gold' at {where} \(its aliases: challenger\)",
        f"{name}/7": rf"model '{name}' has no version 7 at {where} \(latest version is 1\)",
        f"{name}/latest": r"version 'latest' is not a number",
        "no spaces@x y": r"is not a model reference",
    }
    for i, (ref, msg) in enumerate(cases.items()):
        dest = tmp_path / f"d{i}"
        with pytest.raises(RegistryError, match=msg) as e:
            registry.pull(ref, dest)
        assert "\n" not in str(e.value)
        assert not dest.exists()
    # a non-empty destination is refused before anything is downloaded
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(RegistryError, match="exists and is not empty"):
        registry.pull(f"{name}@challenger", full)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    no_leftovers(tmp_path)


def test_pull_refuses_unpublished_or_tampered_sources(mlflow_env: dict[str, Any], tmp_path: Path) -> None:
    """The registry points at S3; pull trusts only what matches the folder's MANIFEST.json."""
    c = client(mlflow_env)
    name = mlflow_env["name"]
    c.create_registered_model(name)
    # (1) a version whose source never finished publishing (files, no manifest) — e.g. registered by hand
    half = f"{mlflow_env['prefix']}/half"
    for f in tiny_dir().iterdir():
        if f.is_file():
            storage.upload_file(f, f"{half}/{f.name}")
    c.create_model_version(name, source=half)
    with pytest.raises(RegistryError, match=rf"{name} v1: cannot download its source: {half}: no complete "
                                            r"MANIFEST\.json"):
        registry.pull(f"{name}/1", tmp_path / "half")
    assert not (tmp_path / "half").exists()
    # (2) a published folder whose weights were overwritten afterwards (same size, other bytes)
    good = f"{mlflow_env['prefix']}/good"
    m = storage.publish_dir(tiny_dir(), good)
    c.create_model_version(name, source=good)
    weights = next(f for f in m.files if f.path.endswith(".safetensors"))
    s3 = mlflow_env["s3"].client()
    key = f"{mlflow_env['prefix'].removeprefix('s3://alignpipe/')}/good/{weights.path}"
    body = bytearray(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[-1] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
    with pytest.raises(RegistryError, match=rf"{name} v2: cannot download its source: .*{weights.path}"):
        registry.pull(f"{name}/2", tmp_path / "tampered")
    assert not (tmp_path / "tampered").exists()
    no_leftovers(tmp_path)


def test_pull_with_the_tracking_server_down_fails_fast(
        s3_env: services.S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = services.free_port()  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ALIGNPIPE_MLFLOW_TIMEOUT", "2")
    for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)  # MLflow's defaults would retry for minutes
    t = time.monotonic()
    with pytest.raises(RegistryError, match=rf"MLflow tracking server http://127\.0\.0\.1:{port} did not answer "
                                            r"within 2s .*check MLFLOW_TRACKING_URI") as e:
        registry.pull("alignpipe-demo@champion", tmp_path / "m")
    assert time.monotonic() - t < 10
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m").exists()
    # credentials in the URI are not echoed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://bob:s3cret@127.0.0.1:{port}")
    with pytest.raises(RegistryError) as e:
        registry.pull("alignpipe-demo@champion", tmp_path / "m")
    assert "s3cret" not in str(e.value) and f"http://127.0.0.1:{port}" in str(e.value)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ, "pull must restore MLflow's HTTP settings"


def test_register_with_pass_at_k_metrics(mlflow_env: dict[str, Any], tmp_path: Path) -> None:
    """Regression: the MLflow server refuses '@' in tag keys; eval tags go through tracking.metric_key."""
    uri = f"{mlflow_env['prefix']}/policy"
    storage.publish_dir(tiny_dir(), uri)
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"models": {"rl": {"accuracy": 0.5, "pass@4": 0.75, "maj@4": 0.5}}}))
    res = register.run(RegisterConfig(model=uri, model_name=mlflow_env["name"], metrics=str(metrics),
                                      metrics_key="rl"))
    assert res.lineage["alias"] == "champion"
    mv = client(mlflow_env).get_model_version(mlflow_env["name"], res.lineage["version"])
    assert (mv.tags["eval.pass_at_4"], mv.tags["eval.maj_at_4"], mv.tags["eval.accuracy"]) == ("0.75", "0.5", "0.5")
