"""Issue 9 §2: training keeps fp32 master weights and autocasts; inference-only loads may be bf16."""

from __future__ import annotations

import pytest
import torch

from alignpipe import models
from alignpipe.config import ConfigError, SFTConfig
from alignpipe.stages import sft
from alignpipe.stages.common import trainer_kwargs


def _cfg(demo_data, out, precision, lr=1e-6):
    return SFTConfig(model="tiny", train_data=demo_data["sft_train"], output_dir=str(out), max_length=32,
                     tracking=False, training=dict(max_steps=3, learning_rate=lr, warmup_steps=0, batch_size=8,
                                                   logging_steps=1, precision=precision))


def test_bf16_at_rl_learning_rate_updates_fp32_master_weights(demo_data, tmp_path, weights):
    """precision: bf16, lr 1e-6, 3 steps: the saved weights are fp32 and most matrix entries moved. With bf16
    weights (the old load), an update of ~1e-6 on a weight of ~1e-2 rounds to zero."""
    before = weights.load(models.resolve("tiny"))
    after = weights.load(sft.run(_cfg(demo_data, tmp_path / "m", "bf16")).output)
    mats = [k for k, v in before.items() if v.ndim == 2]
    assert all(after[k].dtype == torch.float32 for k in mats)
    moved = sum(int((after[k] != before[k]).sum()) for k in mats) / sum(before[k].numel() for k in mats)
    assert moved > 0.5, f"only {moved:.1%} of matrix entries changed"


def test_training_loads_fp32_and_autocasts_inference_may_load_bf16():
    assert models.load_dtype("bf16", train=True) == models.load_dtype("fp16", train=True) == torch.float32
    assert models.load_dtype("bf16") == torch.bfloat16
    model, _ = models.load_policy("tiny", precision="bf16", train=True)
    assert next(model.parameters()).dtype == torch.float32
    model, _ = models.load_policy("tiny", precision="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    cfg = SFTConfig(train_data="d", output_dir="o", training=dict(precision="bf16", max_steps=3))
    kw = trainer_kwargs(cfg.training, "o", False, "r")
    assert kw["bf16"] is True and kw["fp16"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal")
def test_fp16_without_cuda_is_refused_with_one_line(demo_data, tmp_path):
    with pytest.raises(ConfigError) as err:
        sft.run(_cfg(demo_data, tmp_path / "m", "fp16"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("training.precision: fp16 needs a CUDA GPU")
    assert not (tmp_path / "m").exists()
