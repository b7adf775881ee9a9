"""MLflow model metadata beside the weights, so a published model folder is also an MLflow model.

`models.save` calls `write_mlflow_metadata` for causal LMs: it adds `MLmodel` (the `transformers` flavor,
task text-generation, with `model_binary: "."` so the weights stay where they are, and the `python_function`
flavor), `components/tokenizer/` (MLflow reads the tokenizer from there; a few MB), `requirements.txt` pinned
to the versions that trained the model, `python_env.yaml` and `conda.yaml`. The folder is then published as
usual (MANIFEST.json last), and the register stage can keep pointing the registry at an `s3://` folder
without copying it, while

    mlflow.transformers.load_model("models:/NAME@champion")     # a transformers pipeline
    mlflow.pyfunc.load_model("models:/NAME@champion").predict(["2+2="])

work on the registered version. Nothing here touches the network (MLflow's own `save_model` would look up a
model card on the Hugging Face hub).
"""

from __future__ import annotations

from pathlib import Path

#: Pinned in requirements.txt at the versions installed where the model was trained.
REQUIREMENTS = ("mlflow", "torch", "transformers", "accelerate", "safetensors", "tokenizers", "sentencepiece")
MLMODEL = "MLmodel"


def pinned_requirements() -> list[str]:
    from importlib import metadata

    out = []
    for name in REQUIREMENTS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        # a local build tag (torch 2.13.0+cpu) is not on PyPI: pin the release
        out.append(f"{name}=={version.split('+', 1)[0]}")
    return out


def is_causal_lm(model) -> bool:
    architectures = getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__]
    return any(str(a).endswith("ForCausalLM") for a in architectures)


def write_mlflow_metadata(out_dir: str | Path, model, tokenizer) -> Path | None:
    """Write the MLflow model files into `out_dir` (which already holds the saved weights); returns the
    MLmodel path, or None for a model that is not a causal LM (a reward model has no text-generation flavor)."""
    if not is_causal_lm(model):
        return None
    import transformers
    import yaml
    from mlflow.models import Model
    from mlflow.models.signature import ModelSignature
    from mlflow.pyfunc import add_to_model
    from mlflow.types import ColSpec, Schema
    from mlflow.utils.environment import _mlflow_conda_env, _PythonEnv

    out = Path(out_dir)
    tokenizer.save_pretrained(out / "components" / "tokenizer")
    dtype = getattr(model, "dtype", None)
    mlmodel = Model()
    mlmodel.add_flavor(
        "transformers",
        transformers_version=transformers.__version__,
        code=None,
        components=["tokenizer"],
        instance_type="TextGenerationPipeline",
        model_binary=".",  # the weights are the folder itself
        pipeline_model_type=type(model).__name__,
        source_model_name=str(getattr(model, "name_or_path", "") or ""),
        task="text-generation",
        tokenizer_type=type(tokenizer).__name__,
        **({"torch_dtype": str(dtype)} if dtype is not None else {}),
    )
    add_to_model(mlmodel, loader_module="mlflow.transformers", conda_env="conda.yaml", python_env="python_env.yaml")
    mlmodel.signature = ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]))
    requirements = pinned_requirements()
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    with (out / "conda.yaml").open("w", encoding="utf-8") as handle:
        yaml.safe_dump(_mlflow_conda_env(additional_pip_deps=requirements), handle, default_flow_style=False)
    _PythonEnv.current().to_yaml(str(out / "python_env.yaml"))
    mlmodel.save(str(out / MLMODEL))
    return out / MLMODEL
