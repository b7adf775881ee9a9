"""Parallel S3 transfers of whole files: single PUT or multipart upload, streamed or ranged parallel
GETs that resume after a cut connection; every byte hashed in the same pass."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import StorageError
from .faults import ShortRead, client_error_info
from .hashing import CHUNK, HashingReader, hash_file_range
from .manifest import MANIFEST_NAME, ManifestFile
from .s3 import S3
from .settings import MiB
from .uris import s3_uri

T = TypeVar("T")


class Transfer:
    """Parallel transfers: a pool of per-file jobs and a pool of per-part requests (two pools, no deadlock)."""

    def __init__(self, s3: S3):
        self.s3 = s3
        self.s = s3.s
        self.files = cf.ThreadPoolExecutor(self.s.concurrency, thread_name_prefix="alignpipe-s3-file")
        self.parts = cf.ThreadPoolExecutor(self.s.concurrency, thread_name_prefix="alignpipe-s3-part")
        # part buffers in memory at once (upload): bounded
        self.buffers = threading.Semaphore(self.s.concurrency + 2)
        self.failed = threading.Event()

    def __enter__(self) -> Transfer:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self.failed.set()
        self.files.shutdown(wait=True, cancel_futures=True)
        self.parts.shutdown(wait=True, cancel_futures=True)

    def run_all(self, jobs: list[Callable[[], T]]) -> list[T]:
        futs = [self.files.submit(j) for j in jobs]
        try:
            return [f.result() for f in futs]
        except BaseException:
            self.failed.set()
            for f in futs:
                f.cancel()
            cf.wait(futs)
            raise

    # ---- upload
    def upload(self, path: Path, bucket: str, key: str) -> ManifestFile:
        size = path.stat().st_size
        if size < self.s.multipart_threshold:
            state: dict[str, Any] = {"h": hashlib.sha256(), "upto": 0}

            def put() -> None:
                body = HashingReader(path, state)
                try:
                    self.s3.c.put_object(Bucket=bucket, Key=key, Body=body, ContentLength=size)
                finally:
                    body.close()

            self.s3.call(bucket, key, "upload", put)
            if state["upto"] != size:  # the body was not read in one pass (unusual): hash the rest
                hash_file_range(path, state["upto"], size - state["upto"], state["h"])
            return ManifestFile("", size, state["h"].hexdigest())
        return ManifestFile("", size, self._upload_multipart(path, size, bucket, key))

    def _upload_multipart(self, path: Path, size: int, bucket: str, key: str) -> str:
        c, ps = self.s3.c, self.s.part_size
        uid = self.s3.call(bucket, key, "upload", lambda: c.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
        h = hashlib.sha256()
        futs: list[cf.Future[dict[str, Any]]] = []
        try:
            with open(path, "rb") as f:
                for i, off in enumerate(range(0, size, ps)):
                    if self.failed.is_set() or any(x.done() and x.exception() for x in futs):
                        break
                    self.buffers.acquire()
                    try:
                        data = f.read(min(ps, size - off))
                        if len(data) != min(ps, size - off):
                            raise StorageError(f"{path} changed size while uploading it")
                        h.update(data)
                        futs.append(self.parts.submit(self._put_part, bucket, key, uid, i + 1, data))
                    except BaseException:
                        self.buffers.release()
                        raise
            parts = [x.result() for x in futs]  # re-raises a part's error
            if len(parts) != (size + ps - 1) // ps:
                raise StorageError(f"upload of {s3_uri(bucket, key)} was cancelled")
            self._complete(bucket, key, uid, parts, size)
        except BaseException:
            for x in futs:
                x.cancel()
            cf.wait(futs)
            try:
                c.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)
            except Exception:  # noqa: BLE001 - best effort; lifecycle rules reap the rest
                pass
            raise
        return h.hexdigest()

    def _put_part(self, bucket: str, key: str, uid: str, n: int, data: bytes) -> dict[str, Any]:
        try:
            r = self.s3.call(
                bucket,
                key,
                f"upload part {n} of",
                lambda: self.s3.c.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=data),
            )
            return {"PartNumber": n, "ETag": r["ETag"]}
        finally:
            self.buffers.release()

    def _complete(self, bucket: str, key: str, uid: str, parts: list[dict[str, Any]], size: int) -> None:
        from botocore.exceptions import ClientError

        def op() -> None:
            try:
                self.s3.c.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}
                )
            except ClientError as e:
                # the previous attempt may have completed and only its response got lost
                if client_error_info(e)[0] == "NoSuchUpload":
                    head = self.s3.c.head_object(Bucket=bucket, Key=key)
                    if int(head["ContentLength"]) == size:
                        return
                raise

        self.s3.call(bucket, key, "complete upload of", op)

    # ---- download
    def download(self, bucket: str, key: str, dest: Path, size: int | None, sha256: str | None) -> ManifestFile:
        """Download to ``dest`` (hashing in the same pass); check size and sha256 when given."""
        uri = s3_uri(bucket, key)
        if size is None:
            head = self.s3.head(bucket, key)
            if head is None:
                raise StorageError(f"{uri} does not exist at S3 endpoint {self.s.where}: check the URI")
            size = int(head["ContentLength"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        try:
            if size < self.s.multipart_threshold or self.s.download_streams <= 1:
                with open(dest, "wb") as out:
                    self._get_range(bucket, key, 0, size, size, out, h)
            else:
                with open(dest, "wb") as out:
                    out.truncate(size)
                n = min(self.s.download_streams, -(-size // self.s.part_size))
                step = -(-size // n // MiB) * MiB
                ranges = [(o, min(step, size - o)) for o in range(0, size, step)]
                futs = [self.parts.submit(self._get_range_to_file, bucket, key, o, ln, size, dest) for o, ln in ranges]
                try:
                    for (o, ln), f in zip(ranges, futs):
                        f.result()
                        hash_file_range(dest, o, ln, h)  # from the page cache, while later ranges download
                except BaseException:
                    for f in futs:
                        f.cancel()
                    cf.wait(futs)
                    raise
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        got = h.hexdigest()
        if sha256 is not None and got != sha256:
            dest.unlink(missing_ok=True)
            raise StorageError(
                f"{uri} is corrupted: sha256 {got[:16]}… does not match {MANIFEST_NAME} ({sha256[:16]}…) — "
                f"the object was changed after publishing; re-run the step that publishes it"
            )
        return ManifestFile("", size, got)

    def _get_range_to_file(self, bucket: str, key: str, start: int, length: int, total: int, dest: Path) -> None:
        with open(dest, "r+b") as out:
            out.seek(start)
            self._get_range(bucket, key, start, length, total, out, None)

    def _get_range(self, bucket: str, key: str, start: int, length: int, total: int, out: Any, h: Any) -> None:
        """GET [start, start+length) into ``out`` (positioned at ``start``); resumes after a cut connection."""
        uri = s3_uri(bucket, key)
        done = 0

        def op() -> None:
            nonlocal done
            if self.failed.is_set():
                raise StorageError(f"download of {uri} cancelled")
            kw: dict[str, Any] = {}
            end = start + length - 1
            if done or start or length != total:
                if length - done <= 0:
                    return
                kw["Range"] = f"bytes={start + done}-{end}"
            r = self.s3.c.get_object(Bucket=bucket, Key=key, **kw)
            rng = r.get("ContentRange")  # "bytes a-b/TOTAL"
            actual_total = int(rng.rsplit("/", 1)[1]) if rng else int(r["ContentLength"])
            if actual_total != total:
                raise StorageError(
                    f"{uri} is {actual_total} bytes but {MANIFEST_NAME} says {total} — the object was "
                    f"truncated or replaced after publishing; re-run the step that publishes it"
                )
            body = r["Body"]
            try:
                while done < length:
                    b = body.read(min(CHUNK, length - done))
                    if not b:
                        raise ShortRead(f"connection closed after {done} of {length} bytes")
                    out.write(b)
                    if h is not None:
                        h.update(b)
                    done += len(b)
            finally:
                body.close()

        self.s3.call(bucket, key, "download", op)
