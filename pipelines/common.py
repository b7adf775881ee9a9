"""Cluster wiring shared by the pipelines: images, GPUs, resources, secrets, volumes, retries, caching.

Everything Kubernetes-specific is set here, on tasks, never inside components. `kfp.local` ignores it
(with a warning), so the same pipeline definition runs on a laptop and compiles for a cluster.

Compile-time settings (`Platform`) come from the environment the Helm chart's upload job sets
(ALIGNPIPE_IMAGE, ALIGNPIPE_GPU_IMAGE, ALIGNPIPE_GPU_RESOURCE, ALIGNPIPE_GPU_NODE_SELECTOR,
ALIGNPIPE_GPU_TOLERATIONS, ALIGNPIPE_S3_SECRET, ALIGNPIPE_MLFLOW_SECRET) or from `alignpipe compile`'s
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

import json
import os
from dataclasses import dataclass, field

from kfp import kubernetes

from alignpipe import platform as _platform

S3_REQUIRED_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
S3_OPTIONAL_KEYS = {"AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL",
                    "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION", "ALIGNPIPE_S3_BUCKET": "ALIGNPIPE_S3_BUCKET"}
MLFLOW_REQUIRED_KEYS = {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI"}
MLFLOW_OPTIONAL_KEYS = {"MLFLOW_TRACKING_TOKEN": "MLFLOW_TRACKING_TOKEN"}

#: Tasks whose outputs are fully determined by their inputs (see the module docstring).
CACHED = {"reward-model", "rl", "preference"}


class PlatformError(ValueError):
    """A compile-time platform setting is malformed (e.g. ALIGNPIPE_GPU_TOLERATIONS is not JSON)."""


def _json_env(name: str, default, kind: type):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise PlatformError(f"{name}: not valid JSON ({e.msg}); give a JSON {kind.__name__}") from None
    if not isinstance(value, kind):
        raise PlatformError(f"{name}: must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class Platform:
    """Compile-time settings of the cluster wiring."""

    image: str = field(default_factory=_platform.image)
    gpu_image: str = field(default_factory=lambda: os.environ.get("ALIGNPIPE_GPU_IMAGE") or _platform.DEFAULT_GPU_IMAGE)
    gpu_resource: str = field(default_factory=lambda: os.environ.get("ALIGNPIPE_GPU_RESOURCE") or "nvidia.com/gpu")
    gpu_count: int = 1
    node_selector: dict = field(default_factory=lambda: _json_env("ALIGNPIPE_GPU_NODE_SELECTOR", {}, dict))
    tolerations: list = field(default_factory=lambda: _json_env("ALIGNPIPE_GPU_TOLERATIONS", [], list))
    s3_secret: str = field(default_factory=lambda: os.environ.get("ALIGNPIPE_S3_SECRET") or _platform.S3_SECRET_NAME)
    mlflow_secret: str = field(
        default_factory=lambda: os.environ.get("ALIGNPIPE_MLFLOW_SECRET") or _platform.MLFLOW_SECRET_NAME)
    cpu_step: Resources = Resources("1", "2", "2Gi", "4Gi")
    gpu_step: Resources = Resources("4", "8", "16Gi", "32Gi")
    shm_size: str = "8Gi"
    cache_size: str = "50Gi"
    retries: int = 2
    retry_backoff: str = "60s"


def _resources(task, r: Resources):
    return (task.set_cpu_request(r.cpu_request).set_cpu_limit(r.cpu_limit)
            .set_memory_request(r.memory_request).set_memory_limit(r.memory_limit))


def _common(task, name: str, display: str, image: str, s3_secret, mlflow_secret):
    task.set_display_name(display).set_container_image(image)
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
    _common(task, name, display, p.gpu_image, s3_secret, mlflow_secret)
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


def gpu_settings(accelerator_type, accelerator_count, tolerations, node_selector):
    return dict(accelerator_type=accelerator_type, accelerator_count=accelerator_count, tolerations=tolerations,
                node_selector=node_selector)


def prepare(p: Platform, secrets: tuple, required: list[str], seed, sft_data="", preference_data="",
            preference_eval_data="", rl_data="", eval_data=""):
    from alignpipe.components import prepare_data

    task = prepare_data(required=required, seed=seed, sft_data=sft_data, preference_data=preference_data,
                        preference_eval_data=preference_eval_data, rl_data=rl_data, eval_data=eval_data)
    return cpu_step(task, "prepare-data", "Prepare data", p, *secrets)


def train_sft(p: Platform, secrets: tuple, gpu: dict, data, config, base_model, steps, lr, seed):
    from alignpipe.components import sft

    task = sft(config=config, base_model=base_model, max_steps=steps, learning_rate=lr, seed=seed,
               train_data=data.outputs["sft_train"])
    return gpu_step(task, "sft", "Supervised fine-tuning", p, *secrets, **gpu, retry=True)


def evaluate_models(p: Platform, secrets: tuple, gpu: dict, data, config, k, seed, base_model, sft_task,
                    tuned_name: str = "", tuned_task=None, rm_task=None):
    from alignpipe.components import evaluate

    kwargs = {}
    if tuned_task is not None:
        kwargs["tuned_model"] = tuned_task.outputs["model"]
    if rm_task is not None:
        kwargs["reward_model"] = rm_task.outputs["model"]
    task = evaluate(config=config, k=k, seed=seed, base_model=base_model, tuned_name=tuned_name,
                    eval_data=data.outputs["eval_set"], sft_model=sft_task.outputs["model"], **kwargs)
    return gpu_step(task, "evaluate", "Evaluate on held-out set", p, *secrets, **gpu, retry=False)


def register_model(p: Platform, secrets: tuple, config, model_task, eval_task, metrics_key: str, model_name,
                   gate_metric, gate_threshold):
    from alignpipe.components import register

    task = register(config=config, model_name=model_name, gate_metric=gate_metric, gate_threshold=gate_threshold,
                    metrics_key=metrics_key, model=model_task.outputs["model"], eval_results=eval_task.outputs["results"])
    return cpu_step(task, "register", "Register model (gated)", p, *secrets)
