"""Multi-node jobs: TrainJob / PyTorchJob manifests, and submit_and_wait against a local API stub.

No cluster runs here. Manifests are checked three ways: structurally (asserts below), against small
HAND-WRITTEN JSON schemas of the fields we emit (schemas/*.subset.schema.json — subsets written from
the upstream Go types, not the CRDs themselves, which cannot be fetched offline), and their core
Kubernetes parts (env, resources, tolerations, volumes, mounts, pod templates) against the real core
schemas with kubernetes-validate. `submit_and_wait` talks to k8s_stub.KubeStub (127.0.0.1, a stub,
not an API server) through the real `kubernetes` client.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from k8s_stub import KubeStub, Pod, Script, condition

from alignpipe import config as config_mod
from alignpipe import trainjob
from alignpipe.config import ConfigError
from alignpipe.base import RESULT_MARKER

SCHEMAS = Path(__file__).parent / "schemas"
K8S_VERSION = "1.30"
IMAGE = "registry.example.com/alignpipe-gpu:0.1.0"
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
SECRETS = {"alignpipe-s3": {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"},
           "hf-token": {"token": "HF_TOKEN"}}


def sft_config(**over) -> dict:
    cfg = {"model": "Qwen/Qwen2.5-0.5B", "output_dir": "s3://alignpipe/models/sft", "train_data": "s3://alignpipe/data/sft.jsonl",
           "tracking": False, "training": {"max_steps": 100}, "distributed": {"gpus": 1, "deepspeed": "zero3"}}
    cfg.update(over)
    return cfg


def make(kind: str, **over):
    kw = dict(name="alignpipe-sft-abc123", namespace="team-a", image=IMAGE, nodes=2, gpus_per_node=8,
              gpu_resource="nvidia.com/gpu", service_account="alignpipe-runner", secrets=SECRETS,
              node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, tolerations=TOLERATIONS,
              env={"MLFLOW_TRACKING_URI": "http://mlflow.alignpipe:5000"})
    kw.update(over)
    fn = trainjob.trainjob_manifest if kind == "trainjob" else trainjob.pytorchjob_manifest
    return fn("sft", sft_config(), **kw)


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def _core_validate(obj: dict) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{obj['kind']}: {err.message} at {list(err.path)}")


# ---------------------------------------------------------------------------------------------- manifests


def test_trainjob_manifest_fields():
    m = make("trainjob")
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["metadata"]["name"] == "alignpipe-sft-abc123" and m["metadata"]["namespace"] == "team-a"
    spec = m["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    t = spec["trainer"]
    assert t["image"] == IMAGE
    assert t["command"] == ["torchrun", "-m", "alignpipe.launch", "sft", "--config", "/etc/alignpipe/config.json"]
    assert t["numNodes"] == 2 and t["numProcPerNode"] == 8
    assert t["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": 8}, "requests": {"nvidia.com/gpu": 8}}
    env = {e["name"]: e for e in t["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.alignpipe:5000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "alignpipe-s3", "key": "accesskey"}}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    (o,) = spec["podSpecOverrides"]
    assert o["targetJobs"] == [{"name": "node"}]
    assert o["serviceAccountName"] == "alignpipe-runner"
    assert o["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert o["tolerations"] == TOLERATIONS
    vols = {v["name"]: v for v in o["volumes"]}
    assert vols["alignpipe-config"] == {"name": "alignpipe-config", "configMap": {"name": "alignpipe-sft-abc123-config"}}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    (c,) = o["containers"]
    assert c["name"] == "node" and "env" not in c  # Trainer rejects env overrides for the `node` container
    mounts = {v["mountPath"]: v for v in c["volumeMounts"]}
    assert mounts["/etc/alignpipe"]["name"] == "alignpipe-config" and mounts["/dev/shm"]["name"] == "dshm"


def test_pytorchjob_manifest_fields():
    m = make("pytorchjob", nodes=3, gpus_per_node=4)
    assert m["apiVersion"] == "kubeflow.org/v1" and m["kind"] == "PyTorchJob"
    spec = m["spec"]
    assert spec["nprocPerNode"] == "4"
    assert spec["runPolicy"]["backoffLimit"] == 0
    reps = spec["pytorchReplicaSpecs"]
    assert reps["Master"]["replicas"] == 1 and reps["Worker"]["replicas"] == 2
    pod = reps["Worker"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["name"] == "pytorch" and c["image"] == IMAGE
    assert c["command"][:2] == ["/bin/sh", "-c"]
    assert 'torchrun --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT"' in c["command"][2]
    assert c["command"][2].endswith("-m alignpipe.launch sft --config /etc/alignpipe/config.json")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert pod["serviceAccountName"] == "alignpipe-runner" and pod["tolerations"] == TOLERATIONS
    assert {e["name"] for e in c["env"]} == {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"}
    one = make("pytorchjob", nodes=1)
    assert "Worker" not in one["spec"]["pytorchReplicaSpecs"]


@pytest.mark.parametrize("kind,schema_file", [("trainjob", "trainjob.v1alpha1.subset.schema.json"),
                                              ("pytorchjob", "pytorchjob.v1.subset.schema.json")])
def test_manifests_match_the_schema_subsets(kind, schema_file):
    jsonschema.validate(make(kind), schema(schema_file))
    jsonschema.validate(make(kind, service_account=None, secrets=None, node_selector=None, tolerations=None, env=None,
                             shm_size=None, nodes=1, gpus_per_node=1), schema(schema_file))


@pytest.mark.parametrize("kind,schema_file,mutate", [
    ("trainjob", "trainjob.v1alpha1.subset.schema.json", lambda m: m["spec"]["trainer"].update(numNode=2)),
    ("trainjob", "trainjob.v1alpha1.subset.schema.json", lambda m: m["spec"]["trainer"].update(numNodes="2")),
    ("trainjob", "trainjob.v1alpha1.subset.schema.json", lambda m: m["spec"]["podSpecOverrides"][0].pop("targetJobs")),
    ("trainjob", "trainjob.v1alpha1.subset.schema.json", lambda m: m["metadata"].update(name="Bad_Name")),
    ("pytorchjob", "pytorchjob.v1.subset.schema.json", lambda m: m["spec"].update(nprocPerNode=8)),
    ("pytorchjob", "pytorchjob.v1.subset.schema.json", lambda m: m["spec"]["pytorchReplicaSpecs"].update(Chief={})),
    ("pytorchjob", "pytorchjob.v1.subset.schema.json",
     lambda m: m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0].update(name="main")),
])
def test_the_schema_subsets_reject_mistakes(kind, schema_file, mutate):
    m = make(kind)
    mutate(m)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(m, schema(schema_file))


def test_core_parts_pass_kubernetes_validate():
    tj = make("trainjob")
    o = tj["spec"]["podSpecOverrides"][0]
    t = tj["spec"]["trainer"]
    # The TrainJob's core-typed parts, assembled into the pod the runtime would make.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"serviceAccountName": o["serviceAccountName"], "nodeSelector": o["nodeSelector"],
                    "tolerations": o["tolerations"], "volumes": o["volumes"],
                    "containers": [{"name": "node", "image": t["image"], "command": t["command"], "env": t["env"],
                                    "resources": t["resourcesPerNode"],
                                    "volumeMounts": o["containers"][0]["volumeMounts"]}]}}
    _core_validate(pod)
    for role, rep in make("pytorchjob")["spec"]["pytorchReplicaSpecs"].items():
        _core_validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role.lower()},
                        "template": rep["template"]})
    _core_validate(trainjob.config_map_manifest("alignpipe-sft-abc123", "team-a", "sft", sft_config(), gpus_per_node=8))


def test_kubernetes_validate_can_fail_here():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "node", "image": "i", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"key": 1}}}]}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_config_map_carries_the_validated_config():
    cm = trainjob.config_map_manifest("alignpipe-sft-abc123", "team-a", "sft", sft_config(), gpus_per_node=8)
    assert cm["metadata"]["name"] == "alignpipe-sft-abc123-config"
    data = json.loads(cm["data"]["config.json"])
    cfg = config_mod.validate("sft", data)  # what the nodes do with it
    assert cfg.distributed.gpus == 8 and cfg.distributed.deepspeed == "zero3"
    assert cfg.output_dir == "s3://alignpipe/models/sft"


def test_bad_input_fails_before_anything_is_built():
    with pytest.raises(ConfigError, match="traning: unknown key"):
        trainjob.trainjob_manifest("sft", sft_config(traning={}), name="a", namespace="n", image=IMAGE, nodes=2,
                                   gpus_per_node=1)
    with pytest.raises(ValueError, match="DNS label"):
        make("trainjob", name="Alignpipe_SFT")
    with pytest.raises(ValueError, match="does not train"):
        trainjob.trainjob_manifest("evaluate", {}, name="a", namespace="n", image=IMAGE, nodes=2, gpus_per_node=1)
    with pytest.raises(ValueError, match="must map keys of the secret"):
        make("pytorchjob", secrets={"alignpipe-s3": "AWS_ACCESS_KEY_ID"})
    with pytest.raises(ValueError, match="set twice: AWS_ACCESS_KEY_ID"):
        make("trainjob", env={"AWS_ACCESS_KEY_ID": "x"})


def test_job_names_are_dns_labels():
    name = trainjob.job_name("reward_model")
    assert name.startswith("alignpipe-reward-model-") and len(name) <= 63
    trainjob._check_name(name)
    assert trainjob.job_name("sft", "X" * 80).startswith("alignpipe-sft-xxx") and len(trainjob.job_name("sft", "x" * 80)) == 63


# ---------------------------------------------------------------------------------------------- submit and wait


RESULT = {"stage": "sft", "output": "s3://alignpipe/models/sft", "metrics": {"train/loss_last": 0.5},
          "lineage": {"stage": "sft"}, "history": [], "seconds": 12.5}


def trainjob_pods(name: str, phase: str, master_log: str, worker_log: str = "rank 8 of 16 done\n") -> list[Pod]:
    label = {"jobset.sigs.k8s.io/jobset-name": name}
    other = {"jobset.sigs.k8s.io/jobset-name": "someone-else"}
    return [Pod(f"{name}-node-0-0-abcde", label, phase, master_log),
            Pod(f"{name}-node-0-1-fghij", label, phase, worker_log),
            Pod("someone-else-node-0-0", other, "Running", "not ours\n")]


def test_run_multinode_trainjob_running_then_complete():
    name = "alignpipe-sft-ok1"
    master_log = ("[default0]:alignpipe: sft: rank 0 of 16 started\n" + "step\n" * 300
                  + "[default0]:" + RESULT_MARKER + json.dumps(RESULT) + "\n")
    script = Script(statuses=[{}, {"conditions": [condition("Created")]},
                              {"conditions": [condition("Created")], "jobsStatus": [{"name": "node", "active": 1}]},
                              {"conditions": [condition("Created"), condition("Complete", "JobsCompleted", "done")]}],
                    pods=trainjob_pods(name, "Succeeded", master_log))
    seen = []
    with KubeStub(script) as stub:
        result = trainjob.run_multinode("sft", sft_config(), nodes=2, gpus_per_node=8, image=IMAGE, namespace="team-a",
                                        name=name, secrets=SECRETS, tolerations=TOLERATIONS, poll_s=0.05, timeout_s=20,
                                        api_client=stub.api_client(), on_status=seen.append)
    assert result.output == "s3://alignpipe/models/sft" and result.metrics == RESULT["metrics"]
    assert result.lineage["job"] == f"TrainJob/team-a/{name}" and result.lineage["world_size"] == "16"
    assert [s["state"] for s in seen] == ["running", "succeeded"]

    reqs = [(r.method, r.path) for r in stub.requests]
    base = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs"
    assert reqs[0] == ("POST", base)
    assert reqs[1] == ("POST", "/api/v1/namespaces/team-a/configmaps")
    assert reqs[-1] == ("DELETE", f"{base}/{name}")
    assert sum(r == ("GET", f"{base}/{name}") for r in reqs) == 4
    # What was sent: exactly the manifest the public function builds, and a ConfigMap owned by the job.
    expected = trainjob.trainjob_manifest("sft", sft_config(), name=name, namespace="team-a", image=IMAGE, nodes=2,
                                          gpus_per_node=8, secrets=SECRETS, tolerations=TOLERATIONS)
    assert stub.requests[0].body == expected
    cm = stub.requests[1].body
    owner = cm["metadata"]["ownerReferences"][0]
    assert owner == {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "name": name,
                     "uid": stub.objects[name]["metadata"]["uid"]}
    assert config_mod.validate("sft", json.loads(cm["data"]["config.json"])).distributed.gpus == 8
    pods_req = next(r for r in stub.requests if r.path.endswith("/pods"))
    assert pods_req.query["labelSelector"] == [f"jobset.sigs.k8s.io/jobset-name={name}"]
    log_reqs = [r for r in stub.requests if r.path.endswith("/log")]
    assert len(log_reqs) == 2 and all(r.query["container"] == ["node"] for r in log_reqs)
    assert stub.deleted == [name]


def test_pytorchjob_running_then_failed_surfaces_pod_logs():
    name = "alignpipe-sft-bad1"
    label = {"training.kubeflow.org/job-name": name}
    master_log = "\n".join(f"line {i}" for i in range(100)) + (
        "\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    pods = [Pod(f"{name}-master-0", label, "Failed", master_log, container="pytorch"),
            Pod(f"{name}-worker-0", label, "Failed", "worker: Connection closed by peer\n", container="pytorch")]
    script = Script(statuses=[{"conditions": [condition("Created")]},
                              {"conditions": [condition("Created"), condition("Running")]},
                              {"conditions": [condition("Running"), condition("Failed", "PyTorchJobFailed",
                                                                              "PyTorchJob alignpipe-sft-bad1 is failed because 1 Master replica(s) failed.")]}],
                    pods=pods)
    manifest = make("pytorchjob", name=name, nodes=2)
    with KubeStub(script) as stub:
        with pytest.raises(trainjob.TrainJobError) as err:
            trainjob.submit_and_wait(manifest, "team-a", timeout_s=20, poll_s=0.05, api_client=stub.api_client(),
                                     log_tail_lines=10)
    msg = str(err.value)
    assert msg.startswith(f"PyTorchJob team-a/{name} failed: PyTorchJobFailed: PyTorchJob alignpipe-sft-bad1 is failed")
    assert f"--- pod {name}-master-0 (Failed), last 10 log lines ---" in msg
    assert "torch.OutOfMemoryError: CUDA out of memory" in msg
    assert "line 50" not in msg  # only the tail
    assert "worker: Connection closed by peer" in msg
    assert stub.requests[0].path == "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"
    assert stub.requests[0].body == manifest
    pods_req = next(r for r in stub.requests if r.path.endswith("/pods"))
    assert pods_req.query["labelSelector"] == [f"training.kubeflow.org/job-name={name}"]
    assert all(r.query["tailLines"] == ["10"] for r in stub.requests if r.path.endswith("/log"))
    assert stub.deleted == [name]


def test_failed_job_can_be_kept():
    name = "alignpipe-sft-keep"
    script = Script(statuses=[{"conditions": [condition("Failed", "DeadlineExceeded", "too slow")]}], pods=[])
    with KubeStub(script) as stub:
        with pytest.raises(trainjob.TrainJobError, match="DeadlineExceeded: too slow") as err:
            trainjob.submit_and_wait(make("trainjob", name=name), "team-a", timeout_s=10, poll_s=0.05,
                                     api_client=stub.api_client(), keep_failed=True)
    assert "no pods found" in str(err.value)
    assert stub.deleted == []


def test_timeout_deletes_the_job():
    name = "alignpipe-sft-slow"
    script = Script(statuses=[{"conditions": [condition("Created")]}])
    with KubeStub(script) as stub:
        t0 = time.monotonic()
        with pytest.raises(trainjob.TrainJobError, match=r"not finished after 0.5 s \(last condition: Created\)"):
            trainjob.submit_and_wait(make("trainjob", name=name), "team-a", timeout_s=0.5, poll_s=0.05,
                                     api_client=stub.api_client())
        assert time.monotonic() - t0 < 5
    assert stub.deleted == [name]


def test_transient_api_errors_are_retried_then_reported():
    name = "alignpipe-sft-flaky"
    ok = Script(statuses=[{"conditions": [condition("Complete")]}], get_errors=2,
                pods=trainjob_pods(name, "Succeeded", RESULT_MARKER + json.dumps(RESULT)))
    with KubeStub(ok) as stub:
        status = trainjob.submit_and_wait(make("trainjob", name=name), "team-a", timeout_s=10, poll_s=0.05,
                                          api_client=stub.api_client())
    assert status["state"] == "succeeded" and status["result"] == RESULT
    assert [p["name"] for p in status["pods"]] == [f"{name}-node-0-0-abcde", f"{name}-node-0-1-fghij"]
    bad = Script(statuses=[{}], get_errors=100)
    with KubeStub(bad) as stub:
        with pytest.raises(trainjob.TrainJobError, match="3 API errors in a row while polling: 500"):
            trainjob.submit_and_wait(make("trainjob", name=name), "team-a", timeout_s=10, poll_s=0.01,
                                     api_client=stub.api_client(), max_api_errors=3)
        assert stub.deleted == [name]


def test_missing_crd_is_named():
    with KubeStub(Script(create_error=(404, "the server could not find the requested resource"))) as stub:
        with pytest.raises(trainjob.TrainJobError, match=r"could not create: 404 .* CRD installed\? kubectl get crd "
                                                          r"trainjobs.trainer.kubeflow.org"):
            trainjob.submit_and_wait(make("trainjob"), "team-a", timeout_s=5, poll_s=0.05, api_client=stub.api_client())
        assert [r.method for r in stub.requests] == ["POST"]  # nothing else was attempted


def test_run_multinode_refuses_local_output_and_bad_config_without_calling_the_api():
    with KubeStub(Script()) as stub:
        with pytest.raises(ConfigError, match="output_dir: '/data/out' is local"):
            trainjob.run_multinode("sft", sft_config(output_dir="/data/out"), nodes=2, gpus_per_node=8, image=IMAGE,
                                   namespace="n", api_client=stub.api_client())
        with pytest.raises(ConfigError, match="training.max_steps"):
            trainjob.run_multinode("sft", sft_config(training={"max_steps": 0}), nodes=2, gpus_per_node=8, image=IMAGE,
                                   namespace="n", api_client=stub.api_client())
        with pytest.raises(ValueError, match="kind must be"):
            trainjob.run_multinode("sft", sft_config(), nodes=2, gpus_per_node=8, image=IMAGE, namespace="n",
                                   kind="mpijob", api_client=stub.api_client())
        assert stub.requests == []


# ------------------------------------------------------------------ from the pipeline: launch.run_stage


def _multinode_env(monkeypatch, stub) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("KFP_RUN_ID", "run-1234")
    monkeypatch.setenv("ALIGNPIPE_GPU_IMAGE", IMAGE)
    monkeypatch.setenv("ALIGNPIPE_S3_SECRET", "team-s3")
    monkeypatch.setenv("ALIGNPIPE_MLFLOW_SECRET", "team-mlflow")
    monkeypatch.setattr(trainjob, "default_api_client", stub.api_client)
    monkeypatch.setattr(trainjob, "current_namespace", lambda default="default": "team-a")


def _sft_cfg(nodes: int = 2, gpus: int = 4, kind: str = "trainjob"):
    data = sft_config(distributed={"gpus": gpus, "nodes": nodes, "multinode": kind, "deepspeed": "none"})
    return config_mod.validate("sft", data)


def test_pipeline_step_with_nodes_runs_a_trainjob_with_the_step_secrets(monkeypatch):
    """`sft_nodes=2`, `sft_accelerator_count=4`: the step's pod submits a TrainJob of 2 nodes x 4 GPUs, named
    after the KFP run and stage, carrying the GPU image and the step's S3/MLflow Secrets (optional keys optional)."""
    from alignpipe import launch

    monkeypatch.setenv("KFP_RUN_ID", "run-1234")
    name = launch.multinode_job_name("sft")
    master_log = "[default0]:" + RESULT_MARKER + json.dumps(RESULT) + "\n"
    script = Script(statuses=[{"conditions": [condition("Created"), condition("Complete", "JobsCompleted", "done")]}],
                    pods=trainjob_pods(name, "Succeeded", master_log))
    with KubeStub(script) as stub:
        _multinode_env(monkeypatch, stub)
        monkeypatch.setattr(trainjob, "submit_and_wait", _fast(trainjob.submit_and_wait))
        assert launch.multinode_job_name("sft") == launch.multinode_job_name("sft") != launch.multinode_job_name("rl")
        name = launch.multinode_job_name("sft")
        result = launch.run_stage("sft", _sft_cfg())
        body = stub.requests[0].body
    assert result.output == RESULT["output"] and result.lineage["world_size"] == "8"
    assert body["kind"] == "TrainJob" and body["metadata"]["name"] == name
    assert body["spec"]["trainer"]["numNodes"] == 2 and body["spec"]["trainer"]["image"] == IMAGE
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in body["spec"]["trainer"]["env"]}
    assert env["AWS_ACCESS_KEY_ID"] == {"name": "team-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_ENDPOINT_URL"] == {"name": "team-s3", "key": "AWS_ENDPOINT_URL", "optional": True}
    assert env["MLFLOW_TRACKING_URI"] == {"name": "team-mlflow", "key": "MLFLOW_TRACKING_URI"}
    assert "ALIGNPIPE_REWARD_TOKEN" not in env  # only the rl step scores with the reward service


