"""The one error type of alignpipe.storage.

Every failure the user can fix (bad URI, credentials, missing bucket, unreachable endpoint, an
unpublished or corrupted folder) is raised as :class:`StorageError`, a :class:`alignpipe.base.UserError`,
so the entry points print it as one line and exit 2.
"""

from __future__ import annotations

from alignpipe.base import UserError


class StorageError(UserError):
    """A storage operation failed; the message is one line naming the URI/endpoint/bucket and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
