"""Fixtures of the chart tests; the helpers live in helmtools.py (a unique module name, so it never
clashes with another directory's conftest)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from helmtools import CHECKOV, VALUES_SETS, docs, render_manifests


@pytest.fixture(scope="session")
def checkov_report(tmp_path_factory) -> dict[str, dict[str, list[dict]]]:
    """Run checkov once over every values set: {set: {"passed"|"failed"|"skipped": [check, ...]}}."""
    if not CHECKOV.exists():
        pytest.fail(f"checkov is missing ({CHECKOV}): `make test` creates the .venv-checkov venv "
                    "(target .venv-checkov/.installed-stamp in mk/helm.mk); or run `make checkov`")
    out = tmp_path_factory.mktemp("checkov")
    for name in VALUES_SETS:
        (out / name).mkdir()
        for i, doc in enumerate(docs(name)):
            (out / name / f"{i:02d}-{render_manifests.file_name(doc)}").write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [str(CHECKOV), "-d", str(out), "--framework", "kubernetes", "-o", "json", "--skip-download",
         "--compact"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.stdout.strip(), f"checkov printed nothing (rc {proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout)
    results = report["results"] if isinstance(report, dict) else report[0]["results"]
    by_set: dict[str, dict[str, list[dict]]] = {n: {"passed": [], "failed": [], "skipped": []} for n in VALUES_SETS}
    for outcome in ("passed", "failed", "skipped"):
        for check in results.get(f"{outcome}_checks", []):
            set_name = check["file_path"].strip("/").split("/")[0]
            by_set[set_name][outcome].append(check)
    return by_set
