"""Cluster wiring shared by the pipelines: images, GPUs, resources, secrets, volumes, retries, caching.

Everything Kubernetes-specific is set here, on tasks, never inside components. `kfp.local` ignores it
(with a warning), so the same pipeline definition runs on a laptop and compiles for a cluster.

Compile-time settings (`Platform`) come from the environment the Helm chart's upload job sets
(ALIGNPIPE_IMAGE, ALIGNPIPE_GPU_IMAGE, ALIGNPIPE_GPU_RESOURCE, ALIGNPIPE_GPU_NODE_SELECTOR,
ALIGNPIPE_GPU_TOLERATIONS, ALIGNPIPE_S3_SECRET, ALIGNPIPE_MLFLOW_SECRET, ALIGNPIPE_REWARD_SECRET) or from `alignpipe compile`'s
flags; they become the defaults of run-time pipeline parameters where a user may want to change them
per run (GPU type and count per step, tolerations, node selector, secret names).

Caching (KFP keys a cache entry on the component, its parameters and the identity of its input artifacts):
- off for `prepare-data`: it reads data set URIs whose content can change under the same URI;
- off for `sft` and `evaluate`: they read `base_model` by URI/hub id (mutable);
- off for `register`: it writes to the model registry (a side effect a cache hit would skip);
- on for `reward-model`, `rl` and `preference` (DPO): every input is an upstream artifact or a value, so the inputs
  fully determine the output. In practice they hit only when their upstream tasks were reused too
  (KFP keys on artifact identity), and a cache hit logs no new MLflow child run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kfp import kubernetes

from alignpipe import settings as _settings
from alignpipe.base import UserError

from alignpipe.platform import (
    MLFLOW_OPTIONAL_KEYS,
    MLFLOW_REQUIRED_KEYS,
    REWARD_TOKEN_KEYS,
    S3_OPTIONAL_KEYS,
    S3_REQUIRED_KEYS,
)



@dataclass(frozen=True)
class Step:
    """How a pipeline step runs on the cluster."""

    display: str
    gpu: bool          # GPU image, accelerator, /dev/shm; else a CPU step
    retry: bool        # KFP retries the pod (training steps)
    cached: bool       # outputs are fully determined by inputs (see the module docstring)
    reward_token: bool = False  # takes the code-reward service's token (optional Secret) as ALIGNPIPE_REWARD_TOKEN


#: THE table of pipeline steps: task name -> cluster wiring. One entry per stage (+ prepare-data).
STEPS: dict[str, Step] = {
    "prepare-data": Step("Prepare data", gpu=False, retry=False, cached=False),
    "sft": Step("Supervised fine-tuning", gpu=True, retry=True, cached=False),
    "reward-model": Step("Train reward model", gpu=True, retry=True, cached=True),
    "rl": Step("RL fine-tuning", gpu=True, retry=True, cached=True, reward_token=True),
    "preference": Step("Preference optimisation (DPO)", gpu=True, retry=True, cached=True),
    "evaluate": Step("Evaluate on held-out set", gpu=True, retry=False, cached=False, reward_token=True),
    "register": Step("Register model (gated)", gpu=False, retry=False, cached=False),
    "route": Step("Route prompts by pass rate", gpu=True, retry=True, cached=True),
    "rl-stage": Step("RL stage: data and settings", gpu=False, retry=False, cached=False),
}
#: Tasks whose outputs are fully determined by their inputs.
CACHED = {name for name, step in STEPS.items() if step.cached}


class PlatformError(UserError, ValueError):
    """A compile-time platform setting is malformed (e.g. ALIGNPIPE_GPU_TOLERATIONS is not JSON)."""


def _setting(name: str):
    """Compile-time setting `name` of `alignpipe.settings` (ALIGNPIPE_IMAGE, ALIGNPIPE_GPU_*, ...), read now;
    PlatformError when the environment holds a malformed value (e.g. tolerations that are not JSON)."""
    try:
        return getattr(_settings.current(), name)
    except _settings.SettingsError as e:
        raise PlatformError(str(e)) from None


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class Platform:
    """Compile-time settings of the cluster wiring."""

    image: str = field(default_factory=lambda: _setting("image"))
    gpu_image: str = field(default_factory=lambda: _setting("gpu_image"))
    gpu_resource: str = field(default_factory=lambda: _setting("gpu_resource"))
    gpu_count: int = 1
    node_selector: dict = field(default_factory=lambda: _setting("gpu_node_selector"))
    tolerations: list = field(default_factory=lambda: _setting("gpu_tolerations"))
    s3_secret: str = field(default_factory=lambda: _setting("s3_secret"))
    mlflow_secret: str = field(default_factory=lambda: _setting("mlflow_secret"))
    #: The code-reward service's token Secret (helm: `<fullname>-reward-server`), default of `reward_secret`.
    reward_secret: str = field(default_factory=lambda: _setting("reward_secret"))
    cpu_step: Resources = Resources("1", "2", "2Gi", "4Gi")
    gpu_step: Resources = Resources("4", "8", "16Gi", "32Gi")
    #: Where training steps publish checkpoints and reuse records (ALIGNPIPE_STATE_URI in the pods): an object
    #: store, so a retried pod (a new, empty /cache) resumes. Default: ALIGNPIPE_STATE_URI, else
    #: <pipeline root>/alignpipe-state with `--pipeline-root`/ALIGNPIPE_ARTIFACT_ROOT; None: pod-local only.
    state_uri: str | None = field(default_factory=lambda: _default_state_uri(None))
    shm_size: str = "8Gi"
    cache_size: str = "50Gi"
    retries: int = 2
    retry_backoff: str = "60s"


def _default_state_uri(root: str | None) -> str | None:
    state_uri = _setting("state_uri")
    if state_uri:
        return state_uri.rstrip("/")
    root = root or _setting("artifact_root")
    return f"{root.rstrip('/')}/alignpipe-state" if root else None


def _resources(task, r: Resources):
    return (task.set_cpu_request(r.cpu_request).set_cpu_limit(r.cpu_limit)
            .set_memory_request(r.memory_request).set_memory_limit(r.memory_limit))


def _common(task, name: str, display: str, image: str, s3_secret, mlflow_secret, state_uri: str | None = None):
    task.set_display_name(display).set_container_image(image)
    if state_uri:
        task.set_env_variable("ALIGNPIPE_STATE_URI", state_uri)
    task.set_caching_options(name in CACHED)
    task.set_env_variable("ALIGNPIPE_CACHE_DIR", "/cache/alignpipe")
    task.set_env_variable("ALIGNPIPE_CHECKPOINT_DIR", "/cache/checkpoints")
    task.set_env_variable("TOKENIZERS_PARALLELISM", "false")
    # A dead MLflow server fails the step in about a minute instead of MLflow's default minutes of retries.
    task.set_env_variable("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    task.set_env_variable("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    kubernetes.use_secret_as_env(task, s3_secret, S3_REQUIRED_KEYS)
    kubernetes.use_secret_as_env(task, s3_secret, S3_OPTIONAL_KEYS, optional=True)
    kubernetes.use_secret_as_env(task, mlflow_secret, MLFLOW_REQUIRED_KEYS)
    kubernetes.use_secret_as_env(task, mlflow_secret, MLFLOW_OPTIONAL_KEYS, optional=True)
    # MLflow lineage on the cluster: every stage of one KFP run nests under one parent run, found (or
    # created) by the run id KFP puts on its pods; the Argo workflow name carries the pipeline name.
    kubernetes.use_field_path_as_env(task, "KFP_RUN_ID", "metadata.labels['pipeline/runid']")
    kubernetes.use_field_path_as_env(task, "KFP_WORKFLOW_NAME", "metadata.labels['workflows.argoproj.io/workflow']")
    kubernetes.set_image_pull_policy(task, "IfNotPresent")
    kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", "alignpipe")
    return task


def reward_token(task, secret):
    """The code-reward service's token as ALIGNPIPE_REWARD_TOKEN, from `secret` (a name or the `reward_secret`
    parameter); optional: without the Secret (no reward service on the cluster) the step runs without it."""
    kubernetes.use_secret_as_env(task, secret, REWARD_TOKEN_KEYS, optional=True)
    return task


def cpu_step(task, name: str, display: str, p: Platform, s3_secret, mlflow_secret):
    """A CPU step (prepare data, register): resources, secrets, a writable /cache."""
    _common(task, name, display, p.image, s3_secret, mlflow_secret)
    _resources(task, p.cpu_step)
    kubernetes.empty_dir_mount(task, volume_name="cache", mount_path="/cache", size_limit="10Gi")
    return task


def gpu_step(task, name: str, display: str, p: Platform, s3_secret, mlflow_secret, accelerator_type,
             accelerator_count, tolerations, node_selector, retry: bool):
    """A training/eval step: accelerator type+count (run-time parameters), resources, /dev/shm, /cache,
    run-time tolerations and node selector, secrets, retries for training."""
    _common(task, name, display, p.gpu_image, s3_secret, mlflow_secret, p.state_uri)
    _resources(task, p.gpu_step)
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=p.shm_size)
    kubernetes.empty_dir_mount(task, volume_name="cache", mount_path="/cache", size_limit=p.cache_size)
    if retry:
        task.set_retry(num_retries=p.retries, backoff_duration=p.retry_backoff, backoff_factor=2.0)
    return task


# ------------------------------------------------------------------------------- graph building blocks
# Called inside a @dsl.pipeline body with that pipeline's parameters (channels).


@dataclass
class Wiring:
    """Per pipeline run: the compile-time platform, the secret names and the GPU placement parameters."""

    p: Platform
    s3_secret: object
    mlflow_secret: object
    accelerators: dict        # task name -> (accelerator type, count) channels
    tolerations: object
    node_selector: object
    reward_secret: object = None  # the `reward_secret` parameter (pipelines whose steps score code)

    def place(self, task, name: str):
        """Apply STEPS[name]'s wiring to `task` (display name, image, caching, resources, secrets, GPUs)."""
        step = STEPS[name]
        secrets = (self.s3_secret, self.mlflow_secret)
        if step.reward_token:
            reward_token(task, self.reward_secret if self.reward_secret is not None else self.p.reward_secret)
        if not step.gpu:
            return cpu_step(task, name, step.display, self.p, *secrets)
        acc_type, acc_count = self.accelerators[name]
        return gpu_step(task, name, step.display, self.p, *secrets, acc_type, acc_count, self.tolerations,
                        self.node_selector, retry=step.retry)


