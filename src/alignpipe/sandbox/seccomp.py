"""The `seccomp` layer: a sandbox for a locked-down pod, built without namespaces.

Why it exists: both stronger layers (`bubblewrap`, `namespaces`) create namespaces and mount a fresh
/proc. The Helm chart's reward-server pod (non-root uid, seccomp RuntimeDefault, capabilities dropped,
masked /proc, read-only root filesystem, no egress) allows neither, so without this layer the server
refuses to start. This layer uses only what such a pod allows an unprivileged process: `no_new_privs`, a
seccomp-bpf filter it installs on itself, `PR_SET_DUMPABLE`, rlimits and file permissions. It is chosen by
`auto` only after the other two fail, and only when its own preconditions hold (checked, not assumed).

Design (docs/code-rewards.md, threat model):

* **A fork server, not an exec per run.** At start-up the grader starts one trusted interpreter (the
  "zygote", `ZYGOTE` below) and makes it non-dumpable before anything else. Each run is a `fork()` of
  the zygote: no `execve`, so the run is non-dumpable from its first instruction (an exec would make it
  dumpable again until the first line of Python, a window in which another run of the same uid could open
  its `/proc/<pid>/mem` or `/proc/<pid>/fd/1` and keep them). The run reads its configuration (limits,
  filter, program) from a pipe, closes every other descriptor (the zygote's control socket included),
  starts a new session, sets rlimits, enters its private 0700 temp dir with a scrubbed environment, sets
  `no_new_privs`, installs the filter and executes the program in the same interpreter.
* **Non-dumpable everything.** Programs run as the server's uid (the pod has one uid). A non-dumpable
  process's `/proc/<pid>/{mem,environ,fd,...}` belong to root and `ptrace` access is refused, so a program
  can read neither the server's memory, environment (its token) and sockets, nor another run's nonce or
  stdout pipe. The grader makes itself non-dumpable when this layer becomes active.
* **The filter** (`build_filter`, per run, knows the run's pid), default allow, returning an error for:
  new processes (`fork`, `vfork`, `clone` without `CLONE_THREAD` or with namespace flags -> EPERM;
  `clone3` -> ENOSYS so libc falls back to `clone`; threads stay allowed), `execve`/`execveat` (nothing to
  run but the program; an exec would also undo non-dumpable), every `socket()` and `socketpair()` but
  `AF_UNIX` pairs (no network: nothing can reach an address, a listener on 127.0.0.1 included), signals
  to any process but itself (`kill`, `tgkill`, `rt_*sigqueueinfo` other than its own pid; `tkill`,
  `pidfd_*`), `fcntl(F_SETOWN/F_SETSIG/F_SETOWN_EX)` and `ioctl(FIOSETOWN/SIOCSPGRP/TIOCSTI)` (SIGIO to
  another process), `prlimit64`/`setpriority`/`sched_set*` on another process (same uid could otherwise
  cap the server's CPU time or files), `ptrace`, `process_vm_*`, `kcmp`, `io_uring_*`, namespaces and
  mounts, SysV IPC and POSIX message queues (shared by the pod), `memfd_create` (memory outside
  `RLIMIT_AS`), `keyctl`, `bpf`, `perf_event_open`, `userfaultfd`, `personality` changes and the
  privileged rest. A foreign architecture (`int 0x80`, x32) kills the process.
* **No fork means no fork bomb and no detached grandchild**: when the run's process dies, its threads die
  with it, and nothing else of the run exists.
* **Landlock where the kernel has it** (and the pod's seccomp profile allows `landlock_*`): a run writes
  only beneath its own temp dir and reads everything but the temp area, so runs of the shared uid cannot
  reach each other's temp dirs. The probe finds out whether it works; if it does, every run requires it.

Preconditions (`check_mounts`, at start-up; otherwise the layer refuses with one line): the temp area
(`tempfile.gettempdir()`, the pod's emptyDir `/tmp`) is a mount of its own and every other mount is
read-only, a kernel interface (proc, sysfs, cgroup, devpts, mqueue), or holds nothing the run's uid may
write (e.g. `/etc/hosts` bound by the kubelet, root's 0644). The filter, non-dumpable and no_new_privs are
then verified by a probe program.

What it does not stop: programs can *read* every file the uid can read (the image; without Landlock also
the temp dirs of concurrent runs) and `/proc` entries that are world-readable; all runs share the temp
area's total size (bounded by the emptyDir's `sizeLimit`, per file by `RLIMIT_FSIZE`); kernel bugs in
allowed system calls (use gVisor/Kata: `rewardServer.runtimeClassName`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import selectors
import socket
import stat
import struct
import subprocess
import threading
import time

log = logging.getLogger(__name__)

# --- system call numbers -----------------------------------------------------------------------------
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_BIT = 0x40000000

_NR = {
    "x86_64": {
        "socket": 41, "socketpair": 53, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "execve": 59,
        "execveat": 322, "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129,
        "rt_tgsigqueueinfo": 297, "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "unshare": 272, "setns": 308,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "personality": 135, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "memfd_create": 319, "memfd_secret": 447,
        "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65, "semctl": 66,
        "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "mq_open": 240,
        "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244,
        "mq_getsetattr": 245, "prlimit64": 302, "setpriority": 141, "sched_setparam": 142,
        "sched_setscheduler": 144, "sched_setaffinity": 203, "sched_setattr": 314, "ioprio_set": 251,
        "migrate_pages": 256, "move_pages": 279, "process_madvise": 440, "process_mrelease": 448,
        "fcntl": 72, "ioctl": 16, "fanotify_init": 300, "kexec_load": 246, "kexec_file_load": 320,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167,
        "swapoff": 168, "acct": 163, "quotactl": 179, "quotactl_fd": 443, "syslog": 103, "iopl": 172,
        "ioperm": 173, "modify_ldt": 154, "uselib": 134, "lookup_dcookie": 212, "vhangup": 153,
        "open_by_handle_at": 304,
    },
    "aarch64": {
        "socket": 198, "socketpair": 199, "clone": 220, "clone3": 435, "execve": 221, "execveat": 281,
        "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
        "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "unshare": 97, "setns": 268, "mount": 40,
        "umount2": 39, "pivot_root": 41, "chroot": 51, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "personality": 92,
        "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241,
        "userfaultfd": 282, "memfd_create": 279, "memfd_secret": 447, "shmget": 194, "shmctl": 195,
        "shmat": 196, "shmdt": 197, "semget": 190, "semctl": 191, "semtimedop": 192, "semop": 193,
        "msgget": 186, "msgctl": 187, "msgrcv": 188, "msgsnd": 189, "mq_open": 180, "mq_unlink": 181,
        "mq_timedsend": 182, "mq_timedreceive": 183, "mq_notify": 184, "mq_getsetattr": 185,
        "prlimit64": 261, "setpriority": 140, "sched_setparam": 118, "sched_setscheduler": 119,
        "sched_setaffinity": 122, "sched_setattr": 274, "ioprio_set": 30, "migrate_pages": 238,
        "move_pages": 239, "process_madvise": 440, "process_mrelease": 448, "fcntl": 25, "ioctl": 29,
        "fanotify_init": 262, "kexec_load": 104, "kexec_file_load": 294, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224, "swapoff": 225,
        "acct": 89, "quotactl": 60, "quotactl_fd": 443, "syslog": 116, "lookup_dcookie": 18,
        "vhangup": 58, "open_by_handle_at": 265,
    },
}

#: refused outright (EPERM), when the architecture has them
DENIED = (
    "fork", "vfork", "execve", "execveat", "tkill", "pidfd_send_signal", "pidfd_open", "pidfd_getfd",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "keyctl", "add_key",
    "request_key", "bpf", "perf_event_open", "userfaultfd", "memfd_create", "memfd_secret", "socket",
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop", "msgget", "msgsnd",
    "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
    "mq_getsetattr", "ioprio_set", "migrate_pages", "move_pages", "process_madvise", "process_mrelease",
    "fanotify_init", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "iopl", "ioperm",
    "modify_ldt", "uselib", "lookup_dcookie", "vhangup", "open_by_handle_at",
)
#: allowed only when argument 0 (a pid / tgid) is the run's own pid (or 0 = itself / its own group)
SELF_ONLY = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "prlimit64", "sched_setparam",
             "sched_setscheduler", "sched_setaffinity", "sched_setattr")

EPERM, ENOSYS = 1, 38
AF_UNIX = 1
CLONE_THREAD = 0x00010000
CLONE_NEW_ANY = 0x7E020000            # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
F_SETOWN, F_SETSIG, F_SETOWN_EX = 8, 10, 15
FIOSETOWN, SIOCSPGRP, TIOCSTI = 0x8901, 0x8902, 0x5412

RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_LD_ABS_W, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_OFF_NR, _OFF_ARCH = 0, 4


def _arg(i: int) -> int:
    """Offset of the low 32 bits of argument i in struct seccomp_data (little-endian). The kernel reads
    the arguments checked here as 32-bit (int pid, int/unsigned cmd, clone's low flag word)."""
    return 16 + 8 * i


def machine() -> str:
    return platform.machine()


def build_filter(pid: int, arch: str | None = None) -> bytes:
    """The run's classic-BPF seccomp program (struct sock_filter[]) for process `pid`."""
    arch = arch or machine()
    if arch not in _NR:
        raise ValueError(f"seccomp layer: architecture {arch} is not supported (x86_64, aarch64)")
    nr = _NR[arch]
    prog: list[tuple[int, int, int, int]] = []

    def ins(code: int, k: int, jt: int = 0, jf: int = 0) -> None:
        prog.append((code, jt, jf, k & 0xFFFFFFFF))

    def ret(action: int) -> None:
        ins(_RET_K, action)

    def deny(errno: int = EPERM) -> None:
        ret(RET_ERRNO | errno)

    def block(name: str, body: list[tuple[int, int, int, int]]) -> None:
        """if nr == name: <body, which always returns>"""
        if name not in nr:
            return
        assert len(body) < 255
        ins(_JEQ_K, nr[name], 0, len(body))
        prog.extend(body)

    def body(build) -> list[tuple[int, int, int, int]]:
        nonlocal prog
        outer, prog = prog, []
        build()
        inner, prog = prog, outer
        return inner

    def allow_if_arg_in(i: int, values: tuple[int, ...], errno: int = EPERM):
        def build():
            ins(_LD_ABS_W, _arg(i))
            for n, v in enumerate(values):
                # jump over the remaining compares and the deny, to the allow
                ins(_JEQ_K, v, len(values) - n, 0)
            deny(errno)
            ret(RET_ALLOW)
        return body(build)

    def deny_if_arg_in(i: int, values: tuple[int, ...]):
        def build():
            ins(_LD_ABS_W, _arg(i))
            for n, v in enumerate(values):
                ins(_JEQ_K, v, len(values) - n, 0)
            ret(RET_ALLOW)
            deny()
        return body(build)

    # the architecture first: anything else (i386 int 0x80 on x86_64) kills the process
    ins(_LD_ABS_W, _OFF_ARCH)
    ins(_JEQ_K, _AUDIT_ARCH[arch], 1, 0)
    ret(RET_KILL_PROCESS)
    ins(_LD_ABS_W, _OFF_NR)
    if arch == "x86_64":
        ins(_JGE_K, _X32_BIT, 0, 1)       # the x32 ABI
        ret(RET_KILL_PROCESS)
    for name in DENIED:
        block(name, body(deny))
    block("clone3", body(lambda: deny(ENOSYS)))

    def clone_rule():
        ins(_LD_ABS_W, _arg(0))
        ins(_JSET_K, CLONE_THREAD, 1, 0)  # a thread? then check the namespace flags
        deny()
        ins(_JSET_K, CLONE_NEW_ANY, 0, 1)
        deny()
        ret(RET_ALLOW)
    block("clone", body(clone_rule))
    for name in SELF_ONLY:
        block(name, allow_if_arg_in(0, (0, pid) if name != "tgkill" else (pid,)))
    block("socketpair", allow_if_arg_in(0, (AF_UNIX,), errno=EPERM))

    def setpriority_rule():
        ins(_LD_ABS_W, _arg(0))
        ins(_JEQ_K, 0, 1, 0)              # PRIO_PROCESS only (PRIO_USER would reach the server)
        deny()
        ins(_LD_ABS_W, _arg(1))
        ins(_JEQ_K, 0, 2, 0)
        ins(_JEQ_K, pid, 1, 0)
        deny()
        ret(RET_ALLOW)
    block("setpriority", body(setpriority_rule))
    block("personality", allow_if_arg_in(0, (0xFFFFFFFF,)))   # query only
    block("fcntl", deny_if_arg_in(1, (F_SETOWN, F_SETSIG, F_SETOWN_EX)))
    block("ioctl", deny_if_arg_in(1, (FIOSETOWN, SIOCSPGRP, TIOCSTI)))
    ret(RET_ALLOW)
    return b"".join(struct.pack("HBBI", *i) for i in prog)


# --- preconditions -------------------------------------------------------------------------------------
#: kernel interfaces whose writable files are guarded per file by the kernel, or by the filter (mqueue)
PSEUDO_FS = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue"}
SCAN_LIMIT = 20000


def _unescape(path: str) -> str:
    return path.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def mounts() -> list[dict]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts, rparts = left.split(), right.split()
            out.append({"point": _unescape(parts[4]), "opts": parts[5].split(","), "fstype": rparts[0],
                        "super": rparts[2].split(",") if len(rparts) > 2 else []})
    return out


def _may_write(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


def _writable_in(point: str, uid: int, gids: set[int]) -> str | None:
    """A path on the mount at `point` that uid/gids may write (directories, regular files, FIFOs), or a
    reason the mount cannot be checked; None when there is none. Does not cross into other mounts."""
    try:
        top = os.lstat(point)
    except OSError as exc:
        return f"{point} cannot be checked ({exc.strerror})"
    seen = 0
    stack = [point]
    while stack:
        path = stack.pop()
        st = os.lstat(path)
        if _may_write(st, uid, gids) and (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
                                          or stat.S_ISFIFO(st.st_mode)):
            return f"{path} is writable"
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            entries = list(os.scandir(path))
        except OSError as exc:
            return f"{path} cannot be listed to check it ({exc.strerror})"
        for entry in entries:
            seen += 1
            if seen > SCAN_LIMIT:
                return f"{point} holds over {SCAN_LIMIT} entries to check"
            try:
                est = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if est.st_dev != top.st_dev:
                continue  # another mount: checked on its own
            if stat.S_ISDIR(est.st_mode):
                stack.append(entry.path)
            elif _may_write(est, uid, gids) and (stat.S_ISREG(est.st_mode) or stat.S_ISFIFO(est.st_mode)):
                return f"{entry.path} is writable"
    return None


def check_mounts(tmp_area: str, uid: int, gids: set[int]) -> str | None:
    """None when the runs' uid can write only inside `tmp_area` (a mount of its own); else one line."""
    tmp_area = os.path.realpath(tmp_area)
    table = mounts()
    # a mount covered by a later one on the same path or an ancestor is out of sight: skip it
    table = [m for i, m in enumerate(table)
             if not any(m["point"] == n["point"] or m["point"].startswith(n["point"].rstrip("/") + "/")
                        for n in table[i + 1:])]
    if not any(m["point"] == tmp_area for m in table):
        return (f"the temp area {tmp_area} is not a mount of its own (this layer needs every mount but the "
                "temp area read-only, as in the chart's pod: readOnlyRootFilesystem with an emptyDir /tmp)")
    for m in table:
        point = m["point"]
        if point == tmp_area or point.startswith(tmp_area.rstrip("/") + "/"):
            continue
        if "ro" in m["opts"] or "ro" in m["super"] or m["fstype"] in PSEUDO_FS:
            continue
        if not os.path.exists(point):
            continue  # covered by a later mount
        why = _writable_in(point, uid, gids)
        if why:
            return (f"{why} on the read-write mount {point} ({m['fstype']}): this layer needs every mount but "
                    f"the temp area {tmp_area} read-only or holding nothing uid {uid} may write (as in the "
                    "chart's pod with readOnlyRootFilesystem)")
    return None


# --- the fork server ----------------------------------------------------------------------------------
# Trusted code. Serves on the socket argv[1]: each message carries five descriptors (config, stdin,
# stdout, stderr, status); it forks, writes "P <pid>" to the status pipe, and "X <wait status>" once
# the run has ended. The child (`_zygote_serve` returns only there) reads its configuration, locks itself
# in and executes the program as __main__ in this interpreter.
ZYGOTE = r'''
import os, sys, json, signal, socket, resource, selectors, ctypes
_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0, before anything else happens here
def _zygote_serve(sock):
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    runs = {}
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is sock:
                try:
                    msg, fds, _, _ = socket.recv_fds(sock, 16, 5)
                except InterruptedError:
                    continue
                if not msg or len(fds) != 5:
                    for pid in runs:
                        try:
                            os.killpg(pid, 9)
                        except OSError:
                            pass
                    os._exit(0)
                try:
                    pid = os.fork()
                except OSError:  # no process to be had: the grader sees the status pipe close unannounced
                    for fd in fds:
                        os.close(fd)
                    continue
                if pid == 0:
                    sel.close(); sock.close()
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.close(wake_r); os.close(wake_w)
                    return fds
                for fd in fds[:4]:
                    os.close(fd)
                try:
                    os.write(fds[4], b"P %d\n" % pid)
                except OSError:
                    pass  # the grader gave up on this run; it is reaped below all the same
                runs[pid] = fds[4]
            else:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
        while runs:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            w = runs.pop(pid, None)
            if w is not None:
                try:
                    os.write(w, b"X %d\n" % st)
                except OSError:
                    pass
                os.close(w)
def _read_roots(area):
    """O_PATH descriptors (and whether each is a directory) of everything beside the path to the temp area
    `area`: what a run may read under Landlock. Opened once here, used by every run."""
    roots, here = [], "/"
    for part in [p for p in area.split("/") if p]:
        for entry in sorted(os.listdir(here)):
            if entry != part:
                try:
                    fd = os.open(os.path.join(here, entry), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError:
                    continue
                roots.append((fd, os.fstat(fd).st_mode & 0o170000 == 0o040000))
        here = os.path.join(here, part)
    return roots
_READ_ROOTS = _read_roots(sys.argv[2]) if len(sys.argv) > 2 else []
_zygote = os.getpid()
_cfg_fd, _in, _out, _err, _status = _zygote_serve(socket.socket(fileno=int(sys.argv[1])))
# --- from here on: one run, a forked child of the fork server ---
_libc.prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL: the fork server ending ends the run
if os.getppid() != _zygote:
    os._exit(125)
os.setsid()
os.dup2(_in, 0); os.dup2(_out, 1); os.dup2(_err, 2)
def _read_all(fd):
    parts = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            break
        parts.append(b)
    return b"".join(parts)
_c = json.loads(_read_all(_cfg_fd))
_libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (Landlock and the filter need it)
def _landlock(own):
    """Landlock (where the kernel has it): write only beneath `own`; read beneath everything but the temp
    area (the fork server opened those paths once: `_READ_ROOTS`), so concurrent runs (same uid) cannot
    read or write each other's temp dirs. The ABI, or 0 when it could not be applied."""
    sc = _libc.syscall
    sc.restype = ctypes.c_long
    abi = sc(ctypes.c_long(444), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return 0
    handled = (1 << 13) - 1 | ((1 << 13) if abi >= 2 else 0) | ((1 << 14) if abi >= 3 else 0)
    attr = ctypes.c_uint64(handled)
    rs = sc(ctypes.c_long(444), ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    if rs < 0:
        return 0
    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]
    on_files = 1 | 2 | 4 | ((1 << 14) if abi >= 3 else 0)   # EXECUTE WRITE_FILE READ_FILE TRUNCATE
    def rule(fd, is_dir, rights):
        rights = rights if is_dir else rights & on_files
        if rights:
            sc(ctypes.c_long(445), ctypes.c_int(rs), ctypes.c_int(1), ctypes.byref(PathBeneath(rights, fd)),
               ctypes.c_uint32(0))
    for fd, is_dir in _READ_ROOTS:
        rule(fd, is_dir, 1 | 4 | 8)   # EXECUTE READ_FILE READ_DIR
    for path, rights in [(own, handled)] + [(d, 2 | 4) for d in ("/dev/null", "/dev/zero", "/dev/full",
                                                                  "/dev/urandom", "/dev/random")]:
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        rule(fd, path == own, rights)
        os.close(fd)
    ok = sc(ctypes.c_long(446), ctypes.c_int(rs), ctypes.c_uint32(0)) == 0
    os.close(rs)
    return abi if ok else 0
if _c.get("landlock"):
    if not _landlock(_c["tmp"]) and _c["landlock"] == "required":
        os.write(2, b"sandbox: cannot apply the Landlock rules the probe found working\n")
        os._exit(126)
os.closerange(3, 1 << 20)
for _k, _v in _c["rlimits"].items():
    resource.setrlimit(getattr(resource, _k), tuple(_v))
if _c.get("uid") is not None and os.getuid() == 0:
    os.setgroups([])
    os.setresgid(_c["uid"], _c["uid"], _c["uid"])
    os.setresuid(_c["uid"], _c["uid"], _c["uid"])
os.chdir(_c["tmp"])
os.environ.clear()
os.environ.update(_c["env"])
_prog = bytes.fromhex(_c["filter"])
class _FProg(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
_fp = _FProg(len(_prog) // 8, _prog)
if _libc.prctl(38, 1, 0, 0, 0) != 0 or _libc.prctl(22, 2, ctypes.byref(_fp), 0, 0) != 0:
    os.write(2, b"sandbox: cannot install the seccomp filter: %s\n" % os.strerror(ctypes.get_errno()).encode())
    os._exit(126)
_src = _c["source"]
del _c, _read_all, _prog, _fp, _FProg, _zygote_serve, _libc, _landlock, _read_roots, _READ_ROOTS
sys.argv = ["main.py"]
_g = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": "main.py"}
# The program ends as under `python main.py` - exit status, traceback, non-daemon threads joined, atexit
# hooks, stdout/stderr flushed - but without tearing the interpreter down (that took half of a run's time).
try:
    exec(compile(_src, "main.py", "exec"), _g)
    _rc = 0
except SystemExit as _e:
    _rc = _e.code
    if _rc is None:
        _rc = 0
    elif not isinstance(_rc, int):
        try:
            print(_rc, file=sys.stderr)
        except Exception:
            pass
        _rc = 1
except BaseException:
    sys.excepthook(*sys.exc_info())
    _rc = 1
if "threading" in sys.modules:
    try:
        sys.modules["threading"]._shutdown()
    except BaseException:
        pass
import atexit
atexit._run_exitfuncs()
for _f in (sys.stdout, sys.__stdout__, sys.stderr, sys.__stderr__):
    try:
        if _f is None or getattr(_f, "closed", False):
            continue
        _f.flush()
    except Exception:
        if _f is sys.stdout or _f is sys.__stdout__:
            _rc = 120 if _rc == 0 else _rc
os._exit(_rc & 0xFF)
'''

#: in the fork server's command line, so tests can tell its runs (forked children) from it
ZYGOTE_MARK = "def _zygote_serve(sock)"


class ForkServerDied(RuntimeError):
    pass


class _Run:
    """A run forked by the fork server, with the parts of `subprocess.Popen` the grader uses."""

    def __init__(self, pid: int, stdin, stdout, stderr, status_fd: int) -> None:
        self.pid, self.stdin, self.stdout, self.stderr = pid, stdin, stdout, stderr
        self._status = status_fd
        self._buf = b""
        self.returncode: int | None = None
        self.died: str | None = None
        self.config_fd = -1

    def poll_status(self, timeout: float | None) -> bool:
        """Read the status pipe until the exit line (True) or `timeout` (False)."""
        if self.returncode is not None:
            return True
        with selectors.DefaultSelector() as sel:
            sel.register(self._status, selectors.EVENT_READ)
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not sel.select(left):
                    return False
                chunk = os.read(self._status, 64)
                if not chunk:
                    self.died = "the seccomp layer's fork server exited during the run"
                    self.returncode = -9
                    os.close(self._status)
                    return True
                self._buf += chunk
                for line in self._buf.split(b"\n"):
                    if line.startswith(b"X "):
                        self.returncode = os.waitstatus_to_exitcode(int(line[2:]))
                        os.close(self._status)
                        return True

    def wait(self, timeout: float | None = None) -> int:
        if not self.poll_status(timeout):
            raise subprocess.TimeoutExpired("sandbox run", timeout)
        return self.returncode

    def kill(self) -> None:
        for target in (lambda: os.killpg(self.pid, 9), lambda: os.kill(self.pid, 9)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass


class ForkServer:
    """The grader's side of the fork server: `spawn()` starts one run and returns a Popen-like `_Run`."""

    def __init__(self, python: str, env: dict[str, str], tmp_area: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        self._lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(
                [python, "-I", "-B", "-c", ZYGOTE, str(theirs.fileno()), tmp_area], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd="/",
                start_new_session=True)
        finally:
            theirs.close()
        threading.Thread(target=self._log_stderr, daemon=True, name="sandbox-forkserver-log").start()

    def _log_stderr(self) -> None:
        for line in self.proc.stderr:
            log.warning("sandbox fork server: %s", line.decode("utf-8", "replace").rstrip())

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, start_timeout: float = 30.0) -> _Run:
        pipes = [os.pipe() for _ in range(5)]          # config, stdin, stdout, stderr, status
        theirs = [pipes[0][0], pipes[1][0], pipes[2][1], pipes[3][1], pipes[4][1]]
        ours = [pipes[0][1], pipes[1][1], pipes[2][0], pipes[3][0], pipes[4][0]]
        try:
            with self._lock:
                socket.send_fds(self._sock, [b"R"], theirs)
        except OSError as exc:
            for fd in theirs + ours:
                os.close(fd)
            raise ForkServerDied(f"the seccomp layer's fork server is gone ({exc})") from None
        for fd in theirs:
            os.close(fd)
        cfg_w, in_w, out_r, err_r, status_r = ours
        run = _Run(0, os.fdopen(in_w, "wb"), os.fdopen(out_r, "rb", buffering=0),
                   os.fdopen(err_r, "rb", buffering=0), status_r)
        with selectors.DefaultSelector() as sel:
            sel.register(status_r, selectors.EVENT_READ)
            line = b""
            while not line.endswith(b"\n"):
                chunk = os.read(status_r, 1) if sel.select(start_timeout) else b""
                if not chunk:
                    for f in (run.stdin, run.stdout, run.stderr):
                        f.close()
                    os.close(status_r)
                    os.close(cfg_w)
                    raise ForkServerDied("the seccomp layer's fork server could not start the run (out of "
                                         "processes, or it has exited)")
                line += chunk
        run.pid = int(line.split()[1])
        run.config_fd = cfg_w
        return run

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def set_dumpable(value: bool) -> None:
    """PR_SET_DUMPABLE for the calling process (the grader: programs of the same uid cannot then open its
    /proc/<pid>/mem, environ or fd)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, int(value), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")


PROBE = r'''
import os, socket, ctypes
bad = []
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
if status.get("Seccomp", "").strip() != "2": bad.append("no seccomp filter")
if status.get("NoNewPrivs", "").strip() != "1": bad.append("no no_new_privs")
if ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) != 0: bad.append("dumpable")
for what, call in (("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
                   ("fork", os.fork), ("kill", lambda: os.kill(os.getppid(), 0))):
    try:
        r = call()
    except PermissionError:
        continue
    if r == 0 and what == "fork":
        os._exit(0)
    bad.append(what + " allowed")
landlock = ""
try:
    os.listdir(os.path.dirname(os.getcwd()))   # the temp area, where the other runs' dirs are
except PermissionError:
    landlock = " landlock"
print("ok" + landlock if not bad else ", ".join(bad))
'''


def config_payload(run: _Run, config: dict) -> bytes:
    return json.dumps({**config, "filter": build_filter(run.pid).hex()}).encode()
