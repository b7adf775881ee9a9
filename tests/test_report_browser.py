"""The HTML report (`src/alignpipe/report.py`) in a real browser: headless Chromium loads an evaluate report
with no console errors and no requests beyond the file itself, its charts render as non-empty SVG with axes and
the expected series, and a screenshot is written to out/browser/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignpipe.base import StageResult
from alignpipe.report import write_html
import browser

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(browser.find() is None,
                                reason="chromium is not installed (make browser-deps installs Debian's chromium)")

MODELS = {"base": {"accuracy": 0.12, "pass@4": 0.3, "response_length": 9.5},
          "sft": {"accuracy": 0.41, "pass@4": 0.62, "response_length": 4.1},
          "rl": {"accuracy": 0.66, "pass@4": 0.81, "response_length": 3.9, "kl_per_token": 0.031}}
HISTORY = [{"step": s, "loss": 2.0 / (1 + s), "reward": 0.1 * s} for s in range(1, 9)]

# every <svg> with its title, size, axes and drawn marks; the bars' and forest rows' labels
CHARTS_JS = """
Array.from(document.querySelectorAll('svg')).map(svg => {
  const box = svg.getBoundingClientRect();
  const marks = Array.from(svg.querySelectorAll('polyline, rect, circle'));
  return {title: svg.getAttribute('aria-label'), width: box.width, height: box.height,
          axes: svg.querySelectorAll('line.ax').length,
          polyline_points: Array.from(svg.querySelectorAll('polyline')).map(p => p.points.numberOfItems),
          drawn: marks.filter(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; }).length,
          labels: Array.from(svg.querySelectorAll('text')).map(t => t.textContent)};
})
"""


@pytest.fixture(scope="module")
def chromium():
    with browser.Chromium() as b:
        yield b


def evaluate_report(tmp_path: Path) -> Path:
    eval_json = tmp_path / "eval.json"
    deltas = {"rl": {"base": {"accuracy": {"delta": 0.54, "ci_low": 0.41, "ci_high": 0.66, "n": 64}},
                     "sft": {"accuracy": {"delta": 0.25, "ci_low": -0.02, "ci_high": 0.5, "n": 64}}}}
    eval_json.write_text(json.dumps({"models": MODELS, "confidence": 0.95, "deltas": deltas,
                                     "ci": {n: {"accuracy": [m["accuracy"] - 0.1, m["accuracy"] + 0.1]}
                                            for n, m in MODELS.items()}}))
    result = StageResult("evaluate", str(eval_json), {"eval/accuracy": 0.66}, {"model": "s3://b/rl"}, HISTORY, 3.2)
    page = tmp_path / "report.html"
    write_html(page, result)
    return page


def test_report_renders_in_chromium(chromium, tmp_path) -> None:
    page_path = evaluate_report(tmp_path)
    page = chromium.load(page_path.as_uri())
    errors = [m for m in page.console if m["level"] in ("error", "warning", "assert")]
    assert not errors and not page.exceptions, (errors, page.exceptions)
    assert page.requests == [page_path.as_uri()], f"requests beyond the report itself: {page.requests}"
    assert not page.failed

    charts = {c["title"]: c for c in chromium.evaluate(CHARTS_JS)}
    assert set(charts) == {"accuracy by model", "accuracy: delta with CI", "loss", "reward"}, list(charts)
    for title, chart in charts.items():
        assert chart["width"] > 100 and chart["height"] > 50, (title, chart)
        assert chart["axes"] >= 1 and chart["drawn"] > 0, (title, chart)
    bars = charts["accuracy by model"]
    assert bars["drawn"] == 3 and [x for x in bars["labels"] if x in MODELS] == ["base", "sft", "rl"]
    assert {"0.120", "0.410", "0.660"} <= set(bars["labels"])
    forest = charts["accuracy: delta with CI"]
    assert [x for x in forest["labels"] if "−" in x] == ["rl − base", "rl − sft"] and forest["drawn"] >= 2
    for curve in ("loss", "reward"):
        assert charts[curve]["polyline_points"] == [len(HISTORY)], charts[curve]
        assert "step 8" in charts[curve]["labels"]

    assert chromium.evaluate("document.querySelector('td.real') && document.querySelector('td.real').textContent") \
        == "+0.54 [+0.41, +0.66]"
    shot = chromium.screenshot(ROOT / "out" / "browser" / "report-evaluate.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 800 and height >= 600


def test_the_check_sees_console_errors_and_outside_requests(chromium, tmp_path) -> None:
    """The same checks catch what they look for: a failing script and a request for another origin."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><body><img src='http://127.0.0.1:9/x.png'>"
                   "<script>console.error('boom')</script></body></html>")
    page = chromium.load(bad.as_uri())
    assert any(m["level"] == "error" and "boom" in m["text"] for m in page.console), page.console
    assert "http://127.0.0.1:9/x.png" in page.requests
