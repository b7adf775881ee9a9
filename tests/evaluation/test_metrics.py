"""The metric functions against hand-computed values and closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from alignpipe.evaluation import metrics as M


# ---------------------------------------------------------------- pass@k


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 2, 1 - 3 / 10),      # 1 - C(3,2)/C(5,2)
    (4, 0, 2, 0.0),
    (4, 3, 2, 1.0),             # fewer than k wrong samples: every k-subset holds a correct one
    (10, 1, 1, 0.1),            # pass@1 is the share of correct samples
    (4, 1, 4, 1.0),             # n == k: "any sample correct"
    (8, 3, 3, 1 - 10 / 56),     # 1 - C(5,3)/C(8,3)
])
def test_pass_at_k_closed_form(n, c, k, expected):
    assert M.pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_is_the_subset_average():
    """Unbiased: the mean over all k-subsets of the n samples of 'any correct'."""
    for n, k in [(5, 2), (6, 3), (7, 1)]:
        for c in range(n + 1):
            flags = [True] * c + [False] * (n - c)
            subsets = list(itertools.combinations(flags, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert M.pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_rejects_too_few_samples():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        M.pass_at_k(2, 1, 4)


# ---------------------------------------------------------------- maj@k


def test_canonical_answer_uses_the_verifiers_canonicalisation():
    assert M.canonical_answer("<answer>28.0</answer>") == M.canonical_answer(" 28 ") == "28"
    assert M.canonical_answer("\\boxed{1,000}") == "1000"
    assert M.canonical_answer("$\\text{Yes}$") == M.canonical_answer("Yes.") == "yes"
    assert M.canonical_answer("01") == "01"  # leading zero: a digit string, not the number 1
    assert M.canonical_answer([{"role": "assistant", "content": "<answer>1/2</answer>"}]) == "1/2"


def test_maj_at_k_votes_on_canonical_answers():
    answers = [M.canonical_answer(a) for a in ["28", "28.0", "3", "<answer>28</answer>"]]
    assert M.majority_index(answers) == 0
    assert M.maj_at_k(answers, [True, True, False, True], 4) == 1.0
    # "3" wins only if it is the majority: 2 groups of 2, ties go to the first answer of the group
    answers = ["3", "28", "3", "3"]
    assert M.maj_at_k(answers, [False, True, False, False], 2) == 0.0
    assert M.maj_at_k(["28", "3", "28", "3"], [True, False, True, False], 2) == 1.0
    assert M.maj_at_k(["28", "3", "3", "28", "5", "5"], [True, False, False, True, False, False], 3) == 0.0


# ---------------------------------------------------------------- bootstrap


def test_ratio_values():
    assert M.Ratio.mean([1, 0, 1, 0]).value() == 0.5
    assert M.Ratio([1, 0, 1], [10, 20, 30], scale=1000).value() == pytest.approx(2 / 60 * 1000)
    assert M.Ratio.mean([1, float("nan"), 0]).value() == 0.5  # NaN: the metric does not apply there


def test_paired_bootstrap_of_identical_models_is_zero():
    a = [1, 0, 1, 1, 0, 0, 1]
    d = M.paired_bootstrap_delta(a, a, n_resamples=200)
    assert (d.value, d.ci_low, d.ci_high, d.n) == (0.0, 0.0, 0.0, 7)


def test_paired_bootstrap_covers_a_known_delta():
    """200 prompts; the candidate fixes 20 that the baseline gets wrong and breaks none: delta = 0.1
    exactly. The paired CI must contain 0.1 and exclude 0 (an unpaired test would not: the two
    accuracies' own CIs overlap)."""
    rng = np.random.default_rng(1)
    base = (rng.random(200) < 0.5).astype(float)
    cand = base.copy()
    cand[np.flatnonzero(base == 0)[:20]] = 1.0
    d = M.paired_bootstrap_delta(cand, base, n_resamples=2000, seed=3)
    assert d.value == pytest.approx(0.1)
    assert d.ci_low <= 0.1 <= d.ci_high
    assert d.ci_low > 0
    # the same change judged by each model's own interval looks like noise
    ia, ib = M.bootstrap_ci(cand, 2000), M.bootstrap_ci(base, 2000)
    assert ia.ci_low < ib.ci_high


def test_bootstrap_ci_coverage_is_near_nominal():
    """Over 200 simulated eval sets (n=150 prompts, true mean delta 0.2), the 95% paired CI covers the
    true delta close to 95% of the time."""
    rng = np.random.default_rng(7)
    covered = 0
    reps = 200
    for r in range(reps):
        base = rng.normal(0.0, 1.0, 150)
        cand = base + 0.2 + rng.normal(0.0, 0.5, 150)
        d = M.paired_bootstrap_delta(cand, base, n_resamples=400, seed=r)
        covered += d.ci_low <= 0.2 <= d.ci_high
    assert 0.89 <= covered / reps <= 0.99


def test_bootstrap_ci_of_a_ratio_metric():
    iv = M.bootstrap_ci(M.Ratio([1, 0, 1, 1], [10, 10, 10, 10], scale=1000), n_resamples=500)
    assert iv.value == pytest.approx(75.0)
    assert 0.0 <= iv.ci_low <= 75.0 <= iv.ci_high <= 100.0


def test_paired_bootstrap_drops_prompts_missing_in_either_model():
    d = M.paired_bootstrap_delta([1, float("nan"), 1], [0, 0, float("nan")], n_resamples=10)
    assert d.n == 1 and d.value == 1.0


# ---------------------------------------------------------------- KL, entropy


def test_kl_of_identical_logits_is_zero_and_entropy_is_exact():
    import torch

    logits = torch.randn(3, 5, 11)
    kl, ent = M.token_kl_entropy(logits, logits.clone())
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-6)
    uniform = torch.zeros(1, 4)
    _, ent = M.token_kl_entropy(uniform, uniform)
    assert ent.item() == pytest.approx(math.log(4), rel=1e-6)


