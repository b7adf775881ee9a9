"""Pure metric functions: no I/O, no models, no global state — numbers in, numbers out.

- `pass_at_k`: the unbiased pass@k estimator from n >= k samples (Chen et al., 2021);
- `canonical_answer`, `maj_at_k`: majority voting on canonical answers, with the verifier's
  canonicalisation (`alignpipe.rewards.text`: final answer extracted, normalised, numbers by value);
- `bootstrap_ci`, `paired_bootstrap_delta`: percentile bootstrap over prompts; the paired version
  resamples the same prompts for both models, so the CI is on the difference of the two scores;
- `token_kl_entropy`: per-position KL(candidate || reference) and candidate entropy from logits;
  `kl_summary` turns per-position values of sampled sequences into per-token and per-sequence means;
- `token_efficiency`: accuracy per 1,000 generated tokens and mean tokens to a correct answer;
- `cot_consistency`: does the final answer equal the answer stated at the end of the reasoning block.

A metric observed per prompt is a `Ratio` (numerators and denominators, one of each per prompt): a
mean is a ratio with denominators of 1; "accuracy per 1,000 tokens" is correct answers over tokens.
The bootstrap resamples prompts and recomputes sum(num) / sum(den), so ratio metrics get honest CIs.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alignpipe.rewards.text import answers_match, as_number, completion_text, extract_answer, normalize

# --------------------------------------------------------------------------------------------------
# Per-prompt observations
# --------------------------------------------------------------------------------------------------


@dataclass
class Ratio:
    """One metric observed on each prompt: value = sum(num) / sum(den) (times `scale`).

    NaN numerators mark prompts where the metric does not apply (e.g. a reward with a null reference);
    they are left out, and a paired comparison leaves out the prompt for both models."""

    num: list[float]
    den: list[float] = field(default_factory=list)
    scale: float = 1.0

    def __post_init__(self) -> None:
        self.num = [float(v) for v in self.num]
        self.den = [float(v) for v in self.den] if self.den else [1.0] * len(self.num)
        if len(self.den) != len(self.num):
            raise ValueError(f"Ratio: {len(self.num)} numerators but {len(self.den)} denominators")

    @classmethod
    def mean(cls, values: Sequence[float]) -> Ratio:
        return cls(list(values))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.num, dtype=float), np.asarray(self.den, dtype=float)

    def value(self) -> float:
        num, den = self.arrays()
        ok = ~np.isnan(num) & ~np.isnan(den)
        total = den[ok].sum()
        return float(num[ok].sum() / total * self.scale) if total > 0 else float("nan")


# --------------------------------------------------------------------------------------------------
# pass@k and maj@k
# --------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples of which `c` are correct: 1 - C(n-c, k) / C(n, k).

    The probability that at least one of k samples drawn without replacement from the n is correct;
    with n == k it is 1.0 if any sample is correct, else 0.0."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k} (draw at least k samples per prompt)")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def canonical_answer(completion: Any) -> str:
    """The verifier's canonical form of a completion's final answer: the answer is extracted
    (`<answer>`, else `\\boxed{}`, else the text), normalised, and numbers are written by value, so two
    completions get the same canonical answer exactly when `answers_match` says they agree."""
    text = normalize(extract_answer(completion_text(completion)))
    number = as_number(text)
    return str(number) if number is not None else text


def majority_index(answers: Sequence[str]) -> int:
    """Index of the first answer among the most frequent ones (ties go to the answer seen first)."""
    if not answers:
        raise ValueError("majority_index: no answers")
    counts = Counter(answers)
    top = max(counts.values())
    return next(i for i, a in enumerate(answers) if counts[a] == top)


def maj_at_k(answers: Sequence[str], correct: Sequence[bool], k: int) -> float:
    """maj@k of one prompt from n >= k samples: the samples are split into n // k groups of k (in
    order); per group the majority canonical answer is voted and counts as correct when the sample
    carrying it is correct; the result is the share of groups voted correct."""
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"maj_at_k: {n} answers but {len(correct)} correctness flags")
    if not 1 <= k <= n:
        raise ValueError(f"maj_at_k: need 1 <= k <= n, got n={n}, k={k}")
    groups = n // k
    wins = 0
    for g in range(groups):
        sl = slice(g * k, (g + 1) * k)
        wins += bool(correct[sl][majority_index(answers[sl])])
    return wins / groups


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    value: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": float(self.n)}


def _resampled_stat(columns: Sequence[np.ndarray], stat: Callable[..., np.ndarray], n_resamples: int,
                    seed: int, chunk: int = 256) -> np.ndarray:
    """stat(*resampled columns) for `n_resamples` resamples of the rows (same rows for every column)."""
    rng = np.random.default_rng(seed)
    n = len(columns[0])
    out = []
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        out.append(stat(*(c[idx] for c in columns)))
    return np.concatenate(out)


def _ratio_stat(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return num.sum(axis=-1) / den.sum(axis=-1)


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def _check(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def bootstrap_ci(values: Ratio | Sequence[float], n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> Interval:
    """Percentile bootstrap CI of a per-prompt metric (prompts resampled with replacement)."""
    _check(confidence, n_resamples)
    r = values if isinstance(values, Ratio) else Ratio.mean(values)
    num, den = r.arrays()
    ok = ~np.isnan(num) & ~np.isnan(den)
    num, den = num[ok], den[ok]
    if num.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    value = r.value()
    low, high = _percentiles(_resampled_stat([num, den], _ratio_stat, n_resamples, seed), confidence)
    return Interval(value, low * r.scale, high * r.scale, int(num.size))


def paired_bootstrap_delta(candidate: Ratio | Sequence[float], baseline: Ratio | Sequence[float],
                           n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Delta = metric(candidate) - metric(baseline) on the same prompts, with a paired percentile
    bootstrap CI: each resample draws prompts with replacement and recomputes both models' metric on
    the same draw. Prompts where either model's value is NaN are left out of both."""
    _check(confidence, n_resamples)
    a = candidate if isinstance(candidate, Ratio) else Ratio.mean(candidate)
    b = baseline if isinstance(baseline, Ratio) else Ratio.mean(baseline)
    if len(a.num) != len(b.num):
        raise ValueError(f"paired_bootstrap_delta: {len(a.num)} vs {len(b.num)} prompts (pairs need the same prompts)")
    if a.scale != b.scale:
        raise ValueError("paired_bootstrap_delta: the two metrics have different scales")
    an, ad = a.arrays()
    bn, bd = b.arrays()
    ok = ~(np.isnan(an) | np.isnan(ad) | np.isnan(bn) | np.isnan(bd))
    an, ad, bn, bd = an[ok], ad[ok], bn[ok], bd[ok]
    if an.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    delta = float(_ratio_stat(an, ad) - _ratio_stat(bn, bd)) * a.scale

    def stat(an_, ad_, bn_, bd_):
        return _ratio_stat(an_, ad_) - _ratio_stat(bn_, bd_)

    low, high = _percentiles(_resampled_stat([an, ad, bn, bd], stat, n_resamples, seed), confidence)
    return Interval(delta, low * a.scale, high * a.scale, int(an.size))


