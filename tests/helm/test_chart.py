"""helm/alignpipe rendered by the real Helm engine with every values set of tests/helm/values/:
lint, Kubernetes 1.30 schemas, hardening, wiring, and the values it must refuse."""

from __future__ import annotations

import base64
import json
import re

import kubernetes_validate
import pytest
import yaml
from helm_python import chart as hc

from alignpipe import platform
from helmtools import (CHART, NAMESPACE, VALUES_SETS, docs, find, pod_specs, render_error, render_manifests, rendered,
                       values_of)

CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "POSTGRES_PASSWORD",
                  "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MLFLOW_TRACKING_TOKEN"}


def _values_yaml() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _b64(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


# --- chart files -------------------------------------------------------------------------------

def test_chart_metadata():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] == "alignpipe"
    assert meta["kubeVersion"].startswith(">=1.")
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])


def test_values_yaml_documents_every_key_and_links_the_schema():
    lines = (CHART / "values.yaml").read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=values.schema.json"
    schema = json.loads((CHART / "values.schema.json").read_text())
    undocumented, stack = [], []  # stack of (indent, key, schema node or None)
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_.\-/\"]+):", line)
        if not m or line.lstrip().startswith(("#", "-")):
            continue
        indent, key = len(m.group(1)), m.group(2).strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][2] if stack else schema
        node = (parent or {}).get("properties", {}).get(key) if isinstance(parent, dict) else None
        stack.append((indent, key, node))
        if node is None:  # a free-form map entry (labels, nodeSelector ...): data, not a chart key
            continue
        j = i - 1
        comments = []
        while j >= 0 and lines[j].strip().startswith("#"):
            comments.append(lines[j].strip())
            j -= 1
        if not any(c.startswith("# --") for c in comments):
            undocumented.append(f"line {i + 1}: {'.'.join(k for _, k, _ in stack)}")
    assert not undocumented, "keys without a `# --` comment:\n" + "\n".join(undocumented)


def test_schema_is_strict_everywhere():
    schema = json.loads((CHART / "values.schema.json").read_text())
    loose = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path or "/")
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema, "")
    assert schema["additionalProperties"] is False
    assert not loose, f"objects that accept unknown keys: {loose}"
    # every key of values.yaml is declared in the schema (so nothing documented is unchecked)
    def declared(values, node, path):
        for k, v in values.items():
            props = node.get("properties")
            if props is None:
                continue
            assert k in props, f"{path}{k} missing from values.schema.json"
            if isinstance(v, dict):
                declared(v, props[k], f"{path}{k}.")
    declared(_values_yaml(), schema, "")


def test_values_defaults_agree_with_platform_py():
    v = _values_yaml()
    assert f"{v['image']['repository']}:{v['image']['tag']}" == platform.DEFAULT_IMAGE
    assert f"{v['gpuImage']['repository']}:{v['gpuImage']['tag']}" == platform.DEFAULT_GPU_IMAGE
    assert v["secrets"]["s3"]["name"] == platform.S3_SECRET_NAME
    assert v["secrets"]["mlflow"]["name"] == platform.MLFLOW_SECRET_NAME
    assert v["pipelines"]["serviceAccount"]["name"] == platform.PIPELINE_SERVICE_ACCOUNT
    # ... and the rendered defaults carry them
    d = docs("defaults")
    names = {(x["kind"], x["metadata"]["name"]) for x in d}
    assert ("Secret", platform.S3_SECRET_NAME) in names
    assert ("Secret", platform.MLFLOW_SECRET_NAME) in names
    assert ("ServiceAccount", platform.PIPELINE_SERVICE_ACCOUNT) in names
    cm = find("defaults", "ConfigMap", "alignpipe-pipeline-defaults")
    assert cm["data"]["ALIGNPIPE_IMAGE"] == platform.DEFAULT_IMAGE
    assert cm["data"]["ALIGNPIPE_GPU_IMAGE"] == platform.DEFAULT_GPU_IMAGE


