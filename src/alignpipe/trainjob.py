"""Multi-node training: hand a stage to Kubeflow Trainer (TrainJob) or the Training Operator (PyTorchJob).

A pipeline step whose stage asks for more than one node does not train in its own pod. It writes the
stage config into a ConfigMap, creates a job in which every node runs

    torchrun -m alignpipe.launch STAGE --config /etc/alignpipe/config.json

(`alignpipe.launch`'s per-rank entry point: the same `stages.X.run(cfg)` as `alignpipe stage X`,
with rank 0 publishing the output and printing the StageResult after RESULT_MARKER), waits for the job,
and returns rank 0's StageResult, read back from the pod log. On failure the error names the job, its
condition, and carries the last log lines of its pods.

    from alignpipe.trainjob import run_multinode
    result = run_multinode("sft", cfg_dict, nodes=2, gpus_per_node=8, image="ghcr.io/acme/alignpipe-gpu:0.1")

The pipeline pod's service account needs, in its namespace: create/get/delete on
trainjobs.trainer.kubeflow.org (or pytorchjobs.kubeflow.org), create on configmaps, list on pods and get
on pods/log.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alignpipe.base import RESULT_MARKER, StageResult, UserError

TRAINJOB_API = ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
PYTORCHJOB_API = ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
# Pods of a TrainJob belong to the JobSet of the same name; PyTorchJob pods carry the job name.
POD_LABEL = {"TrainJob": "jobset.sigs.k8s.io/jobset-name", "PyTorchJob": "training.kubeflow.org/job-name"}
CONTAINER = {"TrainJob": "node", "PyTorchJob": "pytorch"}
TRAINJOB_TARGET_JOB = "node"  # the replicated job of the torch-distributed runtime
CONFIG_DIR = "/etc/alignpipe"
CONFIG_FILE = "config.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
CONFIG_VOLUME = "alignpipe-config"
SHM_VOLUME = "dshm"
SUCCESS_CONDITIONS = ("Succeeded", "Complete")
FAILURE_CONDITIONS = ("Failed",)
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrainJobError(UserError, RuntimeError):
    """A multi-node job could not be created, failed, or did not finish in time."""


# --------------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------------


def job_name(stage: str, suffix: str | None = None) -> str:
    """`alignpipe-<stage>-<suffix>`: an RFC 1035 label (what TrainJob requires), at most 63 characters."""
    suffix = suffix or uuid.uuid4().hex[:8]
    name = re.sub(r"[^a-z0-9-]+", "-", f"alignpipe-{stage}-{suffix}".lower()).strip("-")
    return name[:63].rstrip("-")


def _check_name(name: str) -> None:
    if len(name) > 63 or not _NAME_RE.match(name):
        raise ValueError(f"job name {name!r} must be a DNS label: lowercase letters, digits and '-', starting "
                         "with a letter, at most 63 characters (e.g. alignpipe.trainjob.job_name(stage))")


def stage_config(stage: str, config: Mapping[str, Any], gpus_per_node: int) -> dict[str, Any]:
    """The validated stage config as the nodes will read it (`distributed.gpus` = processes per node).

    Raises alignpipe.config.ConfigError for a bad config, before anything is submitted."""
    from alignpipe import config as config_mod

    data = json.loads(json.dumps(dict(config)))
    if stage in ("sft", "reward_model", "rl", "preference"):
        data.setdefault("distributed", {})
        data["distributed"] = {**data["distributed"], "gpus": gpus_per_node}
    cfg = config_mod.validate(stage, data, source=f"{stage} config")
    return cfg.model_dump(mode="json")


def config_map_manifest(name: str, namespace: str, stage: str, config: Mapping[str, Any], *,
                        gpus_per_node: int = 1, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ConfigMap `<name>-config` holding the stage config as config.json (mounted at CONFIG_DIR)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", "namespace": namespace, "labels": _labels(stage, labels)},
        "data": {CONFIG_FILE: json.dumps(stage_config(stage, config, gpus_per_node), indent=2, sort_keys=True)},
    }


def _labels(stage: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"app.kubernetes.io/name": "alignpipe", "app.kubernetes.io/component": stage.replace("_", "-"),
            "app.kubernetes.io/managed-by": "alignpipe", **(extra or {})}


def secret_env(secrets: Mapping[str, Mapping[str, str]] | None,
               optional: Mapping[str, Mapping[str, str]] | None = None) -> list[dict[str, Any]]:
    """`{secret name: {key in the secret: ENV_VAR}}` (kfp-kubernetes' `use_secret_as_env` shape) as EnvVars;
    keys in `optional` may be missing from their Secret (secretKeyRef.optional)."""
    out = []
    for group, is_optional in ((secrets, False), (optional, True)):
        for secret, keys in (group or {}).items():
            if isinstance(keys, str) or not isinstance(keys, Mapping) or not keys:
                raise ValueError(f"secrets[{secret!r}] must map keys of the secret to env var names, "
                                 "e.g. {'alignpipe-s3': {'accesskey': 'AWS_ACCESS_KEY_ID'}}")
            for key, env_name in keys.items():
                ref = {"name": secret, "key": key, **({"optional": True} if is_optional else {})}
                out.append({"name": env_name, "valueFrom": {"secretKeyRef": ref}})
    return out


def _env(env: Mapping[str, str] | None, secrets, optional_secrets=None) -> list[dict[str, Any]]:
    plain = [{"name": k, "value": str(v)} for k, v in (env or {}).items()]
    out = plain + secret_env(secrets, optional_secrets)
    names = [e["name"] for e in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"env var(s) set twice: {', '.join(dup)} (set each once, in env or in secrets)")
    return out


def _resources(gpus_per_node: int, gpu_resource: str, cpu: str | None, memory: str | None) -> dict[str, Any]:
    limits: dict[str, Any] = {gpu_resource: gpus_per_node} if gpus_per_node > 0 and gpu_resource else {}
    requests: dict[str, Any] = dict(limits)
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = memory
        limits["memory"] = memory
    out = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _volumes(config_map: str, shm_size: str | None) -> tuple[list[dict], list[dict]]:
    volumes = [{"name": CONFIG_VOLUME, "configMap": {"name": config_map}}]
    mounts = [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}]
    if shm_size:  # NCCL needs more shared memory than the container runtime's 64 MiB default
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    return volumes, mounts


def rank_command(stage: str) -> list[str]:
    """What every node runs under Kubeflow Trainer's torch runtime (it sets PET_NNODES, PET_NPROC_PER_NODE,
    PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT, which torchrun reads)."""
    return ["torchrun", "-m", "alignpipe.launch", stage, "--config", CONFIG_PATH]


def pytorchjob_command(stage: str) -> list[str]:
    """The PyTorchJob variant: the Training Operator sets PET_NNODES / PET_NPROC_PER_NODE / PET_NODE_RANK but
    only MASTER_ADDR / MASTER_PORT for the rendezvous, so pass those to torchrun explicitly."""
    return ["/bin/sh", "-c",
            'exec torchrun --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" '
            f"-m alignpipe.launch {stage} --config {CONFIG_PATH}"]


def _check_common(stage: str, name: str, nodes: int, gpus_per_node: int, image: str) -> None:
    from alignpipe.config import STAGE_CONFIGS

    if stage not in ("sft", "reward_model", "rl", "preference"):
        raise ValueError(f"stage {stage!r} does not train; multi-node runs are for sft, reward_model, rl, preference "
                         f"(known stages: {', '.join(STAGE_CONFIGS)})")
    _check_name(name)
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1 (got {nodes})")
    if gpus_per_node < 1:
        raise ValueError(f"gpus_per_node must be >= 1 (got {gpus_per_node}; it is the processes per node)")
    if not image:
        raise ValueError("image is required (the alignpipe GPU image, e.g. built from components/Dockerfile.gpu)")


def _place(spec: dict[str, Any], service_account: str | None, node_selector: Mapping[str, str] | None,
           tolerations: Sequence[Mapping[str, Any]] | None) -> None:
    """Set the pod placement fields both job kinds share (a pod spec, or TrainJob's podSpecOverrides entry)."""
    if service_account:
        spec["serviceAccountName"] = service_account
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]