def wiring(p: Platform, params: dict) -> Wiring:
    """The Wiring of a pipeline body from its parameters (`locals()` of the pipeline function)."""
    acc = {name: (params[f"{prefix}_accelerator_type"], params[f"{prefix}_accelerator_count"])
           for name, prefix in ACCELERATOR_PREFIX.items() if f"{prefix}_accelerator_type" in params}
    return Wiring(p, params["s3_secret"], params["mlflow_secret"], acc, params["gpu_tolerations"],
                  params["gpu_node_selector"], params.get("reward_secret"))


#: GPU task -> prefix of its `<prefix>_accelerator_type/count` pipeline parameters (the stage's name).
ACCELERATOR_PREFIX = {"sft": "sft", "reward-model": "reward_model", "rl": "rl", "preference": "preference",
                      "evaluate": "evaluate", "route": "route"}


def _typed(stage: str, params: dict) -> dict:
    """A stage component's config dict and typed arguments, from the pipeline's parameters (via the table)."""
    from alignpipe.steps import STAGE_PARAMS

    sp = STAGE_PARAMS[stage]
    return {"config": params[sp.config_param], **{t.arg: params[t.param] for t in sp.typed}}


def prepare(w: Wiring, required: list[str], params: dict):
    from alignpipe.components import prepare_data

    from alignpipe.steps import AUTO_FORMAT, DATA_PARAMS, format_param

    task = prepare_data(required=required, seed=params["seed"], base_model=params["base_model"],
                        **{k: params.get(k, "") for k in DATA_PARAMS},
                        **{format_param(k): params.get(format_param(k), AUTO_FORMAT) for k in DATA_PARAMS})
    return w.place(task, "prepare-data")


