"""Single files/objects: fetch into the cache, upload, download, exists, list, read and write."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import uuid
from pathlib import Path

from .errors import StorageError
from .hashing import copy_hashed
from .localfs import walk_all, write_atomic
from .manifest import ManifestFile
from .s3 import S3
from .settings import cache_dir
from .transfer import Transfer
from .uris import is_remote, join, s3_uri, split_uri, to_path


def fetch_file(uri: str | os.PathLike[str]) -> Path:
    """A local path holding the single file/object ``uri`` (s3 objects cached by ETag and size)."""
    if not is_remote(uri):
        p = to_path(uri)
        if not p.is_file():
            raise StorageError(f"{uri}: no such file — check the path")
        return p
    bucket, key = split_uri(str(uri))
    s3 = S3()
    head = s3.head(bucket, key)
    if head is None:
        raise StorageError(f"{uri} does not exist at S3 endpoint {s3.s.where} (bucket '{bucket}'): check the URI")
    size, etag = int(head["ContentLength"]), str(head.get("ETag", "")).strip('"')
    ident = hashlib.sha256(f"{s3.s.where}|{bucket}/{key}|{etag}|{size}".encode()).hexdigest()[:40]
    final = cache_dir() / "files" / ident / (key.rsplit("/", 1)[-1] or "object")
    if final.is_file() and final.stat().st_size == size:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with Transfer(s3) as t:
            t.download(bucket, key, tmp, size, None)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def upload_file(local_path: str | os.PathLike[str], uri: str | os.PathLike[str]) -> ManifestFile:
    """Upload (or copy) one file; returns its size and sha256."""
    src = Path(local_path).expanduser()
    if not src.is_file():
        raise StorageError(f"{src}: no such file — check the path")
    if not is_remote(uri):
        dst = to_path(uri)
        tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            r = copy_hashed(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        return dataclasses.replace(r, path=dst.name)
    bucket, key = split_uri(str(uri))
    s3 = S3()
    with Transfer(s3) as t:
        return dataclasses.replace(t.upload(src, bucket, key), path=key.rsplit("/", 1)[-1])


def download_file(uri: str | os.PathLike[str], local_path: str | os.PathLike[str]) -> Path:
    """Download (or copy) one file to ``local_path`` (size checked)."""
    dst = Path(local_path).expanduser()
    if not is_remote(uri):
        src = fetch_file(uri)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return dst
    bucket, key = split_uri(str(uri))
    s3 = S3()
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with Transfer(s3) as t:
            t.download(bucket, key, tmp, None, None)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def exists(uri: str | os.PathLike[str]) -> bool:
    """Whether a file/object or a folder (a prefix with objects under it) exists at ``uri``."""
    if not is_remote(uri):
        return to_path(uri).exists()
    bucket, key = split_uri(str(uri))
    s3 = S3()
    if key and s3.head(bucket, key) is not None:
        return True
    r = s3.call(
        bucket, key, "list", lambda: s3.c.list_objects_v2(Bucket=bucket, Prefix=f"{key}/" if key else "", MaxKeys=1)
    )
    return bool(r.get("KeyCount") or r.get("Contents"))


def list_uris(prefix: str | os.PathLike[str]) -> list[str]:
    """Every file/object under the folder ``prefix``, recursively, as full URIs/paths, sorted."""
    if not is_remote(prefix):
        p = to_path(prefix)
        if p.is_file():
            return [str(prefix)]
        if not p.is_dir():
            return []
        return sorted(join(str(prefix), rel) for rel, _ in walk_all(p))
    bucket, key = split_uri(str(prefix))
    listed = S3().list(bucket, f"{key}/" if key else "")
    return sorted(s3_uri(bucket, k) for k in listed)


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    if not is_remote(uri):
        try:
            return to_path(uri).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{uri}: no such file — check the path") from None
    bucket, key = split_uri(str(uri))
    s3 = S3()
    data = s3.get_bytes_or_none(bucket, key)
    if data is None:
        raise StorageError(f"{uri} does not exist at S3 endpoint {s3.s.where} (bucket '{bucket}'): check the URI")
    return data


def read_text(uri: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def write_bytes(uri: str | os.PathLike[str], data: bytes) -> None:
    """Write one object/file (local writes are atomic: temp file + rename)."""
    if not is_remote(uri):
        write_atomic(to_path(uri), data)
        return
    bucket, key = split_uri(str(uri))
    if not key:
        raise StorageError(f"{uri}: no key in the URI — write it as s3://BUCKET/KEY")
    S3().put_bytes(bucket, key, data)


def write_text(uri: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    write_bytes(uri, text.encode(encoding))


def delete_dir(uri: str | os.PathLike[str]) -> None:
    """Delete the folder ``uri`` (a local directory or every object under an s3 prefix). A published folder
    loses its ``MANIFEST.json`` first, so a reader racing the delete sees an unpublished folder, never a
    published one with files missing. Nothing there is not an error."""
    from .manifest import MANIFEST_NAME

    if not is_remote(uri):
        p = to_path(uri)
        (p / MANIFEST_NAME).unlink(missing_ok=True)
        shutil.rmtree(p, ignore_errors=True)
        return
    bucket, key = split_uri(str(uri))
    if not key:
        raise StorageError(f"{uri}: refusing to delete a whole bucket — give a prefix")
    s3 = S3()
    base = f"{key}/"
    keys = list(s3.list(bucket, base))
    if base + MANIFEST_NAME in keys:
        s3.delete_keys(bucket, [base + MANIFEST_NAME])
        keys.remove(base + MANIFEST_NAME)
    if keys:
        s3.delete_keys(bucket, keys)
