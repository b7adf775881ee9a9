"""`alignpipe mixture search` (issue 12 §1, MoDoMoDo): candidates, the mixture-model fit, the proposal, and one
real search on the tiny model with the multi-domain demo data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_candidates_start_uniform_then_single_domains_then_distinct_draws():
    from alignpipe.mixture import candidate_weights

    got = candidate_weights(["a", "b", "c"], 7, seed=3)
    assert len(got) == 7 and len({json.dumps(w, sort_keys=True) for w in got}) == 7
    assert got[0] == {"a": 0.333, "b": 0.333, "c": 0.333}
    assert got[1:4] == [{"a": 1.0, "b": 0.0, "c": 0.0}, {"a": 0.0, "b": 1.0, "c": 0.0}, {"a": 0.0, "b": 0.0, "c": 1.0}]
    assert all(abs(sum(w.values()) - 1) < 0.01 for w in got)
    assert candidate_weights(["a", "b", "c"], 7, seed=3) == got  # deterministic under a seed
    assert candidate_weights(["a", "b"], 3, vertices=False)[1] not in ({"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0})


def test_the_fit_recovers_a_known_mixture_response_and_proposes_its_optimum():
    """Scores from a known Scheffé quadratic (best at an interior point): the fit is exact and the proposal lands
    next to the true optimum, which none of the tried weightings is."""
    from alignpipe.mixture import Fit, _dirichlet, candidate_weights, propose
    import random

    def truth(w):  # peak inside the simplex: synergy between a and b, c hurts
        return 0.3 * w["a"] + 0.2 * w["b"] + 0.0 * w["c"] + 1.2 * w["a"] * w["b"] - 0.4 * w["a"] * w["c"]

    tried = candidate_weights(["a", "b", "c"], 10, seed=0)
    fit = Fit(["a", "b", "c"], tried, [truth(w) for w in tried], ridge=1e-9)
    assert fit.pairs and fit.r2 > 0.999
    assert fit.terms()["a*b"] == pytest.approx(1.2, abs=1e-3)
    best, predicted = propose(fit, tried, points=4000, seed=0)
    rng = random.Random(9)
    dense = max((_dirichlet(["a", "b", "c"], rng) for _ in range(20000)), key=truth)
    assert truth(best) >= truth(dense) - 0.005
    assert predicted == pytest.approx(truth(best), abs=1e-3)
    assert truth(best) > max(truth(w) for w in tried) + 0.01  # better than anything tried


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    from alignpipe.data.demo import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("multi"), seed=0, max_operand=20, multi_train_per_domain=60,
                           multi_eval_per_domain=8)


def test_search_trains_one_proxy_per_weighting_and_proposes_a_mixture(multi, tmp_path, monkeypatch):
    """Three weightings (uniform, and two single domains), 2 RL steps each: every proxy drew its prompts with its
    weights (its published pass-rate store saw only the weighted domains), each was scored on the two sets, and the
    proposal is a weighting of the train data's domains."""
    monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / "state"))
    from alignpipe import mixture

    rl = {"model": "tiny", "train_data": multi["multi_rl_train"], "tracking": False, "output_dir": "unused",
          "rewards": [{"name": "exact_match"}], "generation": {"max_new_tokens": 5, "temperature": 1.0},
          "grpo": {"num_generations": 4, "beta": 0.0},
          "training": {"batch_size": 16, "learning_rate": 1e-4, "logging_steps": 1}}
    cfg = mixture.MixtureSearchConfig(
        rl=rl, eval_data={"in_domain": multi["multi_eval"], "ood": multi["multi_ood_eval"]},
        output_dir=str(tmp_path / "search"), candidates=[{"add2": 1, "sub2": 1, "add3": 1}, {"add2": 1.0},
                                                         {"sub2": 1.0}],
        proxy_steps=2, eval_limit=12, max_new_tokens=5, batch_size=64, search_points=200)
    result = mixture.search(cfg, say=lambda m: None)

    assert result["domains"] == ["add2", "add3", "sub2"]
    seen = []
    for cand in result["candidates"]:
        state = json.loads((Path(cand["model"]) / "sampler_state.json").read_text())
        tried = {r["domain"] for r in state["records"].values() if r["attempts"]} if isinstance(
            state["records"], dict) else {r["domain"] for r in state["records"] if r["attempts"]}
        seen.append(tried)
        assert set(cand["scores"]) == {"in_domain", "ood"}
        assert all(0.0 <= v <= 1.0 for v in cand["scores"].values())
    assert seen[1] == {"add2"} and seen[2] == {"sub2"}
    assert len(seen[0]) >= 2
    proposal = result["proposal"]["weights"]
    assert set(proposal) == {"add2", "add3", "sub2"} and abs(sum(proposal.values()) - 1) < 0.01
    assert result["fit"]["model"] == "scheffe-linear"  # 3 proxies: too few for the pair terms
    assert json.loads((tmp_path / "search" / "mixture_search.json").read_text())["proposal"] == result["proposal"]


def test_train_data_with_one_domain_is_one_line_and_exit_2(tmp_path):
    from alignpipe.data.demo import write_demo_data

    data = write_demo_data(tmp_path / "d", max_operand=9, eval_pairs=4)
    cfg = tmp_path / "search.yaml"
    cfg.write_text(json.dumps({"rl": {"model": "tiny", "train_data": data["rl_train"], "output_dir": "x"},
                               "eval_data": {"eval": data["eval"]}, "output_dir": str(tmp_path / "out")}))
    proc = subprocess.run([sys.executable, "-m", "alignpipe.cli", "mixture", "search", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and "rl_train.jsonl: domain: one domain only (['arithmetic'])" in lines[0], proc.stderr[-2000:]
