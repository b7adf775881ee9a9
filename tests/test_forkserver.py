"""The fork server behind `alignpipe run --local`: kfp.local tasks served by forks of a warm process are
isolated from each other, report failures with their exit status, and fall back to plain subprocesses."""

import os

import pytest
from kfp import dsl, local

from alignpipe import runs
from alignpipe.forkserver import ForkServer, kfp_task


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def touch_state(tag: str) -> str:
    """Sets a module global and an environment variable, and reports what it found before doing so."""
    import os
    import sys

    import kfp

    seen = f"pid={os.getpid()} env={os.environ.get('FORKSERVER_TEST_MARK', '-')} global={getattr(kfp, '_fs_mark', '-')}"
    kfp._fs_mark = tag
    os.environ["FORKSERVER_TEST_MARK"] = tag
    print(f"task {tag}: {seen} task_env={os.environ.get('FORKSERVER_TASK_ENV', '-')}", flush=True)
    print(f"stderr of {tag}", file=sys.stderr, flush=True)
    return seen


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fail(how: str) -> str:
    import os
    import signal
    import sys

    if how == "raise":
        raise ValueError("boom from the task")
    if how == "exit":
        sys.exit(3)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return how


@pytest.fixture()
def server(tmp_path):
    lines = []
    with ForkServer(heavy=(), log=lines.append) as s, runs._tasks_through(s):
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
                   raise_on_error=True)
        s.lines = lines
        yield s


def test_tasks_are_forks_isolated_from_each_other(server, capsys):
    first = touch_state(tag="a").output
    second = touch_state(tag="b").output
    out = capsys.readouterr().out
    assert server.served == 2 and not server.fallbacks
    # the second task saw none of the first one's global or environment changes, and ran in another process
    assert first.endswith("env=- global=-") and second.endswith("env=- global=-")
    assert first.split()[0] != second.split()[0]
    assert "task a:" in out and "stderr of a" in out and "task b:" in out
    assert server.proc.poll() is None  # the zygote is still serving


def test_task_env_vars_and_failures_are_reported(server, monkeypatch, capsys):
    monkeypatch.setenv("FORKSERVER_TASK_ENV", "from-parent")  # set after the zygote started: the task sees it
    assert touch_state(tag="c").output.startswith("pid=")
    assert "task_env=from-parent" in capsys.readouterr().out
    for how in ("raise", "exit", "kill"):
        with pytest.raises(RuntimeError):
            fail(how=how)
    assert fail(how="fine").output == "fine"
    assert server.served == 5 and not server.fallbacks


def test_exit_statuses_as_a_subprocess_reports_them(server):
    cmd = fail.component_spec.implementation.container
    assert kfp_task(list(cmd.command) + ["--function_to_execute", "fail"]) is not None
    assert server.run(["sh", "-c", "echo not a component"]) is None  # not a kfp command: kfp.local runs it
    assert server.fallbacks


def test_an_import_time_variable_change_falls_back_to_a_subprocess(server, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1" if os.environ.get("OMP_NUM_THREADS") != "1" else "2")
    assert touch_state(tag="d").output.startswith("pid=")
    assert server.served == 0 and any("OMP_NUM_THREADS" in f for f in server.fallbacks)


def test_opt_out_runs_plain_subprocesses(tmp_path, monkeypatch):
    from alignpipe import settings

    monkeypatch.setenv("ALIGNPIPE_LOCAL_FORKSERVER", "0")
    assert settings.current().local_forkserver is False
