"""Readers and a writer for data sets: JSON Lines, Parquet and a `datasets.save_to_disk` folder.

A URI is a local path (`data/train.jsonl`, `file:///abs/train.jsonl`) or `s3://bucket/key`; S3 objects
are fetched to a local cache by `alignpipe.storage` through the one seam `local_path`.

What is read is kept with its position (1-based line of a JSONL file, row number + 1 of a table), so
that every later problem can be reported as `PATH:LINE: ...`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from alignpipe.storage import is_remote, to_path

from .errors import DataError

#: Suffixes that name a single file (fetched with `storage.fetch_file`); any other remote URI is a folder.
FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".pq")

_PARQUET_MAGIC = b"PAR1"
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class Table:
    """Rows read from one URI, before any format check."""

    path: str  # the URI as the user gave it; used in every problem line
    source: str  # "jsonl" | "parquet" | "arrow"
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, record)
    problems: list[str] = field(default_factory=list)  # lines that could not be read as records
    digest: str = ""
    empty: bool = False  # no content at all (not even an unreadable line)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record for _, record in self.rows]


def local_path(uri: str | os.PathLike[str]) -> Path:
    """The local path holding `uri`: remote objects (`storage.is_remote`) are fetched first, `file://` is
    stripped."""
    text = os.fspath(uri)
    if is_remote(text):
        from alignpipe import storage  # looked up at call time, so a test can stand in for the object store
        is_file = text.rstrip("/").lower().endswith(FILE_SUFFIXES) and not text.endswith("/")
        try:
            return Path(storage.fetch_file(text) if is_file else storage.fetch(text))
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - any fetch failure is a user-facing "cannot read"
            # a StorageError is already one line naming the endpoint and the fix; others get the generic hint
            hint = "" if isinstance(exc, getattr(storage, "StorageError", ())) else (
                " (check the URI, that the object exists, and the S3 endpoint and credentials)")
            raise DataError(f"{text}: cannot fetch: {exc}{hint}") from exc
    return to_path(text)


_local = local_path  # the old private name, still imported by alignpipe.steps; use local_path


def read_table(uri: str | os.PathLike[str]) -> Table:
    """Read `uri` into a `Table`. Raises `DataError` when the file or folder cannot be read at all;
    bad lines of a JSONL file are collected in `Table.problems` instead."""
    shown = os.fspath(uri)
    path = local_path(uri)
    if not path.exists():
        raise DataError(f"{shown}: no such file or directory (check the path; data is a .jsonl or .parquet file "
                        "or a datasets.save_to_disk folder)")
    if path.is_dir():
        return _read_arrow_dir(path, shown)
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise DataError(f"{shown}: cannot open: {exc.strerror or exc} (check the file's permissions)") from exc
    if head == _PARQUET_MAGIC or path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path, shown)
    return _read_jsonl(path, shown)


def read_records(uri: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of `uri` as dicts, in file order. Raises `DataError` (one line per problem) when the
    file cannot be read or a JSONL line is not a JSON object. An empty file gives `[]`."""
    table = read_table(uri)
    if table.problems:
        raise DataError(table.problems)
    return table.records


def _read_jsonl(path: Path, shown: str) -> Table:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{shown}: cannot read: {exc.strerror or exc} (check the file's permissions)") from exc
    table = Table(path=shown, source="jsonl", digest=hashlib.sha256(data).hexdigest())
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if not data.strip():
        table.empty = True
        return table
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue  # blank lines (and the final newline) are allowed
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            table.problems.append(
                f"{shown}:{number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}) "
                "(save the file as UTF-8, e.g. iconv -f latin1 -t utf-8)"
            )
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = "write one complete JSON object per line: no trailing commas, no object spread over several lines"
            if number == 1 and text.lstrip().startswith("["):
                hint = "the file looks like one JSON array; JSON Lines needs one object per line (alignpipe.data.write_jsonl)"
            table.problems.append(f"{shown}:{number}: invalid JSON: {exc.msg} at column {exc.colno} ({hint})")
            continue
        if not isinstance(value, dict):
            table.problems.append(
                f"{shown}:{number}: line is a JSON {_json_type(value)}, not an object "
                '(write one JSON object per line, e.g. {"messages": [...]})'
            )
            continue
        table.rows.append((number, value))
    return table


def _read_parquet(path: Path, shown: str) -> Table:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise DataError(f"{shown}: cannot read as Parquet: {exc} (write it with pyarrow/pandas to_parquet, or use JSONL)") from exc
    table = Table(path=shown, source="parquet", digest=_file_sha256(path))
    table.rows = [(index + 1, record) for index, record in enumerate(records)]
    table.empty = not records
    return table


def _read_arrow_dir(path: Path, shown: str) -> Table:
    import datasets

    if not any((path / name).exists() for name in ("state.json", "dataset_dict.json")):
        raise DataError(
            f"{shown}: not a datasets.save_to_disk folder (no state.json or dataset_dict.json inside) "
            "(point at a .jsonl/.parquet file, or save the data with Dataset.save_to_disk)"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types for broken folders
        raise DataError(f"{shown}: cannot load with datasets.load_from_disk: {exc} (save it again with save_to_disk)") from exc
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if len(splits) != 1:
            raise DataError(
                f"{shown}: holds several splits ({', '.join(splits)}) "
                f"(point at one split's folder, e.g. {shown.rstrip('/')}/{splits[0] if splits else 'train'})"
            )
        loaded = loaded[splits[0]]
    records = loaded.to_list()
    table = Table(path=shown, source="arrow", digest=canonical_digest(records))
    table.rows = [(index + 1, record) for index, record in enumerate(records)]
    table.empty = not records
    return table


def canonical_digest(records: Iterable[dict[str, Any]]) -> str:
    """sha256 of the rows as canonical JSON (sorted keys, UTF-8), one per line."""
    sha = hashlib.sha256()
    for record in records:
        sha.update(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        sha.update(b"\n")
    return sha.hexdigest()


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def write_jsonl(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write `records` as JSON Lines (UTF-8, one object per line) to a local `path`, atomically
    (a temporary file renamed into place). NaN/Infinity are refused: they are not JSON."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            for index, record in enumerate(records):
                if not isinstance(record, dict):
                    raise DataError(f"{target}: record {index} is a {type(record).__name__}, not a dict (pass dicts)")
                try:
                    line = json.dumps(record, ensure_ascii=False, allow_nan=False)
                except ValueError as exc:
                    raise DataError(f"{target}: record {index} holds NaN or Infinity, which JSON cannot store "
                                    "(replace it with null or a number)") from exc
                handle.write(line + "\n")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
