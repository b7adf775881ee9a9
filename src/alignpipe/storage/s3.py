"""S3 primitives: a thin, retrying wrapper over one botocore client (head, list, get, put, delete)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .client import client
from .faults import ShortRead, client_error_info
from .retries import retry
from .settings import S3Settings

T = TypeVar("T")


class S3:
    """Thin, retrying wrapper over one botocore client for one settings snapshot."""

    def __init__(self, s: S3Settings | None = None):
        self.s = s or S3Settings.from_env()
        self.c = client(self.s)

    def call(self, bucket: str, key: str, what: str, fn: Callable[[], T]) -> T:
        return retry(self.s, bucket, key, what, fn)

    def check_bucket(self, bucket: str, prefix: str = "") -> None:
        """Cheap request that surfaces bad credentials / missing bucket / unreachable endpoint first."""
        self.call(bucket, prefix, "list", lambda: self.c.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1))

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        def op() -> dict[str, Any] | None:
            try:
                return self.c.head_object(Bucket=bucket, Key=key)
            except ClientError as e:
                code, status = client_error_info(e)
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
                raise ShortRead(f"got {len(data)} of {r.get('ContentLength')} bytes")
            return data

        return self.call(bucket, key, "read", op)

    def get_bytes_or_none(self, bucket: str, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        def op() -> bytes | None:
            try:
                r = self.c.get_object(Bucket=bucket, Key=key)
            except ClientError as e:
                code, status = client_error_info(e)
                if code in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            data = r["Body"].read()
            if len(data) != int(r.get("ContentLength", len(data))):
                raise ShortRead(f"got {len(data)} of {r.get('ContentLength')} bytes")
            return data

        return self.call(bucket, key, "read", op)

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str | None = None) -> None:
        kw: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        self.call(bucket, key, "write", lambda: self.c.put_object(Bucket=bucket, Key=key, Body=data, **kw))

    def delete_keys(self, bucket: str, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
            self.call(bucket, keys[i], "delete", lambda b=batch: self.c.delete_objects(Bucket=bucket, Delete=b))
