"""alignpipe.settings: the one table of environment variables, its parsing, and the generated reference."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from alignpipe import settings
from alignpipe.base import UserError
from alignpipe.settings import VARIABLES, Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent

#: ALIGNPIPE_-prefixed strings in the code that are not environment variables.
NOT_VARIABLES = {"ALIGNPIPE_RESULT_JSON"}  # a log-line marker (base.RESULT_MARKER)


def test_env_reference_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "env_reference.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_alignpipe_variable_in_the_code_is_in_the_table():
    proc = subprocess.run(["grep", "-rhoE", r"ALIGNPIPE_[A-Z0-9_]+", "--include=*.py", "src", "components",
                           "pipelines"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # a trailing underscore is a family in prose (ALIGNPIPE_GPU_*, ALIGNPIPE_*), not a variable
    used = {name for name in proc.stdout.split() if not name.endswith("_")} - NOT_VARIABLES
    assert len(used) > 20  # the grep found the code
    missing = sorted(used - {v.name for v in VARIABLES})
    assert not missing, f"add these to alignpipe/settings.py (and run scripts/env_reference.py): {missing}"


def test_the_table_has_one_row_per_field_with_a_description():
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    for v in VARIABLES:
        assert v.description.endswith((".", ")")), v.name
        assert re.fullmatch(r"(ALIGNPIPE|MLFLOW|AWS|KFP|KF_PIPELINES)_[A-Z0-9_]+", v.name), v.name
        assert v.group in settings.GROUPS
        assert v.read_by != "—", f"{v.name}: say who reads it"
    for lib_var in ("MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KF_PIPELINES_SA_TOKEN_PATH"):
        assert settings.by_name(lib_var).also  # documented as read by the library too
    assert settings.by_name("AWS_ACCESS_KEY_ID").read_by.endswith("boto3 too")


def test_defaults_agree_with_platform():
    from alignpipe import platform

    assert settings.DEFAULT_IMAGE == platform.DEFAULT_IMAGE
    assert settings.DEFAULT_GPU_IMAGE == platform.DEFAULT_GPU_IMAGE
    assert settings.S3_SECRET_NAME == platform.S3_SECRET_NAME
    assert settings.MLFLOW_SECRET_NAME == platform.MLFLOW_SECRET_NAME


def test_defaults_from_an_empty_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.mlflow_tracking_uri is None and s.mlflow_experiment_name == "alignpipe"
    assert s.mlflow_timeout == 10.0 and s.ddp_timeout_s == 1800 and s.launch_timeout_s is None
    assert s.progress is True and s.workdir == tmp_path
    assert s.cache_dir == Path("~/.cache/alignpipe").expanduser()
    assert s.gpu_node_selector == {} and s.gpu_tolerations == [] and s.gpu_resource == "nvidia.com/gpu"
    assert s.s3_endpoint_url is None and s.s3_region == "us-east-1"
    assert (s.s3_max_attempts, s.s3_concurrency, s.s3_part_size_mb) == (5, 8, 64.0)


def test_parsing_and_blank_means_unset():
    s = Settings.from_env({
        "ALIGNPIPE_PROGRESS": "0", "ALIGNPIPE_MLFLOW_TIMEOUT": " 2.5 ", "ALIGNPIPE_DDP_TIMEOUT_S": "60",
        "ALIGNPIPE_LAUNCH_TIMEOUT_S": "6", "ALIGNPIPE_GPU_TOLERATIONS": '[{"key": "gpu", "operator": "Exists"}]',
        "ALIGNPIPE_GPU_NODE_SELECTOR": '{"pool": "gpu"}', "ALIGNPIPE_CACHE_DIR": "~/c", "MLFLOW_EXPERIMENT_NAME": "",
        "ALIGNPIPE_IMAGE": "  ", "MLFLOW_S3_ENDPOINT_URL": "minio:9000/", "AWS_REGION": "eu-west-1",
        "ALIGNPIPE_S3_PART_SIZE_MB": "1", "ALIGNPIPE_S3_MAX_ATTEMPTS": "0",
    })
    assert s.progress is False and s.mlflow_timeout == 2.5 and s.ddp_timeout_s == 60 and s.launch_timeout_s == 6.0
    assert s.gpu_tolerations == [{"key": "gpu", "operator": "Exists"}] and s.gpu_node_selector == {"pool": "gpu"}
    assert s.cache_dir == Path("~/c").expanduser()
    assert s.mlflow_experiment_name == "alignpipe" and s.image == settings.DEFAULT_IMAGE  # blank = unset
    assert s.s3_endpoint_url == "http://minio:9000" and s.s3_region == "eu-west-1"
    assert s.s3_part_size_mb == 5.0 and s.s3_max_attempts == 1  # clamped, as storage always did
    assert Settings.from_env({"ALIGNPIPE_S3_ENDPOINT": "https://s3.x", "AWS_ENDPOINT_URL": "http://y"}) \
        .s3_endpoint_url == "https://s3.x"
    for on in ("1", "true", "Yes", "ON"):
        assert Settings.from_env({"ALIGNPIPE_PROGRESS": on}).progress is True


@pytest.mark.parametrize("name, value, message", [
    ("ALIGNPIPE_MLFLOW_TIMEOUT", "abc", "ALIGNPIPE_MLFLOW_TIMEOUT='abc' is not a number of seconds — fix or unset it"),
    ("ALIGNPIPE_MLFLOW_TIMEOUT", "-1", "ALIGNPIPE_MLFLOW_TIMEOUT='-1' must be at least 0"),
    ("ALIGNPIPE_DDP_TIMEOUT_S", "1.5", "ALIGNPIPE_DDP_TIMEOUT_S='1.5' is not a whole number"),
    ("ALIGNPIPE_LAUNCH_TIMEOUT_S", "nan", "ALIGNPIPE_LAUNCH_TIMEOUT_S='nan' is not a finite number"),
    ("ALIGNPIPE_PROGRESS", "maybe", "ALIGNPIPE_PROGRESS='maybe' is not a boolean — set 1 or 0"),
    ("ALIGNPIPE_GPU_TOLERATIONS", "{not json", "ALIGNPIPE_GPU_TOLERATIONS: not valid JSON"),
    ("ALIGNPIPE_GPU_TOLERATIONS", "{}", "ALIGNPIPE_GPU_TOLERATIONS: must be a JSON list, got dict"),
    ("ALIGNPIPE_GPU_NODE_SELECTOR", "[]", "ALIGNPIPE_GPU_NODE_SELECTOR: must be a JSON dict, got list"),
    ("ALIGNPIPE_SANDBOX_LAYER", "docker", "ALIGNPIPE_SANDBOX_LAYER='docker' is not one of auto, bubblewrap, namespaces, seccomp"),
    ("ALIGNPIPE_S3_MAX_ATTEMPTS", "many", "ALIGNPIPE_S3_MAX_ATTEMPTS='many' is not a number — fix or unset it"),
])
def test_bad_values_name_the_variable_and_the_fix(name, value, message):
    with pytest.raises(SettingsError) as e:
        Settings.from_env({name: value})
    assert message in str(e.value)
    assert isinstance(e.value, UserError)


def test_every_problem_is_reported_one_line_each():
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"ALIGNPIPE_PROGRESS": "x", "ALIGNPIPE_S3_CONCURRENCY": "y"})
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("ALIGNPIPE_PROGRESS") and lines[1].startswith("ALIGNPIPE_S3_")


def test_current_reads_the_environment_at_call_time(monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "one")
    assert settings.current().mlflow_experiment_name == "one"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "two")
    assert settings.current().mlflow_experiment_name == "two"


def test_migrated_readers_follow_the_environment(monkeypatch, tmp_path):
    from alignpipe import platform, storage, tracking

    monkeypatch.setenv("ALIGNPIPE_CACHE_DIR", str(tmp_path / "c"))
    assert storage.cache_dir() == tmp_path / "c"
    monkeypatch.setenv("ALIGNPIPE_IMAGE", "registry.example/a:1")
    assert platform.image() == "registry.example/a:1"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ALIGNPIPE_WORKDIR", str(tmp_path / "w"))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}"
    monkeypatch.setenv("ALIGNPIPE_GIT_SHA", "abc123")
    assert tracking.git_sha() == "abc123"


def test_importing_settings_is_light():
    code = ("import sys, alignpipe.settings; heavy = [m for m in ('torch', 'transformers', 'kfp', 'mlflow', 'boto3') "
            "if m in sys.modules]; print(heavy); "
            "own = sorted(m for m in sys.modules if m.startswith('alignpipe.')); print(own)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    heavy, own = out.splitlines()
    assert heavy == "[]"
    assert own == "['alignpipe.base', 'alignpipe.settings']"
