"""Code-execution reward: run the model's program against the row's tests, in the sandbox.

`code_tests` takes the program from the completion (the last fenced ```python block, else the whole
completion; `extract: whole` takes the completion as is) and the row's `tests` column, either

* Python source with `assert`s, run after the program in the same interpreter (each top-level `assert`,
  with the statements before it, is one test), or
* stdin/stdout cases: a list of `{"stdin": ..., "stdout": ...}` (or `input`/`output`), or APPS-style
  `{"inputs": [...], "outputs": [...]}`, or the same as a JSON string; the program's stdout is compared
  with the expected one after whitespace normalisation (blank lines dropped, runs of spaces collapsed).

It returns the fraction of tests passed (1.0/0.0 with `all_or_nothing: true`), or None for a row with no
tests. Every execution runs in `alignpipe.sandbox` (or the reward service, `service: URL`).

An assert test only counts when the grader's own markers are seen: after each assert the harness writes
`<nonce> <i> <ok>` and after the last one `<nonce> END` straight to fd 1, with a random nonce made per run on
the grader's side (not in the program's text, not guessable). So `sys.exit(0)`/`os._exit(0)` before the
asserts, patching `print`/`exec`/`AssertionError`/`sys.stdout`, or printing "all tests passed" earn
nothing. (A program that inspects the harness's own frames can find the nonce: the in-process harness is
not a boundary against a program written to attack this harness; see docs/code-rewards.md.)
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from ..sandbox import Limits
from ..sandbox.grading import (normalise_output, parse_tests, run_local, score_asserts,  # noqa: F401
                               split_asserts)
from .registry import register
from .text import completion_text

log = logging.getLogger(__name__)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_EXTRACT = ("last_block", "whole")



def extract_program(text: str, extract: str = "last_block") -> str:
    """The program in a completion: the last fenced block tagged python/py (else the last untagged fenced
    block, else the whole text); `extract="whole"` returns the text unchanged."""
    if extract == "whole":
        return text
    blocks = _FENCE.findall(text)
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    if python:
        return python[-1]
    plain = [body for lang, body in blocks if not lang]
    return plain[-1] if plain else text


def _check_code_options(
    time_limit: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 1 << 20,
    concurrency: int = 4,
    all_or_nothing: bool = False,
    extract: str = "last_block",
    service: str | None = None,
    service_token: str | None = None,
    service_retries: int = 3,
    service_timeout: float = 300.0,
) -> Limits:
    if extract not in _EXTRACT:
        raise ValueError(f"reward 'code_tests': extract {extract!r} is not one of {', '.join(_EXTRACT)}")
    if isinstance(concurrency, float) and concurrency.is_integer():  # KFP passes integers as floats (4.0)
        concurrency = int(concurrency)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"reward 'code_tests': concurrency must be an integer >= 1, got {concurrency!r}")
    if service is not None and not re.match(r"^https?://", str(service)):
        raise ValueError(f"reward 'code_tests': service {service!r} must be an http(s):// URL")
    limits = Limits(wall_s=float(time_limit), memory_mb=int(memory_mb), output_bytes=int(max_output_bytes))
    try:
        return limits.check()
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"reward 'code_tests': {exc}") from None


@register("code_tests")
def code_tests_reward(
    prompts: list,
    completions: list,
    tests: list | None = None,
    time_limit: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 1 << 20,
    concurrency: int = 4,
    all_or_nothing: bool = False,
    extract: str = "last_block",
    service: str | None = None,
    service_token: str | None = None,
    service_retries: int = 3,
    service_timeout: float = 300.0,
    **kwargs: Any,
) -> list[float | None]:
    """Fraction of the row's `tests` the completion's program passes (1.0/0.0 with `all_or_nothing`);
    None for a row without tests. Runs in the sandbox (`alignpipe.sandbox`) with `time_limit` seconds
    (wall and CPU) per execution, `memory_mb` of address space and `max_output_bytes` of captured output,
    `concurrency` executions at a time; or on the reward service at `service` (token from `service_token`
    or the ALIGNPIPE_REWARD_TOKEN environment variable)."""
    limits = _check_code_options(time_limit, memory_mb, max_output_bytes, concurrency, all_or_nothing, extract,
                                 service, service_token, service_retries, service_timeout)
    concurrency = int(concurrency)
    if tests is None:
        raise ValueError(
            "reward 'code_tests' needs the 'tests' column in the data set (assert source or stdin/stdout cases); "
            "add 'tests' to the prompts file or remove 'code_tests' from rewards"
        )
    tests = list(tests)
    if len(tests) != len(completions):
        raise ValueError(f"reward 'code_tests': got {len(tests)} 'tests' values for {len(completions)} completions")
    parsed = [parse_tests(t) for t in tests]
    programs = [extract_program(completion_text(c), extract) for c in completions]
    if service:
        from ..sandbox.service import run_remote

        passed = run_remote(service, programs, parsed, limits, token=service_token or os.environ.get("ALIGNPIPE_REWARD_TOKEN"),
                            retries=service_retries, timeout=service_timeout)
    else:
        passed = run_local(programs, parsed, limits, concurrency)
    out: list[float | None] = []
    for p, ok in zip(parsed, passed):
        if p is None or not ok:
            out.append(None)
        elif all_or_nothing:
            out.append(float(all(ok)))
        else:
            out.append(sum(ok) / len(ok))
    return out


code_tests_reward.check_options = _check_code_options  # type: ignore[attr-defined]  # called by build()
