"""The reward model learns to prefer correct answers on held-out pairs."""

from __future__ import annotations

from alignpipe.config import RewardModelConfig
from alignpipe.stages import reward_model


def test_reward_model_beats_chance_on_heldout_pairs(demo_data, sft_model, tmp_path):
    cfg = RewardModelConfig(model=sft_model, train_data=demo_data["preference_train"],
                            eval_data=demo_data["preference_eval"], output_dir=str(tmp_path / "rm"), max_length=32,
                            tracking=False,
                            training=dict(max_steps=80, learning_rate=5e-4, batch_size=32, logging_steps=10))
    result = reward_model.run(cfg)
    m = result.metrics
    assert m["train/loss_last"] < m["train/loss_first"]
    assert m["eval/pairwise_accuracy"] > 0.6
    assert m["eval/pairwise_accuracy"] > m["eval/pairwise_accuracy_before"]
    assert m["eval/margin"] > 0


# ---------------------------------------------------------------- review fixes (issue 9 §4)


def test_pairwise_accuracy_encodes_implicit_prompt_conversations_like_training():
    # §4.3: implicit-prompt conversational pairs are scored on the chat template RewardTrainer trained on
    # (apply_chat_template over the whole conversation), not on the bare message texts
    import pytest
    import torch
    from datasets import Dataset

    from alignpipe import models

    model, tok = models.load_reward_model("tiny")
    chosen = [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]
    rejected = [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "5"}]
    _, margin = reward_model.pairwise_accuracy(model, tok, Dataset.from_list([{"chosen": chosen, "rejected": rejected}]))

    def score(messages):
        ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            return model(input_ids=torch.tensor([list(ids)])).logits[0, 0].item()

    assert margin == pytest.approx(score(chosen) - score(rejected), abs=1e-5)


def test_reward_model_score_head_is_seeded(demo_data, tmp_path, weights):
    # §4.7: the new score head is created after the seed is set, so two runs with one seed are identical
    import torch

    def once(name):
        cfg = RewardModelConfig(model="tiny", train_data=demo_data["preference_train"], output_dir=str(tmp_path / name),
                                max_length=32, tracking=False, training=dict(max_steps=1, batch_size=8))
        return weights.load(reward_model.run(cfg).output)

    first = once("a")
    torch.manual_seed(1234)  # whatever ran before must not matter
    assert not weights.changed(first, once("b"))
