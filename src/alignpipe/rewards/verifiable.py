"""Verifiable rewards: exact match, math equivalence (math-verify), classification label, format.

Each is a plain function in TRL's reward signature `f(prompts, completions, **kwargs) -> list[float | None]`;
dataset columns (e.g. `answer`, `label`) arrive as keyword arguments, one value per completion.
A reward returns None for a completion it does not apply to (its reference is null); TRL then
ignores it in the weighted sum.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from .registry import register
from .text import answers_match, completion_text, extract_answer

log = logging.getLogger(__name__)

#: `<think>...</think>` then `<answer>...</answer>`, nothing around them but whitespace, no nested tags.
THINK_ANSWER = (
    r"\s*<think>(?:(?!</?think>).)*</think>\s*"
    r"<answer>(?:(?!</?answer>).)*</answer>\s*"
)
_MODES = ("fullmatch", "search", "match")


def _column(values: Any, name: str, reward: str, n: int) -> list[Any]:
    if values is None:
        raise ValueError(
            f"reward '{reward}' needs the '{name}' column in the data set (TRL passes it as a keyword argument); "
            f"add '{name}' to the prompts file or remove '{reward}' from rewards"
        )
    values = list(values)
    if len(values) != n:
        raise ValueError(f"reward '{reward}': got {len(values)} '{name}' values for {n} completions")
    return values


@register("exact_match")
def exact_match_reward(prompts: list, completions: list, answer: list | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 when the completion's final answer equals the reference `answer`, else 0.0.

    The final answer is the last `<answer>...</answer>`, else the last `\\boxed{...}`, else the whole
    completion. Numbers compare by value ("28" == "28.0" == " 28 "), other strings after stripping and
    case-folding. A null reference gives None.
    """
    answers = _column(answer, "answer", "exact_match", len(completions))
    return [
        None if ref is None else float(answers_match(extract_answer(completion_text(c)), ref))
        for c, ref in zip(completions, answers)
    ]


@register("label")
def label_reward(prompts: list, completions: list, label: list | None = None, **kwargs: Any) -> list[float | None]:
    """Classification: 1.0 when the completion's label (the `<answer>` content if tagged, else the whole
    text; case-insensitive, numeric-aware) equals the `label` column, else 0.0. A null label gives None."""
    labels = _column(label, "label", "label", len(completions))
    return [
        None if ref is None else float(answers_match(extract_answer(completion_text(c)), ref))
        for c, ref in zip(completions, labels)
    ]


@register("math_verify")
def math_verify_reward(prompts: list, completions: list, answer: list | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 when the completion's answer is mathematically equal to `answer` (math-verify: LaTeX,
    fractions, sets, intervals...: `\\frac{1}{2}` == `0.5`), else 0.0. Parse errors and timeouts give
    0.0. When math-verify cannot parse the reference or the answer (e.g. a word), they are compared
    like `exact_match`."""
    answers = _column(answer, "answer", "math_verify", len(completions))
    return [None if ref is None else _math_equal(completion_text(c), ref) for c, ref in zip(completions, answers)]


def _math_equal(text: str, reference: Any) -> float:
    from math_verify import parse, verify

    # math-verify times out with signal.alarm, which only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    tags = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL | re.IGNORECASE)
    predicted = tags[-1] if tags else text
    reference_text = str(int(reference)) if isinstance(reference, float) and reference.is_integer() else str(reference)
    try:
        gold = parse(reference_text, parsing_timeout=timeout)
        guess = parse(predicted, parsing_timeout=timeout) if gold else None
        if not gold or not guess:  # not math (a word, a name): compare as text
            return float(answers_match(extract_answer(text), reference))
        return float(bool(verify(gold, guess, timeout_seconds=timeout)))
    except Exception as exc:  # noqa: BLE001 - math-verify/sympy raise anything, incl. TimeoutError
        log.debug("math_verify failed on %r vs %r: %s", predicted[:200], reference_text, exc)
        return 0.0


@register("format")
def format_reward(
    prompts: list,
    completions: list,
    pattern: str = THINK_ANSWER,
    mode: str = "fullmatch",
    **kwargs: Any,
) -> list[float]:
    """1.0 when the completion matches the regular expression `pattern` (DOTALL), else 0.0.

    `mode`: `fullmatch` (the default: the whole completion, e.g. think-then-answer tags and nothing
    else), `search` (anywhere) or `match` (at the start). Configure with
    `{name: format, kwargs: {pattern: '...', mode: search}}`.
    """
    regex = _compile(pattern, mode)
    test = getattr(regex, mode)
    return [1.0 if test(completion_text(c).strip() if mode == "fullmatch" else completion_text(c)) else 0.0
            for c in completions]


def _compile(pattern: str, mode: str) -> re.Pattern[str]:
    if mode not in _MODES:
        raise ValueError(f"reward 'format': mode {mode!r} is not one of {', '.join(_MODES)}")
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise ValueError(f"reward 'format': pattern {pattern!r} is not a valid regular expression: {exc}") from exc


def _check_format_options(pattern: str = THINK_ANSWER, mode: str = "fullmatch") -> None:
    _compile(pattern, mode)


format_reward.check_options = _check_format_options  # type: ignore[attr-defined]  # called by build()
