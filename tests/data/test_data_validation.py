"""Validation: one test per malformed case, each asserting the `PATH:LINE:` prefix and the fix hint."""

from __future__ import annotations

import json
import math

import pytest

from alignpipe.cli import main as cli_main
from alignpipe.data import DataError, load, validate


def validate_cli(path, kind: str) -> int:
    """`alignpipe data validate PATH --kind KIND` (argparse errors exit 2 too)."""
    try:
        return cli_main(["data", "validate", str(path), "--kind", kind])
    except SystemExit as e:
        return int(e.code)

U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "4"}
S = {"role": "system", "content": "Be brief."}


def write_lines(path, lines) -> str:
    """Write JSONL: dicts are dumped, str/bytes written as given (for malformed lines)."""
    with open(path, "wb") as handle:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            if isinstance(line, str):
                line = line.encode("utf-8")
            handle.write(line + b"\n")
    return str(path)


def only_problem(path, kind):
    report = validate(path, kind)
    assert not report.ok
    assert len(report.problems) == 1, report.problems
    return report.problems[0]


# (id, kind, lines, line number, what (exact text after "PATH:LINE: "), fix hint substring)
CASES = [
    ("invalid-json", "sft", [{"messages": [U, A]}, '{"messages": [1, }'], 2,
     "invalid JSON: Expecting value at column 18", "one complete JSON object per line"),
    ("json-array-file", "sft", ['[{"messages": []},'], 1,
     "invalid JSON:", "looks like one JSON array"),
    ("not-an-object", "sft", [{"messages": [U, A]}, "[1, 2]"], 2,
     "line is a JSON array, not an object", "one JSON object per line"),
    ("string-line", "prompts", ['"just text"'], 1,
     "line is a JSON string, not an object", "one JSON object per line"),
    ("non-utf8", "sft", [{"messages": [U, A]}, b'{"messages": "caf\xe9"}'], 2,
     "not valid UTF-8 (byte 0xe9 at column 18)", "save the file as UTF-8"),
    ("missing-completion", "sft", [{"prompt": "2+2="}], 1,
     "missing field 'completion'", "sft rows need 'messages', or 'prompt' and 'completion'; this row has: 'prompt'"),
    ("missing-messages", "sft", [{"text": "hello"}], 1,
     "missing field 'messages'", "this row has: 'text'"),
    ("missing-answer", "prompts", [{"prompt": "2+2="}], 1,
     "missing field 'answer'", "reference 'answer'"),
    ("missing-prompt", "prompts", [{"question": "2+2=", "answer": "4"}], 1,
     "missing field 'prompt'", "RL prompt rows need 'prompt'"),
    ("missing-rejected", "preference", [{"prompt": "p", "chosen": "a"}], 1,
     "missing field 'rejected'", "preference rows need 'chosen' and 'rejected'"),
    ("preference-data-as-sft", "sft", [{"chosen": "a", "rejected": "b"}], 1,
     "row has 'chosen'/'rejected', which is preference data, but kind 'sft' needs other columns",
     "use kind 'preference'"),
    ("sft-data-as-preference", "preference", [{"messages": [U, A]}], 1,
     "row has 'messages', which is SFT data, but kind 'preference' needs other columns", "use kind 'sft'"),
    ("rl-data-as-sft", "sft", [{"prompt": "2+2=", "answer": "4"}], 1,
     "row has 'prompt' and 'answer', which is RL prompt data, but kind 'sft' needs a 'completion'",
     "use kind 'prompts'"),
    ("ambiguous-sft", "sft", [{"messages": [U, A], "prompt": "x", "completion": "y"}], 1,
     "row has both 'messages' and 'prompt'/'completion', so its format is ambiguous", "keep one format"),
    ("ambiguous-preference", "preference", [{"chosen": "a", "rejected": "b", "completion": "c"}], 1,
     "row has 'chosen'/'rejected' and 'completion', so its format is ambiguous", "drop or rename"),
    ("messages-not-list", "sft", [{"messages": "hi"}], 1,
     "field 'messages' is a string, expected a list of messages", '[{"role": "user"'),
    ("message-not-object", "sft", [{"messages": [U, "4"]}], 1,
     "messages[1] is a string, not a message object", '{"role": ..., "content": ...}'),
    ("content-not-string", "sft", [{"messages": [{"role": "user", "content": [{"type": "text"}]}, A]}], 1,
     "messages[0].content is a list, expected a string", "text-only messages"),
    ("answer-wrong-type", "prompts", [{"prompt": "2+2=", "answer": [4]}], 1,
     "field 'answer' is a list, expected a string or a number", "reference answer as a string"),
    ("answer-bool", "prompts", [{"prompt": "2+2=", "answer": True}], 1,
     "field 'answer' is a boolean, expected a string or a number", "or a number"),
    ("prompt-number", "prompts", [{"prompt": 7, "answer": "7"}], 1,
     "field 'prompt' is a number, expected a string or a list of messages", "write 'prompt' as"),
    ("difficulty-string", "prompts", [{"prompt": "p", "answer": "1", "difficulty": "hard"}], 1,
     "field 'difficulty' is a string, expected a number", "e.g. 0.3"),
    ("domain-number", "prompts", [{"prompt": "p", "answer": "1", "domain": 3}], 1,
     "field 'domain' is a number, expected a string", '"math"'),
    ("label-list", "prompts", [{"prompt": "p", "answer": "1", "label": ["a"]}], 1,
     "field 'label' is a list, expected a string or an integer", "class label"),
    ("unknown-role", "sft", [{"messages": [U, {"role": "bot", "content": "4"}]}], 1,
     "messages[1].role is 'bot', not a known role", "use one of: system, user, assistant"),
    ("missing-role", "sft", [{"messages": [{"content": "hi"}, A]}], 1,
     "messages[0] has no 'role'", "system, user or assistant"),
    ("missing-content", "sft", [{"messages": [U, {"role": "assistant"}]}], 1,
     "messages[1] has no 'content'", "'content'"),
    ("no-assistant", "sft", [{"messages": [S, U]}], 1,
     "'messages' has no assistant turn", '{"role": "assistant"'),
    ("no-user", "sft", [{"messages": [S, A]}], 1,
     "'messages' has no user turn", '{"role": "user"'),
    ("ends-with-user", "sft", [{"messages": [U, A, U]}], 1,
     "'messages' ends with a user turn", "the last turn must be the assistant's reply"),
    ("starts-with-assistant", "sft", [{"messages": [S, A, U, A]}], 1,
     "'messages' starts with an assistant turn", "start with the user's turn"),
    ("system-not-first", "sft", [{"messages": [U, S, A]}], 1,
     "messages[1] is a system message after other turns", "put one system message first"),
    ("empty-messages", "sft", [{"messages": []}], 1,
     "field 'messages' is an empty list", "at least one message"),
    ("empty-completion", "sft", [{"prompt": "2+2=", "completion": "  "}], 1,
     "field 'completion' is empty", "give it text"),
    ("empty-content", "sft", [{"messages": [U, {"role": "assistant", "content": ""}]}], 1,
     "messages[1].content is empty", "give the message text"),
    ("empty-answer", "prompts", [{"prompt": "p", "answer": ""}], 1,
     "field 'answer' is empty", "reference answer"),
    ("prompt-ends-with-assistant", "prompts", [{"prompt": [U, A], "answer": "4"}], 1,
     "'prompt' ends with an assistant turn", "a prompt must end with the user's turn"),
    ("pc-prompt-ends-with-assistant", "sft", [{"prompt": [U, A], "completion": [A]}], 1,
     "'prompt' ends with an assistant turn", "the reply goes in 'completion'"),
    ("completion-with-user-turn", "sft", [{"prompt": [U], "completion": [U]}], 1,
     "completion[0] is a user message", "earlier turns belong in 'prompt'"),
    ("pc-mixed-styles", "sft", [{"prompt": "2+2=", "completion": [A]}], 1,
     "'prompt' is a string but 'completion' is a list of messages", "plain strings for all of them"),
    ("implicit-mixed-styles", "preference", [{"chosen": "a", "rejected": [U, A]}], 1,
     "'chosen' and 'rejected' are not both strings or both lists of messages", "for both"),
    ("chosen-equals-rejected", "preference", [{"prompt": "p", "chosen": "same", "rejected": "same"}], 1,
     "'chosen' is identical to 'rejected'", "two different responses"),
    ("implicit-chosen-equals-rejected", "preference", [{"chosen": [U, A], "rejected": [U, A]}], 1,
     "'chosen' is identical to 'rejected'", "two different responses"),
    ("implicit-no-shared-prompt", "preference",
     [{"chosen": [U, A], "rejected": [{"role": "user", "content": "Other?"}, A]}], 1,
     "'chosen' and 'rejected' do not start with the same prompt turns", "explicit 'prompt' column"),
    ("implicit-prompt-not-ending-with-user", "preference",
     [{"chosen": [U, A, U, A], "rejected": [U, A, {"role": "user", "content": "Other"}, A]}], 1,
     "'chosen' and 'rejected' share turns up to an assistant turn, so the implicit prompt does not end with "
     "the user's turn", "identical up to the last user turn"),
    ("answer-null", "prompts", [{"prompt": "p", "answer": None}], 1,
     "field 'answer' is null", "fill it in or drop the row"),
    ("answer-nan", "prompts", ['{"prompt": "p", "answer": NaN}'], 1,
     "field 'answer' is NaN", "fill it in or drop the row"),
    ("prompt-null", "prompts", [{"prompt": None, "answer": "1"}], 1,
     "field 'prompt' is null", "fill it in"),
    ("difficulty-nan", "prompts", ['{"prompt": "p", "answer": "1", "difficulty": NaN}'], 1,
     "field 'difficulty' is NaN", "null / leave it out"),
    ("content-null", "sft", [{"messages": [U, {"role": "assistant", "content": None}]}], 1,
     "messages[1].content is null", "give the message text"),
    ("reserved-column", "prompts", [{"prompt": "p", "answer": "1", "completions": "x"}], 1,
     "column 'completions' clashes with the reward-function argument of the same name", "rename the column"),
    ("extra-column-two-types", "prompts",
     [{"prompt": "p", "answer": "1", "source": "gsm8k"}, {"prompt": "q", "answer": "2", "source": 3}], 2,
     "column 'source' is a number here but a string on line 1", "one type per column"),
    ("mixed-formats", "sft",
     [{"messages": [U, A]}, {"messages": [U, A]}, {"prompt": "2+2=", "completion": "4"}], 3,
     "row is prompt_completion:plain, but 2 of 3 rows are messages, starting at line 1", "use one format in a file"),
    ("mixed-styles-across-rows", "prompts",
     [{"prompt": "p", "answer": "1"}, {"prompt": [U], "answer": "4"}, {"prompt": "q", "answer": "2"}], 2,
     "row is prompt_answer:conversational, but 2 of 3 rows are prompt_answer:plain, starting at line 1",
     "use one format in a file"),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_malformed_row_is_reported_with_line_and_fix(tmp_path, case):
    name, kind, lines, line, what, fix = case
    path = write_lines(tmp_path / f"{name}.jsonl", lines)
    problem = only_problem(path, kind)
    assert problem.startswith(f"{path}:{line}: {what}"), problem
    hint = problem[len(f"{path}:{line}: {what}"):]
    assert fix in hint, problem
    assert problem.endswith(")"), problem


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"], ids=["zero-bytes", "blank-lines"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    problem = only_problem(str(path), "sft")
    assert problem.startswith(f"{path}:1: file is empty, no rows (give at least one row; sft rows need"), problem


def test_empty_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), path)
    problem = only_problem(str(path), "prompts")
    assert problem.startswith(f"{path}:1: file is empty, no rows (give at least one row; RL prompt rows need"), problem


