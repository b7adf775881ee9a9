"""The reward service: same answers as local runs, bounded load, token auth, loud outages."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from alignpipe.base import UserError
from alignpipe.rewards import get
from alignpipe.sandbox import SandboxUnavailable, default_sandbox
from alignpipe.sandbox.service import RewardServiceError, serve

TOKEN = "test-token-123"
TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"
CORPUS = [
    ("```python\ndef add(a, b):\n    return a + b\n```", TESTS),
    ("def add(a, b):\n    return 3", TESTS),
    ("import sys\nsys.exit(0)", TESTS),
    ("while True:\n    pass", TESTS),
    ("print(sum(map(int, input().split())))", [{"stdin": "1 2", "stdout": "3"}, {"stdin": "2 2", "stdout": "5"}]),
    ("print(1)", None),
]


@pytest.fixture(scope="module")
def server():
    try:
        default_sandbox()
    except SandboxUnavailable as exc:
        pytest.skip(f"no sandbox layer works here: {exc}")
    srv = serve("127.0.0.1", 0, TOKEN, workers=4, max_requests=1)
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def _score(**options):
    completions, tests = zip(*CORPUS)
    return get("code_tests")([""] * len(CORPUS), list(completions), tests=list(tests), time_limit=1.0, **options)


def test_batch_equals_local(server):
    local = _score()
    remote = _score(service=_url(server), service_token=TOKEN)
    assert remote == local == [1.0, 0.5, 0.0, 0.0, 0.5, None]


def test_wrong_token_is_401(server):
    with pytest.raises(RewardServiceError, match="401"):
        _score(service=_url(server), service_token="wrong")
    request = urllib.request.Request(_url(server) + "/v1/code_tests", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 401


def test_overload_is_refused_quickly(server):
    slow = json.dumps({"rows": [{"program": "import time\ntime.sleep(1.5)", "tests": ["asserts", ["assert True"]]}],
                       "limits": {"wall_s": 3}}).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def post():
        urllib.request.urlopen(urllib.request.Request(_url(server) + "/v1/code_tests", slow, headers), timeout=10).read()

    busy = threading.Thread(target=post)
    busy.start()
    time.sleep(0.5)
    start = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(_url(server) + "/v1/code_tests", slow, headers), timeout=10)
    assert info.value.code == 429
    assert time.monotonic() - start < 0.5
    busy.join()


def test_health_and_metrics(server):
    health = json.loads(urllib.request.urlopen(_url(server) + "/healthz", timeout=5).read())
    assert health["ok"] and health["layer"] in ("bubblewrap", "namespaces")
    metrics = urllib.request.urlopen(_url(server) + "/metrics", timeout=5).read().decode()
    assert "alignpipe_reward_executions_total" in metrics and "alignpipe_reward_in_flight" in metrics


def test_service_down_is_a_clear_error_not_a_zero():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nobody listens there
    start = time.monotonic()
    with pytest.raises(RewardServiceError, match="unavailable after 2 tries") as info:
        _score(service=f"http://127.0.0.1:{port}", service_retries=1)
    assert isinstance(info.value, UserError)
    assert "reward-server" in str(info.value)
    assert time.monotonic() - start < 5


HUNTER = """
import glob, os
found = []
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline") + glob.glob("/proc/[0-9]*/mem"):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError:
        continue
    if TOKEN.encode() in data:
        found.append(path)
if TOKEN in repr(dict(os.environ)):
    found.append("environ")
"""
KILLER = """
import os, glob, resource, signal
for pid in [int(p.split("/")[2]) for p in glob.glob("/proc/[0-9]*")]:
    if pid != os.getpid():
        for call in (lambda: os.kill(pid, signal.SIGKILL), lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, 3))):
            try:
                call()
            except OSError:
                pass
"""


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        return text.encode() in open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False


def _parent(pid: str) -> int | None:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_server_in_the_locked_down_pod_runs_the_seccomp_layer():
    """The chart's pod (uid 65534 here, runtime default seccomp, masked /proc, read-only mounts but /tmp,
    the token in env): bubblewrap and namespaces refuse, `auto` takes the seccomp layer and /healthz says so;
    a batch scores like anywhere else, and programs can neither find the token nor stop the server."""
    import os
    import secrets
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from podemu import __file__ as podemu
    from podemu import missing

    from alignpipe.sandbox import core

    if missing():
        pytest.skip(f"the pod emulation {missing()}")
    work = Path(tempfile.mkdtemp(prefix="alignpipe-pod-"))
    work.chmod(0o755)
    tmp = work / "tmp"
    tmp.mkdir()
    os.chown(tmp, 65534, 65534)
    token = "pod-token-" + secrets.token_hex(16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(core.__file__).resolve().parents[2]), "HOME": str(tmp),
           "TMPDIR": str(tmp), "ALIGNPIPE_REWARD_TOKEN": token}
    serve_cmd = (f"from alignpipe.sandbox.service import run_forever; "
                 f"raise SystemExit(run_forever('127.0.0.1', {port}, workers=2))")
    proc = subprocess.Popen(["/usr/bin/python3", podemu, "--uid", "65534", "--tmp", str(tmp), "--runtime-default",
                             "--masked-proc", "--", "/usr/bin/python3", "-c", serve_cmd],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = json.loads(urllib.request.urlopen(url + "/healthz", timeout=2).read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "reward-server did not come up in 60 s"
                time.sleep(0.2)
        assert health == {"ok": True, "layer": "seccomp"}
        rows = [{"program": "def add(a, b):\n    return a + b", "tests": ["asserts", ["assert add(1, 2) == 3",
                                                                                 "assert add(2, 2) == 5"]]},
                {"program": f"TOKEN = {token!r}\n" + HUNTER, "tests": ["asserts", ["assert not found, found"]]},
                {"program": KILLER, "tests": ["asserts", ["assert True"]]},
                {"program": "print(sum(map(int, input().split())))", "tests": ["stdio", [["1 2", "3"]]]}]
        request = urllib.request.Request(url + "/v1/code_tests", json.dumps({"rows": rows, "limits": {"wall_s": 5}}).encode(),
                                         {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        passed = json.loads(urllib.request.urlopen(request, timeout=60).read())["passed"]
        assert passed == [[True, False], [True], [True], [True]]
        assert json.loads(urllib.request.urlopen(url + "/healthz", timeout=5).read())["ok"] is True
        assert proc.poll() is None
        # the fork server gone (say, the OOM killer): /healthz fails, so the liveness probe restarts the pod
        from alignpipe.sandbox.seccomp import ZYGOTE_MARK

        forkservers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, ZYGOTE_MARK)
                       and _parent(p) == proc.pid]
        assert len(forkservers) == 1
        os.kill(forkservers[0], 9)
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=5)
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and json.loads(exc.read()) == {"ok": False, "layer": "seccomp"}
                break
            assert time.monotonic() < deadline, "/healthz still ok after the fork server died"
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            out = proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
        shutil.rmtree(work, ignore_errors=True)
    assert "sandbox: layer seccomp (no namespaces" in out, out
