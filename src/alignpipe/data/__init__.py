"""Data sets for post-training: readers, TRL dataset formats, validation before any training.

Read JSON Lines, Parquet or a `datasets.save_to_disk` folder, from a local path or `s3://`:

    >>> from alignpipe import data
    >>> report = data.validate("train.jsonl", kind="sft")       # never raises for bad data
    >>> print(report.summary())                                  # OK train.jsonl: 120 rows, format messages
    >>> dataset = data.load("train.jsonl", kind="sft")          # datasets.Dataset, or DataError

Kinds: `sft` (messages, or prompt/completion), `preference` (prompt/chosen/rejected or chosen/rejected),
`prompts` (RL prompts: prompt + reference answer, optional domain/difficulty/label, extra columns kept
for reward functions). Formats and the rules behind them: `alignpipe.data.formats`.
Every problem is one line `PATH:LINE: <what is wrong> (<how to fix>)`.
"""

from .errors import MAX_SHOWN, DataError, ValidationReport, format_problems
from .formats import FORMATS, KINDS
from .io import read_records, read_table, write_jsonl
from .validation import check_table, load, load_with_report, validate

# The demo-data generator is added here by the lead: `from .demo import ...`

__all__ = [
    "DataError",
    "FORMATS",
    "KINDS",
    "MAX_SHOWN",
    "ValidationReport",
    "check_table",
    "format_problems",
    "load",
    "load_with_report",
    "read_records",
    "read_table",
    "validate",
    "write_jsonl",
]
