"""Evaluation metrics: accuracy, pass@k, maj@k, RM score, length, diversity; several models at once."""

from __future__ import annotations

import json

from alignpipe.config import EvaluateConfig
from alignpipe.stages import evaluate
from alignpipe.stages.evaluate import distinct_n


def test_distinct_n():
    assert distinct_n([[1, 2, 3], [1, 2, 3]], 1) == 0.5
    assert distinct_n([[1, 2, 3]], 2) == 1.0
    assert distinct_n([[]], 2) == 0.0


def test_evaluate_compares_models(demo_data, sft_model, tmp_path):
    out = tmp_path / "eval.json"
    cfg = EvaluateConfig(models={"base": "tiny", "sft": sft_model}, data=demo_data["eval"], output=str(out),
                         k=4, max_new_tokens=5, limit=64, tracking=False)
    result = evaluate.run(cfg)
    data = json.loads(out.read_text())
    base, sft = data["models"]["base"], data["models"]["sft"]
    assert base["accuracy"] == 0.0
    assert sft["accuracy"] > base["accuracy"]
    for m in (base, sft):
        assert {"accuracy", "pass@4", "maj@4", "response_length", "distinct_1", "distinct_2"} <= set(m)
        assert 0.0 <= m["pass@4"] <= 1.0 and 0.0 <= m["maj@4"] <= m["pass@4"] + 1e-9 or m["pass@4"] == 0
    assert result.metrics["sft/accuracy"] == sft["accuracy"]
    assert data["data_digest"] and len(data["examples"]["sft"]) > 0