# --------------------------------------------------------------------------------------------------
# KL and entropy
# --------------------------------------------------------------------------------------------------


def token_kl_entropy(candidate_logits, reference_logits):
    """Per position: KL(p_candidate || p_reference) over the whole vocabulary, and the candidate's
    entropy, from logits of shape [..., vocab] (torch tensors). Both are >= 0; KL is 0 for equal logits.

    Averaged over positions of sequences sampled from the candidate, the KL values estimate the
    sequence-level KL(candidate || reference) without the variance of the log-ratio of the sampled
    tokens (the expectation over each next token is taken exactly)."""
    import torch

    if candidate_logits.shape != reference_logits.shape:
        raise ValueError(f"token_kl_entropy: logits shapes differ {tuple(candidate_logits.shape)} vs "
                         f"{tuple(reference_logits.shape)} (KL needs models with the same tokenizer)")
    logp = torch.log_softmax(candidate_logits.float(), dim=-1)
    logq = torch.log_softmax(reference_logits.float(), dim=-1)
    p = logp.exp()
    kl = (p * (logp - logq)).sum(-1).clamp_min(0.0)
    entropy = -(p * logp).sum(-1)
    return kl, entropy


def kl_summary(per_sequence: Sequence[Sequence[float]]) -> dict[str, float]:
    """{kl_per_token, kl_per_sequence} from per-position KL values of sampled sequences: the mean over
    all generated tokens, and the mean over sequences of the per-sequence sum."""
    tokens = sum(len(s) for s in per_sequence)
    total = sum(float(sum(s)) for s in per_sequence)
    return {"kl_per_token": total / tokens if tokens else float("nan"),
            "kl_per_sequence": total / len(per_sequence) if per_sequence else float("nan")}


