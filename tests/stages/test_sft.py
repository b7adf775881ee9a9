"""SFT learns: loss falls, weights move, held-out accuracy rises; dft/asft/LoRA variants train too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignpipe import models
from alignpipe.config import SFTConfig
from alignpipe.stages import sft


def _cfg(demo_data, out, **kw):
    training = dict(max_steps=40, learning_rate=1e-3, warmup_steps=5, batch_size=32, logging_steps=5)
    training.update(kw.pop("training", {}))
    return SFTConfig(model="tiny", train_data=demo_data["sft_train"], output_dir=str(out), max_length=32,
                     tracking=False, training=training, **kw)


def test_sft_loss_falls_and_output_is_published(demo_data, tmp_path, weights):
    before = weights.load(models.resolve("tiny"))
    result = sft.run(_cfg(demo_data, tmp_path / "m", eval_data=demo_data["sft_eval"]))
    assert result.metrics["train/loss_last"] < 0.6 * result.metrics["train/loss_first"]
    assert "eval/loss" in result.metrics
    out = Path(result.output)
    assert (out / "MANIFEST.json").is_file() and not models.missing_files(out)
    assert weights.changed(before, weights.load(out))
    assert result.lineage["train_digest"] and result.lineage["parent_model"] == "tiny"


@pytest.mark.parametrize("loss", ["dft", "asft"])
def test_sft_loss_variants_learn(demo_data, tmp_path, loss):
    # DFT's loss (-p·log p per token) starts near 0 for a random model and is not a progress measure;
    # token accuracy on the trained tokens is.
    result = sft.run(_cfg(demo_data, tmp_path / loss, loss=loss))
    acc = [h["mean_token_accuracy"] for h in result.history if "mean_token_accuracy" in h]
    assert len(acc) >= 4 and acc[-1] > acc[0] + 0.2, acc
    if loss == "asft":
        kl = [h["kl_to_initial"] for h in result.history if "kl_to_initial" in h]
        assert kl and all(k >= 0 for k in kl), "the KL anchor is logged and is a divergence (>= 0)"


def test_sft_lora_merges_adapters(demo_data, tmp_path, weights):
    before = weights.load(models.resolve("tiny"))
    result = sft.run(_cfg(demo_data, tmp_path / "lora", lora=dict(r=8, alpha=16, target_modules=["q_proj", "v_proj"])))
    after = weights.load(result.output)
    assert set(after) == set(before), "adapters must be merged into plain weights"
    changed = weights.changed(before, after)
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)


def test_sft_stop_at_accuracy_stops_early(demo_data, tmp_path):
    cfg = _cfg(demo_data, tmp_path / "stop", stop_at_accuracy=0.05, accuracy_probe_size=64, accuracy_probe_every=10,
               training=dict(max_steps=400))
    result = sft.run(cfg)
    assert result.metrics["train/steps"] < 400
    assert result.metrics["train/probe_accuracy"] >= 0.05


def test_sft_bad_data_fails_before_training(tmp_path):
    from alignpipe.data import DataError

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError) as err:
        sft.run(SFTConfig(model="tiny", train_data=str(bad), output_dir=str(tmp_path / "o"), tracking=False))
    assert str(bad) in str(err.value)
    assert not (tmp_path / "o").exists(), "nothing may be published when validation fails"


# ---------------------------------------------------------------- review fixes (issue 9 §4)


def test_asft_loss_does_not_grow_with_gradient_accumulation(demo_data, tmp_path):
    # §4.1: GA=4 x batch 4 sees the same 16 rows as GA=1 x batch 16; the loss is normalised by the global token
    # count (like TRL's nll/dft), so the first logged loss agrees (it was 4x too large).
    def first_loss(batch, ga, name):
        cfg = _cfg(demo_data, tmp_path / name, loss="asft", training=dict(
            max_steps=1, batch_size=batch, gradient_accumulation_steps=ga, logging_steps=1, warmup_steps=0))
        return sft.run(cfg).metrics["train/loss_first"]

    single, accumulated = first_loss(16, 1, "ga1"), first_loss(4, 4, "ga4")
    assert accumulated == pytest.approx(single, rel=0.1)


@pytest.mark.parametrize("preset", ["zero3", "zero3_offload"])
def test_asft_with_deepspeed_zero3_is_refused(preset):
    # §4.2: under ZeRO-3 the frozen reference copy would be a full unsharded model on every rank; under ZeRO-2
    # it follows the policy to its device on the first step (AnchoredSFTTrainerMixin.compute_loss)
    from alignpipe.config import ConfigError, validate

    with pytest.raises(ConfigError, match="loss=asft is not combined with deepspeed zero3"):
        validate("sft", dict(train_data="x.jsonl", output_dir="o", loss="asft",
                             distributed=dict(gpus=2, deepspeed=preset)))
    validate("sft", dict(train_data="x.jsonl", output_dir="o", loss="asft", distributed=dict(gpus=2, deepspeed="zero2")))


def test_accuracy_probe_compares_extracted_answers():
    # §4.8: with reasoning-style completions the probe compares the final answer with the reference's final
    # answer (it compared it with the whole reference completion and never fired)
    from datasets import Dataset

    completions = ["<think>1 plus 1 is 2</think><answer>2</answer>", "<think>3 and 4 make 7</think> \\boxed{7}"]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": c}]}
                            for q, c in zip(["1+1=", "3+4="], completions)])
    tok = models.load_tokenizer("tiny")
    cfg = SFTConfig(train_data="x.jsonl", output_dir="o", stop_at_accuracy=0.5)
    probe = sft._probe(cfg, ds, tok)
    assert probe.answers == ["2", "7"]
    assert probe.score(completions) == 1.0 and probe.score(["<answer>3</answer>", "7"]) == 0.5
    # room to generate the whole reasoning, not just the answer
    assert probe.max_new_tokens >= max(len(tok(c, add_special_tokens=False)["input_ids"]) for c in completions)
