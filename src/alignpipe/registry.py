"""The MLflow Model Registry from the user's side: pull a registered model version into a folder.

    >>> from alignpipe import registry
    >>> registry.pull("alignpipe-demo@champion", "models/champion")      # or NAME/VERSION, models:/NAME@ALIAS
    PosixPath('models/champion')

A reference names a registered model and either an alias or a version: ``NAME@ALIAS``, ``NAME/VERSION``,
with or without the ``models:/`` prefix MLflow uses; a bare ``NAME`` means ``NAME@champion``.

The version's ``source`` decides how the files come:

- an ``s3://`` (or ``minio://``) published folder — what `alignpipe stage register` records for models
  that were published to object storage — is downloaded by :func:`alignpipe.storage.download_dir`, every
  file checked against the folder's ``MANIFEST.json`` (size and sha256);
- anything else (``mlflow-artifacts:/...``, ``runs:/...``, ``s3://`` artifact stores MLflow itself
  manages, local paths) goes through ``mlflow.artifacts.download_artifacts``; if the files carry a
  ``MANIFEST.json`` (alignpipe logs one with every local model) it is checked too.

Either way the files land in a hidden sibling of ``dest`` first, must form a complete model folder
(config, safetensors weights, tokenizer: :func:`alignpipe.models.missing_files`), are sealed with a
``MANIFEST.json`` and only then renamed to ``dest``. A failed pull leaves no ``dest`` behind.

Time is bounded: before talking to an ``http(s)`` tracking server, its ``/health`` is probed with a
``ALIGNPIPE_MLFLOW_TIMEOUT`` (default 10 s) deadline, and MLflow's own HTTP retries are capped at
``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT=30`` during the pull unless those
variables are set already (MLflow's defaults retry a dead server for minutes). MLflow artifacts are
streamed through the tracking server (``MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false`` unless set), so a pull
needs to reach only the tracking server, not the S3 endpoint the server uses.

Every failure is a :class:`RegistryError` with one line naming the model, the tracking server and the fix.
(``alignpipe model pull`` is the CLI's wrapper of :func:`pull_model`.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alignpipe import models, settings, storage, tracking
from alignpipe.base import UserError

__all__ = ["DEFAULT_ALIAS", "ModelRef", "PulledModel", "RegistryError", "parse_ref", "pull",
           "pull_model", "resolve"]

DEFAULT_ALIAS = "champion"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # RegisterConfig.model_name's pattern
_REF = re.compile(rf"^(?:models:/)?(?P<name>{_NAME})(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[^/@]+))?$")
# MLflow client settings during a pull, unless the user set these variables: bounded HTTP retries, and
# artifacts streamed through the tracking server. (An MLflow >= 3.x server with S3 artifacts advertises
# "multipart downloads" and the client then GETs presigned URLs from the S3 endpoint *as the server
# addresses it*, e.g. minio-service.kubeflow:9000, unreachable from a laptop; a failing presigned GET is
# retried for minutes.)
_PULL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}


class RegistryError(UserError, ValueError):
    """A registry operation failed; the message is one line naming the model/server and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A parsed reference: a registered model name and exactly one of alias / version."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


@dataclasses.dataclass(frozen=True)
class PulledModel:
    """What :func:`pull_model` fetched: where it is, and which registry entry it came from."""

    path: Path
    name: str
    version: str
    source: str
    aliases: tuple[str, ...]
    run_id: str | None
    files: int
    total_bytes: int


def parse_ref(ref: str) -> ModelRef:
    """``NAME@ALIAS`` | ``NAME/VERSION`` | ``models:/NAME@ALIAS`` | ``models:/NAME/VERSION`` | ``NAME``."""
    m = _REF.match(str(ref).strip())
    if not m:
        raise RegistryError(
            f"{ref!r} is not a model reference — write NAME@ALIAS (e.g. alignpipe-demo@champion) or NAME/VERSION"
        )
    name, alias, version = m.group("name"), m.group("alias"), m.group("version")
    if version is not None and not version.isdigit():
        raise RegistryError(f"{ref!r}: version {version!r} is not a number — write NAME/3, or NAME@ALIAS "
                            "for an alias")
    if alias is None and version is None:
        alias = DEFAULT_ALIAS
    return ModelRef(name, alias, version)


# --------------------------------------------------------------------------------------- MLflow access


