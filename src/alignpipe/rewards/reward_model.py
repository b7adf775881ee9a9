"""Reward-model scoring: a trained sequence-classification model (num_labels=1) as a reward function."""

from __future__ import annotations

import os
from typing import Any, Callable

from alignpipe.base import local_device

from .text import completion_text


def default_device() -> str:
    """Where a reward model loaded from a directory runs: this rank's GPU (`cuda:LOCAL_RANK`), else the CPU."""
    import torch

    return local_device(torch.cuda.is_available())


def reward_model_reward(
    model_dir_or_model: Any,
    tokenizer: Any = None,
    batch_size: int = 16,
    device: str | None = None,
    max_length: int | None = None,
) -> Callable[..., list[float]]:
    """A reward function named `reward_model` that scores prompt + completion with a trained reward model.

    `model_dir_or_model`: a directory written by the reward-model stage (`save_pretrained`; its
    tokenizer is loaded from the same place unless `tokenizer` is given) or a loaded
    `AutoModelForSequenceClassification`. Input is built as TRL's RewardTrainer built it in training:
    conversational prompts -> the tokenizer's chat template over prompt + completion messages; plain
    prompts -> prompt + completion text + EOS. Scores are the raw scalar logits (no grad, eval mode),
    in batches of `batch_size`; inputs longer than `max_length` tokens keep their last tokens.
    `device` defaults to the model's device (a loaded model) or this rank's GPU when available
    (`default_device()`: `cuda:LOCAL_RANK` under torchrun).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(model_dir_or_model, (str, os.PathLike)):
        path = os.fspath(model_dir_or_model)
        if not os.path.isdir(path):
            raise ValueError(f"reward model {path!r} is not a directory (give the reward-model stage's output folder)")
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
        device = device or default_device()
    else:
        model = model_dir_or_model
        if tokenizer is None:
            raise ValueError("reward_model_reward(model) needs the tokenizer when given a loaded model")
    if device is not None:
        model = model.to(device)
    model.eval()
    run_device = next(model.parameters()).device
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if text_config.pad_token_id is None:
        text_config.pad_token_id = tokenizer.pad_token_id
    if getattr(model.config, "num_labels", 1) != 1:
        raise ValueError(f"reward model must have one output (num_labels=1), this one has {model.config.num_labels}")

    def encode(prompt: Any, completion: Any) -> list[int]:
        if isinstance(prompt, list):  # conversational
            reply = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion_text(completion)}]
            messages = [{"role": m["role"], "content": m["content"]} for m in prompt] + [
                {"role": m.get("role", "assistant"), "content": m.get("content") or ""} for m in reply
            ]
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        else:
            text = ("" if prompt is None else str(prompt)) + completion_text(completion)
            eos = tokenizer.eos_token
            if eos and not text.endswith(eos):
                text += eos
            ids = tokenizer(text)["input_ids"]
        ids = list(ids)
        if max_length is not None and len(ids) > max_length:
            ids = ids[-max_length:]
        return ids

    def reward_model(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"reward_model: {len(prompts)} prompts for {len(completions)} completions")
        encoded = [encode(p, c) for p, c in zip(prompts, completions)]
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(encoded), batch_size):
                batch = tokenizer.pad({"input_ids": encoded[start : start + batch_size]}, return_tensors="pt")
                batch = {k: v.to(run_device) for k, v in batch.items()}
                logits = model(**batch).logits
                scores.extend(logits[:, 0].float().cpu().tolist())
        return scores

    reward_model.model = model  # type: ignore[attr-defined]
    reward_model.tokenizer = tokenizer  # type: ignore[attr-defined]
    return reward_model
