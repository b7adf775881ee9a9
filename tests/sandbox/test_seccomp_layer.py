"""The seccomp layer's parts on their own: its system call table, its filter, its mount precondition.
(The adversarial corpus runs on it in an emulated pod: test_sandbox.py.)"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import textwrap

import pytest

from alignpipe.sandbox import Sandbox, SandboxUnavailable, seccomp


@pytest.mark.skipif(not ctypes.util.find_library("seccomp"), reason="needs libseccomp to cross-check")
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_syscall_numbers_agree_with_libseccomp(arch):
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    token = seccomp._AUDIT_ARCH[arch]  # libseccomp's SCMP_ARCH_* are the audit arch values
    wrong = {name: (nr, lib.seccomp_syscall_resolve_name_arch(token, name.encode()))
             for name, nr in seccomp._NR[arch].items()
             if lib.seccomp_syscall_resolve_name_arch(token, name.encode()) != nr}
    assert wrong == {}
    names = set(seccomp.DENIED) | set(seccomp.SELF_ONLY) | {"clone", "clone3", "socketpair", "setpriority",
                                                             "personality", "fcntl", "ioctl"}
    missing = {n for n in names - set(seccomp._NR[arch]) if lib.seccomp_syscall_resolve_name_arch(token, n.encode()) >= 0}
    assert missing == set(), "a rule's system call exists on this architecture but is not in the table"


CHECKS = r'''
import ctypes, errno, fcntl, json, os, resource, signal, socket, threading
out = {}
def attempt(name, call):
    try:
        call()
        out[name] = "allowed"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
attempt("socket_inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("socket_unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
attempt("socketpair_unix", lambda: socket.socketpair(socket.AF_UNIX))
attempt("fork", lambda: os.fork() == 0 and os._exit(0))
attempt("exec", lambda: os.execv("/bin/true", ["true"]))
attempt("kill_parent", lambda: os.kill(os.getppid(), 0))
attempt("kill_all", lambda: os.kill(-1, 0))
attempt("kill_self", lambda: os.kill(os.getpid(), 0))
attempt("prlimit_self", lambda: resource.prlimit(0, resource.RLIMIT_CORE, (0, 0)))
attempt("prlimit_parent", lambda: resource.prlimit(os.getppid(), resource.RLIMIT_CORE))
attempt("setpriority_user", lambda: os.setpriority(os.PRIO_USER, 0, 19))
attempt("setpriority_self", lambda: os.setpriority(os.PRIO_PROCESS, 0, 1))
r, w = os.pipe()
attempt("fcntl_setown", lambda: fcntl.fcntl(r, fcntl.F_SETOWN, os.getppid()))
attempt("fcntl_getfl", lambda: fcntl.fcntl(r, fcntl.F_GETFL))
attempt("memfd", lambda: os.memfd_create("x"))
attempt("unshare", lambda: os.unshare(os.CLONE_NEWUSER) if hasattr(os, "unshare") else (_ for _ in ()).throw(PermissionError(1, "")))
box = []
t = threading.Thread(target=lambda: box.append(1)); t.start(); t.join()
out["thread"] = "allowed" if box == [1] else "refused"
print(json.dumps(out))
'''


def test_filter_refuses_what_it_should_and_allows_the_rest(tmp_path):
    """The filter in a forked child of this process (no_new_privs + the filter, as a run installs them)."""
    if seccomp.machine() not in ("x86_64", "aarch64"):
        pytest.skip("the filter supports x86_64 and aarch64")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            prog = seccomp.build_filter(os.getpid())

            class FProg(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

            libc = ctypes.CDLL(None, use_errno=True)
            fp = FProg(len(prog) // 8, prog)
            assert libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0
            emit = lambda text: os.write(write, text.encode() + b"\n")  # noqa: E731 - pytest owns sys.stdout
            exec(compile(textwrap.dedent(CHECKS), "checks", "exec"), {"__name__": "__main__", "print": emit})
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    seen = json.loads(text.strip().splitlines()[-1])
    allowed = {k for k, v in seen.items() if v == "allowed"}
    assert allowed == {"socketpair_unix", "kill_self", "prlimit_self", "setpriority_self", "fcntl_getfl", "thread"}, seen
    assert seen["fork"] == seen["exec"] == seen["socket_inet"] == seen["kill_parent"] == "EPERM", seen


def test_refuses_where_mounts_are_writable(monkeypatch):
    """Here (a dev machine: the root filesystem is writable) the layer refuses with one line, naming why."""
    why = seccomp.check_mounts("/tmp", 65534, {65534})
    assert why is not None and "\n" not in why and "read-only" in why
    monkeypatch.setattr(Sandbox, "_probed", {})
    with pytest.raises(SandboxUnavailable) as info:
        Sandbox("seccomp")
    assert "\n" not in str(info.value) and "seccomp:" in str(info.value) and "refusing" in str(info.value)
