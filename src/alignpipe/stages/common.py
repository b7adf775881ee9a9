"""What every stage shares: TRL argument mapping, data loading, atomic output (and `StageResult`,
re-exported from `alignpipe.base`)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from alignpipe import settings
from alignpipe.base import StageResult, barrier, is_main_process  # noqa: F401 (StageResult: re-export)
from alignpipe.config import DistributedSettings, TrainingSettings


def has_cuda() -> bool:
    import torch  # here, not at the top: register and prepare-data import this module and need no torch

    return torch.cuda.is_available()


def trainer_kwargs(t: TrainingSettings, output_dir: str, tracking: bool, run_name: str,
                   dist: DistributedSettings | None = None) -> dict[str, Any]:
    """TrainingArguments fields shared by every TRL config, from our Training/DistributedSettings."""
    from alignpipe import distributed

    cuda = has_cuda()
    if t.precision == "fp16" and not cuda:
        from alignpipe.config import ConfigError

        raise ConfigError("training.precision: fp16 needs a CUDA GPU and this machine has none "
                          "(use precision: bf16 or fp32 on the CPU, or auto)")
    # Mixed precision: the weights stay fp32 (models.load_dtype(train=True)); bf16/fp16 only autocast.
    import torch

    bf16 = t.precision == "bf16" or (t.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    return dict(
        output_dir=output_dir,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=t.precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
        report_to=["mlflow"] if tracking else "none",
        run_name=run_name,
        logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps or 0,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        disable_tqdm=not settings.current().progress,
        dataloader_num_workers=0,
        **distributed.training_args(dist),
    )


def checkpoint_dir(stage: str, output_uri: str) -> Path:
    """Where a stage keeps its checkpoints: stable for the same output, so a retried step resumes."""
    import hashlib

    root = settings.current().checkpoint_dir
    d = root / f"{stage}-{hashlib.sha256(output_uri.encode()).hexdigest()[:12]}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def last_checkpoint(d: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(d)) if d.is_dir() else None


@contextlib.contextmanager
def published_output(uri: str) -> Iterator[Path]:
    """A local staging folder; on success it is published atomically to `uri` (manifest last).

    If the body raises, nothing is published and the staging folder is removed.
    """
    from alignpipe import storage

    staging = Path(tempfile.mkdtemp(prefix="alignpipe-out-"))
    try:
        yield staging
        barrier()  # a step whose peer rank failed publishes nothing
        if is_main_process():  # under torchrun every rank trains; rank 0 publishes
            storage.publish_dir(staging, uri)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def log_history_summary(history: list[dict], key: str = "loss") -> dict[str, float]:
    """First and last logged value of `key` (mean over the first/last 10% of logs, at least one)."""
    vals = [h[key] for h in history if key in h]
    if not vals:
        return {}
    n = max(1, len(vals) // 10)
    return {"first": sum(vals[:n]) / n, "last": sum(vals[-n:]) / n}


def base_lineage(stage: str, cfg, **extra: str | None) -> dict[str, str]:
    from alignpipe.config import config_hash
    from alignpipe.tracking import git_sha

    lineage = {"stage": stage, "config_hash": config_hash(cfg), "git_sha": git_sha(),
               "parent_model": getattr(cfg, "model", None)}
    lineage.update(extra)
    return {k: str(v) for k, v in lineage.items() if v is not None}


def load_data(uri: str, kind: str):
    """Validated dataset + its report (format, digest): the file is read and checked once (DataError with
    every problem line when it is not valid)."""
    from alignpipe import data

    return data.load_with_report(uri, kind)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
