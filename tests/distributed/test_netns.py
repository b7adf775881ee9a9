"""The loopback-only network namespace wrapper (tests/netns.py, also runnable as a script)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import netns

SCRIPT = Path(netns.__file__).resolve()


def _need_netns():
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)


def test_command_shape_root_and_non_root():
    cmd = netns.netns_command(["torchrun", "--nproc-per-node", 2], root=True)
    assert cmd[:5] == ["unshare", "--net", "bash", "-c", netns.INNER_SCRIPT]
    assert cmd[5:] == ["_", "torchrun", "--nproc-per-node", "2"]
    assert netns.netns_command(["true"], root=False)[:3] == ["unshare", "--map-root-user", "--net"]
    assert "GLOO_SOCKET_IFNAME=lo" in netns.INNER_SCRIPT and "MASTER_ADDR=127.0.0.1" in netns.INNER_SCRIPT
    with pytest.raises(ValueError):
        netns.netns_command([])


def _links(cmd: list[str]) -> list[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split(":")[1].strip() for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("root", [None, False])
def test_only_loopback_inside(root):
    _need_netns()
    if root is False and os.geteuid() == 0:
        # `unshare -rn` is the non-root path; root can take it too where user namespaces are allowed.
        probe = subprocess.run(netns.netns_command(["true"], root=False), capture_output=True, timeout=20)
        if probe.returncode != 0:
            pytest.skip("unprivileged user namespaces are disabled here")
    assert _links(netns.netns_command(["ip", "-o", "link"], root=root)) == ["lo"]
    addrs = subprocess.run(netns.netns_command(["ip", "-o", "addr"], root=root), capture_output=True, text=True,
                           timeout=30, check=True).stdout
    assert "127.0.0.1" in addrs
    assert all(line.split()[1] == "lo" for line in addrs.splitlines()), addrs


def test_env_is_pinned_to_loopback():
    _need_netns()
    out = subprocess.run(netns.netns_command(["sh", "-c", 'echo "$GLOO_SOCKET_IFNAME $MASTER_ADDR"']),
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.split() == ["lo", "127.0.0.1"]


def test_exit_status_and_arguments_pass_through():
    _need_netns()
    proc = subprocess.run(netns.netns_command([sys.executable, "-c", "import sys; print(sys.argv[1:]); sys.exit(7)",
                                               "a b", "$HOME", "'q'"]), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 7
    assert proc.stdout.strip() == repr(["a b", "$HOME", "'q'"])


def test_the_host_loopback_is_not_reachable_from_inside():
    """A server on the host's 127.0.0.1 is reachable from a normal process and NOT from inside the namespace
    (so, equally, a wildcard listener inside is invisible outside)."""
    _need_netns()
    probe = ("import socket, sys\n"
             "try:\n"
             "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3).close()\n"
             "except OSError as e:\n"
             "    print(type(e).__name__); sys.exit(1)\n"
             "print('connected')\n")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = str(srv.getsockname()[1])
        outside = subprocess.run([sys.executable, "-c", probe, port], capture_output=True, text=True, timeout=30)
        assert outside.stdout.strip() == "connected"  # control: the probe can connect
        inside = subprocess.run(netns.netns_command([sys.executable, "-c", probe, port]),
                                capture_output=True, text=True, timeout=30)
        assert inside.returncode == 1, inside.stdout + inside.stderr
        assert inside.stdout.strip() == "ConnectionRefusedError"


def test_runs_as_a_script():
    """`python tests/netns.py CMD ...`: the same namespace from a shell, exit code passed through."""
    _need_netns()
    script = [sys.executable, str(SCRIPT)]
    assert _links(script + ["ip", "-o", "link"]) == ["lo"]
    out = subprocess.run(script + ["sh", "-c", 'echo "$GLOO_SOCKET_IFNAME $MASTER_ADDR"; exit 3'],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 3 and out.stdout.split() == ["lo", "127.0.0.1"]
    usage = subprocess.run(script, capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "usage: python tests/netns.py" in usage.stderr
