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
