"""The sandbox against an adversarial corpus, on every layer that works here.

Each hostile program must: end within its limits, leave no process behind, change no file outside its
temp dir, make no connection to a listener the test opens on 127.0.0.1, and leak no planted secret.

The `seccomp` layer is meant for the chart's locked-down pod, so its corpus runs in an emulation of that
pod (podemu.py: uid 65534, no_new_privs, the runtime default seccomp profile's namespace rules, a masked
/proc, every mount read-only but the temp area): a grader there (`PodSandbox`, with planted secrets in its
own environment) runs each program and hands the result back over a pipe.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest
from podemu import __file__ as PODEMU
from podemu import missing as pod_emulation_missing

from alignpipe.base import UserError
from alignpipe.sandbox import Limits, Sandbox, SandboxUnavailable
from alignpipe.sandbox import Result, core
from alignpipe.sandbox.seccomp import ZYGOTE_MARK

FAST = Limits(wall_s=1.5, memory_mb=256, nproc=16, output_bytes=64 << 10)


def _layer_or_skip(layer: str) -> Sandbox:
    try:
        return Sandbox(layer)
    except SandboxUnavailable as exc:
        pytest.skip(f"layer {layer} does not work here: {exc}")


SRC = Path(core.__file__).resolve().parents[2]
GRADER = r'''
import base64, json, sys
from dataclasses import asdict
from alignpipe.sandbox.core import Limits, Sandbox, SandboxUnavailable
try:
    box = Sandbox(sys.argv[1])
except SandboxUnavailable as e:
    print(json.dumps({"unavailable": str(e)}), flush=True)
    sys.exit(0)
print(json.dumps({"layer": box.layer, "describe": box.describe()}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    r = asdict(box.run(req["source"], base64.b64decode(req["stdin"]), Limits(**req["limits"])))
    r["stdout"], r["stderr"] = (base64.b64encode(r[k]).decode() for k in ("stdout", "stderr"))
    print(json.dumps(r), flush=True)
'''


class PodSandbox:
    """`Sandbox(layer)` in a grader process inside the emulated reward-server pod (podemu.py), as uid 65534
    with `planted` secrets in its environment (the server's token and a cloud key)."""

    def __init__(self, layer: str, pod_options: tuple[str, ...] = ("--runtime-default", "--masked-proc")) -> None:
        import tempfile

        self.work = Path(tempfile.mkdtemp(prefix="alignpipe-pod-"))
        self.work.chmod(0o755)
        self.tmp = self.work / "tmp"            # the pod's emptyDir /tmp
        self.tmp.mkdir()
        os.chown(self.tmp, 65534, 65534)
        self.tmp.chmod(0o700)
        (self.work / "grader.py").write_text(GRADER)
        self.planted = ["token-" + secrets.token_hex(12), "aws-" + secrets.token_hex(12)]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "HOME": str(self.tmp), "TMPDIR": str(self.tmp),
               "ALIGNPIPE_REWARD_TOKEN": self.planted[0], "AWS_SECRET_ACCESS_KEY": self.planted[1]}
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", PODEMU, "--uid", "65534", "--tmp", str(self.tmp), *pod_options, "--",
             "/usr/bin/python3", str(self.work / "grader.py"), layer],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        hello = json.loads(self.proc.stdout.readline() or '{"unavailable": "the grader did not start"}')
        self.unavailable = hello.get("unavailable")
        self.layer = hello.get("layer")
        self.description = hello.get("describe")
        self._lock = threading.Lock()

    def run(self, source: str, stdin: bytes | str = b"", limits: Limits | None = None) -> Result:
        limits = (limits or Limits()).check()
        if isinstance(stdin, str):
            stdin = stdin.encode()
        request = {"source": source, "stdin": base64.b64encode(stdin).decode(), "limits": limits.__dict__}
        with self._lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline())
        reply["stdout"], reply["stderr"] = (base64.b64decode(reply[k]) for k in ("stdout", "stderr"))
        return Result(**reply)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture(scope="module", params=["bubblewrap", "namespaces", "seccomp"])
def sandbox(request):
    if request.param != "seccomp":
        yield _layer_or_skip(request.param)
        return
    missing = pod_emulation_missing()
    if missing:
        pytest.skip(f"the seccomp layer runs in an emulated pod here, which {missing}")
    box = PodSandbox("seccomp")
    try:
        assert box.unavailable is None, box.unavailable  # the emulated pod is exactly what the layer is for
        yield box
    finally:
        box.close()


