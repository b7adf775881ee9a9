"""The reward service: the `code_tests` executions of many trainers, on one locked-down pod.

`main(argv)` starts it (stdlib `ThreadingHTTPServer`):

    POST /v1/code_tests   {"rows": [{"program": str, "tests": [kind, tests] | null}, ...],
                           "limits": {"wall_s": 5, "memory_mb": 512, "output_bytes": 1048576}}
                          -> {"passed": [[true, false, ...] | [], ...]}
    GET  /healthz         -> {"ok": true, "layer": "..."} (503 with ok false once the sandbox cannot run)
    GET  /metrics         -> Prometheus text (requests by code, executions, rejected, in flight)

Auth: `Authorization: Bearer <token>` (the token from ALIGNPIPE_REWARD_TOKEN - the chart sets it from a
Kubernetes Secret, so it is on no disk the programs could read - or from `--token-file`), else 401. At most `--max-requests` batches run at once; one more is refused at once with 429
(never queued without bound); a body over `--max-body-mb` gets 413. Each batch runs `--workers` executions
at a time in the sandbox. `run_remote` is the client the reward uses, with retries; when the service stays
down it raises `RewardServiceError` (a UserError), so the stage fails loudly instead of scoring 0.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alignpipe.base import UserError

from .core import Limits, default_sandbox

log = logging.getLogger(__name__)


class RewardServiceError(UserError):
    """The reward service cannot be reached or refused the batch."""


# -------------------------------------------------------------------------------------------------
# client
# -------------------------------------------------------------------------------------------------


def run_remote(url: str, programs: list[str], parsed: list, limits: Limits, token: str | None = None,
               retries: int = 3, timeout: float = 300.0, backoff_s: float = 0.5) -> list[list[bool]]:
    """Pass/fail per test per row, computed by the service at `url`. Retries connection errors, 429 and
    503 `retries` times with exponential backoff; raises `RewardServiceError` when it stays down."""
    body = json.dumps({
        "rows": [{"program": p, "tests": list(t) if t is not None else None} for p, t in zip(programs, parsed)],
        "limits": {"wall_s": limits.wall_s, "memory_mb": limits.memory_mb, "output_bytes": limits.output_bytes},
    }).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    endpoint = url.rstrip("/") + "/v1/code_tests"
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                passed = json.loads(response.read())["passed"]
            if len(passed) != len(programs):
                raise RewardServiceError(f"reward service at {url} answered {len(passed)} rows for {len(programs)}")
            return [[bool(x) for x in row] for row in passed]
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace")
            if exc.code == 401:
                raise RewardServiceError(
                    f"reward service at {url} refused the token (401): set kwargs.service_token or "
                    "ALIGNPIPE_REWARD_TOKEN to the service's token") from None
            if exc.code not in (429, 502, 503, 504):
                raise RewardServiceError(f"reward service at {url} refused the batch ({exc.code}: {detail})") from None
            last = f"HTTP {exc.code} {detail}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, json.JSONDecodeError, KeyError) as exc:
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    raise RewardServiceError(
        f"reward service at {url} is unavailable after {retries + 1} tries ({last}); start it "
        "(`alignpipe reward-server`) or drop kwargs.service to run code_tests locally")


# -------------------------------------------------------------------------------------------------
# server
# -------------------------------------------------------------------------------------------------


class _Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[int, int] = {}
        self.executions = 0
        self.in_flight = 0
        self.seconds = 0.0

    def count(self, code: int) -> None:
        with self.lock:
            self.requests[code] = self.requests.get(code, 0) + 1

    def text(self) -> str:
        with self.lock:
            lines = ["# TYPE alignpipe_reward_requests_total counter"]
            lines += [f'alignpipe_reward_requests_total{{code="{c}"}} {n}' for c, n in sorted(self.requests.items())]
            lines += ["# TYPE alignpipe_reward_executions_total counter",
                      f"alignpipe_reward_executions_total {self.executions}",
                      "# TYPE alignpipe_reward_in_flight gauge", f"alignpipe_reward_in_flight {self.in_flight}",
                      "# TYPE alignpipe_reward_batch_seconds_total counter",
                      f"alignpipe_reward_batch_seconds_total {self.seconds:.3f}"]
        return "\n".join(lines) + "\n"


class RewardServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], token: str | None, workers: int = 4, max_requests: int = 4,
                 max_body_bytes: int = 32 << 20, max_wall_s: float = 30.0) -> None:
        self.sandbox = default_sandbox()  # probes the layer, logs it, refuses when none works
        self.token = token
        self.workers = workers
        self.slots = threading.BoundedSemaphore(max_requests)
        self.max_body_bytes = max_body_bytes
        self.max_wall_s = max_wall_s
        self.metrics = _Metrics()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: RewardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet; metrics count instead
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.metrics.count(code)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/healthz":
            healthy = self.server.sandbox.healthy()
            self._send(200 if healthy else 503, {"ok": healthy, "layer": self.server.sandbox.layer})
        elif self.path == "/metrics":
            self._send(200, self.server.metrics.text(), "text/plain; version=0.0.4")
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        server = self.server
        if self.path != "/v1/code_tests":
            return self._send(404, {"error": "not found"})
        if server.token and self.headers.get("Authorization", "") != f"Bearer {server.token}":
            return self._send(401, {"error": "missing or wrong token"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > server.max_body_bytes:
            self.close_connection = True
            return self._send(413, {"error": f"body over {server.max_body_bytes} bytes"})
        if not server.slots.acquire(blocking=False):
            self.rfile.read(length)
            return self._send(429, {"error": "busy: too many batches in flight, retry later"})
        try:
            with server.metrics.lock:
                server.metrics.in_flight += 1
            start = time.monotonic()
            try:
                request = json.loads(self.rfile.read(length))
                rows = request["rows"]
                lim = request.get("limits", {})
                limits = Limits(wall_s=min(float(lim.get("wall_s", 5.0)), server.max_wall_s),
                                memory_mb=int(lim.get("memory_mb", 512)),
                                output_bytes=int(lim.get("output_bytes", 1 << 20))).check()
                programs = [str(r["program"]) for r in rows]
                parsed = [tuple(r["tests"]) if r.get("tests") else None for r in rows]
            except (ValueError, KeyError, TypeError, UserError) as exc:
                return self._send(400, {"error": f"bad request: {exc}"})
            from alignpipe.sandbox.grading import run_local

            passed = run_local(programs, parsed, limits, server.workers)
            with server.metrics.lock:
                server.metrics.executions += sum(len(p) for p in passed)
                server.metrics.seconds += time.monotonic() - start
            self._send(200, {"passed": passed})
        finally:
            with server.metrics.lock:
                server.metrics.in_flight -= 1
            server.slots.release()


def serve(host: str = "127.0.0.1", port: int = 8080, token: str | None = None, **options: Any) -> RewardServer:
    """A started server (in a background thread); `.shutdown()` stops it."""
    server = RewardServer((host, port), token, **options)
    threading.Thread(target=server.serve_forever, daemon=True, name="reward-server").start()
    return server


def run_forever(host: str = "0.0.0.0", port: int = 8080, token_file: str | None = None, no_auth: bool = False,
                workers: int | None = None, max_requests: int = 4, max_body_mb: int = 32,
                max_wall_s: float = 30.0) -> int:
    """`alignpipe reward-server`: serve code_tests executions over HTTP until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = open(token_file).read().strip() if token_file else os.environ.get("ALIGNPIPE_REWARD_TOKEN")
    os.environ.pop("ALIGNPIPE_REWARD_TOKEN", None)  # no copy in what this process hands on
    if not token and not no_auth:
        raise UserError("reward-server needs a token: --token-file FILE or ALIGNPIPE_REWARD_TOKEN "
                        "(or --no-auth for local tests)")
    server = RewardServer((host, port), token or None, workers=workers or os.cpu_count() or 4,
                          max_requests=max_requests, max_body_bytes=max_body_mb << 20, max_wall_s=max_wall_s)
    log.info("reward-server: listening on %s:%d, sandbox %s", host, server.server_address[1],
             server.sandbox.describe())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