def test_kl_of_known_distributions():
    import torch

    p = torch.log(torch.tensor([[0.5, 0.5]]))
    q = torch.log(torch.tensor([[0.25, 0.75]]))
    kl, ent = M.token_kl_entropy(p, q)
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
    assert kl.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-5)
    assert ent.item() == pytest.approx(math.log(2), rel=1e-6)


def test_kl_summary_per_token_and_per_sequence():
    s = M.kl_summary([[0.1, 0.2], [0.3]])
    assert s["kl_per_token"] == pytest.approx(0.2) and s["kl_per_sequence"] == pytest.approx(0.3)
    assert M.mean_entropy([[1.0, 2.0], [3.0]]) == pytest.approx(2.0)


# ---------------------------------------------------------------- efficiency, CoT


def test_token_efficiency():
    e = M.token_efficiency([True, False, True], [10, 20, 30])
    assert e["accuracy_per_1k_tokens"] == pytest.approx(2 / 60 * 1000)
    assert e["tokens_to_correct"] == 20.0
    assert math.isnan(M.token_efficiency([False], [5])["tokens_to_correct"])


def test_cot_consistency_default_patterns():
    assert M.cot_consistency("<think>3+4=7</think><answer>7</answer>") is True
    assert M.cot_consistency("<think>so the answer is 8.</think> <answer>7</answer>") is False
    assert M.cot_consistency("<think>I think the answer is \\boxed{12}</think> 12.0") is True
    assert M.cot_consistency("<think>no conclusion</think> 7") is False
    assert M.cot_consistency("just 7") is None


def test_cot_consistency_custom_patterns():
    text = "[reasoning] ... Final: 42 [/reasoning] The result is 42"
    assert M.cot_consistency(text, r"\[reasoning\](.*?)\[/reasoning\]", r"Final:\s*(\S+)") is False  # final = whole tail
    assert M.cot_consistency("[reasoning] Final: 42 [/reasoning] 42", r"\[reasoning\](.*?)\[/reasoning\]",
                             r"Final:\s*(\S+)") is True
