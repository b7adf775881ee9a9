"""Readers (JSONL, Parquet, save_to_disk, s3:// seam), format detection on each, load() and write_jsonl."""

from __future__ import annotations

import hashlib
import json
import sys
import types

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import alignpipe
from alignpipe.data import FORMATS, KINDS, DataError, load, load_with_report, read_records, validate, write_jsonl

U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "4"}
A2 = {"role": "assistant", "content": "5"}
S = {"role": "system", "content": "Be brief."}

# two rows of every format, and the kind that takes it
SAMPLES = {
    "messages": ("sft", [{"messages": [U, A]}, {"messages": [S, U, A, U, A]}]),
    "prompt_completion:plain": ("sft", [{"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=", "completion": "6"}]),
    "prompt_completion:conversational": ("sft", [{"prompt": [U], "completion": [A]}, {"prompt": [S, U], "completion": [A]}]),
    "preference:explicit:plain": ("preference", [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}] * 2),
    "preference:explicit:conversational": ("preference", [{"prompt": [U], "chosen": [A], "rejected": [A2]}] * 2),
    "preference:implicit:plain": ("preference", [{"chosen": "2+2=4", "rejected": "2+2=5"}] * 2),
    "preference:implicit:conversational": ("preference", [{"chosen": [U, A], "rejected": [U, A2]}] * 2),
    "prompt_answer:plain": ("prompts", [{"prompt": "2+2=", "answer": "4", "domain": "math", "difficulty": 0.1},
                                        {"prompt": "3+3=", "answer": "6", "domain": "math", "difficulty": 0.2}]),
    "prompt_answer:conversational": ("prompts", [{"prompt": [U], "answer": "4"}, {"prompt": [S, U], "answer": "4"}]),
}


def test_every_format_has_a_sample():
    assert set(SAMPLES) == set(FORMATS)
    for fmt, (kind, _) in SAMPLES.items():
        assert fmt in KINDS[kind]


def _write(source: str, rows: list[dict], tmp_path) -> str:
    if source == "jsonl":
        return str(write_jsonl(rows, tmp_path / "data.jsonl"))
    if source == "parquet":
        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        return str(path)
    path = tmp_path / "data_arrow"
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("source", ["jsonl", "parquet", "arrow"])
@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_format_detected(tmp_path, fmt, source):
    kind, rows = SAMPLES[fmt]
    path = _write(source, rows, tmp_path)
    report = validate(path, kind)
    assert report.ok, report.problems
    assert report.format == fmt
    assert report.rows == 2
    assert report.conversational == (fmt == "messages" or fmt.endswith("conversational"))
    assert len(report.digest) == 64
    for other in KINDS:
        if other != kind:
            assert not validate(path, other).ok


@pytest.mark.parametrize("source", ["jsonl", "parquet", "arrow"])
def test_load_gives_trl_columns(tmp_path, source):
    rows = [{"prompt": [U], "completion": [A], "id": 1}, {"prompt": [S, U], "completion": [A], "id": 2}]
    dataset = load(_write(source, rows, tmp_path), "sft")
    assert isinstance(dataset, datasets.Dataset)
    assert dataset.column_names == ["prompt", "completion"]  # harmless extras dropped for sft
    assert dataset[1]["prompt"] == [S, U]
    assert dataset[0]["completion"] == [A]


def test_load_prompts_keeps_extras_and_stringifies_answers(tmp_path):
    rows = [
        {"prompt": "2+2=", "answer": 4, "difficulty": 1, "tests": ["a"]},
        {"prompt": "1/2=", "answer": "0.5", "label": 3, "domain": "math"},
        {"prompt": "9/3=", "answer": 3.0, "tests": ["b", "c"]},
    ]
    path = write_jsonl(rows, tmp_path / "rl.jsonl")
    dataset, report = load_with_report(path, "prompts")
    assert report.format == "prompt_answer:plain"
    assert dataset.column_names == ["prompt", "answer", "difficulty", "tests", "label", "domain"]
    assert dataset["answer"] == ["4", "0.5", "3"]
    assert dataset["difficulty"] == [1.0, None, None]
    assert dataset["label"] == [None, "3", None]
    assert dataset["tests"] == [["a"], None, ["b", "c"]]
    assert report.digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_messages_reduced_to_role_and_content(tmp_path):
    rows = [{"messages": [dict(U, name="alice"), A]}, {"messages": [U, A]}]
    dataset = load(write_jsonl(rows, tmp_path / "m.jsonl"), "sft")
    assert dataset.column_names == ["messages"]
    assert dataset[0]["messages"] == [U, A]


