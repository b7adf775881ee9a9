"""Pipelines tests: every run writes only under a session tmp dir (caches, checkpoints, MLflow)."""

import pytest


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("alignpipe-pipelines")


@pytest.fixture(autouse=True)
def _isolated_env(session_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNPIPE_CACHE_DIR", str(session_dir / "cache"))
    monkeypatch.setenv("ALIGNPIPE_CHECKPOINT_DIR", str(session_dir / "checkpoints"))
    monkeypatch.setenv("ALIGNPIPE_WORKDIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{session_dir / 'mlflow.db'}")
    monkeypatch.setenv("ALIGNPIPE_PROGRESS", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ALIGNPIPE_PARENT_RUN_ID", raising=False)
    for name in ("ALIGNPIPE_IMAGE", "ALIGNPIPE_GPU_IMAGE", "ALIGNPIPE_GPU_RESOURCE", "ALIGNPIPE_GPU_NODE_SELECTOR",
                 "ALIGNPIPE_GPU_TOLERATIONS", "ALIGNPIPE_S3_SECRET", "ALIGNPIPE_MLFLOW_SECRET", "ALIGNPIPE_REWARD_SECRET",
                 "ALIGNPIPE_NAMESPACE", "ALIGNPIPE_PIPELINE_SERVICE_ACCOUNT", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


#: Small settings for runs that must be quick (the calibrated ones are the pipelines' defaults).
TINY_PARAMS = {
    "base_model": "tiny",
    "sft_steps": 4,
    "sft_config": {"max_length": 32, "training": {"batch_size": 16, "warmup_steps": 0, "logging_steps": 1}},
    "reward_model_steps": 3,
    "reward_model_config": {"max_length": 32, "training": {"batch_size": 16, "warmup_steps": 0, "logging_steps": 1}},
    "rl_steps": 2,
    "rl_config": {"generation": {"max_new_tokens": 5}, "grpo": {"num_generations": 4},
                  "training": {"batch_size": 8, "logging_steps": 1}},
    "evaluate_k": 1,  # k > 1 trips register.py: MLflow rejects the tag name "eval.pass@k" (see report)
    "evaluate_config": {"limit": 16, "max_new_tokens": 5, "batch_size": 16},
}
