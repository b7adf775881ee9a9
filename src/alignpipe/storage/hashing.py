"""sha256 of files as they are read, copied or uploaded (one pass over the bytes)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .manifest import ManifestFile
from .settings import MiB

CHUNK = 4 * MiB  # read/write/hash granularity


class HashingReader:
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


def hash_file_range(path: Path, start: int, length: int, h: Any) -> None:
    """Feed bytes [start, start+length) of ``path`` into the hash ``h``."""
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            b = f.read(min(CHUNK, left))
            if not b:
                raise OSError(f"{path} shrank while reading")
            h.update(b)
            left -= len(b)


def copy_hashed(src: Path, dst: Path) -> ManifestFile:
    """Copy ``src`` to ``dst`` (fsync'ed), hashing in the same pass; the entry's path is left empty."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    n = 0
    with open(src, "rb") as i, open(dst, "wb") as o:
        while b := i.read(CHUNK):
            h.update(b)
            o.write(b)
            n += len(b)
        o.flush()
        os.fsync(o.fileno())
    return ManifestFile("", n, h.hexdigest())


def hash_file(p: Path) -> ManifestFile:
    """Size and sha256 of ``p``; the entry's path is left empty."""
    h = hashlib.sha256()
    n = 0
    with open(p, "rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
            n += len(b)
    return ManifestFile("", n, h.hexdigest())