def test_a_multinode_rl_step_gives_its_pods_the_reward_token_optional(monkeypatch):
    """The rl step's pod has the reward service's token (optional Secret); its TrainJob's pods get it the same way."""
    from alignpipe import launch

    monkeypatch.setenv("KFP_RUN_ID", "run-1234")
    monkeypatch.setenv("ALIGNPIPE_REWARD_SECRET", "team-reward")
    name = launch.multinode_job_name("rl")
    master_log = "[default0]:" + RESULT_MARKER + json.dumps(RESULT) + "\n"
    script = Script(statuses=[{"conditions": [condition("Created"), condition("Complete", "JobsCompleted", "done")]}],
                    pods=trainjob_pods(name, "Succeeded", master_log))
    cfg = config_mod.validate("rl", {"model": "s3://alignpipe/models/sft", "train_data": "s3://alignpipe/data/rl.jsonl",
                                     "output_dir": "s3://alignpipe/models/rl", "tracking": False,
                                     "training": {"max_steps": 10},
                                     "distributed": {"gpus": 2, "nodes": 2, "multinode": "trainjob"}})
    with KubeStub(script) as stub:
        _multinode_env(monkeypatch, stub)
        monkeypatch.setattr(trainjob, "submit_and_wait", _fast(trainjob.submit_and_wait))
        launch.run_stage("rl", cfg)
        body = stub.requests[0].body
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in body["spec"]["trainer"]["env"]}
    assert env["ALIGNPIPE_REWARD_TOKEN"] == {"name": "team-reward", "key": "ALIGNPIPE_REWARD_TOKEN", "optional": True}
    assert env["AWS_ACCESS_KEY_ID"] == {"name": "team-s3", "key": "AWS_ACCESS_KEY_ID"}


