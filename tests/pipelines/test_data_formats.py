"""`<dataset>_format` of prepare-data (issue 14 §4): `auto` detects other tools' formats (the converters'
own sample rows), says what it detected and records it; alignpipe's format passes through unchanged; rows
that cannot be converted fail the step as `PATH:LINE: problem (fix)`, counted; a bad format name is one
error line, exit 2, before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignpipe import cli, components, runs, steps
from alignpipe.data import DataError, validate
from alignpipe.data.demo import write_demo_data
from data.test_convert import (ALPACA, HF_PREF, OPENAI, OPENAI_PREF, SHAREGPT, VERL, VERTEX_PREF,  # tests/data
                               VERTEX_PROMPTS)

SPLITS = ("sft_train", "preference_train", "preference_eval", "rl_train", "eval_set")


class Art:
    """What a component sees of a KFP artifact: .path, .metadata, and log_metric for Metrics."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.metadata: dict = {}
        self.logged: dict = {}

    def log_metric(self, name, value):
        self.logged[name] = value


def jsonl(path: Path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def parquet(path: Path, rows) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def prepare(tmp_path: Path, uris: dict[str, str], formats: dict[str, str] | None = None, required=None):
    outputs = {s: Art(tmp_path / "out" / s) for s in SPLITS}
    summary = steps.prepare_data(uris, list(required or uris), outputs, base_model="tiny", formats=formats)
    return summary, outputs


@pytest.mark.parametrize("split,rows,fmt", [
    ("sft_train", ALPACA, "alpaca"), ("sft_train", SHAREGPT, "sharegpt"), ("sft_train", OPENAI, "openai"),
    ("preference_train", OPENAI_PREF, "openai"), ("preference_train", VERTEX_PREF, "vertex"),
    ("rl_train", VERL, "verl"), ("rl_train", VERTEX_PROMPTS, "vertex"),
], ids=["alpaca", "sharegpt", "openai", "openai-preference", "vertex-preference", "verl", "vertex-prompts"])
def test_auto_detects_each_format_and_records_it(tmp_path, capsys, split, rows, fmt):
    src = parquet(tmp_path / "src.parquet", rows) if fmt == "verl" else jsonl(tmp_path / "src.jsonl", rows)
    summary, out = prepare(tmp_path, {split: src})
    meta = out[split].metadata
    assert meta["source_format"] == fmt and meta["detected"].startswith(f"detected format {fmt}: ")
    assert meta["rows"] == meta["converted_rows"] == len(rows) and meta["source"] == src
    assert summary[split]["source_format"] == fmt
    log = capsys.readouterr().out
    param = {v: k for k, v in steps.DATA_PARAMS.items()}[split] + "_format"
    assert f"{param}: {src}: detected format {fmt}: " in log
    assert f"converted {len(rows)} of {len(rows)} rows from {fmt}" in log
    assert validate(out[split].path, steps.SPLITS[split]).ok  # what the stages read is alignpipe's format


def test_alignpipe_format_passes_through_unchanged(tmp_path, capsys):
    files = write_demo_data(tmp_path / "demo", seed=0)
    hf = jsonl(tmp_path / "pref.jsonl", HF_PREF)  # prompt/chosen/rejected strings: alignpipe's own format too
    uris = {"sft_train": str(files["sft_train"]), "rl_train": str(files["rl_train"]), "preference_train": hf}
    _, out = prepare(tmp_path, uris)
    for split, src in uris.items():
        assert Path(out[split].path).read_bytes() == Path(src).read_bytes(), split
        assert out[split].metadata["source_format"] == "alignpipe", split
        assert out[split].metadata["detected"].startswith("detected format alignpipe")
        assert "converted_rows" not in out[split].metadata
    assert "detected format alignpipe: the rows pass as" in capsys.readouterr().out


def test_alpaca_file_and_verl_parquet_through_the_component(tmp_path):
    """The prepare-data component as KFP calls it: an alpaca SFT file named by its format, a verl Parquet of RL
    prompts detected; the artifacts hold alignpipe rows the stages read, the metadata says what came in."""
    sft = jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    rl = parquet(tmp_path / "verl.parquet", VERL)
    out = {s: Art(tmp_path / "kfp" / s) for s in (*SPLITS, "metrics")}
    components.prepare_data.python_func(
        required=["sft_train", "rl_train"], seed=0, base_model="tiny", sft_data=sft, preference_data="",
        preference_eval_data="", rl_data=rl, eval_data="", sft_data_format="alpaca", rl_data_format="auto", **out)
    rows = [json.loads(line) for line in Path(out["sft_train"].path).read_text().splitlines()]
    assert rows[1] == {"messages": [{"role": "user", "content": "Translate the sentence into English.\n\nBonjour le monde."},
                                    {"role": "assistant", "content": "Hello, world."}]}
    meta = out["sft_train"].metadata
    assert {k: meta[k] for k in ("source_format", "detected", "rows", "format", "kind", "source")} == {
        "source_format": "alpaca", "detected": "", "rows": 2, "format": "messages", "kind": "sft", "source": sft}
    assert len(meta["digest"]) == 64
    rl_rows = [json.loads(line) for line in Path(out["rl_train"].path).read_text().splitlines()]
    assert [r["answer"] for r in rl_rows] == ["72", "10"] and rl_rows[0]["prompt"] == VERL[0]["prompt"]
    assert out["rl_train"].metadata["source_format"] == "verl"
    assert out["rl_train"].metadata["format"] == "prompt_answer:conversational"
    assert out["metrics"].logged == {"data/sft_train/rows": 2, "data/rl_train/rows": 2}
    assert out["eval_set"].metadata["rows"] == 0  # not given: an empty placeholder


def test_rows_that_cannot_be_converted_fail_the_step_each_named_and_counted(tmp_path):
    rows = [ALPACA[0], {"instruction": "Say hi.", "input": "", "output": None}, ALPACA[1],
            {"instruction": 7, "output": "x"}]
    src = jsonl(tmp_path / "alpaca.jsonl", rows)
    with pytest.raises(DataError) as e:
        prepare(tmp_path, {"sft_train": src}, {"sft_train": "alpaca"})
    problems = e.value.problems
    assert problems[0].startswith(f"{src}:2: ") and "'output' is null" in problems[0] and problems[0].endswith(")")
    assert problems[1].startswith(f"{src}:4: ") and "'instruction'" in problems[1]
    assert problems[2].startswith(f"{src}: 2 of 4 rows cannot be converted from alpaca (sft)")
    assert not Path(tmp_path / "out" / "sft_train").exists()  # nothing handed on


def test_wrong_format_for_the_rows_and_undetectable_rows(tmp_path):
    src = jsonl(tmp_path / "sharegpt.jsonl", SHAREGPT)
    with pytest.raises(DataError) as e:
        prepare(tmp_path, {"sft_train": src}, {"sft_train": "alpaca"})
    assert all(p.startswith(f"{src}:") for p in e.value.problems)
    assert "missing field 'instruction'" in e.value.problems[0]
    odd = jsonl(tmp_path / "odd.jsonl", [{"question": "1+1=", "solution": "2"}])
    with pytest.raises(DataError) as e:  # neither alignpipe's format nor another: alignpipe's own problems
        prepare(tmp_path, {"rl_train": odd})
    assert e.value.problems[0].startswith(f"{odd}:1: ")


def test_bad_format_name_is_one_error_line_exit_2(tmp_path, capsys):
    rc = cli.main(["run", "sft", "--local", "--workdir", str(tmp_path / "w"), "--param", "sft_data_format=alpacca"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: sft_data_format: unknown data format 'alpacca' (choose one of: auto, alpaca,")
    assert not (tmp_path / "w" / "kfp").exists()  # nothing ran
    with pytest.raises(steps.ConfigError, match="rl_data_format: unknown data format 'csv'"):
        prepare(tmp_path, {"rl_train": "x.jsonl"}, {"rl_train": "csv"})


def test_format_parameters_in_every_pipeline_that_has_the_data_set():
    for name in runs.PIPELINES:
        params = runs.parameters(runs.load(name))
        for data_param in steps.DATA_PARAMS:
            fmt = steps.format_param(data_param)
            assert (fmt in params) == (data_param in params), (name, fmt)
            if fmt in params:
                assert params[fmt] == ("String", "auto")
    rlvr = runs.load("rlvr")
    assert runs.parse_params(rlvr, ["sft_data_format=alpaca", "rl_data_format=verl"]) == {
        "sft_data_format": "alpaca", "rl_data_format": "verl"}
    with pytest.raises(runs.PipelineError, match="preference_data_format: unknown parameter of alignpipe-rlvr"):
        runs.parse_params(rlvr, ["preference_data_format=alpaca"])
