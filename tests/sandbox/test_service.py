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
