"""alignpipe.storage without a server: URIs, manifests, local publish/fetch, settings, retry policy."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from alignpipe import storage
from alignpipe.base import UserError
from alignpipe.storage import MANIFEST_NAME, Manifest, ManifestFile, S3Settings, StorageError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in list(os.environ):
        if k.startswith(("ALIGNPIPE_", "AWS_", "MLFLOW_S3")):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ALIGNPIPE_CACHE_DIR", str(tmp_path / "cache"))


def make_dir(d: Path) -> dict[str, bytes]:
    files = {"weights.bin": os.urandom(300_000), "config.json": b"{}", "sub/dir/tok.json": b'{"a": 1}', "empty": b""}
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return files


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}


# ---------------------------------------------------------------------------------------------- URIs


def test_is_remote_and_join() -> None:
    assert storage.is_remote("s3://b/k") and storage.is_remote("minio://mlpipeline/x")
    assert not storage.is_remote("/tmp/x") and not storage.is_remote("file:///tmp/x") and not storage.is_remote(Path("s3"))
    assert storage.join("s3://b/runs/", "x", "/model/") == "s3://b/runs/x/model"
    assert storage.join("s3://b", "k") == "s3://b/k"
    assert storage.join("s3://b/k") == "s3://b/k"
    assert storage.join("/tmp/a", "b", "/c") == os.path.join("/tmp/a", "b", "c")
    assert storage.split_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert storage.split_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(StorageError, match="no bucket"):
        storage.split_uri("s3:///key")


def test_default_pipeline_root_and_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert storage.default_pipeline_root() is None
    monkeypatch.setenv("ALIGNPIPE_ARTIFACT_ROOT", "")
    assert storage.default_pipeline_root() is None
    monkeypatch.setenv("ALIGNPIPE_ARTIFACT_ROOT", "s3://alignpipe/runs")
    assert storage.default_pipeline_root() == "s3://alignpipe/runs"
    assert storage.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("ALIGNPIPE_CACHE_DIR")
    assert storage.cache_dir() == Path("~/.cache/alignpipe").expanduser()


def test_storage_error_is_one_line_user_error() -> None:
    assert str(StorageError("a\nb   c\n")) == "a b c"
    assert issubclass(StorageError, UserError)  # the entry points print it as one line, exit 2


# ------------------------------------------------------------------------------------------ manifest


def test_manifest_json_round_trip_and_digest() -> None:
    files = [ManifestFile("b.bin", 3, "1" * 64), ManifestFile("a/c.json", 2, "2" * 64)]
    m = Manifest.build(files)
    assert [f.path for f in m.files] == ["a/c.json", "b.bin"]
    assert m.total_bytes == 5 and m.alignpipe_version and m.created
    assert Manifest.build(list(reversed(files))).digest == m.digest  # order independent
    assert Manifest.from_json(m.to_json()) == m
    other = Manifest.build([ManifestFile("b.bin", 3, "3" * 64), files[1]])
    assert other.digest != m.digest


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["files"][0].update(size=99),  # list no longer matches the digest
        lambda d: d.update(total_bytes=7),
        lambda d: d.update(format="something/else"),
        lambda d: d["files"][0].update(path="../escape"),
        lambda d: d["files"][0].update(path="/abs"),
        lambda d: d.pop("digest"),
    ],
)
def test_manifest_rejects_tampering(tamper) -> None:  # type: ignore[no-untyped-def]
    m = Manifest.build([ManifestFile("a", 1, "1" * 64)])
    d = json.loads(m.to_json())
    tamper(d)
    if d.get("files") and d["files"][0]["path"] in ("../escape", "/abs"):  # keep the digest consistent
        d["digest"] = Manifest.compute_digest([ManifestFile(**f) for f in d["files"]])
    with pytest.raises(ValueError):
        Manifest.from_json(json.dumps(d))
    with pytest.raises(ValueError):
        Manifest.from_json(m.to_json()[:-20])  # cut off


# ------------------------------------------------------------------------------------- local publish


def test_publish_local_then_fetch(tmp_path: Path) -> None:
    src = tmp_path / "out"
    files = make_dir(src)
    dest = tmp_path / "published" / "model"
    m = storage.publish_dir(src, dest)
    assert tree(dest) == files
    assert {f.path: f.sha256 for f in m.files}["weights.bin"] == hashlib.sha256(files["weights.bin"]).hexdigest()
    assert storage.read_manifest(dest) == m and storage.read_manifest(str(dest)) == m
    assert storage.fetch(dest) == dest and storage.fetch(f"file://{dest}") == dest
    assert [p.name for p in dest.parent.iterdir()] == ["model"]  # no staging leftovers
    assert storage.list_uris(dest) == sorted(storage.join(str(dest), r) for r in [*files, MANIFEST_NAME])
    assert storage.exists(dest / "config.json") and not storage.exists(dest / "nope")


def test_republish_local_replaces_folder(tmp_path: Path) -> None:
    src = tmp_path / "a"
    make_dir(src)
    dest = tmp_path / "model"
    storage.publish_dir(src, dest)
    b = tmp_path / "b"
    b.mkdir()
    (b / "only.txt").write_text("v2")
    storage.publish_dir(b, dest)
    assert tree(dest) == {"only.txt": b"v2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "model"]


def test_publish_in_place_seals_with_manifest(tmp_path: Path) -> None:
    d = tmp_path / "m"
    files = make_dir(d)
    m = storage.publish_dir(d, d)
    assert (d / MANIFEST_NAME).is_file() and tree(d) == files and storage.read_manifest(d) == m
    # publishing a fetched folder again ignores its old manifest
    assert storage.publish_dir(d, tmp_path / "again").digest == m.digest


def test_crash_mid_publish_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    make_dir(src)
    calls = {"n": 0}
    real = storage.publish.copy_hashed

    def flaky(a: Path, b: Path) -> ManifestFile:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(a, b)

    monkeypatch.setattr(storage.publish, "copy_hashed", flaky)
    monkeypatch.setattr(storage.publish, "workers", lambda: 1)
    with pytest.raises(OSError, match="disk full"):
        storage.publish_dir(src, tmp_path / "dest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_publish_rejects_empty_or_missing_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="empty directory"):
        storage.publish_dir(tmp_path / "empty", tmp_path / "x")
    with pytest.raises(StorageError, match="not a directory"):
        storage.publish_dir(tmp_path / "missing", tmp_path / "x")


def test_fetch_local_requires_complete_manifest(tmp_path: Path) -> None:
    d = tmp_path / "half"
    make_dir(d)
    with pytest.raises(StorageError) as e:
        storage.fetch(d)
    assert str(e.value) == (
        f"{d}: no complete MANIFEST.json — the upload did not finish; re-run the step that publishes it"
    )
    assert storage.fetch(d, require_manifest=False) == d
    (d / MANIFEST_NAME).write_text('{"format": "alignpipe.manifest/v1", "files": [')
    with pytest.raises(StorageError, match="no complete MANIFEST.json"):
        storage.read_manifest(d)
    with pytest.raises(StorageError, match="no such directory"):
        storage.fetch(tmp_path / "nope")
    with pytest.raises(StorageError, match="fetch_file"):
        storage.fetch(d / "config.json")


def test_fetch_local_detects_missing_or_resized_file(tmp_path: Path) -> None:
    d = tmp_path / "m"
    make_dir(tmp_path / "src")
    storage.publish_dir(tmp_path / "src", d)
    (d / "weights.bin").write_bytes(b"short")
    with pytest.raises(StorageError, match="do not match MANIFEST.json"):
        storage.fetch(d)


def test_download_dir_local_verifies_hashes(tmp_path: Path) -> None:
    make_dir(tmp_path / "src")
    pub = tmp_path / "pub"
    m = storage.publish_dir(tmp_path / "src", pub)
    assert storage.download_dir(pub, tmp_path / "copy") == m
    assert tree(tmp_path / "copy") == tree(pub)
    w = pub / "weights.bin"
    data = bytearray(w.read_bytes())
    data[100] ^= 0xFF  # same size, different bytes
    w.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="weights.bin does not match MANIFEST.json"):
        storage.download_dir(pub, tmp_path / "copy2")


def test_local_text_bytes_and_files(tmp_path: Path) -> None:
    p = tmp_path / "a" / "b.txt"
    storage.write_text(p, "héllo")
    assert storage.read_text(p) == "héllo" and storage.read_bytes(p) == "héllo".encode()
    assert storage.fetch_file(p) == p
    with pytest.raises(StorageError, match="no such file"):
        storage.fetch_file(tmp_path / "missing.jsonl")
    with pytest.raises(StorageError, match="no such file"):
        storage.read_text(tmp_path / "missing.txt")
    info = storage.upload_file(p, tmp_path / "c.txt")
    assert info.sha256 == hashlib.sha256("héllo".encode()).hexdigest()
    assert storage.download_file(tmp_path / "c.txt", tmp_path / "d" / "e.txt").read_text() == "héllo"
    assert storage.list_uris(tmp_path / "nothing-here") == []


# ------------------------------------------------------------------------------------ settings/retry


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = S3Settings.from_env()
    assert s.endpoint is None and s.region == "us-east-1" and s.where == "AWS S3 (us-east-1)"
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000/")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s = S3Settings.from_env()
    assert s.endpoint == "http://minio:9000" and s.region == "eu-west-1"
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", "minio.kubeflow:9000")  # wins; no scheme means http
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("ALIGNPIPE_S3_PART_SIZE_MB", "1")  # below S3's 5 MiB minimum: clamped
    s = S3Settings.from_env()
    assert s.endpoint == "http://minio.kubeflow:9000" and s.region == "us-west-2" and s.part_size == 5 << 20
    monkeypatch.setenv("ALIGNPIPE_S3_ENDPOINT", "https://s3.example.com")
    assert S3Settings.from_env().endpoint == "https://s3.example.com"
    monkeypatch.setenv("ALIGNPIPE_S3_MAX_ATTEMPTS", "many")
    with pytest.raises(StorageError, match="ALIGNPIPE_S3_MAX_ATTEMPTS='many' is not a number"):
        S3Settings.from_env()


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def test_transient_classification() -> None:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    assert storage.is_transient(_client_error("SlowDown", 503))
    assert storage.is_transient(_client_error("InternalError", 500))
    assert storage.is_transient(_client_error("", 502))
    assert storage.is_transient(EndpointConnectionError(endpoint_url="http://x"))
    assert storage.is_transient(ConnectionClosedError(endpoint_url="http://x"))
    assert storage.is_transient(ConnectionResetError())
    assert not storage.is_transient(_client_error("AccessDenied", 403))
    assert not storage.is_transient(_client_error("NoSuchBucket", 404))
    assert not storage.is_transient(ValueError("x"))


def test_retry_backs_off_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    s = S3Settings(endpoint="http://127.0.0.1:1", max_attempts=4, backoff=0.01, backoff_max=0.02)
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert storage.retry(s, "b", "k", "read", flaky) == "ok" and len(calls) == 3

    calls.clear()

    def down() -> None:
        calls.append(time.monotonic())
        raise ConnectionRefusedError("refused")

    with pytest.raises(StorageError, match=r"cannot reach S3 endpoint http://127.0.0.1:1 \(bucket 'b'.*after 4 attempts"):
        storage.retry(s, "b", "k", "read", down)
    assert len(calls) == 4

    calls.clear()
    with pytest.raises(StorageError, match="refused the credentials for bucket 'b'.*AWS_ACCESS_KEY_ID"):
        storage.retry(s, "b", "k", "read", lambda: calls.append(0) or (_ for _ in ()).throw(_client_error("InvalidAccessKeyId", 403)))
    assert len(calls) == 1  # never retried

    slow = S3Settings(max_attempts=100, backoff=0.05, backoff_max=0.05, retry_deadline=0.3)
    t = time.monotonic()
    with pytest.raises(StorageError, match="kept failing"):
        storage.retry(slow, "b", "k", "read", lambda: (_ for _ in ()).throw(_client_error("SlowDown", 503)))
    assert time.monotonic() - t < 1.0  # the deadline bounds it, not the attempt count


# ------------------------------------------------------------------------------------------- imports


def test_storage_imports_only_base_and_settings_and_nothing_heavy() -> None:
    import ast
    import subprocess
    import sys

    pkg = Path(storage.__file__).parent
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for m in mods:
                assert not m.startswith("alignpipe") or m in ("alignpipe.base", "alignpipe.settings"), f"{path.name} imports {m}"
    code = ("import sys, alignpipe.storage; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'botocore', 'boto3')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # botocore comes on the first S3 call, not on import
