"""Training-side multi-process helpers used by the stages: DeepSpeed ZeRO presets and the
TrainingArguments they imply, the collective backend, and a rank-safe model save.

Launching (single process, torchrun inside a pod, multi-node via Kubeflow Trainer) is
`alignpipe.launch`; where-am-I helpers (rank, world size, barrier) are in `alignpipe.base`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from alignpipe.base import is_main_process, world_size
from alignpipe.config import ConfigError

# Process-group (collective) timeout passed to TrainingArguments.ddp_timeout, seconds.
DDP_TIMEOUT_ENV = "ALIGNPIPE_DDP_TIMEOUT_S"
DEFAULT_DDP_TIMEOUT_S = 1800


def backend() -> str:
    """`nccl` where CUDA is available, else `gloo` (CPU)."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


# --------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO presets
# --------------------------------------------------------------------------------------------------

PRESETS = ("none", "zero2", "zero2_offload", "zero3", "zero3_offload")


def deepspeed_config(preset: str) -> dict[str, Any] | None:
    """The DeepSpeed config for a `distributed.deepspeed` preset (None for `none`).

    Values that the Hugging Face Trainer derives from TrainingArguments are "auto" (batch sizes,
    accumulation, clipping, precision, bucket sizes from the model's hidden size), so the preset never
    disagrees with `training.*`. Without offload the Trainer's own AdamW and scheduler are used; the
    offload presets name DeepSpeed's AdamW (its CPU Adam runs the optimizer step on the host) and keep
    the Trainer's scheduler.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown deepspeed preset {preset!r} (choose one of: {', '.join(PRESETS)})")
    if preset == "none":
        return None
    stage = 3 if preset.startswith("zero3") else 2
    offload = preset.endswith("_offload")
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 2:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True})
    else:
        zero.update({
            "sub_group_size": 1e9,
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            # Save a normal (unsharded) checkpoint: later stages load a plain model.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg: dict[str, Any] = {
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000,  # the Trainer logs; keep DeepSpeed quiet
        "wall_clock_breakdown": False,
    }
    if offload:
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                        "weight_decay": "auto"}}
    return cfg


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def check_deepspeed(dist) -> None:
    """Fail early, in one line, if a ZeRO preset is selected and DeepSpeed is not importable."""
    preset = getattr(dist, "deepspeed", "none")
    if preset != "none" and not deepspeed_installed():
        raise ConfigError(
            f"distributed.deepspeed: {preset} needs DeepSpeed, which is not installed here "
            "(install the gpu extra: pip install 'alignpipe[gpu]', use the GPU image, or set distributed.deepspeed: none)")


def training_args(dist=None) -> dict[str, Any]:
    """TrainingArguments fields for a stage's `distributed` settings: backend, collective timeout and the
    DeepSpeed config of the preset. Meant to be merged into `stages.common.trainer_kwargs`."""
    from alignpipe import settings

    out: dict[str, Any] = {"ddp_timeout": settings.current().ddp_timeout_s}  # DDP_TIMEOUT_ENV
    if world_size() > 1 or (dist is not None and dist.gpus > 1):
        out["ddp_backend"] = backend()
    ds = deepspeed_config(dist.deepspeed) if dist is not None else None
    if ds is not None:
        check_deepspeed(dist)
        out["deepspeed"] = ds
    return out


def is_zero3(trainer) -> bool:
    """Whether `trainer` (an HF/TRL Trainer) runs DeepSpeed ZeRO-3, i.e. holds only a shard of each parameter."""
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return False
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


def save_trained_model(trainer, tokenizer, out_dir) -> None:
    """Save a trained model from EVERY rank (call it on all of them); rank 0 writes the files.

    Under ZeRO-3 each rank holds a shard, so `model.save_pretrained` would write empty tensors: the
    Trainer's `save_model` gathers the full weights collectively (the presets set
    `stage3_gather_16bit_weights_on_model_save`). Otherwise this is `alignpipe.models.save`."""
    from alignpipe import models

    if not is_zero3(trainer):
        models.save(trainer.model, tokenizer, out_dir)
        return
    trainer.save_model(str(out_dir))  # collective: every rank must call it
    if is_main_process():
        (Path(out_dir) / "training_args.bin").unlink(missing_ok=True)  # a pickle; not part of a model
        tokenizer.save_pretrained(out_dir)
        missing = models.missing_files(out_dir)
        if missing:
            raise models.ModelError(f"{out_dir}: ZeRO-3 save produced an incomplete folder, missing {', '.join(missing)}")


# --------------------------------------------------------------------------------------------------
# Launch (parent side)