def _procs_with(token: bytes) -> list[int]:
    """PIDs (other than ours, and not zombies: a dead process cannot act) whose command line contains `token`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if token in cmdline and state != "Z":
            found.append(int(entry))
    return found


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _sandbox_processes() -> list[int]:
    """The bootstraps of bubblewrap/namespaces runs, and the runs forked by a seccomp fork server - of this
    test process: sandbox processes under another process tree (other test sessions on a shared machine) do
    not count, but one that was reparented to init (a detached grandchild that escaped) does."""
    servers = set(_procs_with(ZYGOTE_MARK.encode()))
    found = _procs_with(b"def _readall(fd)") + [p for p in servers if _ppid(p) in servers]
    sandboxy = set(found) | servers

    def ours(pid: int) -> bool:
        seen = 0
        while pid not in (0, 1) and seen < 64:
            if pid == os.getpid():
                return True
            if pid not in sandboxy and seen:
                return False  # under someone else's non-sandbox process
            pid = _ppid(pid) or 0
            seen += 1
        return True

    return [p for p in found if ours(p)]


def _no_sandbox_process_left() -> None:
    """No sandbox process of this session lingers: a leak persists (the detached grandchild below sleeps
    60 s); what other sessions on this shared machine are killing right now, and the kernel's clean-up of a
    killed run on a loaded machine, pass within the wait, so only processes seen at the start and still
    there at the end count."""
    first = set(_sandbox_processes())
    deadline = time.monotonic() + 10
    while first & set(_sandbox_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {}
    for pid in first & set(_sandbox_processes()):
        try:
            left[pid] = (_ppid(pid), Path(f"/proc/{pid}/cmdline").read_bytes()[:80])
        except OSError:
            pass  # gone meanwhile
    assert left == {}, f"a sandboxed process outlived its run: {left}"


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def _run(sandbox: Sandbox, source: str, stdin: bytes = b"", limits: Limits = FAST):
    start = time.monotonic()
    result = sandbox.run(textwrap.dedent(source), stdin, limits)
    elapsed = time.monotonic() - start
    assert elapsed < limits.wall_s + 3, f"run took {elapsed:.1f}s, limit {limits.wall_s}s"
    _no_sandbox_process_left()
    return result


# --------------------------------------------------------------------------------------------------
# programs that must work
# --------------------------------------------------------------------------------------------------


def test_runs_a_program_with_stdin(sandbox):
    result = _run(sandbox, "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n", b"3 4 5\n")
    assert result.ok, result
    assert result.stdout == b"12\n"


def test_temp_dir_is_writable_and_private(sandbox):
    result = _run(sandbox, """
        import os
        open("scratch.txt", "w").write("x" * 1000)
        print(os.path.getsize("scratch.txt"), os.getcwd() == os.environ["HOME"])
    """)
    assert result.ok, result.stderr
    assert result.stdout.split()[0] == b"1000"
    assert result.stdout.split()[1] == b"True"


def test_slow_program_within_its_limit_passes(sandbox):
    result = _run(sandbox, "import time\ntime.sleep(1.0)\nprint('done')\n", limits=Limits(wall_s=2.0))
    assert result.ok and result.stdout == b"done\n", result


def test_environment_is_scrubbed(sandbox, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-aws")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "s3cr3t-mlflow")
    result = _run(sandbox, "import os\nprint(sorted(os.environ))\n")
    assert result.ok
    names = eval(result.stdout)  # noqa: S307 - a list literal we printed
    assert set(names) <= {"PATH", "HOME", "LANG", "PYTHONIOENCODING", "PWD"}
    assert not {"AWS_SECRET_ACCESS_KEY", "ALIGNPIPE_REWARD_TOKEN"} & set(names)


# --------------------------------------------------------------------------------------------------
# the adversarial corpus
# --------------------------------------------------------------------------------------------------


def test_infinite_loop_is_stopped(sandbox):
    result = _run(sandbox, "while True:\n    pass\n")
    assert not result.ok and (result.timed_out or result.signal)


def test_busy_loop_ignoring_sigterm_is_killed(sandbox):
    result = _run(sandbox, """
        import signal
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
            signal.signal(s, signal.SIG_IGN)
        while True:
            pass
    """)
    assert not result.ok


def test_fork_bomb_is_contained(sandbox):
    result = _run(sandbox, """
        import os
        n = 0
        while True:
            try:
                if os.fork() == 0:
                    while True:
                        pass
                n += 1
            except OSError:
                pass
    """)
    assert not result.ok


def test_process_limit_holds(sandbox):
    result = _run(sandbox, """
        import os, time
        n = 0
        for _ in range(200):
            try:
                if os.fork() == 0:
                    time.sleep(5)
                    os._exit(0)
                n += 1
            except OSError:
                break
        print(n, flush=True)
        os._exit(0)
    """, limits=Limits(wall_s=3, nproc=8))
    assert int(result.stdout) < 8, result


def test_thread_bomb_is_bounded(sandbox):
    """Threads are allowed (the seccomp layer cannot fork, but it can start threads): their number is bounded
    (RLIMIT_NPROC; in the seccomp layer, where the uid is shared, by RLIMIT_AS: each reserves its stack)."""
    result = _run(sandbox, """
        import threading, time
        n = 0
        try:
            while True:
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
                n += 1
        except (RuntimeError, MemoryError):
            pass
        print(n, flush=True)
        import os
        os._exit(0)
    """, limits=Limits(wall_s=5, memory_mb=256, nproc=16))
    assert result.ok, result
    assert 1 <= int(result.stdout) < 256 // 8 + 16, result.stdout


def test_memory_bomb_is_refused(sandbox):
    result = _run(sandbox, """
        chunks = []
        while True:
            chunks.append(bytearray(50 << 20))
    """)
    assert not result.ok
    assert b"MemoryError" in result.stderr or result.signal


def test_huge_stdout_is_cut_quickly(sandbox):
    limits = Limits(wall_s=10, output_bytes=64 << 10)
    start = time.monotonic()
    result = _run(sandbox, "while True:\n    print('x' * 10000)\n", limits=limits)
    assert result.output_exceeded and not result.ok
    assert len(result.stdout) <= 64 << 10
    assert time.monotonic() - start < 5


def test_cannot_write_outside_its_temp_dir(sandbox, tmp_path):
    grader = tmp_path / "grader"
    grader.mkdir()
    tests_file = grader / "tests.py"
    tests_file.write_text("assert solve() == 42\n")
    before = tests_file.stat().st_mtime_ns, tests_file.read_text()
    token = secrets.token_hex(6)
    targets = [str(tests_file), str(grader / f"expected-{token}.txt"), f"/tmp/pwned-{token}",
               os.path.join(os.getcwd(), f"pwned-{token}"), f"/root/pwned-{token}", f"/var/tmp/pwned-{token}"]
    result = _run(sandbox, f"""
        import os
        for path in {targets!r}:
            for mode in ("w", "a"):
                try:
                    with open(path, mode) as f:
                        f.write("pass\\n")
                    print("WROTE", path)
                except OSError as e:
                    print("refused", path, type(e).__name__)
            try:
                os.unlink(path)
                print("UNLINKED", path)
            except OSError:
                pass
    """)
    # (bubblewrap's /tmp is the run's own tmpfs, so a write there is allowed: the host's /tmp is untouched)
    assert b"WROTE " + str(tests_file).encode() not in result.stdout, result.stdout
    assert (tests_file.stat().st_mtime_ns, tests_file.read_text()) == before
    for path in targets[1:]:
        assert not os.path.exists(path), path


def test_planted_secret_does_not_leak(sandbox, tmp_path, monkeypatch):
    secret = "planted-" + secrets.token_hex(12)
    monkeypatch.setenv("ALIGNPIPE_TEST_SECRET", secret)
    secret_file = tmp_path / "credentials"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    result = _run(sandbox, f"""
        import os, glob
        print(dict(os.environ))
        for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline") + [{str(secret_file)!r}, "/proc/1/environ"]:
            try:
                print(path, open(path, "rb").read())
            except OSError as e:
                print(path, type(e).__name__)
        try:
            print(open("/proc/%d/environ" % os.getppid(), "rb").read())
        except OSError as e:
            print("ppid", type(e).__name__)
    """)
    for planted in [secret, *getattr(sandbox, "planted", [])]:  # PodSandbox: in its grader's environment
        assert planted.encode() not in result.stdout + result.stderr


def test_another_runs_temp_dir_is_out_of_reach(sandbox):
    """A concurrent run's temp dir, next to this run's in the temp area. In the seccomp layer the runs share
    the grader's uid, so only Landlock (where the kernel has it; the layer's description says so) keeps them
    apart - without it the threat model says they can reach each other's files."""
    import tempfile

    area = Path(getattr(sandbox, "tmp", tempfile.gettempdir()))
    other = Path(tempfile.mkdtemp(prefix="alignpipe-sbx-", dir=area))
    secret = "other-run-" + secrets.token_hex(8)
    (other / "answer.txt").write_text(secret)
    if isinstance(sandbox, PodSandbox):  # a run of the same grader: same uid
        for path in (other, other / "answer.txt"):
            os.chown(path, 65534, 65534)
    try:
        result = _run(sandbox, f"""
            import os
            for attempt in (lambda: print(open({str(other / "answer.txt")!r}).read()),
                            lambda: open({str(other / "planted.txt")!r}, "w").write("x"),
                            lambda: print(os.listdir({str(area)!r}))):
                try:
                    attempt()
                except OSError as e:
                    print("refused", type(e).__name__)
        """)
        assert result.ok, result.stderr
        if sandbox.layer == "seccomp" and "Landlock on" not in sandbox.description:
            pytest.skip("no Landlock here: the seccomp layer's runs can reach each other's temp dirs")
        assert secret.encode() not in result.stdout
        assert not (other / "planted.txt").exists()
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_grader_memory_and_limits_are_out_of_reach(sandbox):
    """Same uid as the grader (seccomp layer): its memory, its fds and its limits stay out of reach."""
    result = _run(sandbox, """
        import os, resource, glob
        me = os.getpid()
        for pid in [p.split("/")[2] for p in glob.glob("/proc/[0-9]*")]:
            if int(pid) == me:
                continue
            for what in ("mem", "environ", "fd/0", "fd/1"):
                try:
                    with open("/proc/%s/%s" % (pid, what), "rb") as f:
                        f.read(1)
                    print("OPENED", pid, what)
                except OSError:
                    pass
        for name, call in [("prlimit", lambda: resource.prlimit(os.getppid(), resource.RLIMIT_CPU, (1, 1))),
                           ("setpriority", lambda: os.setpriority(os.PRIO_USER, 0, 19))]:
            try:
                call()
                print("CHANGED", name)
            except OSError as e:
                print("refused", name, type(e).__name__)
    """)
    assert result.ok, result.stderr
    if sandbox.layer == "seccomp":
        assert b"OPENED" not in result.stdout, result.stdout
        assert b"CHANGED" not in result.stdout, result.stdout
    follow_up = _run(sandbox, "import time\ntime.sleep(1.2)\nprint('still here')\n", limits=Limits(wall_s=3))
    assert follow_up.ok and follow_up.stdout == b"still here\n", follow_up


