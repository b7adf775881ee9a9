"""DPO widens the chosen-vs-rejected margin."""

from __future__ import annotations

from alignpipe.config import PreferenceConfig
from alignpipe.stages import preference


def test_dpo_margin_grows(demo_data, sft_model, tmp_path, weights):
    cfg = PreferenceConfig(model=sft_model, train_data=demo_data["preference_train"],
                           eval_data=demo_data["preference_eval"], output_dir=str(tmp_path / "dpo"), max_length=32,
                           tracking=False, beta=0.1,
                           training=dict(max_steps=40, learning_rate=2e-4, batch_size=16, logging_steps=5))
    result = preference.run(cfg)
    m = result.metrics
    assert m["eval/margin"] > m["eval/margin_before"] + 0.1
    assert m["train/margin_last"] > m["train/margin_first"]
    assert weights.changed(weights.load(sft_model), weights.load(result.output))
