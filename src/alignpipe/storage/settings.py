"""Settings read from the environment: the S3 endpoint, credentials, retry/timeout/transfer knobs,
the local cache folder and the default pipeline root (see the package docstring for every variable).

Everything is read on every call, so a pod's env or a test's monkeypatch wins.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .errors import StorageError

MiB = 1 << 20


def cache_dir() -> Path:
    """``ALIGNPIPE_CACHE_DIR`` or ``~/.cache/alignpipe``."""
    return Path(os.environ.get("ALIGNPIPE_CACHE_DIR") or "~/.cache/alignpipe").expanduser()


def default_pipeline_root() -> str | None:
    """``ALIGNPIPE_ARTIFACT_ROOT`` (e.g. ``s3://alignpipe/runs``), the default pipeline root; None when unset."""
    return os.environ.get("ALIGNPIPE_ARTIFACT_ROOT") or None


def env_num(name: str, default: float) -> float:
    """The number in env var ``name``; ``default`` when unset or blank; StorageError when not a number."""
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
    part_size: int = 64 * MiB
    multipart_threshold: int = 512 * MiB
    download_streams: int = 4  # ranged GETs per large file

    @classmethod
    def from_env(cls) -> S3Settings:
        e = os.environ
        endpoint = (e.get("ALIGNPIPE_S3_ENDPOINT") or e.get("MLFLOW_S3_ENDPOINT_URL") or e.get("AWS_ENDPOINT_URL_S3")
                    or e.get("AWS_ENDPOINT_URL") or None)
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint
        part = max(5 * MiB, int(env_num("ALIGNPIPE_S3_PART_SIZE_MB", 64) * MiB))
        return cls(
            endpoint=endpoint.rstrip("/") if endpoint else None,
            access_key=e.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=e.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=e.get("AWS_SESSION_TOKEN") or None,
            region=e.get("AWS_DEFAULT_REGION") or e.get("AWS_REGION") or "us-east-1",
            max_attempts=max(1, int(env_num("ALIGNPIPE_S3_MAX_ATTEMPTS", 5))),
            backoff=max(0.0, env_num("ALIGNPIPE_S3_BACKOFF", 0.2)),
            backoff_max=max(0.0, env_num("ALIGNPIPE_S3_BACKOFF_MAX", 2.0)),
            retry_deadline=max(0.0, env_num("ALIGNPIPE_S3_RETRY_DEADLINE", 30.0)),
            connect_timeout=max(0.1, env_num("ALIGNPIPE_S3_CONNECT_TIMEOUT", 5.0)),
            read_timeout=max(0.1, env_num("ALIGNPIPE_S3_READ_TIMEOUT", 60.0)),
            concurrency=max(1, int(env_num("ALIGNPIPE_S3_CONCURRENCY", 8))),
            part_size=part,
            multipart_threshold=max(part, int(env_num("ALIGNPIPE_S3_MULTIPART_THRESHOLD_MB", 512) * MiB)),
        )

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"
