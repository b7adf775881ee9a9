"""Shared fixtures: an isolated environment for every test run, small demo data, a briefly trained SFT model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ALIGNPIPE_PROGRESS", "0")


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory):
    """Caches, checkpoints and the default MLflow store live in a per-run temp dir, never in ~ or the cwd."""
    root = tmp_path_factory.mktemp("alignpipe-env")
    saved = {k: os.environ.get(k) for k in ("ALIGNPIPE_CACHE_DIR", "ALIGNPIPE_CHECKPOINT_DIR", "ALIGNPIPE_WORKDIR",
                                             "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
                                             "ALIGNPIPE_FORCE_RERUN")}
    os.environ["ALIGNPIPE_CACHE_DIR"] = str(root / "cache")
    os.environ["ALIGNPIPE_CHECKPOINT_DIR"] = str(root / "checkpoints")
    os.environ["ALIGNPIPE_WORKDIR"] = str(root / "work")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
    # Tests that run one config twice expect two trainings; the reuse tests unset this.
    os.environ["ALIGNPIPE_FORCE_RERUN"] = "1"
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, str]:
    """Small demo splits (operands 0..30) — enough to see learning in seconds."""
    from alignpipe.data.demo import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("demo-data"), seed=0, max_operand=30,
                           preference_pairs=400, eval_pairs=100)


@pytest.fixture(scope="session")
def sft_model(demo_data, tmp_path_factory) -> str:
    """The tiny model after a short SFT run (a starting point for RM / RL / DPO tests)."""
    from alignpipe.config import SFTConfig
    from alignpipe.stages import sft

    out = tmp_path_factory.mktemp("models") / "sft"
    cfg = SFTConfig(model="tiny", train_data=demo_data["sft_train"], output_dir=str(out), max_length=32,
                    tracking=False,
                    training=dict(max_steps=120, learning_rate=1e-3, warmup_steps=10, batch_size=32, logging_steps=10))
    sft.run(cfg)
    return str(out)


class Weights:
    """Read a saved model's tensors and compare two snapshots."""

    @staticmethod
    def load(model_dir: str) -> dict:
        from safetensors.torch import load_file

        return load_file(str(Path(model_dir) / "model.safetensors"))

    @staticmethod
    def changed(before: dict, after: dict) -> list[str]:
        import torch

        return [k for k in before if k in after and not torch.equal(before[k], after[k])]


@pytest.fixture
def weights() -> type[Weights]:
    return Weights