def trainjob_manifest(stage: str, config: Mapping[str, Any], *, name: str, namespace: str, image: str, nodes: int,
                      gpus_per_node: int, gpu_resource: str = "nvidia.com/gpu", service_account: str | None = None,
                      secrets: Mapping[str, Mapping[str, str]] | None = None,
                      optional_secrets: Mapping[str, Mapping[str, str]] | None = None,
                      node_selector: Mapping[str, str] | None = None, tolerations: Sequence[Mapping[str, Any]] | None = None,
                      runtime_ref: str = "torch-distributed", env: Mapping[str, str] | None = None,
                      cpu: str | None = None, memory: str | None = None, shm_size: str | None = "16Gi",
                      labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A Kubeflow Trainer TrainJob (trainer.kubeflow.org/v1alpha1) running `stage` on `nodes` nodes with
    `gpus_per_node` processes each. The config travels in the ConfigMap of `config_map_manifest(name, ...)`
    (submit_and_wait creates both); it is validated here, so a bad config fails before submission."""
    _check_common(stage, name, nodes, gpus_per_node, image)
    stage_config(stage, config, gpus_per_node)  # validate early
    volumes, mounts = _volumes(f"{name}-config", shm_size)
    trainer: dict[str, Any] = {
        "image": image,
        "command": rank_command(stage),
        "numNodes": nodes,
        "numProcPerNode": gpus_per_node,
    }
    resources = _resources(gpus_per_node, gpu_resource, cpu, memory)
    if resources:
        trainer["resourcesPerNode"] = resources
    env_list = _env(env, secrets, optional_secrets)
    if env_list:
        trainer["env"] = env_list  # the `node` container's env can only be set here, not in podSpecOverrides
    override: dict[str, Any] = {"targetJobs": [{"name": TRAINJOB_TARGET_JOB}], "volumes": volumes,
                                "containers": [{"name": "node", "volumeMounts": mounts}]}
    _place(override, service_account, node_selector, tolerations)
    return {
        "apiVersion": f"{TRAINJOB_API[0]}/{TRAINJOB_API[1]}",
        "kind": TRAINJOB_API[3],
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(stage, labels)},
        "spec": {
            "runtimeRef": {"name": runtime_ref, "apiGroup": TRAINJOB_API[0], "kind": "ClusterTrainingRuntime"},
            "trainer": trainer,
            "podSpecOverrides": [override],
        },
    }


def pytorchjob_manifest(stage: str, config: Mapping[str, Any], *, name: str, namespace: str, image: str, nodes: int,
                        gpus_per_node: int, gpu_resource: str = "nvidia.com/gpu", service_account: str | None = None,
                        secrets: Mapping[str, Mapping[str, str]] | None = None,
                        optional_secrets: Mapping[str, Mapping[str, str]] | None = None,
                        node_selector: Mapping[str, str] | None = None,
                        tolerations: Sequence[Mapping[str, Any]] | None = None, env: Mapping[str, str] | None = None,
                        cpu: str | None = None, memory: str | None = None, shm_size: str | None = "16Gi",
                        labels: Mapping[str, str] | None = None, active_deadline_s: int | None = None) -> dict[str, Any]:
    """A Training Operator PyTorchJob (kubeflow.org/v1): one Master and `nodes - 1` Workers, each running
    `gpus_per_node` processes (`nprocPerNode`). Same config ConfigMap and command as the TrainJob."""
    _check_common(stage, name, nodes, gpus_per_node, image)
    stage_config(stage, config, gpus_per_node)
    volumes, mounts = _volumes(f"{name}-config", shm_size)
    container: dict[str, Any] = {"name": "pytorch", "image": image, "command": pytorchjob_command(stage),
                                 "volumeMounts": mounts}
    env_list = _env(env, secrets, optional_secrets)
    if env_list:
        container["env"] = env_list
    resources = _resources(gpus_per_node, gpu_resource, cpu, memory)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {"containers": [container], "volumes": volumes}
    _place(pod_spec, service_account, node_selector, tolerations)
    template = {"metadata": {"labels": _labels(stage, labels),
                             "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": pod_spec}
    replicas: dict[str, Any] = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if nodes > 1:
        replicas["Worker"] = {"replicas": nodes - 1, "restartPolicy": "Never", "template": template}
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": 0}
    if active_deadline_s:
        run_policy["activeDeadlineSeconds"] = int(active_deadline_s)
    return {
        "apiVersion": f"{PYTORCHJOB_API[0]}/{PYTORCHJOB_API[1]}",
        "kind": PYTORCHJOB_API[3],
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(stage, labels)},
        "spec": {"nprocPerNode": str(gpus_per_node), "runPolicy": run_policy, "pytorchReplicaSpecs": replicas},
    }


# --------------------------------------------------------------------------------------------------
# Submit and wait
# --------------------------------------------------------------------------------------------------


def _api_of(manifest: Mapping[str, Any]) -> tuple[str, str, str, str]:
    for api in (TRAINJOB_API, PYTORCHJOB_API):
        if manifest.get("apiVersion") == f"{api[0]}/{api[1]}" and manifest.get("kind") == api[3]:
            return api
    raise ValueError(f"not a TrainJob (trainer.kubeflow.org/v1alpha1) or PyTorchJob (kubeflow.org/v1) manifest: "
                     f"apiVersion={manifest.get('apiVersion')!r} kind={manifest.get('kind')!r}")


def default_api_client():
    """In a pod: the service account; elsewhere: ~/.kube/config (KUBECONFIG)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def current_namespace(default: str = "default") -> str:
    """The pod's own namespace (the KFP run's profile namespace) when in a cluster, else `default`."""
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip() or default
    except OSError:
        return default


def _condition_state(obj: Mapping[str, Any]) -> tuple[str, dict | None]:
    """('succeeded'|'failed'|'running', the deciding condition)."""
    conds = [c for c in (obj.get("status") or {}).get("conditions") or [] if str(c.get("status")) == "True"]
    for c in conds:
        if c.get("type") in FAILURE_CONDITIONS:
            return "failed", c
    for c in conds:
        if c.get("type") in SUCCESS_CONDITIONS:
            return "succeeded", c
    return "running", (conds[-1] if conds else None)


def _api_error(e: Exception) -> str:
    status = getattr(e, "status", None)
    reason = getattr(e, "reason", None) or type(e).__name__
    body = getattr(e, "body", None)
    msg = ""
    if body:
        try:
            msg = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            msg = str(body)[:300]
    return f"{status} {reason}: {msg}".strip() if status else f"{reason}: {e}"


def pod_logs(core, namespace: str, selector: str, container: str, tail_lines: int,
             request_timeout: float = 30) -> list[tuple[str, str, str]]:
    """(pod name, phase, last `tail_lines` log lines) for every pod matching `selector`."""
    out = []
    pods = core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=request_timeout)
    for pod in sorted(pods.items, key=lambda p: p.metadata.name):
        phase = pod.status.phase if pod.status else "Unknown"
        names = [c.name for c in (pod.spec.containers if pod.spec else [])]
        try:
            text = core.read_namespaced_pod_log(pod.metadata.name, namespace, container=container if container in names
                                                else None, tail_lines=tail_lines, _request_timeout=request_timeout)
        except Exception as e:  # noqa: BLE001 - a missing log must not hide the job's own error
            text = f"(log unavailable: {_api_error(e)})"
        out.append((pod.metadata.name, phase, text or ""))
    return out


