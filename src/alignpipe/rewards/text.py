"""Text helpers shared by reward functions: completion text, final-answer extraction, answer matching."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_SPACES = re.compile(r"\s+")
_LEADING_ZERO = re.compile(r"^[+-]?0\d")
_EXPONENT = re.compile(r"e([+-]?\d+)$", re.IGNORECASE)
#: Largest exponent magnitude read as a number ("1e999999999" would make Fraction compute 10**999999999 and hang
#: the reward); beyond it the answer is compared as text.
MAX_EXPONENT = 1000
#: `\frac{a}{b}`, `\dfrac`/`\tfrac`, and the brace-less `\frac12` (single digits), with an optional sign.
_LATEX_FRAC = re.compile(r"^([+-]?)\\[dt]?frac(?:\{\s*([+-]?\d+)\s*\}|(\d))(?:\{\s*([+-]?\d+)\s*\}|(\d))$")


def completion_text(completion: Any) -> str:
    """The text of one completion as TRL passes it: a string (plain prompts) or a list of messages
    (conversational prompts, `[{"role": "assistant", "content": ...}]`); several messages are joined."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, (list, tuple)):
        return "\n".join(completion_text(message) for message in completion)
    return str(completion)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), with nested braces; None if there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced


def extract_answer(text: str) -> str:
    """The final answer in `text`: the last `<answer>...</answer>`, else the last `\\boxed{...}`, else the text."""
    tags = _ANSWER_TAG.findall(text)
    if tags:
        inner = tags[-1]
        boxed = last_boxed(inner)
        return (boxed if boxed is not None else inner).strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    return text.strip()


def normalize(value: Any) -> str:
    """Answer text normalised for comparison: stripped, `$...$` and `\\text{}` unwrapped, trailing period
    and surrounding quotes dropped, whitespace collapsed, casefolded."""
    text = str(value).strip()
    if len(text) >= 2 and text[0] == text[-1] == "$":
        text = text[1:-1].strip()
    match = re.fullmatch(r"\\text\{(.*)\}", text)
    if match:
        text = match.group(1).strip()
    text = text.rstrip(".").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return _SPACES.sub(" ", text).casefold()


def as_number(text: str) -> Fraction | None:
    """`text` as an exact number ("28", "28.0", "-1.5e3", "1/2", "1,000", "\\frac{1}{2}", "\\frac12"), or None.

    A leading zero ("01", "007") makes it text: such answers are digit strings (codes, reversed
    digits) where "01" != "1". An exponent beyond +-MAX_EXPONENT makes it text too."""
    text = text.strip()
    if _LEADING_ZERO.match(text):
        return None
    frac = _LATEX_FRAC.match(text)
    if frac:
        sign, num, den = frac.group(1), frac.group(2) or frac.group(3), frac.group(4) or frac.group(5)
        try:
            return Fraction(f"{sign}{num}/{den}".replace("+-", "-").replace("--", ""))
        except (ValueError, ZeroDivisionError):
            return None
    exponent = _EXPONENT.search(text)
    if exponent:
        digits = exponent.group(1).lstrip("+-").lstrip("0")
        if len(digits) > len(str(MAX_EXPONENT)) or int(digits or 0) > MAX_EXPONENT:
            return None
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if "_" in text:  # Fraction accepts 1_000; answers don't
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: Any, reference: Any) -> bool:
    """Numeric-aware equality: "28" == "28.0" == " 28 " == 28; other strings after `normalize`."""
    if isinstance(reference, float) and reference.is_integer():
        reference = int(reference)
    pred, ref = normalize(predicted), normalize(reference)
    pred_num, ref_num = as_number(pred), as_number(ref)
    if pred_num is not None and ref_num is not None:
        return pred_num == ref_num
    return pred == ref