def _redact(uri: str) -> str:
    """The tracking URI without credentials (user:password@host), for messages."""
    try:
        p = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri
    if p.password or p.username:
        host = p.hostname or ""
        if p.port:
            host += f":{p.port}"
        return urllib.parse.urlunsplit((p.scheme, host, p.path, p.query, p.fragment))
    return uri


def _probe(uri: str, timeout: float) -> None:
    """Fail fast, with one line, when an http(s) tracking server does not answer within ``timeout`` s."""
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=max(0.2, min(left, 5.0))) as r:
                r.read(64)
            return
        except urllib.error.HTTPError:
            return  # it answered (401/403/404 behind a proxy are still "reachable"; MLflow calls decide)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            last = str(reason) or type(reason).__name__
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    raise RegistryError(
        f"MLflow tracking server {_redact(uri)} did not answer within {timeout:g}s ({last}) — check "
        f"MLFLOW_TRACKING_URI and that the server is running (raise ALIGNPIPE_MLFLOW_TIMEOUT for a slow one)"
    )


@contextlib.contextmanager
def _bounded_http() -> Iterator[None]:
    """MLflow client settings for the duration of a pull (only variables the user has not set)."""
    added = [k for k in _PULL_ENV if k not in os.environ]
    for k in added:
        os.environ[k] = _PULL_ENV[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _timeout() -> float:
    try:
        return settings.current().mlflow_timeout
    except settings.SettingsError as e:  # e.g. ALIGNPIPE_MLFLOW_TIMEOUT='abc' is not a number of seconds
        raise RegistryError(str(e)) from None


def _short(e: BaseException, uri: str = "") -> str:
    """One line of an exception's message, with credentials in ``uri`` (user:password@) blanked out."""
    msg = " ".join(str(getattr(e, "message", None) or str(e) or type(e).__name__).split())
    if uri and _redact(uri) != uri:
        msg = msg.replace(uri.rstrip("/"), _redact(uri).rstrip("/"))
    return msg[:400]


def _not_found(e: BaseException) -> bool:
    code = getattr(e, "error_code", "") or ""
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(e).lower() \
        or "does not exist" in str(e).lower()


def resolve(ref: str | ModelRef, tracking_uri: str | None = None) -> tuple[Any, str]:
    """The MLflow ``ModelVersion`` a reference points at, and the tracking URI used; RegistryError otherwise."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    r = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    uri = tracking_uri or tracking.tracking_uri()
    where = _redact(uri)
    _probe(uri, _timeout())
    registry_uri = settings.current().mlflow_registry_uri or uri
    client = MlflowClient(tracking_uri=uri, registry_uri=registry_uri)
    try:
        rm = client.get_registered_model(r.name)
    except MlflowException as e:
        if _not_found(e):
            raise RegistryError(
                f"no registered model {r.name!r} at {where} — check the name (`alignpipe stage register` "
                f"creates it) and MLFLOW_TRACKING_URI"
            ) from None
        raise RegistryError(f"cannot read registered model {r.name!r} from {where}: {_short(e, uri)}") from None
    except Exception as e:  # noqa: BLE001 - connection errors surface as requests/urllib3 exceptions
        raise RegistryError(f"cannot reach MLflow at {where} for model {r.name!r}: {_short(e, uri)}") from None
    try:
        if r.alias:
            mv = client.get_model_version_by_alias(r.name, r.alias)
        else:
            mv = client.get_model_version(r.name, str(r.version))
    except MlflowException as e:
        if not _not_found(e) and "invalid" not in str(e).lower():
            raise RegistryError(f"cannot read {r} from {where}: {_short(e, uri)}") from None
        if r.alias:
            aliases = sorted(getattr(rm, "aliases", {}) or {})
            have = f"its aliases: {', '.join(aliases)}" if aliases else "it has no aliases"
            raise RegistryError(f"model {r.name!r} has no alias {r.alias!r} at {where} ({have}) — "
                                f"use NAME@ALIAS with one of them, or NAME/VERSION") from None
        latest = max((int(v.version) for v in (rm.latest_versions or [])), default=0)
        have = f"latest version is {latest}" if latest else "it has no versions"
        raise RegistryError(f"model {r.name!r} has no version {r.version} at {where} ({have})") from None
    except Exception as e:  # noqa: BLE001
        raise RegistryError(f"cannot reach MLflow at {where} for {r}: {_short(e, uri)}") from None
    return mv, uri


# --------------------------------------------------------------------------------------------- files


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(4 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_against_manifest(folder: Path, what: str) -> storage.Manifest | None:
    """Verify every file a MANIFEST.json in ``folder`` lists (size + sha256); None if there is none."""
    if not (folder / storage.MANIFEST_NAME).is_file():
        return None
    try:
        m = storage.read_manifest(folder)
    except storage.StorageError as e:
        raise RegistryError(f"{what}: {e}") from None
    for f in m.files:
        p = folder / f.path
        if not p.is_file() or p.stat().st_size != f.size or _sha256(p) != f.sha256:
            raise RegistryError(f"{what}: {f.path} does not match {storage.MANIFEST_NAME} (missing, or changed "
                                f"after publishing) — re-register the model from a complete folder")
    return m


def _model_folder(d: Path) -> Path:
    """download_artifacts of `.../model` may place the files in `<dst>/model`: descend into a lone folder."""
    if not models.missing_files(d):
        return d
    entries = [e for e in d.iterdir() if not e.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return d


def _download(mv: Any, tracking_uri: str, staging: Path, label: str) -> storage.Manifest:
    source = str(mv.source)
    if storage.is_remote(source):
        try:
            return storage.download_dir(source, staging, require_manifest=True)
        except storage.StorageError as e:
            raise RegistryError(f"{label}: cannot download its source: {e}") from None
    import mlflow

    raw = staging.with_name(staging.name + "-raw")
    raw.mkdir(parents=True)
    try:
        try:
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(raw),
                                                           tracking_uri=tracking_uri))
        except Exception as e:  # noqa: BLE001 - MlflowException, OSError, boto errors ...
            raise RegistryError(f"{label}: cannot download its source {source}: {_short(e, tracking_uri)}") from None
        os.replace(_model_folder(got if got.is_dir() else raw), staging)
    finally:
        shutil.rmtree(raw, ignore_errors=True)
    m = _check_against_manifest(staging, f"{label} ({source})")
    if m is None:  # seal it: the pulled folder is itself a published folder
        m = storage.publish_dir(staging, staging)
    return m


def pull_model(ref: str, dest: str | os.PathLike[str], *, overwrite: bool = False,
               tracking_uri: str | None = None) -> PulledModel:
    """Like :func:`pull`, returning what was pulled (version, source, sizes) as well as where."""
    r = parse_ref(ref)
    target = Path(dest).expanduser()
    if target.exists():
        if not target.is_dir():
            raise RegistryError(f"{target} exists and is a file — choose a folder to pull into")
        if any(target.iterdir()) and not overwrite:
            raise RegistryError(f"{target} exists and is not empty — choose a new folder (or overwrite: --force)")
    with _bounded_http():
        mv, uri = resolve(r, tracking_uri)
        label = f"{r.name} v{mv.version}" + (f" (@{r.alias})" if r.alias else "")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.pull-{uuid.uuid4().hex[:8]}")
        try:
            manifest = _download(mv, uri, staging, label)
            missing = models.missing_files(staging)
            if missing:
                raise RegistryError(f"{label} from {mv.source} is not a complete model folder: missing "
                                    f"{', '.join(missing)} — register a folder written by save_pretrained")
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return PulledModel(path=target, name=r.name, version=str(mv.version), source=str(mv.source),
                       aliases=tuple(sorted(getattr(mv, "aliases", []) or [])), run_id=mv.run_id,
                       files=len(manifest.files), total_bytes=manifest.total_bytes)


def pull(ref: str, dest: str | os.PathLike[str], *, overwrite: bool = False,
         tracking_uri: str | None = None) -> Path:
    """Download the registered model version ``ref`` into the folder ``dest``; returns ``dest``.

    ``ref``: ``NAME@ALIAS``, ``NAME/VERSION`` (optionally prefixed ``models:/``), bare ``NAME`` = ``@champion``.
    ``dest`` must not exist or be empty (``overwrite=True`` replaces it once the new copy is complete).
    The result is a verified, complete model folder that ``AutoModelForCausalLM.from_pretrained`` loads.
    Raises :class:`RegistryError` (one line) for an unknown model/alias/version, an unreachable tracking
    server, a source that is missing, unpublished or does not match its manifest, or an incomplete model.
    """
    return pull_model(ref, dest, overwrite=overwrite, tracking_uri=tracking_uri).path


# ------------------------------------------------------------------------------------------------ CLI
