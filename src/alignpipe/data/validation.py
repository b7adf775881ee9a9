"""Validation before any training, and loading into a `datasets.Dataset`.

`validate(uri, kind)` reads the data, checks every row for the stage kind and returns a
`ValidationReport`; `load(uri, kind)` does the same and returns the rows as a `datasets.Dataset`
in the shape TRL expects, or raises `DataError` listing the problems.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING, Any

from . import formats
from .errors import DataError, ValidationReport
from .io import Table, read_table

if TYPE_CHECKING:
    import datasets


def _check_kind(kind: str) -> None:
    if kind not in formats.KINDS:
        raise ValueError(f"unknown data kind {kind!r}; choose one of: {', '.join(formats.KINDS)}")


def _problem(table: Table, line: int, issue: formats.Issue) -> str:
    return f"{table.path}:{line}: {issue.what} ({issue.fix})"


def check_table(table: Table, kind: str) -> ValidationReport:
    """Check rows already read (see `alignpipe.data.io.read_table`) for `kind`."""
    _check_kind(kind)
    report = ValidationReport(path=table.path, kind=kind, rows=len(table.rows), format="unknown", digest=table.digest)
    if table.empty:
        report.problems.append(
            f"{table.path}:1: file is empty, no rows "
            f"(give at least one row; {formats.NEEDS[kind]})"
        )
        return report
    # Problems in file order: unreadable lines and row problems interleaved by line number.
    numbered: list[tuple[int, str]] = []
    for problem in table.problems:
        numbered.append((_line_of(problem, table.path), problem))
    row_formats: list[tuple[int, str]] = []
    for line, row in table.rows:
        check = formats.check_row(row, kind)
        numbered.extend((line, _problem(table, line, issue)) for issue in check.issues)
        if check.format is not None:
            row_formats.append((line, check.format))
    if row_formats:
        counts = Counter(fmt for _, fmt in row_formats)
        top = max(counts.values())
        # the most common format wins; on a tie, the first one seen
        majority = next(fmt for _, fmt in row_formats if counts[fmt] == top)
        first_line = next(line for line, fmt in row_formats if fmt == majority)
        report.format = majority
        for line, fmt in row_formats:
            if fmt != majority:
                numbered.append((line, _problem(table, line, formats.Issue(
                    f"row is {fmt}, but {counts[majority]} of {len(row_formats)} rows are {majority}, "
                    f"starting at line {first_line}",
                    "use one format in a file; convert this row or move it to its own file",
                ))))
        if majority not in formats.KINDS[kind]:  # pragma: no cover - check_row only yields formats of its kind
            numbered.append((first_line, _problem(table, first_line, formats.Issue(
                f"format {majority} does not fit kind '{kind}'", formats.NEEDS[kind]))))
    if kind == "prompts":
        numbered.extend(_check_extra_column_types(table))
    numbered.sort(key=lambda item: item[0])
    report.problems = [problem for _, problem in numbered]
    return report


def _line_of(problem: str, path: str) -> int:
    rest = problem[len(path) + 1 :] if problem.startswith(path + ":") else ""
    number = rest.split(":", 1)[0]
    return int(number) if number.isdigit() else 0


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_extra_column_types(table: Table) -> list[tuple[int, str]]:
    """Extra columns of RL prompts become Arrow columns and reward kwargs: one type per column."""
    known = {"prompt", "answer", "label", *formats.PROMPT_OPTIONAL, *formats.RESERVED_REWARD_KWARGS}
    first: dict[str, tuple[str, int]] = {}
    found: list[tuple[int, str]] = []
    for line, row in table.rows:
        for name, value in row.items():
            if name in known or value is None:
                continue
            kind = _json_kind(value)
            if name not in first:
                first[name] = (kind, line)
            elif first[name][0] != kind:
                found.append((line, _problem(table, line, formats.Issue(
                    f"column '{name}' is a {kind} here but a {first[name][0]} on line {first[name][1]}",
                    "use one type per column (extra columns become one Arrow column each)",
                ))))
    return found


def validate(uri: str | os.PathLike[str], kind: str) -> ValidationReport:
    """Read `uri` and check it for a stage of `kind` ("sft", "preference" or "prompts").

    Never raises for bad data: a file that cannot be read at all gives a report with that one problem.
    Raises `ValueError` for an unknown `kind`.
    """
    _check_kind(kind)
    try:
        table = read_table(uri)
    except DataError as err:
        return ValidationReport(path=os.fspath(uri), kind=kind, rows=0, format="unknown", digest="",
                                problems=list(err.problems))
    return check_table(table, kind)


def load_with_report(uri: str | os.PathLike[str], kind: str) -> tuple[datasets.Dataset, ValidationReport]:
    """`load` that also returns the `ValidationReport` (its digest is the data's lineage)."""
    import datasets

    _check_kind(kind)
    table = read_table(uri)
    report = check_table(table, kind)
    report.raise_for_problems()
    columns = _columns(table.records, report.format, kind)
    try:
        dataset = datasets.Dataset.from_dict(columns)
    except Exception as exc:  # noqa: BLE001 - arrow raises several types for values it cannot store
        raise DataError(f"{table.path}: cannot build a table from the rows: {exc} "
                        "(give every column one type across rows)") from exc
    return dataset, report


def load(uri: str | os.PathLike[str], kind: str) -> datasets.Dataset:
    """Validate `uri` for `kind` and return it as a `datasets.Dataset` in TRL's format.

    Raises `DataError` (str = the problem lines, `.problems` = all of them) when it is not valid.
    Columns: `sft` -> `messages`, or `prompt` + `completion`; `preference` -> [`prompt`,] `chosen`,
    `rejected`; `prompts` -> `prompt`, `answer` (always a string: 28 -> "28"), the optional
    `domain`/`difficulty` (float)/`label` (string) and every extra column (for reward functions).
    Messages are reduced to {role, content}; other extra columns of sft/preference rows are dropped.
    """
    dataset, _ = load_with_report(uri, kind)
    return dataset


def _columns(records: list[dict[str, Any]], fmt: str, kind: str) -> dict[str, list[Any]]:
    conversational = fmt == "messages" or fmt.endswith(":conversational")

    def text_or_messages(value: Any) -> Any:
        return formats.clean_messages(value) if conversational else value

    if fmt == "messages":
        return {"messages": [formats.clean_messages(r["messages"]) for r in records]}
    if kind == "sft":
        names = ["prompt", "completion"]
    elif kind == "preference":
        names = (["prompt"] if "explicit" in fmt else []) + ["chosen", "rejected"]
    else:
        names = []
    if names:
        return {name: [text_or_messages(r[name]) for r in records] for name in names}
    # RL prompts: prompt + answer + optional + extras, union of keys in first-seen order
    columns: dict[str, list[Any]] = {
        "prompt": [text_or_messages(r["prompt"]) for r in records],
        "answer": [formats.answer_text(r["answer"]) for r in records],
    }
    order: list[str] = []
    for record in records:
        for name in record:
            if name not in columns and name not in order:
                order.append(name)
    for name in order:
        values = [record.get(name) for record in records]
        if name == "difficulty":
            values = [None if v is None else float(v) for v in values]
        elif name == "label":
            values = [None if v is None else str(v) for v in values]
        columns[name] = values
    return columns
