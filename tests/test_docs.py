"""Generated docs stay in step with the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_config_reference_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_readme_mentions_the_two_commands_and_every_stage():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for stage in ("sft", "reward_model", "rl", "preference", "evaluate", "register"):
        assert f"alignpipe stage {stage}" in readme or f"`{stage}`" in readme


def test_readme_pipeline_graphs_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "pipeline_graphs.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
