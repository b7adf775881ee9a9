"""The evaluate section of the HTML report: values with CIs, deltas with CIs, the forest plot."""

from __future__ import annotations

from alignpipe.base import StageResult
from alignpipe.report import render_html


def test_report_shows_intervals_and_real_deltas():
    extra = {"confidence": 0.95,
             "models": {"base": {"accuracy": 0.1}, "rl": {"accuracy": 0.4, "kl_per_token": 0.02}},
             "ci": {"base": {"accuracy": [0.05, 0.15]}, "rl": {"accuracy": [0.3, 0.5]}},
             "deltas": {"rl": {"base": {"accuracy": {"delta": 0.3, "ci_low": 0.2, "ci_high": 0.4, "n": 100},
                                        "kl_per_token": {"delta": 0.02, "ci_low": -0.01, "ci_high": 0.05, "n": 100}}}}}
    page = render_html(StageResult("evaluate", "eval.json", {}, {}, [], 1.0), None, extra)
    assert "0.4 [0.3, 0.5]" in page
    assert "<td class='real'>+0.3 [+0.2, +0.4]</td>" in page          # excludes 0: marked real
    assert "<td class=''>+0.02 [-0.01, +0.05]</td>" in page            # includes 0: not marked
    assert "rl − base" in page and 'aria-label="accuracy: delta with CI"' in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
