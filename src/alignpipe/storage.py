"""Storage: local paths and ``s3://bucket/key`` URIs (MinIO, AWS S3, any S3-compatible server) behind one API.

Every stage reads its inputs and writes its outputs through this module, so a pipeline runs the same
on a laptop (local paths) and on a cluster (MinIO/S3).

Configuration (read from the environment on every call, so a pod's env or a test's monkeypatch wins):

- ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN`` honoured): credentials;
  unset -> boto3's own chain (IRSA, ~/.aws, instance profile).
- ``ALIGNPIPE_S3_ENDPOINT``, else ``MLFLOW_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3`` /
  ``AWS_ENDPOINT_URL``: ``http(s)://host:port`` of MinIO/S3
  (``host:port`` without a scheme means ``http://``); neither set -> AWS S3 itself.
- ``AWS_DEFAULT_REGION`` / ``AWS_REGION``: region (default ``us-east-1``).
- ``ALIGNPIPE_ARTIFACT_ROOT``: where runs publish by default (e.g. ``s3://alignpipe/runs``), see :func:`artifact_root`.
- ``ALIGNPIPE_CACHE_DIR``: local cache for fetched folders/files (default ``~/.cache/alignpipe``).
- ``ALIGNPIPE_S3_MAX_ATTEMPTS`` (5), ``ALIGNPIPE_S3_BACKOFF`` (0.2 s, doubled per retry, jittered),
  ``ALIGNPIPE_S3_BACKOFF_MAX`` (2 s), ``ALIGNPIPE_S3_RETRY_DEADLINE`` (30 s: no new attempt of one request
  starts after this): the retry policy for transient faults.
- ``ALIGNPIPE_S3_CONNECT_TIMEOUT`` (5 s), ``ALIGNPIPE_S3_READ_TIMEOUT`` (60 s, per socket read).
- ``ALIGNPIPE_S3_CONCURRENCY`` (8 parallel requests), ``ALIGNPIPE_S3_PART_SIZE_MB`` (64).
- ``ALIGNPIPE_S3_MULTIPART_THRESHOLD_MB`` (512): files at least this big use multipart upload / parallel
  ranged GETs; smaller files are one PUT / one streamed GET each, in parallel across files (a model folder
  has several shards). Measured on a loopback S3 server (moto) with a 1 GiB, 4-shard folder: one PUT per
  shard took 6.9-7.1 s, multipart with 8/16/32/64 MiB parts 11.7/11.9/15.1/17.4 s (completing a multipart
  upload re-assembles the object server-side). S3 allows single PUTs up to 5 GiB.

Publishing a folder (:func:`publish_dir`) — the protocol
---------------------------------------------------------
A published folder is a prefix whose ``MANIFEST.json`` lists every file with its size and sha256, plus a
digest over that list. **The manifest is written last and readers refuse a folder without a complete,
self-consistent manifest**; that, not the presence of objects, is what "published" means.

On S3 the files are uploaded *straight to their final keys*, then the prefix is listed and every size is
checked, then objects of an earlier publish that are no longer listed are deleted, then ``MANIFEST.json``
is PUT. A staging prefix followed by server-side copies would not make this any safer (S3 has no
multi-object rename; readers would still rely on the manifest), but it would cost a second full write of
every byte on MinIO (CopyObject rewrites the data), a multipart *copy* for objects over 5 GB, and twice
the request count. Re-publishing to the same prefix first deletes the old ``MANIFEST.json``, so during
the upload the prefix reads as unpublished instead of as a mix of old and new files. A crash at any point
before the final PUT leaves objects without a manifest, which every reader refuses with
``no complete MANIFEST.json``; an error we can catch also aborts open multipart uploads and removes the
objects written so far (best effort). A reader that races a re-publish gets an error (sha256/size mismatch
or a missing object), never silently mixed files.

For a local destination the files are copied (and hashed) into a hidden temporary sibling, fsync'ed, the
manifest is written, and the folder is renamed into place (atomic on one filesystem).

Fetching (:func:`fetch`, :func:`download_dir`) checks every file's size and sha256 against the manifest
while it downloads (hashing in the same pass), names the offending object on a mismatch, and keys the
cache by the manifest digest, so a second fetch of the same content costs one small GET (the manifest,
to notice a re-publish) and no data transfer.

Faults: connection refused/reset (also mid-transfer: downloads resume from the last byte received),
timeouts, 5xx, SlowDown/throttling are retried with bounded, jittered exponential back-off. Bad
credentials, a missing bucket, or an endpoint that stays unreachable raise :class:`StorageError` with one
line naming the endpoint, the bucket and the fix, within ``ALIGNPIPE_S3_RETRY_DEADLINE`` plus timeouts.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "ManifestFile",
    "S3Settings",
    "StorageError",
    "artifact_root",
    "cache_dir",
    "download_dir",
    "download_file",
    "exists",
    "fetch",
    "fetch_file",
    "is_remote",
    "join",
    "list_uris",
    "publish_dir",
    "read_bytes",
    "read_manifest",
    "read_text",
    "upload_file",
    "write_bytes",
    "write_text",
]

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "alignpipe.manifest/v1"
_REMOTE_SCHEMES = ("s3://", "minio://")  # minio:// is what Kubeflow Pipelines uses for its artifact store
_MiB = 1 << 20
_CHUNK = 4 * _MiB  # read/write/hash granularity
_T = TypeVar("_T")


class StorageError(Exception):
    """A storage operation failed; the message is one line naming the URI/endpoint/bucket and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _unpublished(uri: str, why: str = "") -> StorageError:
    extra = f" ({why})" if why else ""
    return StorageError(
        f"{uri}: no complete {MANIFEST_NAME}{extra} — the upload did not finish; re-run the step that publishes it"
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("alignpipe")
    except Exception:  # pragma: no cover - not installed
        return "0+unknown"


# --------------------------------------------------------------------------------------------- URIs


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """True for ``s3://`` (and ``minio://``) URIs, False for local paths (``file://`` included)."""
    return str(uri).startswith(_REMOTE_SCHEMES)


def _split(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    s = str(uri)
    for scheme in _REMOTE_SCHEMES:
        if s.startswith(scheme):
            rest = s[len(scheme) :]
            bucket, _, key = rest.partition("/")
            if not bucket:
                raise StorageError(f"{uri}: no bucket in the URI — write it as s3://BUCKET/KEY")
            return bucket, key.strip("/")
    raise StorageError(f"{uri}: not an s3:// URI")


def _s3uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def _local(uri: str | os.PathLike[str]) -> Path:
    s = str(uri)
    if s.startswith("file://"):
        s = s[len("file://") :]
    return Path(s).expanduser()


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a local path or an s3 URI (``join("s3://b/runs", "x", "model")``)."""
    clean = [str(p).strip("/") for p in parts if str(p).strip("/")]
    if is_remote(uri):
        base = str(uri).rstrip("/")
        return "/".join([base, *clean]) if clean else base
    return os.path.join(str(uri), *clean) if clean else str(uri)


def artifact_root() -> str:
    """``ALIGNPIPE_ARTIFACT_ROOT`` (e.g. ``s3://alignpipe/runs``), else ``out/artifacts`` locally."""
    return os.environ.get("ALIGNPIPE_ARTIFACT_ROOT") or "out/artifacts"


def cache_dir() -> Path:
    """``ALIGNPIPE_CACHE_DIR`` or ``~/.cache/alignpipe``."""
    return Path(os.environ.get("ALIGNPIPE_CACHE_DIR") or "~/.cache/alignpipe").expanduser()


# ----------------------------------------------------------------------------------------- manifest


@dataclasses.dataclass(frozen=True)
class ManifestFile:
    path: str  # relative, POSIX separators
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a published folder contains. ``digest`` is the sha256 over the sorted (path, size, sha256) list."""

    files: tuple[ManifestFile, ...]
    digest: str
    total_bytes: int
    created: str = ""
    alignpipe_version: str = ""

    @staticmethod
    def compute_digest(files: Any) -> str:
        h = hashlib.sha256()
        for f in sorted(files, key=lambda f: f.path):
            h.update(f"{f.path}\t{f.size}\t{f.sha256}\n".encode())
        return h.hexdigest()

    @classmethod
    def build(cls, files: Any) -> Manifest:
        fs = tuple(sorted(files, key=lambda f: f.path))
        return cls(
            files=fs,
            digest=cls.compute_digest(fs),
            total_bytes=sum(f.size for f in fs),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            alignpipe_version=_version(),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "created": self.created,
                "alignpipe_version": self.alignpipe_version,
                "total_bytes": self.total_bytes,
                "digest": self.digest,
                "files": [dataclasses.asdict(f) for f in self.files],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse and check a manifest; ValueError if it is not complete and self-consistent."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"not valid JSON: {e}") from None
        if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format is not {MANIFEST_FORMAT}")
        try:
            files = tuple(ManifestFile(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in d["files"])
            digest, total = str(d["digest"]), int(d["total_bytes"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed: {e!r}") from None
        for f in files:
            _check_relpath(f.path)
            if f.size < 0 or len(f.sha256) != 64:
                raise ValueError(f"bad entry for {f.path}")
        if len({f.path for f in files}) != len(files):
            raise ValueError("duplicate paths")
        if cls.compute_digest(files) != digest or sum(f.size for f in files) != total:
            raise ValueError("digest/total does not match the file list")
        return cls(
            files=tuple(sorted(files, key=lambda f: f.path)),
            digest=digest,
            total_bytes=total,
            created=str(d.get("created", "")),
            alignpipe_version=str(d.get("alignpipe_version", "")),
        )


def _check_relpath(p: str) -> None:
    parts = p.split("/")
    if not p or p.startswith("/") or "\\" in p or any(x in ("", ".", "..") for x in parts):
        raise ValueError(f"unsafe path {p!r}")


# ------------------------------------------------------------------------------------------ settings


def _env_num(name: str, default: float) -> float:
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return default
    try:
        return float(v)
    except ValueError:
        raise StorageError(f"{name}={v!r} is not a number — fix or unset it") from None


@dataclasses.dataclass(frozen=True)
class S3Settings:
    endpoint: str | None = None  # http(s)://host:port, None = AWS
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str = "us-east-1"
    max_attempts: int = 5
    backoff: float = 0.2
    backoff_max: float = 2.0
    retry_deadline: float = 30.0
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    concurrency: int = 8
    part_size: int = 64 * _MiB
    multipart_threshold: int = 512 * _MiB
    download_streams: int = 4  # ranged GETs per large file

    @classmethod
    def from_env(cls) -> S3Settings:
        e = os.environ
        endpoint = (e.get("ALIGNPIPE_S3_ENDPOINT") or e.get("MLFLOW_S3_ENDPOINT_URL") or e.get("AWS_ENDPOINT_URL_S3")
                    or e.get("AWS_ENDPOINT_URL") or None)
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint
        part = max(5 * _MiB, int(_env_num("ALIGNPIPE_S3_PART_SIZE_MB", 64) * _MiB))
        return cls(
            endpoint=endpoint.rstrip("/") if endpoint else None,
            access_key=e.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=e.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=e.get("AWS_SESSION_TOKEN") or None,
            region=e.get("AWS_DEFAULT_REGION") or e.get("AWS_REGION") or "us-east-1",
            max_attempts=max(1, int(_env_num("ALIGNPIPE_S3_MAX_ATTEMPTS", 5))),
            backoff=max(0.0, _env_num("ALIGNPIPE_S3_BACKOFF", 0.2)),
            backoff_max=max(0.0, _env_num("ALIGNPIPE_S3_BACKOFF_MAX", 2.0)),
            retry_deadline=max(0.0, _env_num("ALIGNPIPE_S3_RETRY_DEADLINE", 30.0)),
            connect_timeout=max(0.1, _env_num("ALIGNPIPE_S3_CONNECT_TIMEOUT", 5.0)),
            read_timeout=max(0.1, _env_num("ALIGNPIPE_S3_READ_TIMEOUT", 60.0)),
            concurrency=max(1, int(_env_num("ALIGNPIPE_S3_CONCURRENCY", 8))),
            part_size=part,
            multipart_threshold=max(part, int(_env_num("ALIGNPIPE_S3_MULTIPART_THRESHOLD_MB", 512) * _MiB)),
        )

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"


_clients: dict[S3Settings, Any] = {}
_clients_lock = threading.Lock()


def _client(s: S3Settings) -> Any:
    with _clients_lock:
        c = _clients.get(s)
        if c is None:
            import botocore.session
            from botocore.config import Config

            cfg = Config(
                connect_timeout=s.connect_timeout,
                read_timeout=s.read_timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},  # we retry ourselves, bounded
                max_pool_connections=2 * s.concurrency + 4,
                tcp_keepalive=True,
                # We hash every byte ourselves (sha256 in the manifest), so skip botocore's per-request
                # CRC32 and payload-sha256 signing passes: they would hash everything twice more.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path" if s.endpoint else "auto", "payload_signing_enabled": False},
            )
            c = botocore.session.get_session().create_client(
                "s3",
                endpoint_url=s.endpoint,
                region_name=s.region,
                aws_access_key_id=s.access_key,
                aws_secret_access_key=s.secret_key,
                aws_session_token=s.session_token,
                config=cfg,
            )
            _clients[s] = c
        return c


# ------------------------------------------------------------------------------------ error mapping

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
    "403",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "XMinioServerNotInitialized",
    "XMinioStorageFull",
}


class _ShortRead(Exception):
    """The response body ended before the expected number of bytes (retryable: we resume)."""


def _client_error_info(e: Exception) -> tuple[str, int]:
    resp = getattr(e, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", ""))
    status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _is_transient(e: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, IncompleteReadError

    if isinstance(e, StorageError):
        return False
    if isinstance(e, (ConnectionError, HTTPClientError, IncompleteReadError, _ShortRead)):
        return True
    if isinstance(e, ClientError):
        code, status = _client_error_info(e)
        return code in _TRANSIENT_CODES or status >= 500 or status == 429 or code in {"500", "502", "503", "504"}
    try:
        import urllib3.exceptions as u3

        if isinstance(e, (u3.HTTPError,)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(e, (ConnectionResetError, ConnectionRefusedError, ConnectionAbortedError, BrokenPipeError, TimeoutError))


def _to_error(e: BaseException, s: S3Settings, bucket: str, key: str, what: str, attempts: int, elapsed: float) -> StorageError:
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(e, StorageError):
        return e
    uri = _s3uri(bucket, key)
    ep = s.where
    if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"no S3 credentials for endpoint {ep} (bucket '{bucket}'): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(e, ClientError):
        code, status = _client_error_info(e)
        if code in _AUTH_CODES or status == 403:
            return StorageError(
                f"S3 endpoint {ep} refused the credentials for bucket '{bucket}' ({code or status} on {what} {uri}): "
                f"check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and that the key may access the bucket)"
            )
        if code == "NoSuchBucket":
            return StorageError(
                f"bucket '{bucket}' does not exist at S3 endpoint {ep} ({what} {uri}): create it "
                f"(`mc mb ALIAS/{bucket}` or `aws s3 mb s3://{bucket}`) or fix the URI / ALIGNPIPE_ARTIFACT_ROOT"
            )
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageError(f"{uri} does not exist at S3 endpoint {ep} (bucket '{bucket}'): check the URI")
        if _is_transient(e):
            return StorageError(
                f"S3 endpoint {ep} kept failing ({code or status}) for bucket '{bucket}' on {what} {uri} after "
                f"{attempts} attempts in {elapsed:.1f}s: the server is overloaded or down — retry later or raise "
                f"ALIGNPIPE_S3_MAX_ATTEMPTS / ALIGNPIPE_S3_RETRY_DEADLINE"
            )
        msg = e.response.get("Error", {}).get("Message", "")  # type: ignore[attr-defined]
        return StorageError(f"S3 {what} {uri} failed at endpoint {ep} (bucket '{bucket}'): {code or status} {msg}")
    if isinstance(e, (ConnectionError, HTTPClientError, _ShortRead)) or _is_transient(e):
        reason = str(e).split("\n")[0][:200] or type(e).__name__
        return StorageError(
            f"cannot reach S3 endpoint {ep} (bucket '{bucket}', {what} {uri}) after {attempts} attempts in "
            f"{elapsed:.1f}s: {reason} — check ALIGNPIPE_S3_ENDPOINT / MLFLOW_S3_ENDPOINT_URL and that the server is up"
        )
    return StorageError(f"S3 {what} {uri} failed at endpoint {ep} (bucket '{bucket}'): {type(e).__name__}: {e}")


def _retry(s: S3Settings, bucket: str, key: str, what: str, fn: Callable[[], _T]) -> _T:
    """Run ``fn`` with bounded, jittered exponential back-off on transient faults; map errors to StorageError."""
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            elapsed = time.monotonic() - start
            if not _is_transient(e) or attempt >= s.max_attempts or elapsed >= s.retry_deadline:
                raise _to_error(e, s, bucket, key, what, attempt, elapsed) from e
            delay = min(s.backoff_max, s.backoff * (2 ** (attempt - 1))) * random.uniform(0.5, 1.0)
            time.sleep(max(0.0, min(delay, s.retry_deadline - elapsed)))


# ------------------------------------------------------------------------------------- S3 primitives


class _S3:
    """Thin, retrying wrapper over one botocore client for one settings snapshot."""

    def __init__(self, s: S3Settings | None = None):
        self.s = s or S3Settings.from_env()
        self.c = _client(self.s)

    def call(self, bucket: str, key: str, what: str, fn: Callable[[], _T]) -> _T:
        return _retry(self.s, bucket, key, what, fn)

    def check_bucket(self, bucket: str, prefix: str = "") -> None:
        """Cheap request that surfaces bad credentials / missing bucket / unreachable endpoint first."""
        self.call(bucket, prefix, "list", lambda: self.c.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1))

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        def op() -> dict[str, Any] | None:
            try:
                return self.c.head_object(Bucket=bucket, Key=key)
            except ClientError as e:
                code, status = _client_error_info(e)
                if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

        r = self.call(bucket, key, "stat", op)
        if r is None:
            self.check_bucket(bucket)  # a 404 on HEAD may mean "no bucket": say so
        return r

    def list(self, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
        """key -> {Size, ETag} for every object under ``prefix`` (raw S3 prefix)."""
        out: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                kw["ContinuationToken"] = token
            r = self.call(bucket, prefix, "list", lambda kw=kw: self.c.list_objects_v2(**kw))
            for o in r.get("Contents", []):
                out[o["Key"]] = {"Size": int(o["Size"]), "ETag": str(o.get("ETag", "")).strip('"')}
            if not r.get("IsTruncated"):
                return out
            token = r.get("NextContinuationToken")

    def get_bytes(self, bucket: str, key: str) -> bytes:
        def op() -> bytes:
            r = self.c.get_object(Bucket=bucket, Key=key)
            data = r["Body"].read()
            if len(data) != int(r.get("ContentLength", len(data))):
                raise _ShortRead(f"got {len(data)} of {r.get('ContentLength')} bytes")
            return data

        return self.call(bucket, key, "read", op)

    def get_bytes_or_none(self, bucket: str, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        def op() -> bytes | None:
            try:
                r = self.c.get_object(Bucket=bucket, Key=key)
            except ClientError as e:
                code, status = _client_error_info(e)
                if code in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            data = r["Body"].read()
            if len(data) != int(r.get("ContentLength", len(data))):
                raise _ShortRead(f"got {len(data)} of {r.get('ContentLength')} bytes")
            return data

        return self.call(bucket, key, "read", op)

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str | None = None) -> None:
        kw: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        self.call(bucket, key, "write", lambda: self.c.put_object(Bucket=bucket, Key=key, Body=data, **kw))

    def delete_keys(self, bucket: str, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
            self.call(bucket, keys[i], "delete", lambda b=batch: self.c.delete_objects(Bucket=bucket, Delete=b))


class _HashingReader:
    """File-like body for one PUT: hashes bytes the first time they are read in order (retries re-read)."""

    def __init__(self, path: Path, state: dict[str, Any]):
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._state = state  # {"h": sha256, "upto": int} shared across attempts
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        if b and self._pos == self._state["upto"]:
            self._state["h"].update(b)
            self._state["upto"] += len(b)
        elif b and self._pos < self._state["upto"] < self._pos + len(b):
            off = self._state["upto"] - self._pos
            self._state["h"].update(b[off:])
            self._state["upto"] += len(b) - off
        self._pos += len(b)
        return b

    def seek(self, off: int, whence: int = 0) -> int:
        self._pos = self._f.seek(off, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._f.close()


def _hash_file_range(path: Path, start: int, length: int, h: Any) -> None:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            b = f.read(min(_CHUNK, left))
            if not b:
                raise OSError(f"{path} shrank while reading")
            h.update(b)
            left -= len(b)


class _Transfer:
    """Parallel transfers: a pool of per-file jobs and a pool of per-part requests (two pools, no deadlock)."""

    def __init__(self, s3: _S3):
        self.s3 = s3
        self.s = s3.s
        self.files = cf.ThreadPoolExecutor(self.s.concurrency, thread_name_prefix="alignpipe-s3-file")
        self.parts = cf.ThreadPoolExecutor(self.s.concurrency, thread_name_prefix="alignpipe-s3-part")
        # part buffers in memory at once (upload): bounded
        self.buffers = threading.Semaphore(self.s.concurrency + 2)
        self.failed = threading.Event()

    def __enter__(self) -> _Transfer:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self.failed.set()
        self.files.shutdown(wait=True, cancel_futures=True)
        self.parts.shutdown(wait=True, cancel_futures=True)

    def run_all(self, jobs: list[Callable[[], _T]]) -> list[_T]:
        futs = [self.files.submit(j) for j in jobs]
        try:
            return [f.result() for f in futs]
        except BaseException:
            self.failed.set()
            for f in futs:
                f.cancel()
            cf.wait(futs)
            raise

    # ---- upload
    def upload(self, path: Path, bucket: str, key: str) -> ManifestFile:
        size = path.stat().st_size
        if size < self.s.multipart_threshold:
            state: dict[str, Any] = {"h": hashlib.sha256(), "upto": 0}

            def put() -> None:
                body = _HashingReader(path, state)
                try:
                    self.s3.c.put_object(Bucket=bucket, Key=key, Body=body, ContentLength=size)
                finally:
                    body.close()

            self.s3.call(bucket, key, "upload", put)
            if state["upto"] != size:  # the body was not read in one pass (unusual): hash the rest
                _hash_file_range(path, state["upto"], size - state["upto"], state["h"])
            return ManifestFile("", size, state["h"].hexdigest())
        return ManifestFile("", size, self._upload_multipart(path, size, bucket, key))

    def _upload_multipart(self, path: Path, size: int, bucket: str, key: str) -> str:
        c, ps = self.s3.c, self.s.part_size
        uid = self.s3.call(bucket, key, "upload", lambda: c.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
        h = hashlib.sha256()
        futs: list[cf.Future[dict[str, Any]]] = []
        try:
            with open(path, "rb") as f:
                for i, off in enumerate(range(0, size, ps)):
                    if self.failed.is_set() or any(x.done() and x.exception() for x in futs):
                        break
                    self.buffers.acquire()
                    try:
                        data = f.read(min(ps, size - off))
                        if len(data) != min(ps, size - off):
                            raise StorageError(f"{path} changed size while uploading it")
                        h.update(data)
                        futs.append(self.parts.submit(self._put_part, bucket, key, uid, i + 1, data))
                    except BaseException:
                        self.buffers.release()
                        raise
            parts = [x.result() for x in futs]  # re-raises a part's error
            if len(parts) != (size + ps - 1) // ps:
                raise StorageError(f"upload of {_s3uri(bucket, key)} was cancelled")
            self._complete(bucket, key, uid, parts, size)
        except BaseException:
            for x in futs:
                x.cancel()
            cf.wait(futs)
            try:
                c.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)
            except Exception:  # noqa: BLE001 - best effort; lifecycle rules reap the rest
                pass
            raise
        return h.hexdigest()

    def _put_part(self, bucket: str, key: str, uid: str, n: int, data: bytes) -> dict[str, Any]:
        try:
            r = self.s3.call(
                bucket,
                key,
                f"upload part {n} of",
                lambda: self.s3.c.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=data),
            )
            return {"PartNumber": n, "ETag": r["ETag"]}
        finally:
            self.buffers.release()

    def _complete(self, bucket: str, key: str, uid: str, parts: list[dict[str, Any]], size: int) -> None:
        from botocore.exceptions import ClientError

        def op() -> None:
            try:
                self.s3.c.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}
                )
            except ClientError as e:
                # the previous attempt may have completed and only its response got lost
                if _client_error_info(e)[0] == "NoSuchUpload":
                    head = self.s3.c.head_object(Bucket=bucket, Key=key)
                    if int(head["ContentLength"]) == size:
                        return
                raise

        self.s3.call(bucket, key, "complete upload of", op)

    # ---- download
    def download(self, bucket: str, key: str, dest: Path, size: int | None, sha256: str | None) -> ManifestFile:
        """Download to ``dest`` (hashing in the same pass); check size and sha256 when given."""
        uri = _s3uri(bucket, key)
        if size is None:
            head = self.s3.head(bucket, key)
            if head is None:
                raise StorageError(f"{uri} does not exist at S3 endpoint {self.s.where}: check the URI")
            size = int(head["ContentLength"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        try:
            if size < self.s.multipart_threshold or self.s.download_streams <= 1:
                with open(dest, "wb") as out:
                    self._get_range(bucket, key, 0, size, size, out, h)
            else:
                with open(dest, "wb") as out:
                    out.truncate(size)
                n = min(self.s.download_streams, -(-size // self.s.part_size))
                step = -(-size // n // _MiB) * _MiB
                ranges = [(o, min(step, size - o)) for o in range(0, size, step)]
                futs = [self.parts.submit(self._get_range_to_file, bucket, key, o, ln, size, dest) for o, ln in ranges]
                try:
                    for (o, ln), f in zip(ranges, futs):
                        f.result()
                        _hash_file_range(dest, o, ln, h)  # from the page cache, while later ranges download
                except BaseException:
                    for f in futs:
                        f.cancel()
                    cf.wait(futs)
                    raise
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        got = h.hexdigest()
        if sha256 is not None and got != sha256:
            dest.unlink(missing_ok=True)
            raise StorageError(
                f"{uri} is corrupted: sha256 {got[:16]}… does not match {MANIFEST_NAME} ({sha256[:16]}…) — "
                f"the object was changed after publishing; re-run the step that publishes it"
            )
        return ManifestFile("", size, got)

    def _get_range_to_file(self, bucket: str, key: str, start: int, length: int, total: int, dest: Path) -> None:
        with open(dest, "r+b") as out:
            out.seek(start)
            self._get_range(bucket, key, start, length, total, out, None)

    def _get_range(self, bucket: str, key: str, start: int, length: int, total: int, out: Any, h: Any) -> None:
        """GET [start, start+length) into ``out`` (positioned at ``start``); resumes after a cut connection."""
        uri = _s3uri(bucket, key)
        done = 0

        def op() -> None:
            nonlocal done
            if self.failed.is_set():
                raise StorageError(f"download of {uri} cancelled")
            kw: dict[str, Any] = {}
            end = start + length - 1
            if done or start or length != total:
                if length - done <= 0:
                    return
                kw["Range"] = f"bytes={start + done}-{end}"
            r = self.s3.c.get_object(Bucket=bucket, Key=key, **kw)
            rng = r.get("ContentRange")  # "bytes a-b/TOTAL"
            actual_total = int(rng.rsplit("/", 1)[1]) if rng else int(r["ContentLength"])
            if actual_total != total:
                raise StorageError(
                    f"{uri} is {actual_total} bytes but {MANIFEST_NAME} says {total} — the object was "
                    f"truncated or replaced after publishing; re-run the step that publishes it"
                )
            body = r["Body"]
            try:
                while done < length:
                    b = body.read(min(_CHUNK, length - done))
                    if not b:
                        raise _ShortRead(f"connection closed after {done} of {length} bytes")
                    out.write(b)
                    if h is not None:
                        h.update(b)
                    done += len(b)
            finally:
                body.close()

        self.s3.call(bucket, key, "download", op)


# --------------------------------------------------------------------------------------- local helpers


def _scan(local_dir: Path) -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of every file under ``local_dir``, the top-level manifest excluded."""
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir}: not a directory — nothing to publish; check the path")
    out = []
    for root, dirs, files in os.walk(local_dir, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            rel = p.relative_to(local_dir).as_posix()
            if rel == MANIFEST_NAME:
                continue
            if not p.is_file():
                continue  # dangling symlink, socket ...
            out.append((rel, p))
    if not out:
        raise StorageError(f"{local_dir}: empty directory — nothing to publish; check that the step wrote its output")
    return out


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_hashed(src: Path, dst: Path) -> ManifestFile:
    dst.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    n = 0
    with open(src, "rb") as i, open(dst, "wb") as o:
        while b := i.read(_CHUNK):
            h.update(b)
            o.write(b)
            n += len(b)
        o.flush()
        os.fsync(o.fileno())
    return ManifestFile("", n, h.hexdigest())


def _hash_file(p: Path) -> ManifestFile:
    h = hashlib.sha256()
    n = 0
    with open(p, "rb") as f:
        while b := f.read(_CHUNK):
            h.update(b)
            n += len(b)
    return ManifestFile("", n, h.hexdigest())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _pool_map(fn: Callable[[Any], _T], items: list[Any], workers: int) -> list[_T]:
    if len(items) <= 1 or workers <= 1:
        return [fn(x) for x in items]
    with cf.ThreadPoolExecutor(min(workers, len(items))) as ex:
        return list(ex.map(fn, items))


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _swap_into_place(staging: Path, dest: Path) -> None:
    """Rename ``staging`` to ``dest``; an existing ``dest`` is moved aside first and removed after."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
    os.replace(staging, dest)
    _fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ public API


def read_manifest(uri: str | os.PathLike[str]) -> Manifest:
    """The manifest of a published folder; StorageError if there is none or it is incomplete."""
    if is_remote(uri):
        bucket, key = _split(str(uri))
        data = _S3().get_bytes_or_none(bucket, f"{key}/{MANIFEST_NAME}" if key else MANIFEST_NAME)
        if data is None:
            raise _unpublished(str(uri))
    else:
        p = _local(uri) / MANIFEST_NAME
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise _unpublished(str(uri)) from None
        except OSError as e:
            raise StorageError(f"{p}: cannot read ({e.strerror}) — check permissions") from None
    try:
        return Manifest.from_json(data)
    except ValueError as e:
        raise _unpublished(str(uri), f"{MANIFEST_NAME} is {e}") from None


def publish_dir(local_dir: str | os.PathLike[str], uri: str | os.PathLike[str]) -> Manifest:
    """Publish every file under ``local_dir`` to ``uri`` (s3:// or local) atomically; see the module docstring."""
    src = Path(local_dir).expanduser()
    files = _scan(src)
    if is_remote(uri):
        return _publish_s3(files, str(uri))
    return _publish_local(files, src, _local(uri))


def _publish_local(files: list[tuple[str, Path]], src: Path, dest: Path) -> Manifest:
    if dest.resolve() == src.resolve():  # publish in place: just seal it with a manifest
        hashed = _pool_map(lambda f: dataclasses.replace(_hash_file(f[1]), path=f[0]), files, _workers())
        m = Manifest.build(hashed)
        _write_atomic(dest / MANIFEST_NAME, m.to_json().encode())
        return m
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.staging-{uuid.uuid4().hex[:8]}")
    try:
        entries = _pool_map(lambda f: dataclasses.replace(_copy_hashed(f[1], staging / f[0]), path=f[0]), files, _workers())
        for d, _, _ in os.walk(staging):
            _fsync_dir(Path(d))
        m = Manifest.build(entries)
        _write_atomic(staging / MANIFEST_NAME, m.to_json().encode())
        _swap_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return m


def _publish_s3(files: list[tuple[str, Path]], uri: str) -> Manifest:
    bucket, prefix = _split(uri)
    s3 = _S3()
    base = f"{prefix}/" if prefix else ""
    mkey = base + MANIFEST_NAME
    existing = s3.list(bucket, base)  # also fails fast on credentials / bucket / endpoint
    if mkey in existing:
        s3.call(bucket, mkey, "unpublish", lambda: s3.c.delete_object(Bucket=bucket, Key=mkey))
    keys = {rel: base + rel for rel, _ in files}
    try:
        with _Transfer(s3) as t:
            entries = t.run_all(
                [lambda rel=rel, p=p: dataclasses.replace(t.upload(p, bucket, keys[rel]), path=rel) for rel, p in files]
            )
        listed = s3.list(bucket, base)
        for e in entries:
            got = listed.get(keys[e.path], {}).get("Size")
            if got != e.size:
                raise StorageError(
                    f"{_s3uri(bucket, keys[e.path])}: uploaded {e.size} bytes but the server lists {got} — "
                    f"another writer may be publishing to {uri}; re-run the step"
                )
    except BaseException:
        try:  # best effort: leave no objects behind (they are unpublished anyway: no manifest)
            s3.c.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in list(keys.values())[:1000]], "Quiet": True}
            )
        except Exception:  # noqa: BLE001
            pass
        raise
    stale = [k for k in existing if k != mkey and k not in set(keys.values())]
    if stale:
        try:
            s3.delete_keys(bucket, stale)
        except StorageError:
            pass  # harmless: readers only use what the manifest lists
    m = Manifest.build(entries)
    s3.put_bytes(bucket, mkey, m.to_json().encode(), "application/json")
    return m


def _verify_local_sizes(root: Path, m: Manifest, uri: str) -> bool:
    for f in m.files:
        try:
            if (root / f.path).stat().st_size != f.size:
                return False
        except FileNotFoundError:
            return False
    return True


def download_dir(
    uri: str | os.PathLike[str], local_dir: str | os.PathLike[str], require_manifest: bool = True
) -> Manifest:
    """Download the published folder ``uri`` into ``local_dir`` with every size and sha256 checked.

    The manifest is written into ``local_dir`` last, so the copy is itself a published folder. With
    ``require_manifest=False`` a folder without a manifest is copied as-is (sizes checked, a manifest
    computed from the bytes received).
    """
    dest = Path(local_dir).expanduser()
    if not is_remote(uri):
        src = _local(uri)
        if not src.is_dir():
            raise StorageError(f"{uri}: no such directory — check the path")
        m = read_manifest(uri) if require_manifest else None
        wanted = (
            [(f.path, src / f.path, f) for f in m.files] if m else [(rel, p, None) for rel, p in _scan(src)]
        )

        def cp(item: tuple[str, Path, ManifestFile | None]) -> ManifestFile:
            rel, p, exp = item
            if not p.is_file():
                raise StorageError(f"{p}: listed in {MANIFEST_NAME} but missing — re-run the step that publishes it")
            got = dataclasses.replace(_copy_hashed(p, dest / rel), path=rel)
            if exp is not None and (got.size, got.sha256) != (exp.size, exp.sha256):
                raise StorageError(
                    f"{p} does not match {MANIFEST_NAME} (size/sha256) — it was changed after publishing; "
                    f"re-run the step that publishes it"
                )
            return got

        entries = _pool_map(cp, wanted, _workers())
        out = m or Manifest.build(entries)
        _write_atomic(dest / MANIFEST_NAME, out.to_json().encode())
        return out

    bucket, prefix = _split(str(uri))
    s3 = _S3()
    base = f"{prefix}/" if prefix else ""
    if require_manifest:
        m = read_manifest(uri)
        todo = [(f.path, f.size, f.sha256) for f in m.files]
    else:
        listed = s3.list(bucket, base)
        if base + MANIFEST_NAME in listed:
            return download_dir(uri, local_dir, require_manifest=True)
        if not listed:
            raise StorageError(f"{uri}: no objects under this prefix at S3 endpoint {s3.s.where} — check the URI")
        todo = [(k[len(base) :], v["Size"], None) for k, v in sorted(listed.items())]
        for rel, _, _ in todo:
            try:
                _check_relpath(rel)
            except ValueError:
                raise StorageError(f"{uri}: object name {rel!r} cannot be a local file name") from None
        m = None
    dest.mkdir(parents=True, exist_ok=True)
    with _Transfer(s3) as t:
        entries = t.run_all(
            [
                lambda rel=rel, size=size, sha=sha: dataclasses.replace(
                    t.download(bucket, base + rel, dest / rel, size, sha), path=rel
                )
                for rel, size, sha in todo
            ]
        )
    out = m or Manifest.build(entries)
    _write_atomic(dest / MANIFEST_NAME, out.to_json().encode())
    return out


def fetch(uri: str | os.PathLike[str], require_manifest: bool = True) -> Path:
    """A local directory holding the folder ``uri``.

    Local URIs are returned as they are (after checking the manifest and the files' sizes when
    ``require_manifest``). s3 URIs are downloaded, verified, into ``cache_dir()/dirs/<manifest digest>``
    and reused from there on the next call (one small GET for the manifest, no data transfer).
    """
    if not is_remote(uri):
        p = _local(uri)
        if not p.exists():
            raise StorageError(f"{uri}: no such directory — check the path (or run the step that produces it)")
        if not p.is_dir():
            raise StorageError(f"{uri}: is a file, not a folder — use fetch_file() for single files")
        if require_manifest:
            m = read_manifest(uri)
            if not _verify_local_sizes(p, m, str(uri)):
                raise StorageError(
                    f"{uri}: files do not match {MANIFEST_NAME} (missing or different size) — "
                    f"re-run the step that publishes it"
                )
        return p

    if require_manifest:
        m = read_manifest(uri)
        digest = m.digest
    else:
        bucket, prefix = _split(str(uri))
        base = f"{prefix}/" if prefix else ""
        listed = _S3().list(bucket, base)
        if base + MANIFEST_NAME in listed:
            return fetch(uri, require_manifest=True)
        if not listed:
            raise StorageError(f"{uri}: no objects under this prefix — check the URI")
        h = hashlib.sha256()
        for k, v in sorted(listed.items()):
            h.update(f"{k}\t{v['Size']}\t{v['ETag']}\n".encode())
        digest = "listing-" + h.hexdigest()
        m = None
    root = cache_dir() / "dirs"
    final = root / digest
    if (final / MANIFEST_NAME).is_file():
        try:
            cached = Manifest.from_json((final / MANIFEST_NAME).read_bytes())
            if (m is None or cached.digest == m.digest) and _verify_local_sizes(final, cached, str(final)):
                return final
        except ValueError:
            pass
        shutil.rmtree(final, ignore_errors=True)  # damaged cache entry: fetch again
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{digest[:16]}-{uuid.uuid4().hex[:8]}"
    try:
        download_dir(uri, tmp, require_manifest=require_manifest)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MANIFEST_NAME).is_file():  # not a concurrent fetch that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def fetch_file(uri: str | os.PathLike[str]) -> Path:
    """A local path holding the single file/object ``uri`` (s3 objects cached by ETag and size)."""
    if not is_remote(uri):
        p = _local(uri)
        if not p.is_file():
            raise StorageError(f"{uri}: no such file — check the path")
        return p
    bucket, key = _split(str(uri))
    s3 = _S3()
    head = s3.head(bucket, key)
    if head is None:
        raise StorageError(f"{uri} does not exist at S3 endpoint {s3.s.where} (bucket '{bucket}'): check the URI")
    size, etag = int(head["ContentLength"]), str(head.get("ETag", "")).strip('"')
    ident = hashlib.sha256(f"{s3.s.where}|{bucket}/{key}|{etag}|{size}".encode()).hexdigest()[:40]
    final = cache_dir() / "files" / ident / (key.rsplit("/", 1)[-1] or "object")
    if final.is_file() and final.stat().st_size == size:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with _Transfer(s3) as t:
            t.download(bucket, key, tmp, size, None)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def upload_file(local_path: str | os.PathLike[str], uri: str | os.PathLike[str]) -> ManifestFile:
    """Upload (or copy) one file; returns its size and sha256."""
    src = Path(local_path).expanduser()
    if not src.is_file():
        raise StorageError(f"{src}: no such file — check the path")
    if not is_remote(uri):
        dst = _local(uri)
        tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            r = _copy_hashed(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        return dataclasses.replace(r, path=dst.name)
    bucket, key = _split(str(uri))
    s3 = _S3()
    with _Transfer(s3) as t:
        return dataclasses.replace(t.upload(src, bucket, key), path=key.rsplit("/", 1)[-1])


def download_file(uri: str | os.PathLike[str], local_path: str | os.PathLike[str]) -> Path:
    """Download (or copy) one file to ``local_path`` (size checked)."""
    dst = Path(local_path).expanduser()
    if not is_remote(uri):
        src = fetch_file(uri)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return dst
    bucket, key = _split(str(uri))
    s3 = _S3()
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with _Transfer(s3) as t:
            t.download(bucket, key, tmp, None, None)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def exists(uri: str | os.PathLike[str]) -> bool:
    """Whether a file/object or a folder (a prefix with objects under it) exists at ``uri``."""
    if not is_remote(uri):
        return _local(uri).exists()
    bucket, key = _split(str(uri))
    s3 = _S3()
    if key and s3.head(bucket, key) is not None:
        return True
    r = s3.call(
        bucket, key, "list", lambda: s3.c.list_objects_v2(Bucket=bucket, Prefix=f"{key}/" if key else "", MaxKeys=1)
    )
    return bool(r.get("KeyCount") or r.get("Contents"))


def list_uris(prefix: str | os.PathLike[str]) -> list[str]:
    """Every file/object under the folder ``prefix``, recursively, as full URIs/paths, sorted."""
    if not is_remote(prefix):
        p = _local(prefix)
        if p.is_file():
            return [str(prefix)]
        if not p.is_dir():
            return []
        return sorted(join(str(prefix), rel) for rel, _ in _walk_all(p))
    bucket, key = _split(str(prefix))
    listed = _S3().list(bucket, f"{key}/" if key else "")
    return sorted(_s3uri(bucket, k) for k in listed)


def _walk_all(p: Path) -> Iterator[tuple[str, Path]]:
    for root, _, files in os.walk(p, followlinks=True):
        for name in files:
            fp = Path(root) / name
            yield fp.relative_to(p).as_posix(), fp


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    if not is_remote(uri):
        try:
            return _local(uri).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{uri}: no such file — check the path") from None
    bucket, key = _split(str(uri))
    s3 = _S3()
    data = s3.get_bytes_or_none(bucket, key)
    if data is None:
        raise StorageError(f"{uri} does not exist at S3 endpoint {s3.s.where} (bucket '{bucket}'): check the URI")
    return data


def read_text(uri: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def write_bytes(uri: str | os.PathLike[str], data: bytes) -> None:
    """Write one object/file (local writes are atomic: temp file + rename)."""
    if not is_remote(uri):
        _write_atomic(_local(uri), data)
        return
    bucket, key = _split(str(uri))
    if not key:
        raise StorageError(f"{uri}: no key in the URI — write it as s3://BUCKET/KEY")
    _S3().put_bytes(bucket, key, data)


def write_text(uri: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding))
