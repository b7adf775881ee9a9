"""manifests/ (kustomize base + overlays) is a fresh render of the chart (scripts/render_manifests.py)."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from helmtools import ROOT, render_manifests

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


@pytest.mark.parametrize("overlay", render_manifests.OVERLAYS)
def test_overlay_builds_to_the_chart_render(overlay):
    """base + overlay (resources, JSON 6902 patches, $patch: delete) == the chart rendered with its values."""
    built = render_manifests.build_overlay(MANIFESTS / "overlays" / overlay)
    expected = render_manifests.kustomize_docs(render_manifests.load_values(
        MANIFESTS / "values" / "base.yaml", MANIFESTS / "values" / f"{overlay}.yaml"))
    key = render_manifests.key_of
    assert sorted(map(key, built)) == sorted(map(key, expected))
    by_key = {key(d): d for d in built}
    for doc in expected:
        assert by_key[key(doc)] == doc, key(doc)
        kubernetes_validate.validate(by_key[key(doc)], "1.30", strict=True)


def test_overlays_change_what_they_say():
    ext = {render_manifests.key_of(d) for d in render_manifests.build_overlay(MANIFESTS / "overlays" / "external-s3")}
    assert ("apps", "StatefulSet", "alignpipe-minio") not in ext
    gpu = render_manifests.build_overlay(MANIFESTS / "overlays" / "gpu-defaults")
    cm = next(d for d in gpu if d["kind"] == "ConfigMap")
    assert "nvidia.com/gpu" in cm["data"]["ALIGNPIPE_GPU_TOLERATIONS"]
