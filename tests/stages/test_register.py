"""The registry gate: promotes when better, refuses when worse, never registers incomplete files."""

from __future__ import annotations

import json
import shutil

import pytest

from alignpipe.config import RegisterConfig
from alignpipe.stages import register


@pytest.fixture
def tracking_db(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'registry.db'}")
    return tmp_path


def _metrics(path, acc):
    path.write_text(json.dumps({"models": {"rl": {"accuracy": acc}}}))
    return str(path)


def _register(model, metrics, model_name="gate-test", **kw):
    settings = {"gate_metric": "accuracy", "gate_threshold": 0.3, **kw}
    return register.run(RegisterConfig(model=model, model_name=model_name, metrics=metrics, metrics_key="rl",
                                       **settings))


def test_gate_promotes_better_and_refuses_worse(tracking_db, sft_model):
    from mlflow.tracking import MlflowClient

    first = _register(sft_model, _metrics(tracking_db / "m1.json", 0.5))
    assert first.lineage["alias"] == "champion" and first.lineage["version"] == "1"
    worse = _register(sft_model, _metrics(tracking_db / "m2.json", 0.4))
    assert worse.lineage["alias"] == "challenger" and "does not beat champion v1" in worse.lineage["reason"]
    below = _register(sft_model, _metrics(tracking_db / "m3.json", 0.2))
    assert below.lineage["alias"] == "challenger" and "threshold" in below.lineage["reason"]
    better = _register(sft_model, _metrics(tracking_db / "m4.json", 0.7))
    assert better.lineage["alias"] == "champion"
    client = MlflowClient()
    champ = client.get_model_version_by_alias("gate-test", "champion")
    assert str(champ.version) == better.lineage["version"]
    assert champ.tags["alignpipe.gate_value"] == "0.7" and champ.tags["alignpipe.config_hash"]


def test_incomplete_model_is_never_registered(tracking_db, sft_model):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    broken = tracking_db / "broken"
    shutil.copytree(sft_model, broken)
    (broken / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(register.RegistrationError, match="refusing to register"):
        _register(str(broken), _metrics(tracking_db / "m.json", 0.9), model_name="never")
    with pytest.raises(MlflowException):
        MlflowClient().get_registered_model("never")


def test_missing_gate_metric_is_a_clear_error(tracking_db, sft_model):
    with pytest.raises(register.RegistrationError, match="gate_metric 'pass@8' not found"):
        _register(sft_model, _metrics(tracking_db / "m.json", 0.9), gate_metric="pass@8")


def _ci_metrics(path, acc, ci, delta=None):
    data = {"models": {"base": {"accuracy": 0.1}, "rl": {"accuracy": acc}},
            "ci": {"base": {"accuracy": [0.0, 0.2]}, "rl": {"accuracy": ci}}}
    if delta is not None:
        data["deltas"] = {"rl": {"base": {"accuracy": delta}}}
    path.write_text(json.dumps(data))
    return str(path)


def test_gate_on_ci_low_requires_the_lower_bound_to_pass(tracking_db, sft_model):
    # value 0.5 passes 0.3, but the 95% interval [0.25, 0.7] does not clear it
    m = _ci_metrics(tracking_db / "ci.json", 0.5, [0.25, 0.7])
    loose = _register(sft_model, m, model_name="ci-gate-value")
    assert loose.lineage["alias"] == "champion"
    strict = _register(sft_model, m, model_name="ci-gate-low", gate_on="ci_low")
    assert strict.lineage["alias"] == "challenger"
    assert "accuracy[ci_low]=0.25 does not pass threshold 0.3" in strict.lineage["reason"]
    tight = _register(sft_model, _ci_metrics(tracking_db / "ci2.json", 0.5, [0.4, 0.6]), model_name="ci-gate-low",
                      gate_on="ci_low")
    assert tight.lineage["alias"] == "champion"
    # the next candidate is compared with the champion's lower bound, not its value
    wider = _register(sft_model, _ci_metrics(tracking_db / "ci3.json", 0.55, [0.35, 0.75]), model_name="ci-gate-low",
                      gate_on="ci_low")
    assert wider.lineage["alias"] == "challenger" and "does not beat champion" in wider.lineage["reason"]


def test_gate_on_a_delta_with_its_ci(tracking_db, sft_model):
    real = {"delta": 0.12, "ci_low": 0.04, "ci_high": 0.2, "n": 100}
    noise = {"delta": 0.12, "ci_low": -0.03, "ci_high": 0.27, "n": 100}
    settings = dict(gate_metric="delta_vs_base/accuracy", gate_threshold=0.0, gate_on="ci_low")
    ok = _register(sft_model, _ci_metrics(tracking_db / "d1.json", 0.5, [0.4, 0.6], real), model_name="delta-real",
                   **settings)
    assert ok.lineage["alias"] == "champion"
    no = _register(sft_model, _ci_metrics(tracking_db / "d2.json", 0.5, [0.4, 0.6], noise), model_name="delta-noise",
                   **settings)
    assert no.lineage["alias"] == "challenger"


def test_gate_on_ci_low_without_intervals_is_a_clear_error(tracking_db, sft_model):
    with pytest.raises(register.RegistrationError, match="no confidence interval for 'accuracy'"):
        _register(sft_model, _metrics(tracking_db / "m.json", 0.9), gate_on="ci_low")


# ---------------------------------------------------------------- review fixes (issue 9 §4)


def _eval_metrics(path, acc, digest="d1", k=4, **extra):
    path.write_text(json.dumps({"data_digest": digest, "k": k,
                                "models": {"rl": {"accuracy": acc, "pass@4": acc + 0.1, **extra}}}))
    return str(path)


def test_gate_compares_only_like_with_like(tracking_db, sft_model):
    # §4.13: a champion is beaten only on the same eval data (digest) and k, by the same gate metric;
    # otherwise the new version becomes challenger with the reason
    first = _register(sft_model, _eval_metrics(tracking_db / "a.json", 0.5), model_name="like")
    assert first.lineage["alias"] == "champion"
    other_data = _register(sft_model, _eval_metrics(tracking_db / "b.json", 0.9, digest="d2"), model_name="like")
    assert other_data.lineage["alias"] == "challenger"
    assert "eval data" in other_data.lineage["reason"] and "champion v1" in other_data.lineage["reason"]
    other_k = _register(sft_model, _eval_metrics(tracking_db / "c.json", 0.9, k=8), model_name="like")
    assert other_k.lineage["alias"] == "challenger" and "k=8" in other_k.lineage["reason"]
    # the champion carries no pass@4 gate value: no comparison is possible, so no promotion
    other_metric = _register(sft_model, _eval_metrics(tracking_db / "d.json", 0.9), model_name="like",
                             gate_metric="pass@4")
    assert other_metric.lineage["alias"] == "challenger" and "pass@4" in other_metric.lineage["reason"]
    same = _register(sft_model, _eval_metrics(tracking_db / "e.json", 0.9), model_name="like")
    assert same.lineage["alias"] == "champion" and "beats champion v1" in same.lineage["reason"]
