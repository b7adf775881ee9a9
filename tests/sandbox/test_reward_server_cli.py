"""`alignpipe reward-server` from the command line: refuses to serve without a token; serves /healthz."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

from alignpipe import cli


def test_refuses_without_a_token(monkeypatch, capsys):
    monkeypatch.delenv("ALIGNPIPE_REWARD_TOKEN", raising=False)
    assert cli.main(["reward-server", "--host", "127.0.0.1", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: reward-server needs a token")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_healthz_with_a_token_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alignpipe.cli", "reward-server", "--host", "127.0.0.1",
                             "--port", str(port), "--token-file", str(token), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "reward-server did not come up in 30 s"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