def sft(w: Wiring, data, params: dict, train_data=None, init_task=None):
    """SFT on `data`'s sft_train (or the `train_data` artifact), from `base_model` (or `init_task`'s model)."""
    from alignpipe.components import sft as component

    kwargs = {"init_model": init_task.outputs["model"]} if init_task is not None else {}
    train = train_data if train_data is not None else data.outputs["sft_train"]
    return w.place(component(**_typed("sft", params), train_data=train, **kwargs), "sft")


def reward_model(w: Wiring, data, sft_task, params: dict):
    from alignpipe.components import reward_model as component

    task = component(**_typed("reward_model", params), sft_model=sft_task.outputs["model"],
                     train_data=data.outputs["preference_train"], eval_data=data.outputs["preference_eval"])
    return w.place(task, "reward-model")


def rl(w: Wiring, data, sft_task, params: dict, rm_task=None, train_data=None):
    from alignpipe.components import rl as component

    kwargs = {"reward_model": rm_task.outputs["model"]} if rm_task is not None else {}
    train = train_data if train_data is not None else data.outputs["rl_train"]
    task = component(**_typed("rl", params), sft_model=sft_task.outputs["model"], train_data=train, **kwargs)
    return w.place(task, "rl")


def preference(w: Wiring, data, sft_task, params: dict):
    from alignpipe.components import preference as component

    task = component(**_typed("preference", params), sft_model=sft_task.outputs["model"],
                     train_data=data.outputs["preference_train"], eval_data=data.outputs["preference_eval"])
    return w.place(task, "preference")


def evaluate(w: Wiring, data, sft_task, params: dict, tuned_name: str = "", tuned_task=None, rm_task=None):
    from alignpipe.components import evaluate as component

    kwargs = {}
    if tuned_task is not None:
        kwargs["tuned_model"] = tuned_task.outputs["model"]
    if rm_task is not None:
        kwargs["reward_model"] = rm_task.outputs["model"]
    task = component(**_typed("evaluate", params), base_model=params["base_model"], tuned_name=tuned_name,
                     eval_data=data.outputs["eval_set"], sft_model=sft_task.outputs["model"], **kwargs)
    return w.place(task, "evaluate")


def register(w: Wiring, model_task, eval_task, metrics_key: str, params: dict):
    from alignpipe.components import register as component

    task = component(**_typed("register", params), metrics_key=metrics_key, model=model_task.outputs["model"],
                     eval_results=eval_task.outputs["results"])
    return w.place(task, "register")


def route(w: Wiring, data, model_task, params: dict):
    """Route `data`'s rl_train prompts by `model_task`'s pass rate: outputs `easy` (SFT rows) and `hard` (RL prompts)."""
    from alignpipe.components import route as component

    task = component(**_typed("route", params), model=model_task.outputs["model"], prompts=data.outputs["rl_train"])
    return w.place(task, "route")
