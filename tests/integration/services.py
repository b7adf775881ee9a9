"""Real servers for the integration tests, started on 127.0.0.1 with free ports.

- :func:`start_s3`: moto's S3 server (standing in for MinIO) with IAM authentication switched on after
  setup, so wrong credentials are really refused; yields an IAM user's key pair that may do anything.
- :func:`start_postgres`: a private PostgreSQL cluster from the Debian package (``initdb`` + ``postgres``
  run as the ``postgres`` user when we are root, since PostgreSQL refuses to run as root).
- :func:`start_mlflow`: ``mlflow server`` with the PostgreSQL backend store and proxied artifacts in the S3
  server's ``mlflow-artifacts`` bucket.

Every server runs in its own session/process group (``start_new_session=True``) and is stopped by
signalling the whole group (MLflow's huey consumers and PostgreSQL's backends die with it). Stops are
registered with ``atexit`` as well as with the fixtures' finalizers, so an interrupted test session
leaves nothing running. Nothing here is skipped: a missing binary is an error telling how to get it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

INSTALL_HINT = "run `make test` (installs postgresql)"
_LIVE: list[Service] = []
_LIVE_LOCK = threading.Lock()


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, name: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with {proc.returncode} while starting; log {log}: {_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s; log {log}: {_tail(log)}")


def _tail(log: Path, n: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


@dataclasses.dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    workdir: Path | None = None  # removed on stop
    stop_signal: int = signal.SIGTERM
    _stopped: bool = False

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session=True: the leader's pid is the group id

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover
            return True

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        for sig, wait in ((self.stop_signal, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.05)
                if self.proc.poll() is not None and not self.group_alive():
                    break
            else:
                continue
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)
        with _LIVE_LOCK:
            if self in _LIVE:
                _LIVE.remove(self)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, **kw: Any) -> Service:
    f = open(log, "ab")  # noqa: SIM115 - the child keeps it
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    except FileNotFoundError as e:
        raise ServiceError(f"{name}: {argv[0]} not found ({e}) — {INSTALL_HINT}") from None
    finally:
        f.close()
    svc = Service(name, proc, log, **kw)
    with _LIVE_LOCK:
        _LIVE.append(svc)
    return svc


def stop_all() -> None:
    """Stop every service still running, newest first (MLflow before PostgreSQL before S3)."""
    with _LIVE_LOCK:
        live = list(reversed(_LIVE))
    for svc in live:
        svc.stop()


atexit.register(stop_all)


def _venv_bin(name: str) -> str:
    p = Path(sys.executable).parent / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        raise ServiceError(f"`{name}` not found next to {sys.executable} or on PATH — run `make install`")
    return found


# ----------------------------------------------------------------------------------------------- S3


@dataclasses.dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    service: Service

    @property
    def env(self) -> dict[str, str]:
        """The environment a client (alignpipe.storage, MLflow, boto3) needs to talk to this server."""
        return {
            "ALIGNPIPE_S3_ENDPOINT": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **kw: Any) -> Any:
        """A plain boto3 S3 client with this server's credentials (for tests poking at objects directly)."""
        import boto3

        args: dict[str, Any] = dict(
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        args.update(kw)
        return boto3.client("s3", **args)

    def create_bucket(self, name: str) -> None:
        c = self.client()
        try:
            c.create_bucket(Bucket=name)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass

    def stop(self) -> None:
        self.service.stop()


def start_s3(workdir: Path, buckets: tuple[str, ...] = ("alignpipe", "mlflow-artifacts"), auth: bool = True) -> S3Server:
    """moto's S3 server on 127.0.0.1; with ``auth`` an IAM user is created and authentication enforced."""
    import boto3

    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "moto.log"
    env = dict(os.environ)
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    svc = _spawn("moto_server", [_venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], log, env=env)
    try:
        _wait_port(port, svc.proc, 30, "moto_server", log)
        endpoint = f"http://127.0.0.1:{port}"
        boot = dict(endpoint_url=endpoint, aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                    region_name="us-east-1")
        access, secret = "bootstrap", "bootstrap"
        if auth:
            iam = boto3.client("iam", **boot)
            iam.create_user(UserName="alignpipe-test")
            key = iam.create_access_key(UserName="alignpipe-test")["AccessKey"]
            iam.put_user_policy(
                UserName="alignpipe-test",
                PolicyName="everything",
                PolicyDocument=json.dumps(
                    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
                ),
            )
            access, secret = key["AccessKeyId"], key["SecretAccessKey"]
        s3 = boto3.client("s3", **boot)
        for b in buckets:
            s3.create_bucket(Bucket=b)
        if auth:  # from now on every request must be signed by a known key with a permitting policy
            req = urllib.request.Request(
                f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
        return S3Server(endpoint, access, secret, "us-east-1", svc)
    except BaseException:
        svc.stop()
        raise


# ----------------------------------------------------------------------------------------- PostgreSQL


def _pg_bindir() -> Path:
    for name in ("initdb", "postgres"):
        w = shutil.which(name)
        if w:
            d = Path(os.path.realpath(w)).parent
            if (d / "postgres").exists() and (d / "initdb").exists():
                return d
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0, reverse=True):
        if Path(d, "initdb").exists() and Path(d, "postgres").exists():
            return Path(d)
    raise ServiceError(f"PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin — {INSTALL_HINT}")


@dataclasses.dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    service: Service

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=database, connect_timeout=5)

    def create_database(self, name: str) -> None:
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def stop(self) -> None:
        self.service.stop()


