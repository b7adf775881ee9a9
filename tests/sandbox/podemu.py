"""Become a process of the chart's locked-down reward-server pod, then exec a command (run as root).

    python3 podemu.py --uid 65534 --tmp DIR [--runtime-default] [--masked-proc] [--writable] -- CMD ARGS...

What it emulates, as the pod does it (tests/sandbox/test_sandbox.py, tests/helm/test_reward_server_chart.py):
 - readOnlyRootFilesystem with an emptyDir /tmp: in a new mount namespace (the emulation's own - the
   sandbox layer under test must not need one) DIR is bound onto itself as the only writable mount and every
   other mount but the kernel interfaces (proc, sysfs, cgroup, devpts, mqueue) is remounted read-only;
   `--writable` leaves the mounts as they are (a laptop, a dev container);
 - --masked-proc: part of /proc covered, as runtimes do for procMount Default (/dev/null bound over a file);
 - runAsUser: uid/gid --uid, no supplementary groups, all capabilities gone;
 - allowPrivilegeEscalation false: no_new_privs;
 - --runtime-default: the namespace rules of the container runtimes' default seccomp profile for a
   container without CAP_SYS_ADMIN (unshare, mount, umount2, pivot_root, setns -> EPERM; clone with a
   CLONE_NEW* flag -> EPERM; clone3 -> ENOSYS), through libseccomp.
"""

import ctypes
import ctypes.util
import errno
import os
import sys

PSEUDO = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue"}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)


class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def seccomp_runtime_default_namespaces():
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    def nr(n):
        return lib.seccomp_syscall_resolve_name(n.encode())

    ctx = lib.seccomp_init(0x7FFF0000)
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    for name in ("unshare", "mount", "umount2", "pivot_root", "setns"):
        assert lib.seccomp_rule_add_array(ctx, eperm, nr(name), 0, None) == 0
    for bit in (0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000):
        assert lib.seccomp_rule_add_array(ctx, eperm, nr("clone"), 1, (Cmp * 1)(Cmp(0, 7, bit, bit))) == 0
    assert lib.seccomp_rule_add_array(ctx, enosys, nr("clone3"), 0, None) == 0
    assert lib.seccomp_load(ctx) == 0


def _mount(libc, src, target, fstype, flags):
    enc = (lambda x: x.encode() if isinstance(x, str) else x)
    if libc.mount(enc(src), enc(target), enc(fstype), flags, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {target}: {os.strerror(e)}")


def read_only_but(libc, tmp):
    """Every mount read-only except `tmp` (bound onto itself) and the kernel interfaces."""
    _mount(libc, tmp, tmp, None, MS_BIND)
    flags_of = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
    for line in open("/proc/self/mountinfo").read().splitlines()[::-1]:
        left, _, right = line.partition(" - ")
        parts, fstype = left.split(), right.split()[0]
        point = parts[4].encode().decode("unicode_escape").encode("latin-1")
        if point == tmp.encode() or fstype in PSEUDO or "ro" in parts[5].split(","):
            continue
        fl = MS_REMOUNT | MS_BIND | MS_RDONLY
        for o in parts[5].split(","):
            fl |= flags_of.get(o, 0)
        libc.mount(None, point, None, fl, None)  # best effort: what stays writable, the layer's check finds


def missing() -> str | None:
    """Why the emulation cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (to set up the pod emulation)"
    if not ctypes.util.find_library("seccomp"):
        return "needs libseccomp (for the runtime default profile's rules)"
    if not os.path.exists("/usr/bin/python3"):
        return "needs /usr/bin/python3 (an interpreter uid 65534 can run)"
    return None


def main(argv):
    sep = argv.index("--")
    opts, cmd = argv[:sep], argv[sep + 1:]
    uid = int(opts[opts.index("--uid") + 1])
    tmp = os.path.realpath(opts[opts.index("--tmp") + 1])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x20000) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    if "--masked-proc" in opts:
        target = next(f for f in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(f))
        _mount(libc, "/dev/null", target, None, MS_BIND)
    if "--writable" not in opts:
        read_only_but(libc, tmp)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    libc.prctl(38, 1, 0, 0, 0)
    if "--runtime-default" in opts:
        seccomp_runtime_default_namespaces()
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
