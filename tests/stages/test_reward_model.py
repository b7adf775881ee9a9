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
