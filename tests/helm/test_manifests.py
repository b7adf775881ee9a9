"""manifests/ (kustomize base + overlays) is a fresh render of the chart (scripts/render_manifests.py), and the
real kustomize (`kubectl kustomize`) builds each of them into what the chart renders."""

from __future__ import annotations

import os

import kubernetes_validate
import pytest
import yaml

from helmtools import ROOT, kustomize_build, render_manifests

MANIFESTS = ROOT / "manifests"


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    return render_manifests.build_files()


def test_committed_manifests_equal_a_fresh_render(fresh):
    stale = render_manifests.stale_files(fresh)
    assert not stale, f"manifests/ is stale, run `make manifests`: {stale}"


def test_stale_check_detects_an_edit(fresh):
    edited = dict(fresh)
    edited["base/kustomization.yaml"] += "# edited\n"
    assert render_manifests.stale_files(edited) == ["base/kustomization.yaml"]
    missing = {k: v for k, v in fresh.items() if k != "overlays/gpu-defaults/kustomization.yaml"}
    assert render_manifests.stale_files(missing) == ["overlays/gpu-defaults/kustomization.yaml"]


def test_render_is_deterministic(fresh):
    assert render_manifests.build_files() == fresh
    secrets = [yaml.safe_load(text) for path, text in fresh.items() if "/secret-" in path]
    # only the MLflow URL Secret is rendered; credentials are never generated into manifests/
    assert [s["metadata"]["name"] for s in secrets] == ["alignpipe-mlflow"]


def test_base_is_valid_and_helm_free(fresh):
    kust = yaml.safe_load(fresh["base/kustomization.yaml"])
    assert kust["namespace"] == "kubeflow"
    assert sorted(kust["resources"]) == sorted(p.split("/", 1)[1] for p in fresh
                                              if p.startswith("base/") and not p.endswith("kustomization.yaml"))
    for path, text in fresh.items():
        if path.startswith("base/") and not path.endswith("kustomization.yaml"):
            doc = yaml.safe_load(text)
            kubernetes_validate.validate(doc, "1.30", strict=True)
            assert "namespace" not in doc["metadata"], path
            assert not any(k.startswith("helm.sh/") for k in doc["metadata"].get("annotations", {})), path
            assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize", path
            assert doc["metadata"]["name"] != "alignpipe-test", "helm test Job belongs to the chart only"


BUILDS = ["base"] + [f"overlays/{p.name}" for p in sorted((MANIFESTS / "overlays").iterdir()) if p.is_dir()]


def values_for(build: str) -> dict:
    files = [MANIFESTS / "values" / "base.yaml"]
    if build != "base":
        files.append(MANIFESTS / "values" / f"{build.split('/', 1)[1]}.yaml")
    return render_manifests.load_values(*files)


def test_every_overlay_is_rendered_and_built():
    assert BUILDS == ["base"] + [f"overlays/{o}" for o in sorted(render_manifests.OVERLAYS)]


@pytest.mark.parametrize("build", BUILDS)
def test_kustomize_builds_the_chart_render(build):
    """`kubectl kustomize manifests/<build>` (the real kustomize: resources, JSON 6902 patches, $patch: delete,
    namespace) == the chart rendered with its values, and every resource passes the Kubernetes 1.30 schemas."""
    built = kustomize_build(MANIFESTS / build)
    expected = render_manifests.kustomize_docs(values_for(build))
    key = render_manifests.key_of
    assert sorted(map(key, built)) == sorted(map(key, expected))
    by_key = {key(d): d for d in built}
    for doc in built:
        kubernetes_validate.validate(doc, "1.30", strict=True)
        assert doc["metadata"].get("namespace") == "kubeflow", key(doc)
    for doc in expected:
        got = {**by_key[key(doc)], "metadata": {k: v for k, v in by_key[key(doc)]["metadata"].items()
                                                if k != "namespace"}}
        assert got == doc, key(doc)


def test_one_namespace_line_moves_everything(tmp_path):
    """metadata.namespace is left to kustomization.yaml: an overlay of the base with `namespace:` moves all."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "team-a",
        # kustomize takes a local resource as a path relative to the kustomization root
        "resources": [os.path.relpath(MANIFESTS / "overlays" / "gpu-defaults", tmp_path)]}))
    built = kustomize_build(tmp_path)
    assert built and {d["metadata"]["namespace"] for d in built} == {"team-a"}


def test_overlays_change_what_they_say():
    ext = {render_manifests.key_of(d) for d in kustomize_build(MANIFESTS / "overlays" / "external-s3")}
    assert ("apps", "StatefulSet", "alignpipe-minio") not in ext
    gpu = kustomize_build(MANIFESTS / "overlays" / "gpu-defaults")
    cm = next(d for d in gpu if d["kind"] == "ConfigMap")
    assert "nvidia.com/gpu" in cm["data"]["ALIGNPIPE_GPU_TOLERATIONS"]
