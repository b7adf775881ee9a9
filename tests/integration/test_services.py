"""The test services themselves: MLflow on PostgreSQL with artifacts in S3, auth, loopback, clean teardown."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from . import services

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_s3_server_enforces_credentials(s3_server: services.S3Server) -> None:
    from botocore.config import Config
    from botocore.exceptions import ClientError

    good = s3_server.client()
    good.put_object(Bucket="alignpipe", Key="svc/hello.txt", Body=b"hi")
    assert good.get_object(Bucket="alignpipe", Key="svc/hello.txt")["Body"].read() == b"hi"
    bad = s3_server.client(aws_secret_access_key="wrong", config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        bad.get_object(Bucket="alignpipe", Key="svc/hello.txt")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert s3_server.endpoint.startswith("http://127.0.0.1:")


def test_postgres_is_private_and_on_loopback(postgres_server: services.PostgresServer) -> None:
    conn = postgres_server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone()[0] == "127.0.0.1"
            cur.execute("SHOW port")
            assert int(cur.fetchone()[0]) == postgres_server.port
            cur.execute("SELECT version()")
            assert "PostgreSQL" in cur.fetchone()[0]
    finally:
        conn.close()


def test_mlflow_run_with_artifact_lands_in_postgres_and_s3(
    mlflow_server: services.MlflowServer,
    postgres_server: services.PostgresServer,
    s3_server: services.S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)  # the client needs only the tracking URI
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    exp_id = client.create_experiment(f"services-{uuid.uuid4().hex[:8]}")
    run = client.create_run(exp_id, run_name="wiring")
    run_id = run.info.run_id
    client.log_param(run_id, "lr", "0.001")
    client.log_metric(run_id, "train/loss", 0.5, step=1)
    art = tmp_path / "eval.json"
    art.write_text('{"accuracy": 0.9}')
    client.log_artifact(run_id, str(art), artifact_path="eval")
    client.set_terminated(run_id)

    # the run is in PostgreSQL ...
    conn = postgres_server.connect("mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,))
            assert cur.fetchone() == ("FINISHED",)
            cur.execute("SELECT value FROM metrics WHERE run_uuid = %s AND key = 'train/loss'", (run_id,))
            assert cur.fetchone() == (0.5,)
    finally:
        conn.close()
    # ... and the artifact is an object in the S3 bucket behind the proxy
    objs = s3_server.client().list_objects_v2(Bucket=mlflow_server.artifact_bucket, Prefix=mlflow_server.artifact_prefix)
    keys = [o["Key"] for o in objs.get("Contents", [])]
    mine = [k for k in keys if run_id in k and k.endswith("eval/eval.json")]
    assert mine, keys
    body = s3_server.client().get_object(Bucket=mlflow_server.artifact_bucket, Key=mine[0])["Body"].read()
    assert body == b'{"accuracy": 0.9}'
    # and reads back through the tracking server
    assert [f.path for f in client.list_artifacts(run_id, "eval")] == ["eval/eval.json"]


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    srv = services.start_s3(tmp_path / "moto2", buckets=(), auth=False)
    port = int(srv.endpoint.rsplit(":", 1)[1])
    assert srv.service.group_alive()
    srv.stop()
    assert not srv.service.group_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    srv.stop()  # idempotent


def test_missing_binary_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(services.ServiceError, match=r"run `make test` \(installs postgresql\)"):
        services._spawn("postgres", [str(tmp_path / "no-such-binary")], tmp_path / "x.log")