def test_no_connection_to_a_local_listener(sandbox, listener):
    result = _run(sandbox, f"""
        import socket
        for host in ("127.0.0.1", "localhost", "::1"):
            try:
                socket.create_connection((host, {listener.port}), timeout=0.5)
                print("CONNECTED", host)
            except OSError as e:
                print("no", host, type(e).__name__)
        print(sorted(n for _, n in socket.if_nameindex()))
    """)
    time.sleep(0.2)
    assert listener.connections == 0
    assert b"CONNECTED" not in result.stdout


def test_detached_grandchild_dies_with_the_run(sandbox, tmp_path, listener):
    token = "grandchild-" + secrets.token_hex(6)
    marker = tmp_path / "grandchild-acted"
    result = _run(sandbox, f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                # detached: try to act after the program ended, then linger under a recognisable name
                code = ("import time, socket\\n"
                        "time.sleep(1.0)\\n"
                        "open({str(marker)!r}, 'w').write('acted')\\n")
                try:
                    os.execv(sys.executable, [sys.executable, "-c", code + "time.sleep(60)", {token!r}])
                finally:
                    os._exit(0)
            os._exit(0)
        time.sleep(0.2)
        print("parent done", flush=True)
    """, limits=Limits(wall_s=5))
    if sandbox.layer == "seccomp":  # no second process can exist: the fork itself is refused
        assert b"PermissionError" in result.stderr, result
    else:
        assert result.ok and b"parent done" in result.stdout, result
    time.sleep(1.5)
    assert _procs_with(token.encode()) == []
    assert not marker.exists()
    assert listener.connections == 0


def test_killing_everything_it_can_does_not_reach_the_grader(sandbox):
    result = _run(sandbox, """
        import os, signal
        for target in (-1, 1, os.getppid()):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError as e:
                print(target, type(e).__name__)
    """)
    assert not result.ok or result.exit_code == 0  # whatever it did, we are still here


def test_grader_data_is_not_visible(sandbox):
    # the program, its tests and the configuration travel over a pipe, never through a file it can see
    result = _run(sandbox, """
        import os
        print(os.listdir("."), sorted(os.listdir("/proc/self/fd")))
    """)
    assert result.ok, result.stderr
    assert result.stdout.startswith(b"[]")


HARNESS_CHEATS = {  # tests/rewards/test_rewards_code.py has the same corpus through the reward
    "exit_before_asserts": "import sys\nsys.exit(0)",
    "os_exit_before_asserts": "import os\nos._exit(0)",
    "fake_all_passed": "print('all tests passed')\nprint('OK END')\nimport sys\nsys.exit(0)",
    "patch_exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\ndef add(a, b): return None",
    "patch_print_and_stdout": ("import builtins, sys, io\nbuiltins.print = lambda *a, **k: None\n"
                               "sys.stdout = io.StringIO()\ndef add(a, b): return None"),
    "exit_inside_the_function": "import os\ndef add(a, b):\n    os._exit(0)",
    "sys_exit_inside_the_function": "import sys\ndef add(a, b):\n    sys.exit(0)",
    "atexit_fake": "import atexit, os\natexit.register(lambda: os.write(1, b'\\nEND\\n'))\ndef add(a, b): return None",
    "thread_after_main": ("import threading, time, os\ndef late():\n    time.sleep(0.2)\n    os.write(1, b'\\nEND\\n')\n"
                          "threading.Thread(target=late).start()\ndef add(a, b): return None"),
}


def test_assert_harness_cannot_be_cheated(sandbox):
    """The grader's assert harness on this layer (the seccomp layer ends programs its own way: exit status,
    atexit hooks, non-daemon threads and flushing must behave as under `python main.py`)."""
    from alignpipe.sandbox.grading import _run_row, split_asserts

    tests = ("asserts", split_asserts("assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"))
    assert _run_row("def add(a, b):\n    return a + b", tests, FAST, sandbox.run) == [True, True]
    assert _run_row("def add(a, b):\n    return 3", tests, FAST, sandbox.run) == [True, False]
    scored = {name: _run_row(program, tests, FAST, sandbox.run) for name, program in HARNESS_CHEATS.items()}
    assert scored == {name: [False, False] for name in HARNESS_CHEATS}
    exits = {src: sandbox.run(src, limits=FAST) for src in ("raise SystemExit(3)", "import sys; sys.exit('bye')", "1/0")}
    assert [r.exit_code for r in exits.values()] == [3, 1, 1]
    assert b"bye" in exits["import sys; sys.exit('bye')"].stderr and b"ZeroDivisionError" in exits["1/0"].stderr


# --------------------------------------------------------------------------------------------------
# choosing a layer, refusing without one
# --------------------------------------------------------------------------------------------------


def test_refuses_with_one_line_when_no_layer_works(monkeypatch):
    monkeypatch.setenv("ALIGNPIPE_BWRAP", "/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable) as info:
        Sandbox("auto", python="/bin/false")
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert "\n" not in message and "bubblewrap" in message and "refusing" in message


def test_startup_line_names_the_layer(caplog, monkeypatch):
    monkeypatch.setattr(core.Sandbox, "_probed", {})
    with caplog.at_level(logging.INFO, logger="alignpipe.sandbox.core"):
        box = Sandbox("auto")
    assert any("sandbox: layer" in r.getMessage() and box.layer in r.getMessage() for r in caplog.records)


def test_bad_limits_are_user_errors(sandbox):
    with pytest.raises(UserError, match="wall_s"):
        sandbox.run("print(1)", limits=Limits(wall_s=0))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
                    reason="needs root (to become an unprivileged user), setpriv and /usr/bin/python3")
def test_works_unprivileged():
    """Both layers also work for an ordinary user (user namespaces), not only as root."""
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="alignpipe-unpriv-"))  # pytest's tmp dirs are 0700 (root only)
    bwrap = core._find_bwrap()
    src = Path(core.__file__).resolve().parents[2]
    script = tmp_path / "unpriv.py"
    script.write_text(textwrap.dedent("""
        import sys
        from alignpipe.sandbox import Sandbox, SandboxUnavailable
        for layer in ("bubblewrap", "namespaces"):
            try:
                box = Sandbox(layer, python="/usr/bin/python3")
            except SandboxUnavailable as e:
                print(layer, "unavailable", e)
                continue
            r = box.run("import os, socket\\nprint(os.getuid(), len(socket.if_nameindex()))\\n"
                        "open('/etc/x', 'w') if False else None")
            print(layer, r.ok, r.stdout.decode().strip())
    """))
    tmp_path.chmod(0o755)
    script.chmod(0o644)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src), "HOME": "/tmp"}
    if bwrap:
        env["ALIGNPIPE_BWRAP"] = bwrap
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                           str(script)], capture_output=True, text=True, env=env, timeout=60)
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines.get("namespaces", "").startswith("True 65534 1"), proc.stdout
    if bwrap and os.access(bwrap, os.X_OK):
        assert lines.get("bubblewrap", "").startswith("True 65534 1"), proc.stdout
