"""Content-addressed step reuse: a training stage that has already produced its output for the same inputs
reuses that output instead of training again.

A stage's **content key** is a sha256 over
- its resolved config, minus what does not change the trained weights (``output_dir``, ``run_name``,
  ``tracking``, ``reuse`` and the checkpoint cadence ``training.save_*`` / ``sigterm_grace_s``),
- the content digests of its inputs: each data set's digest (from its validation report) and each input
  model's digest (the ``MANIFEST.json`` digest of a published folder; a hash of the files of an unpublished
  local folder; the name of the embedded ``tiny`` model; a hub id with the commit its ``main`` revision
  resolves to, asked of the Hub or, offline, read from the local Hugging Face cache — a hub id whose commit
  cannot be resolved makes the step train, never reuse),
- the alignpipe version.

After a stage has published its output it records ``reuse/<stage>/<key>.json`` in the state store
(:func:`state_root`): the output's URI and manifest digest, its metrics and lineage. A later run with the
same key finds the record, checks that the output is still published with that manifest digest, copies it
to its own ``output_dir`` (nothing to copy when it is the same place), logs ``reused <uri>``, tags its MLflow
run ``alignpipe.reused_from`` and returns the recorded metrics with ``reused_from`` in the lineage (which the
pipeline step puts in the model's metadata). ``reuse: false`` in the stage config or
``ALIGNPIPE_FORCE_RERUN=1`` trains anyway. A changed data row changes the data digest, so the key, so no reuse.

When the output is a pod-local folder (a KFP artifact path) and the state store is remote, a copy of the
output is published under ``outputs/<stage>/<key>/`` in the state store and recorded instead: a pod's local
path means nothing to the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from alignpipe import settings, storage
from alignpipe.base import StageResult, is_main_process

FORMAT = "alignpipe.reuse/v1"
#: Config fields that do not change what a stage trains.
VOLATILE = ("output_dir", "run_name", "tracking", "reuse")
VOLATILE_TRAINING = ("save_steps", "save_minutes", "save_total_limit", "sigterm_grace_s")
#: Config fields naming input models.
MODEL_FIELDS = ("model", "ref_model", "reward_model")


def say(msg: str) -> None:
    print(f"alignpipe: {msg}", file=sys.stderr, flush=True)


def version() -> str:
    try:
        from importlib.metadata import version as v

        return v("alignpipe")
    except Exception:  # noqa: BLE001 - not installed
        return "0+unknown"


def state_root() -> str:
    """Where checkpoints and the reuse index live (ALIGNPIPE_STATE_URI, see settings)."""
    s = settings.current()
    if s.state_uri:
        return s.state_uri.rstrip("/")
    if s.artifact_root:
        return storage.join(s.artifact_root, "alignpipe-state")
    return str(s.checkpoint_dir / "state")


def _folder_digest(p: Path) -> str:
    h = hashlib.sha256()
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            h.update(f"{f.relative_to(p).as_posix()}\t{f.stat().st_size}\t{_file_sha256(f)}\n".encode())
    return h.hexdigest()


def model_digest(uri: str | None) -> str | None:
    """The content digest of an input model (see the module docstring)."""
    if not uri:
        return None
    if uri == "tiny" or uri.startswith("tiny:"):
        return f"builtin:{uri}@{version()}"
    try:
        return "manifest:" + storage.read_manifest(uri).digest
    except storage.StorageError:
        pass
    if not storage.is_remote(uri) and Path(uri).is_dir():
        return "files:" + _folder_digest(Path(uri))
    sha = hub_revision(uri)
    if sha:
        return f"hub:{uri}@{sha}"
    return f"name:{uri}"  # a hub id whose revision could not be resolved: never reused (Step.reused)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_revision(repo_id: str, revision: str = "main") -> str | None:
    """The commit a hub model id resolves to: asked of the Hub (10 s) unless HF_HUB_OFFLINE is set, else the
    commit the local Hugging Face cache holds for `revision` (the one ``from_pretrained`` would load
    offline); None when neither answers."""
    if not _HUB_ID.match(repo_id):
        return None
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    from huggingface_hub import constants

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or constants.HF_HUB_OFFLINE
    if not offline:
        try:
            from huggingface_hub import HfApi

            return HfApi().model_info(repo_id, revision=revision, timeout=10).sha
        except Exception as e:  # no network, unknown repo, gated: fall back to the cache
            say(f"could not ask the Hub for {repo_id}@{revision} ({type(e).__name__}); using the local cache")
    cache = Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
    ref = cache / ("models--" + repo_id.replace("/", "--")) / "refs" / revision
    try:
        sha = ref.read_text().strip()
    except OSError:
        return None
    return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else None


def content_key(stage: str, cfg, inputs: dict[str, str | None]) -> str:
    d: dict[str, Any] = cfg.model_dump(mode="json")
    for k in VOLATILE:
        d.pop(k, None)
    if isinstance(d.get("training"), dict):
        d["training"] = {k: v for k, v in d["training"].items() if k not in VOLATILE_TRAINING}
    for k, v in inputs.items():
        if k in d:
            d[k] = None  # the URI does not matter, its content does
    payload = {"stage": stage, "config": d, "inputs": {k: v for k, v in sorted(inputs.items()) if v},
               "alignpipe": version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _same_place(a: str, b: str) -> bool:
    if storage.is_remote(a) or storage.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


class Step:
    """One training stage's identity by content: ``key``, :meth:`reused`, :meth:`record`."""

    def __init__(self, stage: str, cfg, **data_digests: str | None):
        self.stage, self.cfg = stage, cfg
        inputs: dict[str, str | None] = {k: v for k, v in data_digests.items() if v}
        for f in MODEL_FIELDS:
            if getattr(cfg, f, None):
                inputs[f] = model_digest(getattr(cfg, f))
        self.inputs = inputs
        self.key = content_key(stage, cfg, inputs)
        self.index_uri = storage.join(state_root(), "reuse", stage, f"{self.key}.json")

    def _entry(self) -> dict | None:
        try:
            entry = json.loads(storage.read_text(self.index_uri))
        except (storage.StorageError, ValueError):
            return None
        return entry if entry.get("format") == FORMAT and entry.get("key") == self.key else None

    def reused(self) -> StageResult | None:
        """The recorded output for this key, copied to ``cfg.output_dir``; None when there is none (or a re-run
        is forced, or the recorded output is no longer complete)."""
        if not getattr(self.cfg, "reuse", True) or settings.current().force_rerun:
            return None
        unresolved = [v.removeprefix("name:") for v in self.inputs.values() if v.startswith("name:")]
        if unresolved:
            say(f"{self.stage}: not looking for a reusable output: the revision of {', '.join(unresolved)} could "
                "not be resolved (no Hub access and not in the local Hugging Face cache); training")
            return None
        entry = self._entry()
        if entry is None:
            return None
        uri = entry["output"]
        try:
            m = storage.read_manifest(uri)
        except storage.StorageError:
            say(f"{self.stage}: not reusing {uri}: it is no longer completely published; training")
            return None
        if m.digest != entry.get("manifest_digest"):
            say(f"{self.stage}: not reusing {uri}: its content changed since it was recorded; training")
            return None
        start = time.perf_counter()
        if is_main_process() and not _same_place(uri, self.cfg.output_dir):
            storage.publish_dir(storage.fetch(uri), self.cfg.output_dir)
        say(f"{self.stage}: reused {uri} (content key {self.key[:16]}; reuse: false or ALIGNPIPE_FORCE_RERUN=1 "
            "trains again)")
        from alignpipe import tracking

        metrics = {k: float(v) for k, v in entry.get("metrics", {}).items()}
        lineage = {**entry.get("lineage", {}), "reused_from": uri, "reuse_key": self.key}
        with tracking.stage_run(self.stage, self.cfg, self.cfg.tracking, self.cfg.run_name or self.stage) as tr:
            tr.set_tags({"alignpipe.reused_from": uri, "alignpipe.reuse_key": self.key})
            tr.log_metrics(metrics)
        if tr.run_id:
            lineage["mlflow_run_id"] = tr.run_id
        return StageResult(self.stage, self.cfg.output_dir, metrics, lineage, [], time.perf_counter() - start)

    def record(self, result: StageResult) -> None:
        """After a successful publish: record the output under this key (rank 0)."""
        if not is_main_process() or not result.output:
            return
        out = result.output
        if not storage.is_remote(out) and storage.is_remote(state_root()):
            copy = storage.join(state_root(), "outputs", self.stage, self.key)
            storage.publish_dir(out, copy)
            out = copy
        m = storage.read_manifest(out)
        entry = {"format": FORMAT, "stage": self.stage, "key": self.key, "output": out, "manifest_digest": m.digest,
                 "metrics": result.metrics, "lineage": result.lineage, "inputs": self.inputs,
                 "alignpipe_version": version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        storage.write_text(self.index_uri, json.dumps(entry, indent=1, default=str))


class DataStep:
    """Reuse for one data set of ``prepare-data``: keyed by the source's raw content (sha256 of the file, or of a
    folder's files), its kind and source format, and the alignpipe version. The taken-in data set (validated,
    converted when it came from another tool) is published under ``reuse/prepare-data/<key>/`` in the state
    store with its metadata, so a rerun on the same bytes skips validation and conversion; changed bytes behind
    the same URI change the key."""

    def __init__(self, local_source: Path, kind: str, fmt: str):
        digest = (_folder_digest(local_source) if local_source.is_dir()
                  else _file_sha256(local_source))
        payload = {"stage": "prepare-data", "source_sha256": digest, "kind": kind, "format": fmt,
                   "alignpipe": version()}
        self.key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        self.folder = storage.join(state_root(), "reuse", "prepare-data", self.key)
        self.index_uri = storage.join(state_root(), "reuse", "prepare-data", f"{self.key}.json")

    def reused(self, dest: Path) -> dict | None:
        """The recorded metadata, with the recorded data set copied to `dest`; None when there is none (or a
        re-run is forced, or the record is incomplete)."""
        if settings.current().force_rerun:
            return None
        try:
            entry = json.loads(storage.read_text(self.index_uri))
            local = storage.fetch(self.folder)
        except (storage.StorageError, ValueError):
            return None
        if entry.get("format") != FORMAT or entry.get("key") != self.key:
            return None
        src = local / entry["name"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        shutil.copytree(src, dest) if src.is_dir() else shutil.copyfile(src, dest)
        return {**entry["metadata"], "reused_from": self.folder, "reuse_key": self.key}

    def record(self, taken_in: Path, metadata: dict) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="alignpipe-reuse-") as tmp:
            staged = Path(tmp) / "data"
            staged.mkdir()
            name = taken_in.name or "data"
            shutil.copytree(taken_in, staged / name) if taken_in.is_dir() else shutil.copyfile(taken_in, staged / name)
            storage.publish_dir(staged, self.folder)
        entry = {"format": FORMAT, "stage": "prepare-data", "key": self.key, "name": name,
                 "metadata": {k: v for k, v in metadata.items() if k not in ("reused_from", "reuse_key")},
                 "alignpipe_version": version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        storage.write_text(self.index_uri, json.dumps(entry, indent=1, default=str))


def _file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
