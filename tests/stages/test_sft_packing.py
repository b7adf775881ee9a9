"""Packed SFT (`packing: true`) on variable-length data: it learns, it counts real tokens, and a packed batch's loss
and logits are those of the same examples unpacked (no attention across example boundaries)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from alignpipe import models
from alignpipe.config import SFTConfig
from alignpipe.data.demo import reverse_sum
from alignpipe.stages import sft

MAX_LENGTH, BATCH, STEPS = 128, 8, 20


@pytest.fixture(scope="module")
def varlen_data(tmp_path_factory) -> dict[str, str]:
    """Prompt/completion rows of 1..12 addition problems (about 20 to 130 tokens): mostly padding when unpacked."""
    rng, folder = random.Random(0), tmp_path_factory.mktemp("varlen")
    return {split: _write(folder / f"{split}.jsonl", n, rng) for split, n in (("train", 600), ("eval", 40))}


def _write(path, n: int, rng: random.Random) -> str:
    with path.open("w") as f:
        for _ in range(n):
            pairs = [(rng.randint(0, 30), rng.randint(0, 30)) for _ in range(min(12, 1 + int(rng.expovariate(1 / 3))))]
            f.write(json.dumps({
                "prompt": [{"role": "user", "content": " ".join(f"{a}+{b}=" for a, b in pairs)}],
                "completion": [{"role": "assistant", "content": " ".join(reverse_sum(a, b) for a, b in pairs)}],
            }) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def packed_run(varlen_data, tmp_path_factory):
    cfg = SFTConfig(model="tiny", train_data=varlen_data["train"], eval_data=varlen_data["eval"],
                    output_dir=str(tmp_path_factory.mktemp("packed") / "m"), max_length=MAX_LENGTH, packing=True,
                    tracking=False,
                    training=dict(max_steps=STEPS, learning_rate=2e-3, warmup_steps=3, batch_size=BATCH,
                                  logging_steps=5))
    return sft.run(cfg)


def test_packed_sft_learns_on_variable_length_data(packed_run):
    m = packed_run.metrics
    assert m["train/loss_last"] < 0.6 * m["train/loss_first"], m
    acc = [h["mean_token_accuracy"] for h in packed_run.history if "mean_token_accuracy" in h and "loss" in h]
    assert acc[-1] > acc[0] + 0.1, acc
    evals = [h["eval_loss"] for h in packed_run.history if "eval_loss" in h]  # packed eval batches, same collator
    assert evals[-1] < evals[0] and abs(m["eval/loss"] - evals[-1]) < 1e-6, (evals, m)
    # real tokens, packed: close to every row full (TRL's own count of these batches would be one row a step)
    assert 0.8 * STEPS * BATCH * MAX_LENGTH < m["train/num_tokens"] <= STEPS * BATCH * MAX_LENGTH, m


def _prepared(model, tok, data: str, packing: bool, out) -> list[dict]:
    """TRL's prepared train rows (tokenised, completion-only labels; packed with seq_lengths when `packing`)."""
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    with open(data) as f:
        ds = Dataset.from_list([json.loads(line) for line in f][:40])
    args = TRLSFTConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", max_length=MAX_LENGTH,
                        packing=packing, completion_only_loss=True, gradient_checkpointing=False)
    return list(SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train_dataset)


def test_packed_batch_equals_the_unpacked_examples(packed_run, varlen_data, tmp_path):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, tok = models.load_policy(packed_run.output, train=True)  # trained: attention across examples would show
    assert sft.packing_layout(model) == "rows"  # sdpa on the CPU
    model.eval()
    packed_rows = _prepared(model, tok, varlen_data["train"], True, tmp_path / "p")
    rows = _prepared(model, tok, varlen_data["train"], False, tmp_path / "u")
    assert len(packed_rows) < len(rows) / 2 and any(len(r["seq_lengths"]) > 2 for r in packed_rows)

    packed = sft.PackedRowsCollator(tok.pad_token_id)(packed_rows)
    assert packed.pop("num_real_tokens").item() == sum(len(r["input_ids"]) for r in rows)
    unpacked = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    with torch.no_grad():
        out_p = model(**packed, use_cache=False)
        out_u = model(**unpacked, use_cache=False)
        # contamination, for contrast: the same rows with a plain causal mask over each whole row
        leaky = model(**{**packed, "attention_mask": torch.ones_like(packed["input_ids"])}, use_cache=False)

    # the same trained tokens, the same mean loss
    assert (packed["labels"] != -100).sum() == (unpacked["labels"] != -100).sum()
    assert abs(out_p.loss.item() - out_u.loss.item()) < 1e-4, (out_p.loss.item(), out_u.loss.item())

    # and the same logits, example by example (with attention across examples they differ)
    by_ids = {tuple(r["input_ids"]): i for i, r in enumerate(rows)}
    worst, worst_leaky = 0.0, 0.0
    for i, r in enumerate(packed_rows):
        start = 0
        for n in r["seq_lengths"]:
            j = by_ids[tuple(r["input_ids"][start:start + n])]
            worst = max(worst, (out_p.logits[i, start:start + n] - out_u.logits[j, :n]).abs().max().item())
            worst_leaky = max(worst_leaky, (leaky.logits[i, start:start + n] - out_u.logits[j, :n]).abs().max().item())
            start += n
    assert worst < 1e-3, worst
    assert worst_leaky > 0.1, "the check must be able to see contamination"