def test_read_records_jsonl_parquet_arrow(tmp_path):
    rows = [{"prompt": "é ✓ 中", "answer": "1"}, {"prompt": "b", "answer": "2"}]
    jsonl = write_jsonl(rows, tmp_path / "r.jsonl")
    assert read_records(jsonl) == rows
    assert read_records(_write("parquet", rows, tmp_path)) == rows
    assert read_records(_write("arrow", rows, tmp_path)) == rows
    assert read_records(f"file://{jsonl}") == rows


def test_read_records_blank_lines_bom_and_crlf(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\r\n{"a": 2}\r\n')
    assert read_records(path) == [{"a": 1}, {"a": 2}]
    assert read_records(_empty(tmp_path)) == []


def _empty(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    return path


def test_read_records_raises_for_unreadable(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataError) as err:
        read_records(path)
    assert err.value.problems[0].startswith(f"{path}:2: invalid JSON:")
    with pytest.raises(DataError, match="no such file or directory"):
        read_records(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read as Parquet: .* \(write it with pyarrow"):
        read_records(broken)
    folder = tmp_path / "plain_dir"
    folder.mkdir()
    with pytest.raises(DataError, match="not a datasets.save_to_disk folder"):
        read_records(folder)


def test_dataset_dict_folder(tmp_path):
    rows = [{"messages": [U, A]}]
    single = tmp_path / "single"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(single))
    assert validate(str(single), "sft").ok
    several = tmp_path / "several"
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows)})
    dd.save_to_disk(str(several))
    report = validate(str(several), "sft")
    assert report.problems == [
        f"{several}: holds several splits (train, test) (point at one split's folder, e.g. {several}/train)"
    ]
    assert validate(str(several / "train"), "sft").ok


def test_arrow_digest_is_canonical(tmp_path):
    rows = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]
    first = validate(_write("arrow", rows, tmp_path / "one"), "prompts").digest
    second = validate(_write("arrow", rows, tmp_path / "two"), "prompts").digest
    changed = validate(_write("arrow", rows[:1], tmp_path / "three"), "prompts").digest
    assert first == second != changed


def test_write_jsonl_is_utf8_and_refuses_nan(tmp_path):
    path = write_jsonl([{"t": "café"}], tmp_path / "sub" / "x.jsonl")
    assert path.read_bytes() == '{"t": "café"}\n'.encode("utf-8")
    with pytest.raises(DataError, match="record 1 holds NaN"):
        write_jsonl([{"a": 1}, {"a": float("nan")}], tmp_path / "nan.jsonl")
    assert not (tmp_path / "nan.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]  # no temporary file left behind


def test_s3_uris_go_through_storage(tmp_path, monkeypatch):
    local_file = write_jsonl([{"prompt": "p", "answer": "1"}], tmp_path / "f.jsonl")
    local_dir = tmp_path / "ds"
    datasets.Dataset.from_list([{"messages": [U, A]}]).save_to_disk(str(local_dir))
    calls = []

    def fetch_file(uri):
        calls.append(("file", uri))
        return local_file

    def fetch(uri):
        calls.append(("dir", uri))
        if uri.endswith("missing/"):
            raise FileNotFoundError("NoSuchKey")
        return str(local_dir)

    fake = types.ModuleType("alignpipe.storage")
    fake.fetch_file, fake.fetch = fetch_file, fetch
    monkeypatch.setitem(sys.modules, "alignpipe.storage", fake)
    monkeypatch.setattr(alignpipe, "storage", fake, raising=False)

    report = validate("s3://bucket/data/f.jsonl", "prompts")
    assert report.ok and report.path == "s3://bucket/data/f.jsonl"
    assert validate("s3://bucket/data/ds/", "sft").format == "messages"
    missing = validate("s3://bucket/missing/", "sft")
    assert missing.problems[0].startswith("s3://bucket/missing/: cannot fetch: NoSuchKey (check the URI")
    assert calls == [("file", "s3://bucket/data/f.jsonl"), ("dir", "s3://bucket/data/ds/"), ("dir", "s3://bucket/missing/")]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    local_file = bad
    assert validate("s3://bucket/bad.jsonl", "prompts").problems[0].startswith("s3://bucket/bad.jsonl:1: missing field 'answer'")


def test_json_lines_written_by_hand_with_numbers(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"{i}+1=", "answer": i + 1}) for i in range(3)))
    report = validate(path, "prompts")
    assert report.ok and report.rows == 3 and report.format == "prompt_answer:plain"
