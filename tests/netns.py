"""Run a command in a private network namespace that has only the loopback interface.

torch's c10d TCPStore (what torchrun's rendezvous uses) binds the wildcard address whatever
MASTER_ADDR says, so a multi-process launch on a shared machine listens on every interface.
Tests and CI therefore run every torchrun / accelerate / deepspeed launch through this wrapper:
inside the namespace only `lo` (127.0.0.1) exists, nothing is reachable from outside, and ports
cannot collide with other jobs on the machine.

    from netns import netns_command          # tests/ is on sys.path (pyproject: pytest pythonpath)
    subprocess.run(netns_command(["torchrun", "--nproc-per-node=2", "train.py"]), check=True)

From a shell: `python tests/netns.py torchrun --nproc-per-node 2 train.py` (or
`python tests/netns.py .venv/bin/alignpipe stage sft --config cfg.yaml distributed.gpus=2`).

Root uses `unshare --net`; other users need unprivileged user namespaces (`unshare -rn`, mapped to
root inside). This is a test helper, not part of the package: users' pods need no namespace.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

# Bring loopback up (a new namespace starts with `lo` down), pin gloo to it, then exec the command.
INNER_SCRIPT = 'ip link set lo up && export GLOO_SOCKET_IFNAME=lo MASTER_ADDR=127.0.0.1 && exec "$@"'


def unshare_flags(root: bool | None = None) -> list[str]:
    """`--net` as root; `--map-root-user --net` (unshare -rn) otherwise."""
    if root is None:
        root = os.geteuid() == 0
    return ["--net"] if root else ["--map-root-user", "--net"]


def netns_command(cmd: list[str], *, root: bool | None = None) -> list[str]:
    """`cmd` wrapped so that it runs in a fresh loopback-only network namespace."""
    if not cmd:
        raise ValueError("netns_command: empty command")
    return ["unshare", *unshare_flags(root), "bash", "-c", INNER_SCRIPT, "_", *[str(c) for c in cmd]]


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None if a loopback-only namespace can be made here, else one line saying why not and the fix."""
    for tool in ("unshare", "ip", "bash"):
        if shutil.which(tool) is None:
            pkg = {"unshare": "util-linux", "ip": "iproute2", "bash": "bash"}[tool]
            return f"`{tool}` not found (install {pkg})"
    try:
        proc = subprocess.run(netns_command(["true"]), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return (f"cannot create a network namespace: {last} (run as root, or enable unprivileged user "
                "namespaces: sysctl kernel.unprivileged_userns_clone=1)")
    return None


def available() -> bool:
    return unavailable_reason() is None


if __name__ == "__main__":  # python tests/netns.py COMMAND [ARGS...]
    import sys

    if len(sys.argv) < 2:
        print("usage: python tests/netns.py COMMAND [ARGS...]", file=sys.stderr)
        sys.exit(2)
    reason = unavailable_reason()
    if reason:
        print(f"netns: {reason}", file=sys.stderr)
        sys.exit(2)
    os.execvp("unshare", netns_command(sys.argv[1:]))
