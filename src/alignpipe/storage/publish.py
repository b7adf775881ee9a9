"""The published-folder protocol: publish a folder (manifest last), read its manifest, download it
with every size and sha256 checked, and fetch it into the cache keyed by the manifest digest.

See the package docstring for the protocol and why files go straight to their final keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import uuid
from pathlib import Path

from .errors import StorageError
from .hashing import copy_hashed, hash_file
from .localfs import fsync_dir, pool_map, scan, swap_into_place, verify_local_sizes, workers, write_atomic
from .manifest import MANIFEST_NAME, Manifest, ManifestFile, check_relpath, unpublished
from .s3 import S3
from .settings import cache_dir
from .transfer import Transfer
from .uris import is_remote, s3_uri, split_uri, to_path


def read_manifest(uri: str | os.PathLike[str]) -> Manifest:
    """The manifest of a published folder; StorageError if there is none or it is incomplete."""
    if is_remote(uri):
        bucket, key = split_uri(str(uri))
        data = S3().get_bytes_or_none(bucket, f"{key}/{MANIFEST_NAME}" if key else MANIFEST_NAME)
        if data is None:
            raise unpublished(str(uri))
    else:
        p = to_path(uri) / MANIFEST_NAME
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise unpublished(str(uri)) from None
        except OSError as e:
            raise StorageError(f"{p}: cannot read ({e.strerror}) — check permissions") from None
    try:
        return Manifest.from_json(data)
    except ValueError as e:
        raise unpublished(str(uri), f"{MANIFEST_NAME} is {e}") from None


def publish_dir(local_dir: str | os.PathLike[str], uri: str | os.PathLike[str]) -> Manifest:
    """Publish every file under ``local_dir`` to ``uri`` (s3:// or local) atomically; see the package docstring."""
    src = Path(local_dir).expanduser()
    files = scan(src)
    if is_remote(uri):
        return _publish_s3(files, str(uri))
    return _publish_local(files, src, to_path(uri))


def _publish_local(files: list[tuple[str, Path]], src: Path, dest: Path) -> Manifest:
    if dest.resolve() == src.resolve():  # publish in place: just seal it with a manifest
        hashed = pool_map(
            lambda f: dataclasses.replace(hash_file(f[1]), path=f[0]), files, workers()
        )
        m = Manifest.build(hashed)
        write_atomic(dest / MANIFEST_NAME, m.to_json().encode())
        return m
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.staging-{uuid.uuid4().hex[:8]}")
    try:
        entries = pool_map(
            lambda f: dataclasses.replace(copy_hashed(f[1], staging / f[0]), path=f[0]), files, workers()
        )
        for d, _, _ in os.walk(staging):
            fsync_dir(Path(d))
        m = Manifest.build(entries)
        write_atomic(staging / MANIFEST_NAME, m.to_json().encode())
        swap_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return m


def _publish_s3(files: list[tuple[str, Path]], uri: str) -> Manifest:
    bucket, prefix = split_uri(uri)
    s3 = S3()
    base = f"{prefix}/" if prefix else ""
    mkey = base + MANIFEST_NAME
    existing = s3.list(bucket, base)  # also fails fast on credentials / bucket / endpoint
    if mkey in existing:
        s3.call(bucket, mkey, "unpublish", lambda: s3.c.delete_object(Bucket=bucket, Key=mkey))
    keys = {rel: base + rel for rel, _ in files}
    try:
        with Transfer(s3) as t:
            entries = t.run_all(
                [lambda rel=rel, p=p: dataclasses.replace(t.upload(p, bucket, keys[rel]), path=rel) for rel, p in files]
            )
        listed = s3.list(bucket, base)
        for e in entries:
            got = listed.get(keys[e.path], {}).get("Size")
            if got != e.size:
                raise StorageError(
                    f"{s3_uri(bucket, keys[e.path])}: uploaded {e.size} bytes but the server lists {got} — "
                    f"another writer may be publishing to {uri}; re-run the step"
                )
    except BaseException:
        try:  # best effort: leave no objects behind (they are unpublished anyway: no manifest)
            s3.c.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in list(keys.values())[:1000]], "Quiet": True}
            )
        except Exception:  # noqa: BLE001
            pass
        raise
    stale = [k for k in existing if k != mkey and k not in set(keys.values())]
    if stale:
        try:
            s3.delete_keys(bucket, stale)
        except StorageError:
            pass  # harmless: readers only use what the manifest lists
    m = Manifest.build(entries)
    s3.put_bytes(bucket, mkey, m.to_json().encode(), "application/json")
    return m


