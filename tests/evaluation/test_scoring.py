"""KL and entropy from teacher-forced passes over a model's own samples."""

from __future__ import annotations

import pytest

from alignpipe import models
from alignpipe.evaluation.scoring import kl_entropy


def test_kl_of_a_model_to_itself_is_zero_and_to_another_is_positive():
    a, tok = models.load_policy("tiny", precision="fp32")
    b, _ = models.load_policy("tiny:1", precision="fp32")
    prompts = [[{"role": "user", "content": "12+30="}], "7+5="]
    samples = [["24", "2"], ["21"]]
    kl, ent = kl_entropy(a, a, tok, prompts, samples)
    assert [len(s) for s in kl[0]] == [2, 1] and len(kl[1][0]) == 2
    assert all(v == pytest.approx(0.0, abs=1e-6) for p in kl for s in p for v in s)
    assert all(v > 0 for p in ent for s in p for v in s)
    kl2, _ = kl_entropy(a, b, tok, prompts, samples, batch_size=1)
    assert all(v > 0 for p in kl2 for s in p for v in s)