def test_helmignore_keeps_test_inputs_out():
    ignore = (CHART / ".helmignore").read_text()
    assert "values-*.yaml" in ignore and "ci/" in ignore
    assert not list(CHART.rglob("values-*.yaml")), "test values belong in tests/helm/values/"


# --- every values set ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", VALUES_SETS)
def test_lint_strict_is_clean(name):
    result = hc.lint(str(CHART), values_of(name), strict=True, kube_version="v1.30.0")
    assert result["errors"] == []
    # only the icon recommendation (severity INFO) is tolerated
    findings = [m for m in result["messages"] if not (m["severity"] == 1 and "icon is recommended" in m["error"])]
    assert findings == [], findings


@pytest.mark.parametrize("name", VALUES_SETS)
def test_every_manifest_is_valid_kubernetes_1_30(name):
    bad = []
    for d in docs(name):
        try:
            kubernetes_validate.validate(d, "1.30", strict=True)
        except kubernetes_validate.ValidationError as err:
            bad.append(f"{d['kind']}/{d['metadata']['name']}: {err.message}")
    assert not bad, "\n".join(bad)
    assert len(docs(name)) >= 10


def test_kubernetes_validate_catches_a_broken_manifest():
    dep = json.loads(json.dumps(find("defaults", "Deployment", "alignpipe-mlflow")))
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.30", strict=True)
    dep["spec"]["replicas"] = 1
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.30", strict=True)


@pytest.mark.parametrize("name", VALUES_SETS)
def test_every_pod_is_hardened(name):
    specs = pod_specs(name)
    assert specs
    for where, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 10000, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["privileged"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
            assert sc["runAsNonRoot"] is True, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
            # read-only root: /tmp is an emptyDir
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: no writable /tmp"
            tmp_vol = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in tmp_vol, where
            # pinned image
            image = c["image"]
            tag = image.split("@")[0].rpartition(":")[2]
            assert tag and tag != "latest" and "/" not in tag, f"{where}: {image}"
        # only the pipeline ServiceAccount mounts an API token; chart pods never do
        assert spec["automountServiceAccountToken"] is False, where


@pytest.mark.parametrize("name", VALUES_SETS)
def test_credentials_only_through_secret_key_refs(name):
    for where, spec in pod_specs(name):
        for c in spec["containers"]:
            for e in c.get("env", []):
                if e["name"] in CREDENTIAL_ENV:
                    assert "secretKeyRef" in e.get("valueFrom", {}), f"{where}: {e['name']} is not a secretKeyRef"
                    assert "value" not in e, f"{where}: {e['name']} is a literal"
            for src in c.get("envFrom", []):
                assert "secretRef" not in src, f"{where}: envFrom a Secret"
    for d in docs(name):
        if d["kind"] == "ConfigMap":
            text = json.dumps(d["data"]).lower()
            for word in ("secret_access_key", "password", "access_key_id"):
                assert word not in text, f"ConfigMap {d['metadata']['name']} holds {word}"


@pytest.mark.parametrize("name", VALUES_SETS)
def test_standard_labels_on_every_resource(name):
    for d in docs(name):
        labels = d["metadata"]["labels"]
        where = f"{d['kind']}/{d['metadata']['name']}"
        assert labels["app.kubernetes.io/name"] == "alignpipe", where
        assert labels["app.kubernetes.io/instance"] == "alignpipe", where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        assert labels["helm.sh/chart"] == "alignpipe-0.1.0", where
        assert d["metadata"]["namespace"], where


# --- wiring ---------------------------------------------------------------------------------------

def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_mlflow_server_defaults():
    dep = find("defaults", "Deployment", "alignpipe-mlflow")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    cmd = " ".join(c["command"])
    assert cmd.startswith("mlflow server")
    assert "--serve-artifacts" in c["command"]
    assert "--artifacts-destination=s3://alignpipe/mlflow" in c["command"]
    assert "--backend-store-uri=postgresql+psycopg2://$(PGUSER)@$(PGHOST):$(PGPORT)/$(PGDATABASE)" in c["command"]
    env = _env(c)
    assert env["PGHOST"]["value"] == "alignpipe-postgresql"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "alignpipe-postgresql", "key": "password"}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://alignpipe-minio:9000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "alignpipe-s3", "key": "AWS_ACCESS_KEY_ID"}
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert {"alignpipe-mlflow", "alignpipe-mlflow:*", "alignpipe-mlflow.kubeflow.svc.cluster.local:*"} <= set(hosts)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert c["image"] == platform.DEFAULT_IMAGE
    svc = find("defaults", "Service", "alignpipe-mlflow")
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 5000
    assert not [d for d in docs("defaults") if d["kind"] == "Ingress"]