def test_a_retried_launcher_pod_reattaches_to_the_running_job(monkeypatch):
    """KFP retries the step in a new pod: the same run id gives the same job name, the create answers 409, and
    the new pod follows the job the first attempt started — no second job, no second ConfigMap."""
    from alignpipe import launch

    master_log = "[default0]:" + RESULT_MARKER + json.dumps(RESULT) + "\n"
    with KubeStub(Script(statuses=[{"conditions": [condition("Created")]}])) as stub:
        _multinode_env(monkeypatch, stub)
        name = launch.multinode_job_name("sft")
        stub.script.pods = trainjob_pods(name, "Succeeded", master_log)
        # The first attempt's job, already running (created as the first pod did, then that pod died).
        cfg = _sft_cfg()
        first = trainjob.trainjob_manifest("sft", cfg.model_dump(mode="json"), name=name, namespace="team-a",
                                           image=IMAGE, nodes=2, gpus_per_node=4)
        stub.objects[name] = {**first, "metadata": {**first["metadata"], "uid": "first-attempt"}}
        stub.script.statuses = [{"conditions": [condition("Created")]},
                                {"conditions": [condition("Created"), condition("Complete", "JobsCompleted", "ok")]}]
        monkeypatch.setattr(trainjob, "submit_and_wait", _fast(trainjob.submit_and_wait))
        result = launch.run_stage("sft", cfg)
        posts = [r for r in stub.requests if r.method == "POST"]
    assert result.output == RESULT["output"]
    assert len(posts) == 1 and posts[0].path.endswith("/trainjobs")  # the 409'd create; no ConfigMap, no new job
    assert stub.objects[name]["metadata"]["uid"] == "first-attempt"


def _fast(submit_and_wait):
    def wrapped(*args, **kwargs):
        return submit_and_wait(*args[:2], 60, 0.05, **kwargs)
    return wrapped
