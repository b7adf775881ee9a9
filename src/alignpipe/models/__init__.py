"""Load and save policy, reference and reward models; LoRA; the embedded tiny model.

A model location is a local directory, an `s3://` URI (fetched and verified through
`alignpipe.storage`), a Hugging Face hub id (real runs on GPU machines), or `tiny` / `tiny:SEED`
for the embedded tiny model, which is built locally and cached.
Weights are read and written as safetensors only; remote code is off unless asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from alignpipe.base import UserError

#: The tiny-model factory imports torch and transformers: loaded on first use (see __getattr__), so
#: that code which only checks model folders (registry, register) stays light.
_TINY = ("build_tiny_model", "build_tokenizer", "save_tiny_model")


def __getattr__(name: str):
    if name in _TINY:
        from . import tiny

        return getattr(tiny, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

REQUIRED_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class ModelError(UserError, ValueError):
    """A model location that cannot be used; the message names it and the fix."""


def is_tiny(uri: str) -> bool:
    return uri == "tiny" or uri.startswith("tiny:")


def missing_files(model_dir: str | Path) -> list[str]:
    """What a complete model folder lacks: config, safetensors weights, tokenizer."""
    d = Path(model_dir)
    missing = [f for f in REQUIRED_FILES if not (d / f).is_file()]
    if not any(d.glob("*.safetensors")):
        missing.append("*.safetensors")
    if not all((d / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer.json + tokenizer_config.json")
    return missing


def resolve(uri: str) -> str:
    """A location `from_pretrained` can read: a local dir (built, fetched or as given) or a hub id."""
    if is_tiny(uri):
        seed = int(uri.split(":", 1)[1]) if ":" in uri else 0
        from alignpipe import storage

        target = storage.cache_dir() / "models" / f"tiny-seed{seed}"
        if missing_files(target):
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            from .tiny import save_tiny_model

            save_tiny_model(tmp, seed=seed)
            try:
                tmp.rename(target)
            except OSError:  # another process won the race; use its copy
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        return str(target)
    from alignpipe import storage

    if storage.is_remote(uri):  # s3:// or minio://
        return str(storage.fetch(uri))
    p = Path(uri)
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"{uri}: a model must be a directory (config.json, *.safetensors, tokenizer files)")
        missing = missing_files(p)
        if missing:
            raise ModelError(f"{uri}: incomplete model folder, missing {', '.join(missing)} "
                             "(point at a folder written by save_pretrained with safetensors)")
        return str(p)
    if uri.startswith((".", "/", "~")) or uri.count("/") != 1:
        raise ModelError(f"{uri}: no such model directory (check the path, or use `tiny` for the embedded model)")
    return uri  # a hub id such as Qwen/Qwen2.5-0.5B-Instruct (downloaded by transformers on real runs)


def load_tokenizer(uri: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(uri), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def torch_dtype(precision: str = "auto"):
    """The dtype of an inference-only load (evaluation, reward scoring, reference models)."""
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_dtype(precision: str = "auto", train: bool = False):
    """What a model is loaded in. Training (`train=True`) always loads fp32 master weights: the trainer runs the
    forward and backward passes under bf16/fp16 autocast (`stages.common.trainer_kwargs`), and AdamW updates fp32
    weights (on bf16 weights, updates at RL learning rates, ~1e-6 of a weight, round to zero; on fp16 weights the
    grad scaler refuses to unscale). DeepSpeed keeps its own fp32 master copy from this. Inference-only loads
    use `torch_dtype(precision)` (bf16 on a GPU under `auto`), half the memory."""
    import torch

    return torch.float32 if train else torch_dtype(precision)


def load_policy(uri: str, trust_remote_code: bool = False, precision: str = "auto", train: bool = False):
    """(causal LM, tokenizer) from any model location; `train=True` for a model that is trained (fp32 weights)."""
    from transformers import AutoModelForCausalLM

    path = resolve(uri)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=load_dtype(precision, train), use_safetensors=True,
                                                 trust_remote_code=trust_remote_code)
    return model, load_tokenizer(path, trust_remote_code)


def load_reward_model(uri: str, trust_remote_code: bool = False, precision: str = "auto", train: bool = False):
    """(sequence-classification model with one output, tokenizer); `train=True` when it is trained (fp32)."""
    from transformers import AutoModelForSequenceClassification

    path = resolve(uri)
    tok = load_tokenizer(path, trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=load_dtype(precision, train), use_safetensors=True,
        trust_remote_code=trust_remote_code)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def lora_config(settings, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=settings.target_modules, task_type=task_type)


def save(model, tokenizer, out_dir: str | Path) -> Path:
    """Save a model (LoRA adapters merged) and its tokenizer as safetensors."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    from alignpipe.base import is_main_process

    if not is_main_process():  # transformers writes the weights on rank 0 only
        return out
    missing = missing_files(out)
    if missing:
        raise ModelError(f"{out}: save produced an incomplete folder, missing {', '.join(missing)}")
    from .mlflow_flavor import write_mlflow_metadata

    write_mlflow_metadata(out, model, tokenizer)  # the folder is also an MLflow model (loadable from the registry)
    return out
