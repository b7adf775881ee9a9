"""The retry policy: bounded, jittered exponential back-off on transient faults, within a deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from .faults import is_transient, to_error
from .settings import S3Settings

T = TypeVar("T")


def retry(s: S3Settings, bucket: str, key: str, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` with bounded, jittered exponential back-off on transient faults; map errors to StorageError."""
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            elapsed = time.monotonic() - start
            if not is_transient(e) or attempt >= s.max_attempts or elapsed >= s.retry_deadline:
                raise to_error(e, s, bucket, key, what, attempt, elapsed) from e
            delay = min(s.backoff_max, s.backoff * (2 ** (attempt - 1))) * random.uniform(0.5, 1.0)
            time.sleep(max(0.0, min(delay, s.retry_deadline - elapsed)))
