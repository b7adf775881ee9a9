"""Local files: scanning a folder, atomic writes and renames with fsync, a small thread pool."""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .errors import StorageError
from .manifest import MANIFEST_NAME, Manifest

T = TypeVar("T")


def scan(local_dir: Path) -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of every file under ``local_dir``, the top-level manifest excluded."""
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir}: not a directory — nothing to publish; check the path")
    out = []
    for root, dirs, files in os.walk(local_dir, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            rel = p.relative_to(local_dir).as_posix()
            if rel == MANIFEST_NAME:
                continue
            if not p.is_file():
                continue  # dangling symlink, socket ...
            out.append((rel, p))
    if not out:
        raise StorageError(f"{local_dir}: empty directory — nothing to publish; check that the step wrote its output")
    return out


def walk_all(p: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix path, absolute path) of every file under ``p``, manifests included."""
    for root, _, files in os.walk(p, followlinks=True):
        for name in files:
            fp = Path(root) / name
            yield fp.relative_to(p).as_posix(), fp


def verify_local_sizes(root: Path, m: Manifest) -> bool:
    """Whether every file ``m`` lists is under ``root`` with its listed size."""
    for f in m.files:
        try:
            if (root / f.path).stat().st_size != f.size:
                return False
        except FileNotFoundError:
            return False
    return True


def fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsync'ed temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def swap_into_place(staging: Path, dest: Path) -> None:
    """Rename ``staging`` to ``dest``; an existing ``dest`` is moved aside first and removed after."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
    os.replace(staging, dest)
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def pool_map(fn: Callable[[Any], T], items: list[Any], workers: int) -> list[T]:
    """``[fn(x) for x in items]``, on up to ``workers`` threads."""
    if len(items) <= 1 or workers <= 1:
        return [fn(x) for x in items]
    with cf.ThreadPoolExecutor(min(workers, len(items))) as ex:
        return list(ex.map(fn, items))


def workers() -> int:
    """Threads for local copies and hashing: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))
