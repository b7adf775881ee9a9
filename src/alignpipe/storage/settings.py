"""Storage's view of the settings: the S3 endpoint, credentials, retry/timeout/transfer knobs, the local
cache folder and the default pipeline root. The variables themselves are defined (typed, documented,
validated) once, in `alignpipe.settings`; this module only shapes them for the S3 client.

Everything is read on every call, so a pod's env or a test's monkeypatch wins.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import alignpipe.settings as _settings

from .errors import StorageError

MiB = 1 << 20


def _current() -> _settings.Settings:
    try:
        return _settings.current()
    except _settings.SettingsError as e:  # e.g. ALIGNPIPE_S3_MAX_ATTEMPTS='many' is not a number
        raise StorageError(str(e)) from None


def cache_dir() -> Path:
    """``ALIGNPIPE_CACHE_DIR`` or ``~/.cache/alignpipe`` — THE local cache folder (models, downloads)."""
    return Path(_current().cache_dir).expanduser()


def default_pipeline_root() -> str | None:
    """``ALIGNPIPE_ARTIFACT_ROOT`` (e.g. ``s3://alignpipe/pipelines``), the default pipeline root; None when unset."""
    return _current().artifact_root or None


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
        e = _current()
        part = int(e.s3_part_size_mb * MiB)
        return cls(
            endpoint=e.s3_endpoint_url,
            access_key=e.aws_access_key_id,
            secret_key=e.aws_secret_access_key,
            session_token=e.aws_session_token,
            region=e.s3_region,
            max_attempts=e.s3_max_attempts,
            backoff=e.s3_backoff,
            backoff_max=e.s3_backoff_max,
            retry_deadline=e.s3_retry_deadline,
            connect_timeout=e.s3_connect_timeout,
            read_timeout=e.s3_read_timeout,
            concurrency=e.s3_concurrency,
            part_size=part,
            multipart_threshold=max(part, int(e.s3_multipart_threshold_mb * MiB)),
        )

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"