def find_result(logs: Sequence[tuple[str, str, str]]) -> dict | None:
    """Rank 0's StageResult, from the RESULT_MARKER line in the pod logs (last one wins)."""
    found = None
    for _, _, text in logs:
        for line in text.splitlines():
            if RESULT_MARKER in line:
                try:
                    found = json.loads(line.split(RESULT_MARKER, 1)[1])
                except ValueError:
                    continue
    return found


def submit_and_wait(manifest: Mapping[str, Any], namespace: str, timeout_s: float = 24 * 3600, poll_s: float = 10,
                    *, config_map: Mapping[str, Any] | None = None, api_client=None, keep_failed: bool = False,
                    log_tail_lines: int = 50, request_timeout_s: float = 30, max_api_errors: int = 5,
                    on_status: Callable[[dict], None] | None = None, reattach: bool = False) -> dict[str, Any]:
    """Create the job (and its config ConfigMap, owned by the job), poll until a Succeeded/Complete or Failed
    condition, and return a status dict:

        {"name", "namespace", "kind", "state": "succeeded", "condition": {...}, "seconds", "pods": [...],
         "result": rank 0's StageResult dict or None}

    Failed -> TrainJobError naming the job and condition, with the tail of every pod's log. Past
    `timeout_s` -> the job is deleted and TrainJobError says so. The job is deleted when it ends
    (failed ones are kept if `keep_failed`); its pods and ConfigMap go with it (owner references).
    With `reattach`, a job of the same name that already exists (the launcher pod was retried) is followed
    instead of failing with 409.
    """
    from kubernetes import client

    group, version, plural, kind = _api_of(manifest)
    name = manifest["metadata"]["name"]
    api_client = api_client or default_api_client()
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    body = json.loads(json.dumps(manifest))
    body["metadata"]["namespace"] = namespace
    where = f"{kind} {namespace}/{name}"
    started = time.monotonic()
    deadline = started + timeout_s
    reattached = False
    try:
        created = custom.create_namespaced_custom_object(group, version, namespace, plural, body,
                                                         _request_timeout=request_timeout_s)
    except client.ApiException as e:
        if e.status == 409 and reattach:
            # A retried launcher pod (same KFP run and task -> same job name): follow the job that is already
            # running instead of starting a second one.
            created, reattached = custom.get_namespaced_custom_object(group, version, namespace, plural, name,
                                                                      _request_timeout=request_timeout_s), True
            if on_status is not None:
                on_status({"name": name, "state": "reattached", "condition": None})
        else:
            hint = {404: f" (is the {kind} CRD installed? kubectl get crd {plural}.{group})",
                    403: f" (the service account needs create on {plural}.{group} in {namespace})",
                    409: " (a job of that name exists; use a new name)"}.get(e.status, "")
            raise TrainJobError(f"{where}: could not create: {_api_error(e)}{hint}") from None
    delete = True
    try:
        if config_map is not None and not reattached:
            cm = json.loads(json.dumps(config_map))
            cm["metadata"]["namespace"] = namespace
            uid = (created.get("metadata") or {}).get("uid")
            if uid:  # garbage-collected with the job
                cm["metadata"]["ownerReferences"] = [{"apiVersion": f"{group}/{version}", "kind": kind, "name": name,
                                                      "uid": uid}]
            try:
                core.create_namespaced_config_map(namespace, cm, _request_timeout=request_timeout_s)
            except client.ApiException as e:
                raise TrainJobError(f"{where}: could not create ConfigMap {cm['metadata']['name']}: "
                                    f"{_api_error(e)}") from None
        errors = 0
        last_state, obj = "created", created
        while True:
            try:
                obj = custom.get_namespaced_custom_object(group, version, namespace, plural, name,
                                                          _request_timeout=request_timeout_s)
                errors = 0
            except client.ApiException as e:
                if e.status == 404:
                    delete = False
                    raise TrainJobError(f"{where}: disappeared while running (deleted by someone else?)") from None
                errors += 1
                if errors >= max_api_errors:
                    raise TrainJobError(f"{where}: {errors} API errors in a row while polling: {_api_error(e)}") from None
            except Exception as e:  # noqa: BLE001 - connection trouble: retry a few times
                errors += 1
                if errors >= max_api_errors:
                    raise TrainJobError(f"{where}: {errors} API errors in a row while polling: {e}") from None
            state, cond = _condition_state(obj)
            if on_status is not None and state != last_state:
                on_status({"name": name, "state": state, "condition": cond})
            last_state = state
            if state == "succeeded":
                logs = pod_logs(core, namespace, f"{POD_LABEL[kind]}={name}", CONTAINER[kind], max(log_tail_lines, 200),
                                request_timeout_s)
                return {"name": name, "namespace": namespace, "kind": kind, "state": state, "condition": cond,
                        "seconds": time.monotonic() - started,
                        "pods": [{"name": p, "phase": ph} for p, ph, _ in logs], "result": find_result(logs)}
            if state == "failed":
                delete = not keep_failed
                logs = pod_logs(core, namespace, f"{POD_LABEL[kind]}={name}", CONTAINER[kind], log_tail_lines,
                                request_timeout_s)
                reason = f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ") if cond else "Failed"
                msg = f"{where} failed: {reason}"
                for pod, phase, text in logs:
                    lines = [ln for ln in text.splitlines() if ln.strip()][-log_tail_lines:]
                    msg += f"\n--- pod {pod} ({phase}), last {len(lines)} log lines ---\n" + "\n".join(lines)
                if not logs:
                    msg += "\n(no pods found for the job; check `kubectl describe` for scheduling problems)"
                raise TrainJobError(msg)
            if time.monotonic() + poll_s > deadline:
                raise TrainJobError(f"{where}: not finished after {timeout_s:g} s (last condition: "
                                    f"{(cond or {}).get('type', 'none')}); the job was deleted")
            time.sleep(poll_s)
    finally:
        if delete:
            try:
                custom.delete_namespaced_custom_object(
                    group, version, namespace, plural, name,
                    body=client.V1DeleteOptions(propagation_policy="Background"), _request_timeout=request_timeout_s)
            except Exception:  # noqa: BLE001 - best effort; the job's own outcome is what the caller needs
                pass


