"""Errors and the validation report of `alignpipe.data`.

Every problem is one line, `PATH:LINE: <what is wrong> (<how to fix>)`, so that a user can jump to it
in an editor; file-level problems that have no line (a missing file, an unreadable Parquet file) are
`PATH: <what is wrong> (<how to fix>)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignpipe.base import UserError

#: How many problem lines are shown before `... and N more problems`.
MAX_SHOWN = 20


def format_problems(problems: list[str], limit: int = MAX_SHOWN) -> str:
    """The first `limit` problem lines, then `... and N more problems` if there are more."""
    shown = list(problems[:limit])
    rest = len(problems) - len(shown)
    if rest > 0:
        shown.append(f"... and {rest} more problem{'s' if rest != 1 else ''}")
    return "\n".join(shown)


class DataError(UserError, ValueError):
    """A data set cannot be read or is not valid for the stage that wants it.

    `str(err)` is the problem lines (at most `MAX_SHOWN`, then a count); `err.problems` holds all of them.
    It is a user error: the CLI prints it without a traceback and exits non-zero.
    """

    def __init__(self, problems: list[str] | str):
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(format_problems(self.problems))


@dataclass
class ValidationReport:
    """What `alignpipe.data.validate` found.

    `format` is one of `alignpipe.data.formats.FORMATS` (e.g. `"messages"`,
    `"prompt_completion:conversational"`, `"preference:explicit:plain"`, `"prompt_answer:plain"`),
    or `"unknown"` when no row could be recognised. `digest` is the sha256 of the file bytes (JSONL,
    Parquet) or of the canonical JSON rows (a `save_to_disk` folder).
    """

    path: str
    kind: str
    rows: int
    format: str
    digest: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def family(self) -> str:
        """The format without its variant: messages, prompt_completion, preference or prompt_answer."""
        return self.format.split(":", 1)[0]

    @property
    def conversational(self) -> bool:
        """True when the rows hold chat messages (lists of {role, content}) rather than plain strings."""
        return self.format == "messages" or self.format.endswith(":conversational")

    def summary(self) -> str:
        """`OK <path>: <rows> rows, format <format>` or the problem lines (capped)."""
        if self.ok:
            return f"OK {self.path}: {self.rows} rows, format {self.format}"
        return format_problems(self.problems)

    def raise_for_problems(self) -> None:
        if self.problems:
            raise DataError(self.problems)
