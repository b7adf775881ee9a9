"""Session-scoped real servers for the integration tests (see services.py). Never skipped.

Fixtures:
- ``s3_server``       -> services.S3Server: moto S3 on 127.0.0.1 with IAM auth enforced; buckets
                         ``alignpipe`` and ``mlflow-artifacts``; ``.endpoint``, ``.access_key``,
                         ``.secret_key``, ``.region``, ``.env`` (the client env), ``.client()`` (boto3).
- ``s3_env``          -> the same S3Server, with its ``.env`` set in os.environ for one test (monkeypatch),
                         plus ALIGNPIPE_CACHE_DIR=<tmp>/cache, small back-off and 5 MiB parts/threshold so
                         multipart and ranged downloads are exercised by small files.
- ``postgres_server`` -> services.PostgresServer: ``.host``, ``.port``, ``.url(db)``, ``.connect(db)``.
- ``mlflow_server``   -> services.MlflowServer: ``.tracking_uri`` (PostgreSQL backend, artifacts proxied
                         to ``s3://mlflow-artifacts/proxied`` on ``s3_server``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import services


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _start(what: str, fn, *args, **kw):  # type: ignore[no-untyped-def]
    try:
        return fn(*args, **kw)
    except services.ServiceError as e:
        pytest.fail(f"could not start {what}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.S3Server]:
    srv = _start("the S3 server (moto)", services.start_s3, tmp_path_factory.mktemp("moto"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def s3_env(s3_server: services.S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> services.S3Server:
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("ALIGNPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ALIGNPIPE_S3_BACKOFF", "0.05")
    monkeypatch.setenv("ALIGNPIPE_S3_BACKOFF_MAX", "0.2")
    monkeypatch.setenv("ALIGNPIPE_S3_PART_SIZE_MB", "5")
    monkeypatch.setenv("ALIGNPIPE_S3_MULTIPART_THRESHOLD_MB", "5")
    return s3_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[services.PostgresServer]:
    pg = _start("PostgreSQL", services.start_postgres)
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: services.PostgresServer,
    s3_server: services.S3Server,
) -> Iterator[services.MlflowServer]:
    srv = _start("the MLflow server", services.start_mlflow, tmp_path_factory.mktemp("mlflow"), postgres_server, s3_server)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def private_mlflow_server(
    tmp_path: Path,
    postgres_server: services.PostgresServer,
    s3_server: services.S3Server,
) -> Iterator[services.MlflowServer]:
    """A second MLflow server (same PostgreSQL database and artifact bucket, like a second replica) that a
    test may freeze (SIGSTOP) or stop without disturbing the session's ``mlflow_server``. Resumed and stopped
    after the test."""
    import os
    import signal

    srv = _start("a private MLflow server", services.start_mlflow, tmp_path / "mlflow-private", postgres_server,
                 s3_server)
    try:
        yield srv
    finally:
        try:
            os.killpg(srv.service.pgid, signal.SIGCONT)  # a frozen server must run to handle SIGTERM
        except ProcessLookupError:
            pass
        srv.stop()


@pytest.fixture
def mlflow_env(s3_env: services.S3Server, mlflow_server: services.MlflowServer,
               monkeypatch: pytest.MonkeyPatch) -> dict:
    """``s3_env`` plus the session MLflow server as MLFLOW_TRACKING_URI, a fresh experiment, bounded MLflow
    HTTP retries, and no inherited parent run. Returns ``{"rid", "s3", "mlflow", "name", "prefix"}``: a
    unique id, the servers, a unique registered-model name and an ``s3://alignpipe/...`` prefix to write under."""
    import uuid

    rid = uuid.uuid4().hex[:8]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"it-{rid}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    monkeypatch.delenv("ALIGNPIPE_PARENT_RUN_ID", raising=False)
    return {"rid": rid, "s3": s3_env, "mlflow": mlflow_server, "name": f"m-{rid}",
            "prefix": f"s3://alignpipe/it/{rid}"}
