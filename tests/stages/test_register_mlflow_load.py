"""A registered version is an MLflow model: `mlflow.transformers.load_model("models:/NAME@champion")` and
`mlflow.pyfunc.load_model` work on the tiny model, with requirements pinned to what saved it. The metadata is
written beside the weights by `models.save` (so an `s3://` folder is registered without a copy)."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from alignpipe import models, storage
from alignpipe.config import RegisterConfig
from alignpipe.models.tiny import build_tiny_model
from alignpipe.stages import register


@pytest.fixture
def published_tiny(tmp_path):
    model, tokenizer = build_tiny_model(seed=0)
    staging = models.save(model, tokenizer, tmp_path / "staging")
    published = tmp_path / "published"
    storage.publish_dir(staging, published)
    return published


def test_saved_folder_holds_the_mlflow_model_files(published_tiny) -> None:
    import yaml

    mlmodel = yaml.safe_load((published_tiny / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["transformers"]
    assert flavor["model_binary"] == "." and flavor["task"] == "text-generation" and flavor["components"] == ["tokenizer"]
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.transformers"
    assert (published_tiny / "components" / "tokenizer" / "tokenizer_config.json").is_file()
    pins = (published_tiny / "requirements.txt").read_text().split()
    assert f"transformers=={metadata.version('transformers')}" in pins
    assert f"torch=={metadata.version('torch').split('+')[0]}" in pins
    assert "MLmodel" in json.loads((published_tiny / "MANIFEST.json").read_text())["files"].__repr__()


def test_champion_loads_with_mlflow_transformers_and_pyfunc(published_tiny, tmp_path, monkeypatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'registry.db'}")
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"models": {"rl": {"accuracy": 0.5}}}))
    result = register.run(RegisterConfig(model=str(published_tiny), model_name="tiny-policy", metrics=str(metrics),
                                         metrics_key="rl", gate_metric="accuracy", gate_threshold=0.1))
    assert result.lineage["alias"] == "champion"

    pipe = mlflow.transformers.load_model("models:/tiny-policy@champion")
    assert type(pipe).__name__ == "TextGenerationPipeline"
    assert type(pipe.model).__name__ == "Qwen2ForCausalLM" and type(pipe.tokenizer).__name__ == "Qwen2Tokenizer"
    expected, _ = build_tiny_model(seed=0)
    name, tensor = next(iter(expected.state_dict().items()))
    assert pipe.model.state_dict()[name].equal(tensor)
    out = pipe("12+34=", max_new_tokens=3, do_sample=False)
    assert isinstance(out[0]["generated_text"], str)

    pyfunc = mlflow.pyfunc.load_model("models:/tiny-policy@champion")
    predicted = pyfunc.predict(["12+34="], params={"max_new_tokens": 3})
    assert len(predicted) == 1 and isinstance(predicted[0], str)
