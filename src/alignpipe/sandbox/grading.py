"""Grading programs against tests in the sandbox: assert tests run after the program inside a harness
whose per-run random markers the program cannot forge; stdin/stdout cases compared after whitespace
normalisation. Used by the `code_tests` reward (locally) and by the reward service (remotely).
"""

from __future__ import annotations

import ast
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .core import Limits, Result, default_sandbox

HARNESS = r'''
def _alignpipe_harness(_w=__import__("os").write, _exec=exec, _compile=compile, _E=Exception, _enum=enumerate):
    _n = {nonce!r}
    _p = _compile({program!r}, "solution.py", "exec")
    _t = [_compile(s, "tests.py", "exec") for s in {tests!r}]
    _g = {{"__name__": "__main__", "__builtins__": __builtins__}}
    _exec(_p, _g)
    for _i, _c in _enum(_t):
        try:
            _exec(_c, _g)
            _ok = 1
        except _E:
            _ok = 0
        _w(1, ("\n%s %d %d\n" % (_n, _i, _ok)).encode())
    _w(1, ("\n%s END\n" % _n).encode())
_alignpipe_harness()
del _alignpipe_harness
'''


def split_asserts(source: str) -> list[str]:
    """Assert-style tests as one source chunk per top-level `assert` (with the statements before it;
    statements after the last assert join the last chunk). Raises ValueError for invalid Python."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"reward 'code_tests': the tests are not valid Python ({exc.msg}, line {exc.lineno})") from None
    chunks: list[list[ast.stmt]] = [[]]
    for stmt in tree.body:
        chunks[-1].append(stmt)
        if isinstance(stmt, ast.Assert):
            chunks.append([])
    if not chunks[-1]:
        chunks.pop()
    elif len(chunks) > 1:
        chunks[-2].extend(chunks.pop())
    return [ast.unparse(ast.Module(body=c, type_ignores=[])) for c in chunks if c]


def parse_tests(tests: Any) -> tuple[str, list] | None:
    """(`"asserts"`, [chunk, ...]) or (`"stdio"`, [(stdin, stdout), ...]), or None when there are none."""
    if tests is None:
        return None
    if isinstance(tests, (bytes, bytearray)):
        tests = tests.decode()
    if isinstance(tests, str):
        stripped = tests.strip()
        if not stripped:
            return None
        if stripped[0] in "[{":
            try:
                tests = json.loads(stripped)
            except json.JSONDecodeError:
                pass  # Python source that starts with a list/dict literal
        if isinstance(tests, str):
            chunks = split_asserts(tests)
            return ("asserts", chunks) if chunks else None
    if isinstance(tests, dict):
        if "inputs" in tests and "outputs" in tests:
            tests = [{"stdin": i, "stdout": o} for i, o in zip(tests["inputs"], tests["outputs"])]
        else:
            tests = [tests]
    cases = []
    for case in list(tests):
        if not isinstance(case, dict):
            raise ValueError(f"reward 'code_tests': a stdin/stdout test must be a mapping, got {case!r:.80}")
        stdin = case.get("stdin", case.get("input", ""))
        if "stdout" in case or "output" in case:
            stdout = case.get("stdout", case.get("output"))
        else:
            raise ValueError(f"reward 'code_tests': test {case!r:.80} has no 'stdout' (expected output)")
        cases.append(("" if stdin is None else str(stdin), "" if stdout is None else str(stdout)))
    return ("stdio", cases) if cases else None


def normalise_output(text: str) -> list[str]:
    """Lines with whitespace runs collapsed and ends stripped; blank lines dropped."""
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def harness_source(program: str, chunks: list[str], nonce: str) -> str:
    return HARNESS.format(nonce=nonce, program=program, tests=list(chunks))


def score_asserts(result: Result, nonce: str, n: int) -> list[bool]:
    """Which asserts passed, from the harness's markers; all False unless END was seen and the run ended
    cleanly (exit 0, within its limits)."""
    passed = [False] * n
    if not result.ok:
        return passed
    lines = result.stdout.decode("utf-8", "replace").splitlines()
    if f"{nonce} END" not in lines:
        return passed
    for i in range(n):
        passed[i] = f"{nonce} {i} 1" in lines
    return passed


def _run_row(program: str, parsed: tuple[str, list], limits: Limits, runner: Any) -> list[bool]:
    kind, tests = parsed
    if kind == "asserts":
        nonce = secrets.token_hex(16)
        result = runner(harness_source(program, tests, nonce), b"", limits)
        return score_asserts(result, nonce, len(tests))
    out = []
    for stdin, expected in tests:
        result = runner(program, stdin.encode(), limits)
        out.append(result.ok and normalise_output(result.stdout.decode("utf-8", "replace")) == normalise_output(expected))
    return out


def run_local(programs: list[str], parsed: list, limits: Limits, concurrency: int = 4) -> list[list[bool]]:
    """Pass/fail per test per row, every execution in the local sandbox, `concurrency` at a time."""
    sandbox = default_sandbox()  # refuses (SandboxUnavailable) when no layer works
    runner = sandbox.run
    jobs: list[tuple[int, tuple[str, list]]] = []
    for i, p in enumerate(parsed):
        if p is None:
            continue
        if p[0] == "stdio":  # one job per case so they spread over the pool
            jobs += [(i, ("stdio", [case])) for case in p[1]]
        else:
            jobs.append((i, p))
    results: list[list[bool]] = [[] for _ in parsed]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="code-tests") as pool:
        for (i, _), ok in zip(jobs, pool.map(lambda job: _run_row(programs[job[0]], job[1], limits, runner), jobs)):
            results[i].extend(ok)
    return results
