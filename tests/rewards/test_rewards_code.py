"""The `code_tests` reward: correct programs pass, cheating programs earn nothing."""

from __future__ import annotations

import json
import time

import pytest

from alignpipe.rewards import build, get, names
from alignpipe.rewards.code import extract_program, normalise_output, parse_tests, split_asserts
from alignpipe.sandbox import SandboxUnavailable, default_sandbox

ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nx = add(2, 2)\nassert x == 4\n"
SUM_STDIN = [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "10 -4", "stdout": "6"}]


@pytest.fixture(scope="module", autouse=True)
def _sandbox_or_skip():
    try:
        default_sandbox()
    except SandboxUnavailable as exc:
        pytest.skip(f"no sandbox layer works here: {exc}")


def reward(completions, tests, **options):
    return get("code_tests")([""] * len(completions), completions, tests=tests, **options)


def fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```\nDone."


def test_registered():
    assert "code_tests" in names()


def test_extract_program():
    assert extract_program("text\n```python\nA\n```\n```py\nB\n```\n") == "B\n"
    assert extract_program("```\nplain\n```") == "plain\n"
    assert extract_program("no fence at all") == "no fence at all"
    assert extract_program("```python\nA\n```", extract="whole") == "```python\nA\n```"


def test_parse_tests_forms():
    assert parse_tests(None) is None and parse_tests("  ") is None and parse_tests([]) is None
    kind, chunks = parse_tests(ADD_TESTS)
    assert kind == "asserts" and len(chunks) == 3 and "x = add(2, 2)" in chunks[2]
    assert parse_tests(SUM_STDIN) == ("stdio", [("1 2\n", "3\n"), ("10 -4", "6")])
    assert parse_tests(json.dumps(SUM_STDIN)) == parse_tests(SUM_STDIN)
    assert parse_tests({"inputs": ["1 2"], "outputs": ["3"]}) == ("stdio", [("1 2", "3")])
    assert parse_tests([{"input": "a", "output": "b"}]) == ("stdio", [("a", "b")])
    with pytest.raises(ValueError, match="not valid Python"):
        split_asserts("assert (")
    with pytest.raises(ValueError, match="stdout"):
        parse_tests([{"stdin": "1"}])


def test_normalise_output():
    assert normalise_output("3  4 \n\n5\n") == normalise_output("3 4\n5")
    assert normalise_output("3 4") != normalise_output("34")


def test_correct_and_wrong_programs():
    out = reward(
        [fenced("def add(a, b):\n    return a + b"),
         fenced("def add(a, b):\n    return a - b"),
         [{"role": "assistant", "content": fenced("def add(a, b):\n    return a + b")}],
         "def add(a, b): return a + b",                         # no fence: the whole completion
         fenced("import sys\nprint(sum(map(int, sys.stdin.read().split())))"),
         fenced("print(3)"),
         "anything"],
        [ADD_TESTS, ADD_TESTS, ADD_TESTS, ADD_TESTS, SUM_STDIN, SUM_STDIN, None],
    )
    assert out[0] == 1.0 and out[2] == 1.0 and out[3] == 1.0
    assert out[1] == pytest.approx(0.0)  # a - b: 1-2=-1, -1-1=-2, 2-2=0 -> all wrong
    assert out[4] == 1.0
    assert out[5] == 0.5  # right for the first case only
    assert out[6] is None


def test_fraction_and_all_or_nothing():
    half = fenced("def add(a, b):\n    return 3 if (a, b) == (1, 2) else 0")
    assert reward([half], [ADD_TESTS]) == [pytest.approx(2 / 3)]
    assert reward([half], [ADD_TESTS], all_or_nothing=True) == [0.0]


def test_program_that_takes_most_of_its_time_limit_passes():
    slow = fenced("import time\ntime.sleep(1.2)\ndef add(a, b):\n    return a + b")
    start = time.monotonic()
    assert reward([slow], [ADD_TESTS], time_limit=2.0) == [1.0]
    assert time.monotonic() - start < 4
    assert reward([fenced("while True:\n    pass")], [ADD_TESTS], time_limit=1.0) == [0.0]


CHEATS = {
    "exit_before_asserts": "import sys\nsys.exit(0)",
    "os_exit_before_asserts": "import os\nos._exit(0)",
    "fake_all_passed": "print('all tests passed')\nprint('OK END')\nimport sys\nsys.exit(0)",
    "patch_exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\ndef add(a, b): return None",
    "patch_assertion_error": "import builtins\nclass E(Exception): pass\nbuiltins.AssertionError = E\ndef add(a, b): return None",
    "patch_print_and_stdout": (
        "import builtins, sys, io\nbuiltins.print = lambda *a, **k: None\nsys.stdout = io.StringIO()\n"
        "def add(a, b): return None"
    ),
    "exit_inside_the_function": "import os\ndef add(a, b):\n    os._exit(0)",
    "sys_exit_inside_the_function": "import sys\ndef add(a, b):\n    sys.exit(0)",
    "atexit_fake": (
        "import atexit, os\natexit.register(lambda: os.write(1, b'\\nEND\\n'))\ndef add(a, b): return None"
    ),
    "patch_compare": "class Anything:\n    def __eq__(self, other): return True\ndef add(a, b): return Anything()",
    "kill_grader": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)",
    "hang": "while True:\n    pass",
}


def test_cheats_earn_nothing():
    programs = list(CHEATS.values())
    out = reward([fenced(p) for p in programs], [ADD_TESTS] * len(programs), time_limit=1.5, concurrency=4)
    scored = dict(zip(CHEATS, out))
    # an object whose __eq__ is always true does pass `==` asserts: that is the tests' weakness, not a hole
    scored.pop("patch_compare")
    assert scored == {name: 0.0 for name in scored}


def test_cheats_on_stdin_tests_earn_nothing():
    programs = ["import sys\nsys.stdout.write('3\\n')\nsys.exit(1)", "import os\nos._exit(0)",
                "print('x' * (2 << 20))"]
    out = reward([fenced(p) for p in programs], [SUM_STDIN] * len(programs), max_output_bytes=1 << 20)
    assert out == [0.0, 0.0, 0.0]


def test_concurrency_runs_in_parallel():
    program = fenced("import time\ntime.sleep(0.8)\ndef add(a, b):\n    return a + b")
    start = time.monotonic()
    assert reward([program] * 4, [ADD_TESTS] * 4, concurrency=4) == [1.0] * 4
    # through a KFP pipeline an integer option arrives as a float
    assert reward([program] * 2, [ADD_TESTS] * 2, concurrency=2.0) == [1.0] * 2
    assert time.monotonic() - start < 3.0  # serially it would take 3.2 s + start-up


def test_missing_column_and_bad_options():
    with pytest.raises(ValueError, match="'tests' column"):
        get("code_tests")([""], ["x"])
    with pytest.raises(ValueError, match="extract"):
        build([{"name": "code_tests", "kwargs": {"extract": "first"}}])
    with pytest.raises(ValueError, match="unknown option"):
        build([{"name": "code_tests", "kwargs": {"timeout": 3}}])
    funcs, weights = build([{"name": "code_tests", "kwargs": {"time_limit": 2, "all_or_nothing": True}}])
    assert funcs[0].__name__ == "code_tests"
    assert funcs[0]([""], [fenced("def add(a, b): return a + b")], tests=[ADD_TESTS]) == [1.0]
