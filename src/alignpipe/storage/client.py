"""One botocore S3 client per settings snapshot, built lazily (botocore is imported on first use)."""

from __future__ import annotations

import threading
from typing import Any

from .settings import S3Settings

_clients: dict[S3Settings, Any] = {}
_clients_lock = threading.Lock()


def client(s: S3Settings) -> Any:
    """The (cached, thread-safe) botocore S3 client for ``s``: our own bounded retries, no extra checksums."""
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