def download_dir(
    uri: str | os.PathLike[str], local_dir: str | os.PathLike[str], require_manifest: bool = True
) -> Manifest:
    """Download the published folder ``uri`` into ``local_dir`` with every size and sha256 checked.

    The manifest is written into ``local_dir`` last, so the copy is itself a published folder. With
    ``require_manifest=False`` a folder without a manifest is copied as-is (sizes checked, a manifest
    computed from the bytes received).
    """
    dest = Path(local_dir).expanduser()
    if not is_remote(uri):
        src = to_path(uri)
        if not src.is_dir():
            raise StorageError(f"{uri}: no such directory — check the path")
        m = read_manifest(uri) if require_manifest else None
        wanted = (
            [(f.path, src / f.path, f) for f in m.files] if m else [(rel, p, None) for rel, p in scan(src)]
        )

        def cp(item: tuple[str, Path, ManifestFile | None]) -> ManifestFile:
            rel, p, exp = item
            if not p.is_file():
                raise StorageError(f"{p}: listed in {MANIFEST_NAME} but missing — re-run the step that publishes it")
            got = dataclasses.replace(copy_hashed(p, dest / rel), path=rel)
            if exp is not None and (got.size, got.sha256) != (exp.size, exp.sha256):
                raise StorageError(
                    f"{p} does not match {MANIFEST_NAME} (size/sha256) — it was changed after publishing; "
                    f"re-run the step that publishes it"
                )
            return got

        entries = pool_map(cp, wanted, workers())
        out = m or Manifest.build(entries)
        write_atomic(dest / MANIFEST_NAME, out.to_json().encode())
        return out

    bucket, prefix = split_uri(str(uri))
    s3 = S3()
    base = f"{prefix}/" if prefix else ""
    if require_manifest:
        m = read_manifest(uri)
        todo = [(f.path, f.size, f.sha256) for f in m.files]
    else:
        listed = s3.list(bucket, base)
        if base + MANIFEST_NAME in listed:
            return download_dir(uri, local_dir, require_manifest=True)
        if not listed:
            raise StorageError(f"{uri}: no objects under this prefix at S3 endpoint {s3.s.where} — check the URI")
        todo = [(k[len(base) :], v["Size"], None) for k, v in sorted(listed.items())]
        for rel, _, _ in todo:
            try:
                check_relpath(rel)
            except ValueError:
                raise StorageError(f"{uri}: object name {rel!r} cannot be a local file name") from None
        m = None
    dest.mkdir(parents=True, exist_ok=True)
    with Transfer(s3) as t:
        entries = t.run_all(
            [
                lambda rel=rel, size=size, sha=sha: dataclasses.replace(
                    t.download(bucket, base + rel, dest / rel, size, sha), path=rel
                )
                for rel, size, sha in todo
            ]
        )
    out = m or Manifest.build(entries)
    write_atomic(dest / MANIFEST_NAME, out.to_json().encode())
    return out


def fetch(uri: str | os.PathLike[str], require_manifest: bool = True) -> Path:
    """A local directory holding the folder ``uri``.

    Local URIs are returned as they are (after checking the manifest and the files' sizes when
    ``require_manifest``). s3 URIs are downloaded, verified, into ``cache_dir()/dirs/<manifest digest>``
    and reused from there on the next call (one small GET for the manifest, no data transfer).
    """
    if not is_remote(uri):
        p = to_path(uri)
        if not p.exists():
            raise StorageError(f"{uri}: no such directory — check the path (or run the step that produces it)")
        if not p.is_dir():
            raise StorageError(f"{uri}: is a file, not a folder — use fetch_file() for single files")
        if require_manifest:
            m = read_manifest(uri)
            if not verify_local_sizes(p, m):
                raise StorageError(
                    f"{uri}: files do not match {MANIFEST_NAME} (missing or different size) — "
                    f"re-run the step that publishes it"
                )
        return p

    if require_manifest:
        m = read_manifest(uri)
        digest = m.digest
    else:
        bucket, prefix = split_uri(str(uri))
        base = f"{prefix}/" if prefix else ""
        listed = S3().list(bucket, base)
        if base + MANIFEST_NAME in listed:
            return fetch(uri, require_manifest=True)
        if not listed:
            raise StorageError(f"{uri}: no objects under this prefix — check the URI")
        h = hashlib.sha256()
        for k, v in sorted(listed.items()):
            h.update(f"{k}\t{v['Size']}\t{v['ETag']}\n".encode())
        digest = "listing-" + h.hexdigest()
        m = None
    root = cache_dir() / "dirs"
    final = root / digest
    if (final / MANIFEST_NAME).is_file():
        try:
            cached = Manifest.from_json((final / MANIFEST_NAME).read_bytes())
            if (m is None or cached.digest == m.digest) and verify_local_sizes(final, cached):
                return final
        except ValueError:
            pass
        shutil.rmtree(final, ignore_errors=True)  # damaged cache entry: fetch again
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{digest[:16]}-{uuid.uuid4().hex[:8]}"
    try:
        download_dir(uri, tmp, require_manifest=require_manifest)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MANIFEST_NAME).is_file():  # not a concurrent fetch that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
