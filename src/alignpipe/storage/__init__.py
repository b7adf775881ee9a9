"""Storage: local paths and ``s3://bucket/key`` URIs (MinIO, AWS S3, any S3-compatible server) behind one API.

Every stage reads its inputs and writes its outputs through this package, so a pipeline runs the same
on a laptop (local paths) and on a cluster (MinIO/S3).

Configuration (read from the environment on every call, so a pod's env or a test's monkeypatch wins):

- ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN`` honoured): credentials;
  unset -> boto3's own chain (IRSA, ~/.aws, instance profile).
- ``ALIGNPIPE_S3_ENDPOINT``, else ``MLFLOW_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3`` /
  ``AWS_ENDPOINT_URL``: ``http(s)://host:port`` of MinIO/S3
  (``host:port`` without a scheme means ``http://``); neither set -> AWS S3 itself.
- ``AWS_DEFAULT_REGION`` / ``AWS_REGION``: region (default ``us-east-1``).
- ``ALIGNPIPE_ARTIFACT_ROOT``: the default pipeline root (e.g. ``s3://alignpipe/runs``), see
  :func:`default_pipeline_root` (None when unset).
- ``ALIGNPIPE_CACHE_DIR``: local cache for fetched folders/files (default ``~/.cache/alignpipe``).
- ``ALIGNPIPE_S3_MAX_ATTEMPTS`` (5), ``ALIGNPIPE_S3_BACKOFF`` (0.2 s, doubled per retry, jittered),
  ``ALIGNPIPE_S3_BACKOFF_MAX`` (2 s), ``ALIGNPIPE_S3_RETRY_DEADLINE`` (30 s: no new attempt of one request
  starts after this): the retry policy for transient faults.
- ``ALIGNPIPE_S3_CONNECT_TIMEOUT`` (5 s), ``ALIGNPIPE_S3_READ_TIMEOUT`` (60 s, per socket read).
- ``ALIGNPIPE_S3_CONCURRENCY`` (8 parallel requests), ``ALIGNPIPE_S3_PART_SIZE_MB`` (64).
- ``ALIGNPIPE_S3_MULTIPART_THRESHOLD_MB`` (512): files at least this big use multipart upload / parallel
  ranged GETs; smaller files are one PUT / one streamed GET each, in parallel across files (a model folder
  has several shards). Measured on a loopback S3 server (moto) with a 1 GiB, 4-shard folder: one PUT per
  shard took 6.9-7.1 s, multipart with 8/16/32/64 MiB parts 11.7/11.9/15.1/17.4 s (completing a multipart
  upload re-assembles the object server-side). S3 allows single PUTs up to 5 GiB.

Publishing a folder (:func:`publish_dir`) — the protocol
---------------------------------------------------------
A published folder is a prefix whose ``MANIFEST.json`` lists every file with its size and sha256, plus a
digest over that list. **The manifest is written last and readers refuse a folder without a complete,
self-consistent manifest**; that, not the presence of objects, is what "published" means.

On S3 the files are uploaded *straight to their final keys*, then the prefix is listed and every size is
checked, then objects of an earlier publish that are no longer listed are deleted, then ``MANIFEST.json``
is PUT. A staging prefix followed by server-side copies would not make this any safer (S3 has no
multi-object rename; readers would still rely on the manifest), but it would cost a second full write of
every byte on MinIO (CopyObject rewrites the data), a multipart *copy* for objects over 5 GB, and twice
the request count. Re-publishing to the same prefix first deletes the old ``MANIFEST.json``, so during
the upload the prefix reads as unpublished instead of as a mix of old and new files. A crash at any point
before the final PUT leaves objects without a manifest, which every reader refuses with
``no complete MANIFEST.json``; an error we can catch also aborts open multipart uploads and removes the
objects written so far (best effort). A reader that races a re-publish gets an error (sha256/size mismatch
or a missing object), never silently mixed files.

For a local destination the files are copied (and hashed) into a hidden temporary sibling, fsync'ed, the
manifest is written, and the folder is renamed into place (atomic on one filesystem).

Fetching (:func:`fetch`, :func:`download_dir`) checks every file's size and sha256 against the manifest
while it downloads (hashing in the same pass), names the offending object on a mismatch, and keys the
cache by the manifest digest, so a second fetch of the same content costs one small GET (the manifest,
to notice a re-publish) and no data transfer.

Faults: connection refused/reset (also mid-transfer: downloads resume from the last byte received),
timeouts, 5xx, SlowDown/throttling are retried with bounded, jittered exponential back-off. Bad
credentials, a missing bucket, or an endpoint that stays unreachable raise :class:`StorageError` with one
line naming the endpoint, the bucket and the fix, within ``ALIGNPIPE_S3_RETRY_DEADLINE`` plus timeouts.

Modules (each does one thing; everything public is re-exported here, use ``storage.X``):

- ``errors``: :class:`StorageError` (a :class:`alignpipe.base.UserError`).
- ``uris``: :func:`is_remote`, :func:`split_uri`, :func:`join`, :func:`to_path`.
- ``settings``: :class:`S3Settings` from the environment, :func:`cache_dir`, :func:`default_pipeline_root`.
- ``client``: one botocore client per settings snapshot.
- ``faults``: which faults are transient (:func:`is_transient`) and how each becomes one error line.
- ``retries``: bounded, jittered exponential back-off (:func:`retry`).
- ``s3``: retrying S3 primitives (head, list, get, put, delete).
- ``hashing``: sha256 while reading, copying or uploading.
- ``transfer``: parallel single/multipart uploads and resumable (ranged) downloads.
- ``manifest``: :class:`Manifest`, :class:`ManifestFile`, ``MANIFEST.json``.
- ``localfs``: local atomic writes/renames with fsync, folder scans.
- ``publish``: the protocol — :func:`publish_dir`, :func:`read_manifest`, :func:`download_dir`, :func:`fetch`.
- ``objects``: single files — :func:`fetch_file`, :func:`upload_file`, :func:`download_file`,
  :func:`exists`, :func:`list_uris`, ``read_*`` / ``write_*``; :func:`delete_dir` (manifest first).

This package imports nothing from alignpipe but :mod:`alignpipe.base`, and botocore only when S3 is used.
"""

from __future__ import annotations

from .errors import StorageError
from .faults import is_transient
from .manifest import MANIFEST_FORMAT, MANIFEST_NAME, Manifest, ManifestFile
from .objects import (
    delete_dir,
    download_file,
    exists,
    fetch_file,
    list_uris,
    read_bytes,
    read_text,
    upload_file,
    write_bytes,
    write_text,
)
from .publish import download_dir, fetch, publish_dir, read_manifest
from .retries import retry
from .settings import S3Settings, cache_dir, default_pipeline_root
from .uris import REMOTE_SCHEMES, is_remote, join, split_uri, to_path

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "REMOTE_SCHEMES",
    "Manifest",
    "ManifestFile",
    "S3Settings",
    "StorageError",
    "cache_dir",
    "default_pipeline_root",
    "delete_dir",
    "download_dir",
    "download_file",
    "exists",
    "fetch",
    "fetch_file",
    "is_remote",
    "is_transient",
    "join",
    "list_uris",
    "publish_dir",
    "read_bytes",
    "read_manifest",
    "read_text",
    "retry",
    "split_uri",
    "to_path",
    "upload_file",
    "write_bytes",
    "write_text",
]