# --------------------------------------------------------------------------------------------------
# Pipeline entry
# --------------------------------------------------------------------------------------------------


def run_multinode(stage: str, config: Mapping[str, Any], *, nodes: int, gpus_per_node: int, image: str,
                  namespace: str | None = None, kind: str = "trainjob", name: str | None = None,
                  gpu_resource: str = "nvidia.com/gpu", service_account: str | None = None,
                  secrets: Mapping[str, Mapping[str, str]] | None = None, env: Mapping[str, str] | None = None,
                  optional_secrets: Mapping[str, Mapping[str, str]] | None = None,
                  node_selector: Mapping[str, str] | None = None, tolerations: Sequence[Mapping[str, Any]] | None = None,
                  runtime_ref: str = "torch-distributed", cpu: str | None = None, memory: str | None = None,
                  shm_size: str | None = "16Gi", timeout_s: float = 24 * 3600, poll_s: float = 15,
                  api_client=None, on_status: Callable[[dict], None] | None = None, reattach: bool = False):
    """Run a training stage on `nodes` nodes x `gpus_per_node` GPUs as a TrainJob (`kind="trainjob"`, Kubeflow
    Trainer v2) or PyTorchJob (`kind="pytorchjob"`, Training Operator v1); return rank 0's StageResult.

    What a KFP training component calls when `nodes > 1`. The config is validated before submission
    (ConfigError). The output is published by rank 0 to `config["output_dir"]`, which must be an s3:// URI
    (the nodes' local disks are gone when the job ends)."""
    from alignpipe import storage
    from alignpipe.config import ConfigError

    cfg = stage_config(stage, config, gpus_per_node)
    out = str(cfg.get("output_dir", ""))
    if not storage.is_remote(out):
        raise ConfigError(f"output_dir: {out!r} is local to the training pods; a multi-node run must publish to "
                          "object storage (set output_dir: s3://bucket/path)")
    namespace = namespace or current_namespace()
    name = name or job_name(stage)
    common = dict(name=name, namespace=namespace, image=image, nodes=nodes, gpus_per_node=gpus_per_node,
                  gpu_resource=gpu_resource, service_account=service_account, secrets=secrets,
                  optional_secrets=optional_secrets, node_selector=node_selector, tolerations=tolerations, env=env, cpu=cpu, memory=memory,
                  shm_size=shm_size)
    if kind == "trainjob":
        manifest = trainjob_manifest(stage, cfg, runtime_ref=runtime_ref, **common)
    elif kind == "pytorchjob":
        manifest = pytorchjob_manifest(stage, cfg, **common)
    else:
        raise ValueError(f"kind must be 'trainjob' or 'pytorchjob' (got {kind!r})")
    cm = config_map_manifest(name, namespace, stage, cfg, gpus_per_node=gpus_per_node)
    status = submit_and_wait(manifest, namespace, timeout_s, poll_s, config_map=cm, api_client=api_client,
                             on_status=on_status, reattach=reattach)
    data = status.get("result")
    if data is None:  # the job succeeded but the marker line was not in the log tail
        data = {"stage": stage, "output": cfg["output_dir"], "metrics": {}, "lineage": {}, "history": [],
                "seconds": status["seconds"]}
    result = StageResult(**data)
    result.lineage = {**result.lineage, "world_size": str(nodes * gpus_per_node), "nodes": str(nodes),
                      "job": f"{status['kind']}/{namespace}/{name}"}
    return result
