"""bench/gpu_check.py --cpu: the GPU check's whole path (SFT -> GRPO -> evaluate base/SFT/RL -> register) at tiny
size on the CPU, so the script a maintainer runs on a GPU is known to work (issue 9 §5)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_mode_runs_every_stage_and_reports_throughput(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    report = gpu_check.main(["--cpu", "--out", str(tmp_path / "gc")])
    assert list(report["stages"]) == ["sft", "rl", "evaluate", "register"]
    assert report["stages"]["sft"]["tokens_per_s"] > 0 and report["stages"]["rl"]["tokens_per_s"] > 0
    assert report["sft_mfu"] is None  # no GPU peak on the CPU
    assert set(report["accuracy"]) == {"base", "sft", "rl"}
    assert json.loads((tmp_path / "gc" / "gpu_check.json").read_text())["mode"] == "cpu"
    out = capsys.readouterr().out
    assert "tokens/s" in out and "SFT MFU: n/a" in out