def test_pipeline_secrets_defaults():
    s3 = find("defaults", "Secret", platform.S3_SECRET_NAME)
    assert _b64(s3, "AWS_ENDPOINT_URL") == "http://alignpipe-minio:9000"
    assert _b64(s3, "MLFLOW_S3_ENDPOINT_URL") == "http://alignpipe-minio:9000"
    assert _b64(s3, "ALIGNPIPE_S3_BUCKET") == "alignpipe"
    assert len(_b64(s3, "AWS_ACCESS_KEY_ID")) == 20 and len(_b64(s3, "AWS_SECRET_ACCESS_KEY")) == 40
    ml = find("defaults", "Secret", platform.MLFLOW_SECRET_NAME)
    assert _b64(ml, "MLFLOW_TRACKING_URI") == "http://alignpipe-mlflow:5000"
    # MinIO's root credentials are the pipeline credentials
    sts = find("defaults", "StatefulSet", "alignpipe-minio")
    env = _env(sts["spec"]["template"]["spec"]["containers"][0])
    assert env["MINIO_ROOT_USER"]["valueFrom"]["secretKeyRef"] == {"name": "alignpipe-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    pg = find("defaults", "StatefulSet", "alignpipe-postgresql")
    assert pg["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_generated_credentials_are_random_without_a_cluster():
    # No cluster: lookup finds nothing, so each render generates; on a cluster the live values are reused.
    a = rendered("defaults")
    b = render_manifests.render_chart({}, name="alignpipe", namespace=NAMESPACE, chart=CHART)

    def s3_secret(out):
        return next(d for d in yaml.safe_load_all(out["alignpipe/templates/secrets.yaml"])
                    if d and d["metadata"]["name"] == platform.S3_SECRET_NAME)

    sa, sb = s3_secret(a), s3_secret(b)
    assert sa["data"]["AWS_SECRET_ACCESS_KEY"] != sb["data"]["AWS_SECRET_ACCESS_KEY"]
    assert "lookup" in (CHART / "templates" / "_helpers.tpl").read_text()


def test_external_s3_and_database():
    names = {(d["kind"], d["metadata"]["name"]) for d in docs("external")}
    assert not any("minio" in n or "postgresql" in n for _, n in names), names
    assert ("Secret", platform.S3_SECRET_NAME) not in names  # secrets.s3.create=false: yours
    c = find("external", "Deployment", "alignpipe-mlflow")["spec"]["template"]["spec"]["containers"][0]
    env = _env(c)
    assert env["PGHOST"]["value"] == "postgres.databases.svc.cluster.local"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "mlpipeline-minio-artifact", "key": "accesskey"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mlpipeline-minio-artifact", "key": "secretkey"}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio-service.kubeflow.svc.cluster.local:9000"
    # MLflow may reach the external database and S3 ports, nothing else but DNS
    np = find("external", "NetworkPolicy", "alignpipe-mlflow")
    ports = sorted(p["port"] for rule in np["spec"]["egress"] for p in rule["ports"])
    assert ports == [53, 53, 5432, 9000]


def test_upload_job():
    job = find("defaults", "Job", "alignpipe-upload")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["alignpipe", "upload", "--host", "http://ml-pipeline.kubeflow.svc.cluster.local:8888"]
    assert c["image"] == platform.DEFAULT_IMAGE
    assert c["envFrom"] == [{"configMapRef": {"name": "alignpipe-pipeline-defaults"}}]
    # the bucket Job runs first
    buckets = find("defaults", "Job", "alignpipe-buckets")
    assert int(buckets["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    compile(buckets["spec"]["template"]["spec"]["containers"][0]["command"][2], "buckets", "exec")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs("no-upload")}
    assert ("Job", "alignpipe-upload") not in names and ("Job", "alignpipe-buckets") in names
    assert "Upload is off" in rendered("no-upload")["alignpipe/templates/NOTES.txt"]


def test_gpu_scheduling_reaches_the_pipeline_upload():
    cm = find("gpu", "ConfigMap", "alignpipe-pipeline-defaults")["data"]
    assert json.loads(cm["ALIGNPIPE_GPU_NODE_SELECTOR"]) == values_of("gpu")["pipelines"]["gpu"]["nodeSelector"]
    assert json.loads(cm["ALIGNPIPE_GPU_TOLERATIONS"]) == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert cm["ALIGNPIPE_GPU_RESOURCE"] == "nvidia.com/gpu"
    assert cm["ALIGNPIPE_IMAGE"] == platform.DEFAULT_IMAGE + "@sha256:" + "1" * 64
    default_cm = find("defaults", "ConfigMap", "alignpipe-pipeline-defaults")["data"]
    assert json.loads(default_cm["ALIGNPIPE_GPU_NODE_SELECTOR"]) == {} and json.loads(default_cm["ALIGNPIPE_GPU_TOLERATIONS"]) == []
    for where, spec in pod_specs("gpu"):
        for c in spec["containers"]:
            assert "@sha256:" in c["image"] and c["imagePullPolicy"] == "Always", where


def test_multi_node_rbac_only_when_asked_for():
    """Single-node pipelines need no Kubernetes API access beyond their Secrets: the TrainJob/PyTorchJob,
    ConfigMap-create and pod rules come with pipelines.rbac.multiNode only."""
    plain = find("defaults", "Role", platform.PIPELINE_SERVICE_ACCOUNT)
    assert {res for r in plain["rules"] for res in r["resources"]} == {"secrets", "configmaps"}
    assert all(r["verbs"] == ["get"] for r in plain["rules"])


def test_pipeline_rbac_is_exactly_what_components_need():
    role = find("gpu", "Role", platform.PIPELINE_SERVICE_ACCOUNT)
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"]), "create" in r["verbs"]): r for r in role["rules"]}
    rules.update({k[:2]: r for k, r in rules.items() if not k[2]})
    secrets = rules[(("",), ("secrets",))]
    assert secrets["verbs"] == ["get"]
    assert {platform.S3_SECRET_NAME, platform.MLFLOW_SECRET_NAME} <= set(secrets["resourceNames"])
    assert rules[(("",), ("configmaps",), True)]["verbs"] == ["create"], "TrainJob config maps: create only"
    assert set(rules[(("trainer.kubeflow.org",), ("trainjobs",), True)]["verbs"]) == {"create", "get", "list", "watch", "delete"}
    assert set(rules[(("kubeflow.org",), ("pytorchjobs",), True)]["verbs"]) == {"create", "get", "list", "watch", "delete"}
    assert rules[(("",), ("pods/log",))]["verbs"] == ["get"]
    assert set(rules[(("",), ("pods",))]["verbs"]) == {"get", "list"}
    for r in role["rules"]:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"]
        if r["resources"] in (["secrets"], ["configmaps"]) and r["verbs"] != ["create"]:
            assert r.get("resourceNames"), "Secrets/ConfigMaps only by name"
    rb = find("defaults", "RoleBinding", platform.PIPELINE_SERVICE_ACCOUNT)
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": platform.PIPELINE_SERVICE_ACCOUNT, "namespace": NAMESPACE}]
    assert rb["roleRef"]["name"] == role["metadata"]["name"]


def test_multi_user_namespaces_ingress_and_token():
    ns = "kubeflow-user-example-com"
    for kind, name in [("ServiceAccount", platform.PIPELINE_SERVICE_ACCOUNT), ("Role", platform.PIPELINE_SERVICE_ACCOUNT),
                       ("RoleBinding", platform.PIPELINE_SERVICE_ACCOUNT), ("Secret", platform.MLFLOW_SECRET_NAME)]:
        assert find("multi-user", kind, name)["metadata"]["namespace"] == ns
    s3 = [d for d in docs("multi-user") if d["kind"] == "Secret" and d["metadata"]["name"] == platform.S3_SECRET_NAME]
    assert sorted(d["metadata"]["namespace"] for d in s3) == sorted([NAMESPACE, ns])
    assert s3[0]["data"]["AWS_SECRET_ACCESS_KEY"] == s3[1]["data"]["AWS_SECRET_ACCESS_KEY"]
    ml = find("multi-user", "Secret", platform.MLFLOW_SECRET_NAME)
    assert _b64(ml, "MLFLOW_TRACKING_URI") == "http://alignpipe-mlflow.kubeflow.svc.cluster.local:5000"
    np = find("multi-user", "NetworkPolicy", "alignpipe-mlflow")
    peers = np["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}}} in peers
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in peers
    ing = find("multi-user", "Ingress", "alignpipe-mlflow")
    assert ing["spec"]["rules"][0]["host"] == "mlflow.example.org" and ing["spec"]["tls"][0]["secretName"] == "mlflow-tls"
    hosts = _env(find("multi-user", "Deployment", "alignpipe-mlflow")["spec"]["template"]["spec"]["containers"][0])
    assert {"mlflow.example.org", "mlflow.internal:*"} <= set(hosts["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(","))
    up = find("multi-user", "Job", "alignpipe-upload")["spec"]["template"]["spec"]
    assert up["serviceAccountName"] == "default-editor"
    assert up["volumes"][-1]["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert _env(up["containers"][0])["KF_PIPELINES_SA_TOKEN_PATH"]["value"].startswith("/var/run/secrets/kubeflow/pipelines/")
    assert up["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    svc = find("multi-user", "Service", "alignpipe-mlflow")
    assert svc["spec"]["ports"][0]["nodePort"] == 30500


def test_network_policies_let_only_what_must_talk():
    d = {x["metadata"]["name"]: x for x in docs("defaults") if x["kind"] == "NetworkPolicy"}
    assert set(d) == {"alignpipe-mlflow", "alignpipe-postgresql", "alignpipe-minio", "alignpipe-jobs"}
    for np in d.values():
        assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    pipeline_peer = {"podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}}}

    def component_peer(c):
        return {"podSelector": {"matchLabels": {"app.kubernetes.io/component": c, "app.kubernetes.io/instance": "alignpipe",
                                                "app.kubernetes.io/name": "alignpipe"}}}

    # pipeline pods -> MLflow and S3
    assert pipeline_peer in d["alignpipe-mlflow"]["spec"]["ingress"][0]["from"]
    assert pipeline_peer in d["alignpipe-minio"]["spec"]["ingress"][0]["from"]
    # MLflow -> PostgreSQL (only MLflow reaches it) and S3
    assert d["alignpipe-postgresql"]["spec"]["ingress"] == [{"from": [component_peer("mlflow")], "ports": [{"port": 5432, "protocol": "TCP"}]}]
    assert component_peer("mlflow") in d["alignpipe-minio"]["spec"]["ingress"][0]["from"]
    assert pipeline_peer not in d["alignpipe-postgresql"]["spec"]["ingress"][0]["from"]
    egress_ports = sorted(p["port"] for r in d["alignpipe-mlflow"]["spec"]["egress"] for p in r["ports"])
    assert egress_ports == [53, 53, 5432, 9000]
    # the databases talk to no one
    assert d["alignpipe-postgresql"]["spec"]["egress"] == [] and d["alignpipe-minio"]["spec"]["egress"] == []
    assert d["alignpipe-jobs"]["spec"]["ingress"] == []
    # every pod of the chart is selected by some policy
    for x in docs("defaults"):
        if x["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = x["spec"]["template"]["metadata"]["labels"]
            assert any(_selects(np["spec"]["podSelector"], labels) for np in d.values()), x["metadata"]["name"]


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
    return True


def test_helm_test_hook():
    job = find("defaults", "Job", "alignpipe-test")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    compile(script, "helm-test", "exec")
    assert "/health" in script and "list_objects_v2" in script


@pytest.mark.parametrize(("values", "expected"), [
    ({}, "kubectl --namespace kubeflow port-forward service/alignpipe-mlflow 5000:5000"),
    ({"mlflow": {"service": {"type": "NodePort"}}}, "jsonpath=\"{.spec.ports[0].nodePort}\""),
    ({"mlflow": {"service": {"type": "LoadBalancer"}}}, "{.status.loadBalancer.ingress[0].ip}"),
    ({"mlflow": {"ingress": {"enabled": True, "host": "ml.example.org", "tlsSecretName": "t"}}}, "https://ml.example.org/"),
])
def test_notes_say_how_to_reach_mlflow_and_submit(values, expected):
    notes = render_manifests.render_chart(values, name="alignpipe", namespace=NAMESPACE, chart=CHART)["alignpipe/templates/NOTES.txt"]
    assert expected in notes
    assert "alignpipe submit" in notes and "helm test alignpipe" in notes


# --- refused values -------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"mlflow": {"replicass": 2}}, "additional properties 'replicass' not allowed"),
    ({"bogus": True}, "additional properties 'bogus' not allowed"),
    ({"mlflow": {"replicas": -1}}, "at '/mlflow/replicas': minimum: got -1, want 1"),
    ({"image": {"tag": "latest"}}, "at '/image/tag'"),
    ({"mlflow": {"resources": {"limits": None}}}, "at '/mlflow/resources': missing property 'limits'"),
    ({"externalS3": {"endpoint": "http://minio-service.kubeflow:9000"}},
     "minio.enabled and externalS3.endpoint are mutually exclusive"),
    ({"kfp": {"host": ""}}, "pipelines.upload.enabled needs kfp.host"),
    ({"postgresql": {"enabled": False}}, "no database for MLflow: postgresql.enabled=false needs externalDatabase.host"),
    ({"postgresql": {"enabled": False}, "externalDatabase": {"host": "db"}}, "externalDatabase.existingSecret is required"),
    ({"externalDatabase": {"host": "db", "existingSecret": "x"}}, "postgresql.enabled and externalDatabase.host are mutually exclusive"),
    ({"minio": {"enabled": False}}, "no S3 store"),
    ({"minio": {"enabled": False}, "externalS3": {"endpoint": "http://s3:9000"}}, "externalS3 needs credentials"),
    ({"minio": {"enabled": False}, "externalS3": {"endpoint": "http://s3:9000", "existingSecret": "kfp-s3"}},
     "Secret kfp-s3 with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not found in namespace kubeflow"),
    ({"mlflow": {"ingress": {"enabled": True, "host": ""}}}, "mlflow.ingress.enabled needs mlflow.ingress.host"),
])
def test_refused_values(values, message):
    assert message in render_error(values)


def test_lint_reports_schema_violations():
    # Helm's lint only logs `fail` guards (render refuses them, test_refused_values); schema errors it reports.
    result = hc.lint(str(CHART), {"mlflow": {"replicas": 0}}, strict=True, kube_version="v1.30.0")
    assert any(m["severity"] >= 2 and "/mlflow/replicas" in m["error"] for m in result["messages"]) or result["errors"], result
