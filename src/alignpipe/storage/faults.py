"""Which S3/network faults are transient (retried) and how any fault becomes one StorageError line
naming the endpoint, the bucket and the fix."""

from __future__ import annotations

from .errors import StorageError
from .settings import S3Settings
from .uris import s3_uri

AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
    "403",
}
TRANSIENT_CODES = {
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


class ShortRead(Exception):
    """The response body ended before the expected number of bytes (retryable: we resume)."""


def client_error_info(e: Exception) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore ClientError (``("", 0)`` when absent)."""
    resp = getattr(e, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", ""))
    status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def is_transient(e: BaseException) -> bool:
    """Whether ``e`` is worth retrying (connection/timeout faults, 5xx, 429, SlowDown/throttling)."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, IncompleteReadError

    if isinstance(e, StorageError):
        return False
    if isinstance(e, (ConnectionError, HTTPClientError, IncompleteReadError, ShortRead)):
        return True
    if isinstance(e, ClientError):
        code, status = client_error_info(e)
        return code in TRANSIENT_CODES or status >= 500 or status == 429 or code in {"500", "502", "503", "504"}
    try:
        import urllib3.exceptions as u3

        if isinstance(e, (u3.HTTPError,)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(e, (ConnectionResetError, ConnectionRefusedError, ConnectionAbortedError, BrokenPipeError, TimeoutError))


def to_error(e: BaseException, s: S3Settings, bucket: str, key: str, what: str, attempts: int, elapsed: float) -> StorageError:
    """``e`` (raised by ``what`` on ``s3://bucket/key``) as one StorageError line with the fix."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(e, StorageError):
        return e
    uri = s3_uri(bucket, key)
    ep = s.where
    if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"no S3 credentials for endpoint {ep} (bucket '{bucket}'): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(e, ClientError):
        code, status = client_error_info(e)
        if code in AUTH_CODES or status == 403:
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
        if is_transient(e):
            return StorageError(
                f"S3 endpoint {ep} kept failing ({code or status}) for bucket '{bucket}' on {what} {uri} after "
                f"{attempts} attempts in {elapsed:.1f}s: the server is overloaded or down — retry later or raise "
                f"ALIGNPIPE_S3_MAX_ATTEMPTS / ALIGNPIPE_S3_RETRY_DEADLINE"
            )
        msg = e.response.get("Error", {}).get("Message", "")  # type: ignore[attr-defined]
        return StorageError(f"S3 {what} {uri} failed at endpoint {ep} (bucket '{bucket}'): {code or status} {msg}")
    if isinstance(e, (ConnectionError, HTTPClientError, ShortRead)) or is_transient(e):
        reason = str(e).split("\n")[0][:200] or type(e).__name__
        return StorageError(
            f"cannot reach S3 endpoint {ep} (bucket '{bucket}', {what} {uri}) after {attempts} attempts in "
            f"{elapsed:.1f}s: {reason} — check ALIGNPIPE_S3_ENDPOINT / MLFLOW_S3_ENDPOINT_URL and that the server is up"
        )
    return StorageError(f"S3 {what} {uri} failed at endpoint {ep} (bucket '{bucket}'): {type(e).__name__}: {e}")
