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
