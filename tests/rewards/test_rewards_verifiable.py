"""Verifiable rewards on plain and conversational completions."""

from __future__ import annotations

import threading

import pytest

from alignpipe.rewards import (
    THINK_ANSWER,
    completion_text,
    exact_match_reward,
    extract_answer,
    format_reward,
    label_reward,
    math_verify_reward,
)


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def both(texts: list[str]):
    """The same completions, plain (strings) and conversational (message lists)."""
    return [("plain", list(texts)), ("conversational", [conv(t) for t in texts])]


def test_completion_text():
    assert completion_text("hi") == "hi"
    assert completion_text(conv("hi")) == "hi"
    assert completion_text([{"content": "a"}, {"role": "assistant", "content": "b"}]) == "a\nb"
    assert completion_text({"role": "assistant", "content": "x"}) == "x"
    assert completion_text(None) == ""
    assert completion_text([{"role": "assistant", "content": None}]) == ""


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think>2+2</think><answer> 4 </answer>", "4"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        ("so \\boxed{\\frac{1}{2}} and \\boxed{x^{2}}", "x^{2}"),
        ("<answer>it is \\boxed{7}</answer>", "7"),
        ("  plain 5 ", "plain 5"),
        ("\\boxed{unclosed", "\\boxed{unclosed"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "completion,answer,expected",
    [
        ("28", "28", 1.0),
        ("28.0", "28", 1.0),
        (" 28 ", 28, 1.0),
        ("28", 28.0, 1.0),
        ("<answer>28.0</answer>", "28", 1.0),
        ("The sum is \\boxed{28}", "28", 1.0),
        ("1,000", "1000", 1.0),
        ("-0.50", "-1/2", 1.0),
        ("$28$", "28", 1.0),
        ("Paris.", "paris", 1.0),
        ("  New   York ", "new york", 1.0),
        ("0.5", ".50", 1.0),
        ("01", "01", 1.0),
        ("29", "28", 0.0),
        ("1", "01", 0.0),  # a leading zero makes a digit string: reversed digits, codes
        ("007", "7", 0.0),
        ("2.8", "28", 0.0),
        ("28 apples", "28", 0.0),
        ("<answer>27</answer> 28", "28", 0.0),
        ("", "28", 0.0),
    ],
)
def test_exact_match_numeric_aware(completion, answer, expected):
    for style, completions in both([completion]):
        assert exact_match_reward(["p"], completions, answer=[answer]) == [expected], style


def test_exact_match_batch_null_reference_and_missing_column():
    completions = ["4", "<answer>5</answer>", "x"]
    assert exact_match_reward(["p"] * 3, completions, answer=["4", "6", None]) == [1.0, 0.0, None]
    with pytest.raises(ValueError, match="reward 'exact_match' needs the 'answer' column in the data set"):
        exact_match_reward(["p"], ["4"])
    with pytest.raises(ValueError, match="got 1 'answer' values for 2 completions"):
        exact_match_reward(["p", "p"], ["4", "4"], answer=["4"])


@pytest.mark.parametrize(
    "completion,answer,expected",
    [
        ("\\frac{1}{2}", "0.5", 1.0),
        ("The answer is $\\frac{1}{2}$", 0.5, 1.0),
        ("<think>half</think><answer>\\frac{1}{2}</answer>", "0.5", 1.0),
        ("\\boxed{\\sqrt{4}}", "2", 1.0),
        ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", 1.0),
        ("\\frac{1}{3}", "0.5", 0.0),
        ("no number here", "0.5", 0.0),
        ("<answer>Yes</answer>", "yes", 1.0),  # not math: compared as text
        ("<answer>no</answer>", "yes", 0.0),
    ],
)
def test_math_verify(completion, answer, expected):
    for style, completions in both([completion]):
        assert math_verify_reward(["p"], completions, answer=[answer]) == [expected], style


def test_math_verify_errors_give_zero(monkeypatch):
    import math_verify

    def boom(*args, **kwargs):
        raise TimeoutError("too slow")

    monkeypatch.setattr(math_verify, "verify", boom)
    assert math_verify_reward(["p"], ["\\frac{1}{2}"], answer=["0.5"]) == [0.0]