def mean_entropy(per_sequence: Sequence[Sequence[float]]) -> float:
    """Mean token entropy over all generated tokens."""
    tokens = sum(len(s) for s in per_sequence)
    return sum(float(sum(s)) for s in per_sequence) / tokens if tokens else float("nan")


# --------------------------------------------------------------------------------------------------
# Token efficiency
# --------------------------------------------------------------------------------------------------


def token_efficiency(correct: Sequence[bool], lengths: Sequence[int]) -> dict[str, float]:
    """`accuracy_per_1k_tokens`: correct answers per 1,000 generated tokens; `tokens_to_correct`: mean
    length (tokens) of the correct answers (NaN when none is correct)."""
    if len(correct) != len(lengths):
        raise ValueError(f"token_efficiency: {len(correct)} flags but {len(lengths)} lengths")
    tokens = sum(lengths)
    right = [n for c, n in zip(correct, lengths) if c]
    return {"accuracy_per_1k_tokens": 1000.0 * len(right) / tokens if tokens else float("nan"),
            "tokens_to_correct": sum(right) / len(right) if right else float("nan")}


# --------------------------------------------------------------------------------------------------
# CoT-answer consistency
# --------------------------------------------------------------------------------------------------

#: A reasoning block: `<think>...</think>` (group 1 is the reasoning).
REASONING_PATTERN = r"<think>(.*?)</think>"
#: The answer stated in the reasoning: the last "answer is X" / "answer: X" / "= X" (group 1 is X).
STATED_ANSWER_PATTERN = r"(?:answer\s+is|answer\s*:|=)\s*\$?\\?(?:boxed\{)?([^\s$}]+)"


def stated_answer(reasoning: str, stated_pattern: str = STATED_ANSWER_PATTERN) -> str | None:
    """The answer stated towards the end of a reasoning text: the last match of `stated_pattern`
    (its first group, or the whole match without groups); None when there is none."""
    matches = list(re.finditer(stated_pattern, reasoning, re.IGNORECASE | re.DOTALL))
    if not matches:
        return None
    m = matches[-1]
    return (m.group(1) if m.groups() else m.group(0)).strip()


def cot_consistency(completion: Any, reasoning_pattern: str = REASONING_PATTERN,
                    stated_pattern: str = STATED_ANSWER_PATTERN) -> bool | None:
    """For a completion with a reasoning block: True when its final answer (after the block, extracted
    as the verifier does) equals the answer stated at the end of the reasoning, False otherwise (also
    when the reasoning states none). None when the completion has no reasoning block."""
    text = completion_text(completion)
    blocks = list(re.finditer(reasoning_pattern, text, re.DOTALL))
    if not blocks:
        return None
    last = blocks[-1]
    reasoning = last.group(1) if last.groups() else last.group(0)
    stated = stated_answer(reasoning, stated_pattern)
    final = extract_answer(text[last.end():])
    if stated is None or not final:
        return False
    return answers_match(final, stated)
