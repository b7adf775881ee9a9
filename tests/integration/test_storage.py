"""alignpipe.storage against a real S3 server (moto, IAM auth on) — round trips, cache, and faults.

Faults are injected with a small TCP proxy in front of the server (:class:`FaultProxy`): it cuts
connections after N bytes, or answers requests with ``503 SlowDown``, for the first K connections.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from alignpipe import storage
from alignpipe.storage import MANIFEST_NAME, StorageError

from . import services

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MiB = 1 << 20
BUCKET = "alignpipe"


# ------------------------------------------------------------------------------------------ helpers


class FaultProxy:
    """TCP proxy 127.0.0.1:port -> target that misbehaves ``first`` times.

    mode "cut-up":   reset the first ``first`` connections that carry more than ``after`` bytes
                     client -> server (i.e. mid-upload)
    mode "cut-down": the same for server -> client (mid-download)
    mode "slowdown": the first ``first`` connections get ``503 SlowDown`` to their first request
    """

    def __init__(self, target_port: int, mode: str = "pass", after: int = 0, first: int = 0):
        self.target_port, self.mode, self.after, self.first = target_port, mode, after, first
        self.lock = threading.Lock()
        self.connections = self.faults = self.bytes_up = self.bytes_down = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                c, _ = self._sock.accept()
            except OSError:
                return
            with self.lock:
                n = self.connections
                self.connections += 1
                self._open.append(c)
            faulty = self.mode.startswith("cut") or (self.mode == "slowdown" and n < self.first)
            threading.Thread(target=self._serve, args=(c, faulty), daemon=True).start()

    def _reset(self, *socks: socket.socket) -> None:
        # shutdown() first: it wakes the pump thread blocked in recv() on the same socket (a bare close()
        # would be deferred by the kernel until that recv returns, and the peer would see nothing)
        for s in socks:
            for step in (
                lambda s=s: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"),
                lambda s=s: s.shutdown(socket.SHUT_RDWR),
                lambda s=s: s.close(),
            ):
                try:
                    step()
                except OSError:
                    pass

    def _serve(self, c: socket.socket, faulty: bool) -> None:
        if faulty and self.mode == "slowdown":
            buf = b""
            while b"\r\n\r\n" not in buf:
                b = c.recv(65536)
                if not b:
                    break
                buf += b
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                    b"<Message>Please reduce your request rate.</Message></Error>")
            with self.lock:  # count before answering: the client may assert as soon as it has the answer
                self.faults += 1
            c.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: "
                      + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            c.close()
            return
        try:
            u = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            c.close()
            return
        with self.lock:
            self._open.append(u)
        state = {"spared": False}

        def pump(src: socket.socket, dst: socket.socket, up: bool) -> None:
            seen = 0
            limit = faulty and ((self.mode == "cut-up") == up)
            try:
                while True:
                    b = src.recv(65536)
                    if not b:
                        break
                    if limit and seen + len(b) > self.after and not state["spared"]:
                        with self.lock:
                            cut = self.faults < self.first
                            if cut:
                                self.faults += 1
                        if cut:
                            dst.sendall(b[: max(0, self.after - seen)])
                            self._reset(c, u)
                            return
                        state["spared"] = True  # budget used up: this connection passes
                    seen += len(b)
                    with self.lock:
                        if up:
                            self.bytes_up += len(b)
                        else:
                            self.bytes_down += len(b)
                    dst.sendall(b)
            except OSError:
                pass
            finally:
                for s in (dst, src):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pump, args=(u, c, False), daemon=True)
        t.start()
        pump(c, u, True)
        t.join(30)
        for s in (c, u):
            try:
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        """Stop listening and kill every proxied connection (a client may cache pooled connections by
        endpoint, and a later proxy can get the same port: nothing may stay connected through this one)."""
        self._closed = True
        self._sock.close()
        with self.lock:
            socks = list(self._open)
        for s in socks:
            for step in (lambda s=s: s.shutdown(socket.SHUT_RDWR), lambda s=s: s.close()):
                try:
                    step()
                except OSError:
                    pass


@pytest.fixture
def proxy_factory(s3_env: services.S3Server):
    made: list[FaultProxy] = []
    port = int(s3_env.endpoint.rsplit(":", 1)[1])

    def make(**kw) -> FaultProxy:  # type: ignore[no-untyped-def]
        p = FaultProxy(port, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def make_model(d: Path, big_mb: int = 12) -> dict[str, bytes]:
    """A model-like folder: one multipart-sized file, a few small ones, a nested one."""
    files = {
        "model.safetensors": os.urandom(big_mb * MiB + 12345),
        "config.json": b'{"hidden_size": 8}',
        "tokenizer/tokenizer.json": b'{"vocab": {}}' * 100,
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return files


def read_tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}


def keys_under(srv: services.S3Server, prefix: str) -> list[str]:
    r = srv.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/")
    return sorted(o["Key"] for o in r.get("Contents", []))


def new_uri() -> tuple[str, str]:
    key = f"runs/{uuid.uuid4().hex[:10]}/model"
    return f"s3://{BUCKET}/{key}", key


def assert_unpublished(srv: services.S3Server, uri: str, key: str) -> None:
    """Nothing that looks published: no manifest object, readers refuse."""
    assert f"{key}/{MANIFEST_NAME}" not in keys_under(srv, key)
    with pytest.raises(StorageError, match="no complete MANIFEST.json"):
        storage.read_manifest(uri)
    with pytest.raises(StorageError, match="no complete MANIFEST.json"):
        storage.fetch(uri)


def one_line(e: pytest.ExceptionInfo[StorageError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------- round trips


def test_publish_fetch_round_trip(s3_env: services.S3Server, tmp_path: Path) -> None:
    src = tmp_path / "model"
    files = make_model(src)
    uri, key = new_uri()
    m = storage.publish_dir(src, uri)
    assert {f.path for f in m.files} == set(files)
    assert m.total_bytes == sum(len(v) for v in files.values())
    assert {f.path: f.sha256 for f in m.files}["config.json"] == hashlib.sha256(files["config.json"]).hexdigest()
    assert keys_under(s3_env, key) == sorted([f"{key}/{r}" for r in files] + [f"{key}/{MANIFEST_NAME}"])
    assert storage.read_manifest(uri) == m
    assert storage.exists(uri) and storage.exists(storage.join(uri, "config.json"))
    assert not storage.exists(storage.join(uri, "nope.bin"))
    assert storage.list_uris(uri) == sorted(storage.join(uri, r) for r in [*files, MANIFEST_NAME])

    got = storage.fetch(uri)
    assert got.is_relative_to(Path(os.environ["ALIGNPIPE_CACHE_DIR"]))
    assert m.digest in str(got)
    assert read_tree(got) == files
    # the downloaded copy is itself a published folder with the same manifest
    assert storage.read_manifest(got) == m

    out = tmp_path / "copy"
    assert storage.download_dir(uri, out) == m
    assert read_tree(out) == files


def test_republish_replaces_and_removes_stale_objects(s3_env: services.S3Server, tmp_path: Path) -> None:
    uri, key = new_uri()
    a = tmp_path / "a"
    make_model(a, big_mb=1)
    storage.publish_dir(a, uri)
    b = tmp_path / "b"
    b.mkdir()
    (b / "only.txt").write_text("v2")
    m2 = storage.publish_dir(b, uri)
    assert keys_under(s3_env, key) == [f"{key}/{MANIFEST_NAME}", f"{key}/only.txt"]
    assert [f.path for f in storage.read_manifest(uri).files] == ["only.txt"]
    assert read_tree(storage.fetch(uri)) == {"only.txt": b"v2"}
    assert storage.read_manifest(uri).digest == m2.digest


def test_text_objects_and_fetch_file(s3_env: services.S3Server, tmp_path: Path) -> None:
    uri = f"s3://{BUCKET}/data/{uuid.uuid4().hex[:8]}/train.jsonl"
    storage.write_text(uri, '{"prompt": "1+1=", "answer": "2"}\n')
    assert storage.read_text(uri).startswith('{"prompt"')
    p1 = storage.fetch_file(uri)
    assert p1.name == "train.jsonl" and p1.read_text() == storage.read_text(uri)
    mtime = p1.stat().st_mtime_ns
    assert storage.fetch_file(uri) == p1 and p1.stat().st_mtime_ns == mtime  # cached, not downloaded again
    storage.write_text(uri, '{"prompt": "2+2=", "answer": "4"}\n')  # new ETag -> new cache entry
    p2 = storage.fetch_file(uri)
    assert p2 != p1 and "2+2" in p2.read_text()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MiB))  # above the 5 MiB threshold: multipart up, ranged GETs down
    buri = f"s3://{BUCKET}/data/{uuid.uuid4().hex[:8]}/big.bin"
    info = storage.upload_file(big, buri)
    assert info.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert storage.fetch_file(buri).read_bytes() == big.read_bytes()
    with pytest.raises(StorageError, match="does not exist") as e:
        storage.fetch_file(f"s3://{BUCKET}/data/missing.jsonl")
    assert s3_env.endpoint in one_line(e)


def test_second_fetch_is_served_from_cache(s3_env: services.S3Server, tmp_path: Path, proxy_factory, monkeypatch) -> None:
    src = tmp_path / "model"
    files = make_model(src, big_mb=6)
    uri, key = new_uri()
    storage.publish_dir(src, uri)
    proxy = proxy_factory()  # pass-through, counts bytes
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", proxy.endpoint)
    first = storage.fetch(uri)
    down_first = proxy.bytes_down
    assert down_first > 6 * MiB
    second = storage.fetch(uri)
    assert second == first
    assert proxy.bytes_down - down_first < 16 * 1024  # the manifest only, no data
    # and the data objects are really not needed any more
    s3_env.client().delete_object(Bucket=BUCKET, Key=f"{key}/model.safetensors")
    assert read_tree(storage.fetch(uri)) == files


def test_reader_refuses_prefix_without_manifest(s3_env: services.S3Server) -> None:
    uri, key = new_uri()
    c = s3_env.client()
    c.put_object(Bucket=BUCKET, Key=f"{key}/model.safetensors", Body=b"x" * 100)
    with pytest.raises(StorageError) as e:
        storage.fetch(uri)
    msg = one_line(e)
    assert uri in msg and "no complete MANIFEST.json" in msg and "re-run the step that publishes it" in msg
    # a cut-off manifest is not a manifest either
    c.put_object(Bucket=BUCKET, Key=f"{key}/{MANIFEST_NAME}", Body=b'{"format": "alignpipe.manifest/v1", "fi')
    with pytest.raises(StorageError, match="no complete MANIFEST.json"):
        storage.read_manifest(uri)
    # without the requirement the raw prefix can be fetched
    c.delete_object(Bucket=BUCKET, Key=f"{key}/{MANIFEST_NAME}")
    assert read_tree(storage.fetch(uri, require_manifest=False)) == {"model.safetensors": b"x" * 100}


# -------------------------------------------------------------------------------------------- faults


def test_upload_survives_connections_cut_mid_transfer(s3_env: services.S3Server, tmp_path: Path, proxy_factory, monkeypatch) -> None:
    src = tmp_path / "model"
    files = make_model(src, big_mb=12)
    uri, key = new_uri()
    proxy = proxy_factory(mode="cut-up", after=256 * 1024, first=3)
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", proxy.endpoint)
    m = storage.publish_dir(src, uri)
    assert proxy.faults == 3  # three uploads really were cut mid-body, and retried
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", s3_env.endpoint)
    assert storage.read_manifest(uri) == m
    assert read_tree(storage.fetch(uri)) == files


def test_download_resumes_after_connections_cut(s3_env: services.S3Server, tmp_path: Path, proxy_factory, monkeypatch) -> None:
    src = tmp_path / "model"
    files = make_model(src, big_mb=12)
    uri, _ = new_uri()
    storage.publish_dir(src, uri)
    proxy = proxy_factory(mode="cut-down", after=1 * MiB, first=4)
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", proxy.endpoint)
    assert read_tree(storage.fetch(uri)) == files
    assert proxy.faults == 4


def test_slowdown_is_retried_then_reported(s3_env: services.S3Server, proxy_factory, monkeypatch) -> None:
    uri = f"s3://{BUCKET}/data/{uuid.uuid4().hex[:8]}/eval.jsonl"
    storage.write_text(uri, "{}\n")
    proxy = proxy_factory(mode="slowdown", first=2)
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", proxy.endpoint)
    assert storage.read_text(uri) == "{}\n"
    assert proxy.faults == 2
    proxy2 = proxy_factory(mode="slowdown", first=10**6)
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", proxy2.endpoint)
    monkeypatch.setenv("ALIGNPIPE_S3_MAX_ATTEMPTS", "3")
    with pytest.raises(StorageError) as e:
        storage.read_text(uri)
    msg = one_line(e)
    assert "SlowDown" in msg and proxy2.endpoint in msg and f"'{BUCKET}'" in msg and "after 3 attempts" in msg
    assert proxy2.faults == 3


def test_upload_that_keeps_failing_leaves_nothing_published(s3_env: services.S3Server, tmp_path: Path, proxy_factory, monkeypatch) -> None:
    src = tmp_path / "model"
    make_model(src, big_mb=6)
    uri, key = new_uri()
    proxy = proxy_factory(mode="cut-up", after=64 * 1024, first=10**6)  # every connection dies mid-body
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", proxy.endpoint)
    monkeypatch.setenv("ALIGNPIPE_S3_MAX_ATTEMPTS", "2")
    t = time.monotonic()
    with pytest.raises(StorageError) as e:
        storage.publish_dir(src, uri)
    assert time.monotonic() - t < 20
    msg = one_line(e)
    assert proxy.endpoint in msg and f"bucket '{BUCKET}'" in msg and "ALIGNPIPE_S3_ENDPOINT" in msg
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", s3_env.endpoint)
    assert_unpublished(s3_env, uri, key)
    assert not s3_env.client().list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads")


def test_wrong_credentials(s3_env: services.S3Server, tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "model"
    make_model(src, big_mb=1)
    uri, key = new_uri()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    t = time.monotonic()
    with pytest.raises(StorageError) as e:
        storage.publish_dir(src, uri)
    assert time.monotonic() - t < 5  # not retried: credentials do not heal
    msg = one_line(e)
    assert s3_env.endpoint in msg and f"bucket '{BUCKET}'" in msg and "AWS_SECRET_ACCESS_KEY" in msg
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
    with pytest.raises(StorageError, match="refused the credentials.*InvalidAccessKeyId"):
        storage.fetch(uri)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    assert keys_under(s3_env, key) == []


def test_missing_bucket(s3_env: services.S3Server, tmp_path: Path) -> None:
    src = tmp_path / "model"
    make_model(src, big_mb=1)
    with pytest.raises(StorageError) as e:
        storage.publish_dir(src, "s3://no-such-bucket-here/runs/x")
    msg = one_line(e)
    assert "bucket 'no-such-bucket-here' does not exist" in msg and s3_env.endpoint in msg and "create it" in msg
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        storage.fetch_file("s3://no-such-bucket-here/data/train.jsonl")


def test_unreachable_endpoint_fails_fast(s3_env: services.S3Server, tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "model"
    make_model(src, big_mb=1)
    dead = f"http://127.0.0.1:{services.free_port()}"  # nothing listens there
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", dead)
    t = time.monotonic()
    with pytest.raises(StorageError) as e:
        storage.publish_dir(src, f"s3://{BUCKET}/runs/unreachable")
    assert time.monotonic() - t < 10
    msg = one_line(e)
    assert f"cannot reach S3 endpoint {dead}" in msg and f"bucket '{BUCKET}'" in msg and "ALIGNPIPE_S3_ENDPOINT" in msg


def test_endpoint_that_never_answers_times_out(s3_env: services.S3Server, monkeypatch) -> None:
    with socket.socket() as hole:  # accepts TCP connections (backlog) but never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        ep = f"http://127.0.0.1:{hole.getsockname()[1]}"
        monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", ep)
        monkeypatch.setenv("ALIGNPIPE_S3_READ_TIMEOUT", "0.5")
        monkeypatch.setenv("ALIGNPIPE_S3_MAX_ATTEMPTS", "2")
        t = time.monotonic()
        with pytest.raises(StorageError) as e:
            storage.read_manifest(f"s3://{BUCKET}/runs/hole")
        assert time.monotonic() - t < 5
        assert f"cannot reach S3 endpoint {ep}" in one_line(e)


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_damaged_object_is_detected_on_download(s3_env: services.S3Server, tmp_path: Path, damage: str) -> None:
    src = tmp_path / "model"
    files = make_model(src, big_mb=6)
    uri, key = new_uri()
    storage.publish_dir(src, uri)
    good = files["model.safetensors"]
    bad = (bytes([good[0] ^ 0xFF]) + good[1:]) if damage == "corrupted" else good[: len(good) // 2]
    s3_env.client().put_object(Bucket=BUCKET, Key=f"{key}/model.safetensors", Body=bad)
    with pytest.raises(StorageError) as e:
        storage.fetch(uri)
    msg = one_line(e)
    assert f"{uri}/model.safetensors" in msg and damage in msg and "re-run the step that publishes it" in msg
    # nothing half-fetched is left where a reader would take it
    cache = Path(os.environ["ALIGNPIPE_CACHE_DIR"]) / "dirs"
    assert not cache.exists() or list(cache.iterdir()) == []
    with pytest.raises(StorageError, match=damage):
        storage.download_dir(uri, tmp_path / "out")
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()
