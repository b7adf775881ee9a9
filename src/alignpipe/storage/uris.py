"""URIs: what is remote (``s3://``, ``minio://``), splitting an S3 URI, joining parts, local paths."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StorageError

#: Schemes that name an object store; ``minio://`` is what Kubeflow Pipelines uses for its artifact store.
REMOTE_SCHEMES = ("s3://", "minio://")


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """True for ``s3://`` (and ``minio://``) URIs, False for local paths (``file://`` included)."""
    return str(uri).startswith(REMOTE_SCHEMES)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    s = str(uri)
    for scheme in REMOTE_SCHEMES:
        if s.startswith(scheme):
            rest = s[len(scheme) :]
            bucket, _, key = rest.partition("/")
            if not bucket:
                raise StorageError(f"{uri}: no bucket in the URI — write it as s3://BUCKET/KEY")
            return bucket, key.strip("/")
    raise StorageError(f"{uri}: not an s3:// URI")


def s3_uri(bucket: str, key: str) -> str:
    """``("bucket", "a/b")`` -> ``s3://bucket/a/b``."""
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def to_path(uri: str | os.PathLike[str]) -> Path:
    """A local URI as a path: ``file://`` stripped, ``~`` expanded (no check that it exists)."""
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