def test_missing_file_is_one_problem(tmp_path):
    path = str(tmp_path / "nope.jsonl")
    report = validate(path, "sft")
    assert report.problems == [
        f"{path}: no such file or directory (check the path; data is a .jsonl or .parquet file "
        "or a datasets.save_to_disk folder)"
    ]
    assert report.rows == 0 and report.format == "unknown"


def test_parquet_problems_use_row_number_plus_one(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "answer": ["1", None, "3"]}), path)
    problem = only_problem(str(path), "prompts")
    assert problem.startswith(f"{path}:2: field 'answer' is null (fill it in or drop the row)")


def test_parquet_nan_is_reported(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "answer": [1.0, math.nan]}), path)
    assert only_problem(str(path), "prompts").startswith(f"{path}:2: field 'answer' is NaN (")


def test_problems_are_in_line_order_across_read_and_row_problems(tmp_path):
    path = write_lines(tmp_path / "order.jsonl", [{"prompt": "a"}, "{oops", {"messages": "x"}])
    problems = validate(path, "sft").problems
    assert [p.split(":")[1] for p in problems] == ["1", "2", "3"]


# ---------------------------------------------------------------- decisions: what is accepted


@pytest.mark.parametrize(
    "kind,row",
    [
        ("sft", {"messages": [S, U, A, A]}),  # two assistant turns in a row: TRL and ChatML allow it
        ("sft", {"messages": [U, U, A]}),  # two user turns in a row
        ("sft", {"messages": [U, A], "id": 7, "source": "gsm8k"}),  # harmless extras
        ("sft", {"prompt": [S, U], "completion": [A, A]}),  # several assistant messages as the completion
        ("preference", {"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": 9}),
        ("preference", {"chosen": [U, A], "rejected": [U, {"role": "assistant", "content": "5"}]}),
        ("prompts", {"prompt": "2+2=", "answer": 4, "domain": "math", "difficulty": 0.2, "label": None}),
        ("prompts", {"prompt": [S, U], "answer": "4", "tests": ["assert f() == 4"], "meta": {"a": 1}}),
        ("prompts", {"prompt": "p", "answer": "x", "label": 1}),
    ],
)
def test_accepted_rows(tmp_path, kind, row):
    path = write_lines(tmp_path / "ok.jsonl", [row])
    report = validate(path, kind)
    assert report.ok, report.problems


