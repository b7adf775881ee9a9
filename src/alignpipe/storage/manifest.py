"""The manifest of a published folder: its file list (path, size, sha256), digest and JSON form.

``MANIFEST.json`` is written last when a folder is published; a folder without a complete,
self-consistent manifest is unpublished (see :mod:`alignpipe.storage.publish`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
from typing import Any

from .errors import StorageError

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "alignpipe.manifest/v1"


def unpublished(uri: str, why: str = "") -> StorageError:
    """The error for a folder without a complete manifest."""
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
            check_relpath(f.path)
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


def check_relpath(p: str) -> None:
    """ValueError unless ``p`` is a safe relative POSIX path (no absolute, ``.``, ``..``, empty parts or ``\\``)."""
    parts = p.split("/")
    if not p or p.startswith("/") or "\\" in p or any(x in ("", ".", "..") for x in parts):
        raise ValueError(f"unsafe path {p!r}")
