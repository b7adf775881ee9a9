"""checkov (framework kubernetes, its own venv .venv-checkov) over the chart rendered with every values set:
no failed check outside helm/checkov-skips.yaml, and no skip that is not needed."""

from __future__ import annotations

import pytest

from helmtools import VALUES_SETS, checkov_skips


def test_skips_file_gives_a_reason_for_each_check():
    skips = checkov_skips()
    assert skips, "helm/checkov-skips.yaml lists no check"
    for check_id, reason in skips.items():
        assert check_id.startswith(("CKV_K8S_", "CKV2_K8S_")), check_id
        assert len(reason.split()) >= 10, f"{check_id}: say why it is skipped"


@pytest.mark.parametrize("name", VALUES_SETS)
def test_checkov_fails_nothing_outside_the_skips(name, checkov_report):
    result = checkov_report[name]
    assert len(result["passed"]) > 100, f"checkov passed only {len(result['passed'])} checks for {name}"
    skips = checkov_skips()
    unexpected = sorted({f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in result["failed"]
                         if c["check_id"] not in skips})
    assert not unexpected, "checkov failures not in helm/checkov-skips.yaml:\n" + "\n".join(unexpected)


def test_every_skip_is_still_needed(checkov_report):
    failed = {c["check_id"] for r in checkov_report.values() for c in r["failed"]}
    stale = sorted(set(checkov_skips()) - failed)
    assert not stale, f"helm/checkov-skips.yaml lists checks that no longer fail: {stale}"


def test_digests_and_pull_policy_always_pass_the_image_checks(checkov_report):
    # values gpu.yaml sets every digest and pullPolicy Always: the two image skips are then not needed
    failed = {c["check_id"] for c in checkov_report["gpu"]["failed"]}
    assert not failed & {"CKV_K8S_43", "CKV_K8S_15"}, failed
    passed = {c["check_id"] for c in checkov_report["gpu"]["passed"]}
    assert {"CKV_K8S_43", "CKV_K8S_15"} <= passed


def test_checkov_sees_the_hardening(checkov_report):
    # a few checks that must pass for every pod, so a silently skipped scan cannot look green
    must_pass = {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_40",
                 "CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_38", "CKV2_K8S_6"}
    for name, result in checkov_report.items():
        passed = {c["check_id"] for c in result["passed"]}
        assert must_pass <= passed, f"{name}: {sorted(must_pass - passed)} did not pass"