def test_unknown_kind_is_value_error(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [{"messages": [U, A]}])
    with pytest.raises(ValueError, match="unknown data kind 'rl'; choose one of: sft, preference, prompts"):
        validate(path, "rl")


# ---------------------------------------------------------------- cap, CLI, load errors


def test_problem_cap_at_20(tmp_path, capsys):
    path = write_lines(tmp_path / "many.jsonl", [{"prompt": f"q{i}"} for i in range(25)])
    report = validate(path, "prompts")
    assert len(report.problems) == 25
    assert validate_cli(path, "prompts") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 21
    assert lines[0].startswith(f"{path}:1: missing field 'answer'")
    assert lines[19].startswith(f"{path}:20: missing field 'answer'")
    assert lines[20] == "... and 5 more problems"
    with pytest.raises(DataError) as err:
        load(path, "prompts")
    assert len(err.value.problems) == 25
    assert str(err.value).splitlines()[-1] == "... and 5 more problems"
    assert len(str(err.value).splitlines()) == 21


def test_validate_cli_ok(tmp_path, capsys):
    path = write_lines(tmp_path / "ok.jsonl", [{"messages": [U, A]}, {"messages": [S, U, A]}])
    assert validate_cli(path, "sft") == 0
    captured = capsys.readouterr()
    assert captured.out == f"OK {path}: 2 rows, format messages\n"
    assert captured.err == ""


def test_validate_cli_bad_data(tmp_path, capsys):
    path = write_lines(tmp_path / "bad.jsonl", [{"messages": [U, A]}, "{"])
    assert validate_cli(path, "sft") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{path}:2: invalid JSON:")


def test_validate_cli_missing_file_and_unknown_kind(tmp_path, capsys):
    path = str(tmp_path / "missing.jsonl")
    assert validate_cli(path, "sft") == 2
    assert capsys.readouterr().err.startswith(f"{path}: no such file or directory")
    ok = write_lines(tmp_path / "ok.jsonl", [{"messages": [U, A]}])
    assert validate_cli(ok, "dpo") == 2
    assert "invalid choice: 'dpo'" in capsys.readouterr().err


def test_load_raises_data_error_with_problem_lines(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [{"messages": [U, A]}, {"messages": [U]}])
    with pytest.raises(DataError) as err:
        load(path, "sft")
    assert err.value.problems == [
        f"{path}:2: 'messages' has no assistant turn "
        "(add the reply to learn: {\"role\": \"assistant\", \"content\": ...})"
    ]
    assert str(err.value) == err.value.problems[0]