def test_math_verify_in_a_worker_thread():
    """math-verify's signal-based timeout fails outside the main thread; the reward must not."""
    result = []
    thread = threading.Thread(target=lambda: result.append(math_verify_reward(["p"], ["\\frac{1}{2}"], answer=["0.5"])))
    thread.start()
    thread.join()
    assert result == [[1.0]]


def test_math_verify_null_reference():
    assert math_verify_reward(["p", "p"], ["1", "2"], answer=[None, "2"]) == [None, 1.0]


@pytest.mark.parametrize(
    "completion,label,expected",
    [
        ("positive", "positive", 1.0),
        ("<answer>Positive</answer>", "positive", 1.0),
        ("'negative'", "negative", 1.0),
        ("1", 1, 1.0),
        ("positive", "negative", 0.0),
        ("I think positive", "positive", 0.0),
    ],
)
def test_label(completion, label, expected):
    for style, completions in both([completion]):
        assert label_reward(["p"], completions, label=[label]) == [expected], style


def test_label_null_and_missing_column():
    assert label_reward(["p", "p"], ["a", "b"], label=[None, "b"]) == [None, 1.0]
    with pytest.raises(ValueError, match="reward 'label' needs the 'label' column"):
        label_reward(["p"], ["a"], answer=["a"])


@pytest.mark.parametrize(
    "completion,expected",
    [
        ("<think>2+2 is 4</think><answer>4</answer>", 1.0),
        ("<think>\nmulti\nline\n</think>\n<answer>\n4\n</answer>\n", 1.0),
        ("<answer>4</answer>", 0.0),
        ("<think>x</think>4", 0.0),
        ("<think>x</think><answer>4</answer> trailing words", 0.0),
        ("<think>x</think><answer>4</answer><answer>5</answer>", 0.0),
        ("<think><think>x</think><answer>4</answer>", 0.0),
    ],
)
def test_format_default_think_answer(completion, expected):
    for style, completions in both([completion]):
        assert format_reward(["p"], completions) == [expected], style


def test_format_custom_pattern_and_modes():
    completions = ["Answer: 42", "so, Answer: 7.", "none"]
    assert format_reward(["p"] * 3, completions, pattern=r"Answer: \d+") == [1.0, 0.0, 0.0]
    assert format_reward(["p"] * 3, completions, pattern=r"Answer: \d+", mode="search") == [1.0, 1.0, 0.0]
    assert format_reward(["p"] * 3, completions, pattern=r"Answer", mode="match") == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="mode 'any' is not one of fullmatch, search, match"):
        format_reward(["p"], ["x"], mode="any")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        format_reward(["p"], ["x"], pattern="(unclosed")
    assert "<think>" in THINK_ANSWER


# ---------------------------------------------------------------- review fixes (issue 9 §4)


def test_huge_exponent_cannot_hang_a_reward():
    # §4.6: Fraction("1e999999999") computes 10**999999999; exponents are capped (in a subprocess, so that the
    # unfixed code fails on the timeout instead of hanging the suite)
    import subprocess
    import sys

    code = ("from alignpipe.rewards.text import as_number, answers_match\n"
            "from alignpipe.rewards import exact_match_reward\n"
            "assert as_number('1e999999999') is None and as_number('-2.5E-999999999') is None\n"
            "assert as_number('1e3') == 1000 and as_number('2.5e-3') * 400 == 1\n"
            "assert exact_match_reward([''], ['1e999999999'], answer=['1']) == [0.0]\n"
            "assert answers_match('1e999999999', '1e999999999')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_latex_fractions_are_numbers():
    # §4.5: "\frac12" and "0.5" are one answer for exact_match and for maj@k's vote
    from alignpipe.evaluation.metrics import canonical_answer
    from alignpipe.rewards.text import answers_match, as_number

    assert as_number("\\frac12") == as_number("\\frac{1}{2}") == as_number("\\dfrac{2}{4}") == as_number("0.5")
    assert as_number("-\\tfrac{3}{4}") == as_number("-0.75")
    assert answers_match("\\frac{1}{2}", "0.5") and not answers_match("\\frac{1}{3}", "0.5")
    assert canonical_answer("\\boxed{\\frac12}") == canonical_answer("<answer>0.5</answer>") == "1/2"
    assert canonical_answer("\\boxed{\\frac{x}{2}}") == "\\frac{x}{2}"  # not a number: compared as text