def start_postgres(timeout: float = 30.0) -> PostgresServer:
    """A private cluster in a fresh temp dir (outside pytest's 0700 tmp tree, so `postgres` can enter it)."""
    bindir = _pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="alignpipe-pg-"))
    as_root = os.geteuid() == 0
    run_as: list[str] = []
    if as_root:
        runuser = shutil.which("runuser")
        if not runuser:
            raise ServiceError(f"`runuser` not found (needed to run PostgreSQL as the postgres user) — {INSTALL_HINT}")
        run_as = [runuser, "-u", "postgres", "--"]
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError(f"no `postgres` system user — {INSTALL_HINT}") from None
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, sock = root / "data", root / "sock"
    log = root / "postgres.log"
    port = free_port()
    try:
        init = subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync",
             "-E", "UTF8", "--locale=C"],
            capture_output=True, text=True, timeout=60,
        )
        if init.returncode != 0:
            raise ServiceError(f"initdb failed ({init.returncode}): {init.stderr.strip()[-800:]}")
        if as_root:
            sock.mkdir()
            os.chown(sock, pw.pw_uid, pw.pw_gid)
            log.touch()
            os.chown(log, pw.pw_uid, pw.pw_gid)
        else:
            sock.mkdir()
        svc = _spawn(
            "postgres",
            [*run_as, str(bindir / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1", "-p", str(port),
             "-k", str(sock), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            log,
            workdir=root,
            stop_signal=signal.SIGINT,  # "fast" shutdown: roll back open transactions, disconnect clients
        )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    pg = PostgresServer("127.0.0.1", port, "postgres", svc)
    try:
        _wait_port(port, svc.proc, timeout, "postgres", log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                pg.connect().close()
                break
            except Exception as e:  # noqa: BLE001 - "the database system is starting up"
                if time.monotonic() > deadline:
                    raise ServiceError(f"postgres on port {port} did not accept connections: {e}; {_tail(log)}") from None
                time.sleep(0.1)
        return pg
    except BaseException:
        svc.stop()
        raise


# --------------------------------------------------------------------------------------------- MLflow


@dataclasses.dataclass
class MlflowServer:
    tracking_uri: str
    artifact_bucket: str
    artifact_prefix: str
    service: Service

    def stop(self) -> None:
        self.service.stop()


def start_mlflow(workdir: Path, pg: PostgresServer, s3: S3Server, timeout: float = 90.0) -> MlflowServer:
    """``mlflow server`` on PostgreSQL (database ``mlflow``) with proxied artifacts in ``s3://mlflow-artifacts``."""
    workdir.mkdir(parents=True, exist_ok=True)
    pg.create_database("mlflow")
    s3.create_bucket("mlflow-artifacts")
    port = free_port()
    log = workdir / "mlflow.log"
    env = dict(os.environ)
    env.update(s3.env)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONUNBUFFERED"] = "1"
    argv = [
        _venv_bin("mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", pg.url("mlflow"),
        "--artifacts-destination", "s3://mlflow-artifacts/proxied",
        "--workers", "1",
    ]
    svc = _spawn("mlflow", argv, log, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if svc.proc.poll() is not None:
                raise ServiceError(f"mlflow server exited with {svc.proc.returncode}; log {log}: {_tail(log)}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServiceError(f"mlflow server not healthy within {timeout:.0f}s; log {log}: {_tail(log)}")
            time.sleep(0.25)
        return MlflowServer(uri, "mlflow-artifacts", "proxied", svc)
    except BaseException:
        svc.stop()
        raise
