"""The CLI: user errors are one line on stderr with exit 2 and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alignpipe.cli import main


def test_config_schema_prints_json(capsys):
    assert main(["config", "schema", "sft"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "SFTConfig" and "train_data" in schema["required"]


def test_data_validate_ok_and_bad(demo_data, tmp_path, capsys):
    assert main(["data", "validate", demo_data["rl_train"], "--kind", "prompts"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK ") and "rows" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=", "answer": "2"}\nnot json\n')
    assert main(["data", "validate", str(bad), "--kind", "prompts"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "Traceback" not in err


def test_stage_with_bad_config_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("train_data: x.jsonl\noutput_dir: o\nlearning_rate: 1\n")
    proc = subprocess.run([sys.executable, "-m", "alignpipe.cli", "stage", "sft", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {cfg}: learning_rate: unknown key (remove it, or check the spelling against " \
                                  "`alignpipe config schema`)"


def test_stage_with_missing_data_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "alignpipe.cli", "stage", "sft", f"train_data={tmp_path}/none.jsonl",
                           f"output_dir={tmp_path}/o", "tracking=false"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "none.jsonl" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_stage_runs_from_cli_and_writes_result(demo_data, tmp_path, capsys):
    rc = main(["stage", "sft", "--result", str(tmp_path / "r.json"), "model=tiny", f"train_data={demo_data['sft_train']}",
               f"output_dir={tmp_path / 'm'}", "tracking=false", "training.max_steps=3", "max_length=32",
               "training.batch_size=8"])
    assert rc == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["stage"] == "sft" and result["metrics"]["train/steps"] == 3


@pytest.mark.parametrize("argv", [["stage", "nope"], ["data", "validate", "x", "--kind", "other"]])
def test_argparse_rejects_unknown_choices(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
