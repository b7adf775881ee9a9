"""A warm process for `kfp.local` tasks: the ML libraries are imported once, each task is a fork.

kfp.local's SubprocessRunner starts every task as a fresh `python -m kfp.dsl.executor_main`, and a
training task then spends ~7 s of CPU importing torch, transformers, TRL, datasets, peft and MLflow before
its stage starts. `ForkServer` starts one helper process (the *zygote*) that imports those once; a task
request is then served by a fork of it:

    run_local ── request (command, env, cwd, the task's output pipe) ──> zygote (imports done, idle)
                                                                           └─ fork: supervisor
                                                                                └─ fork: the task
                                                                                   (executor_main)
    run_local <── the task's stdout/stderr (the pipe), then its exit status ─┘

- Isolation: every task is its own process, forked from a zygote that only imported modules (it opens no
  file, database or network connection and runs no torch op, so no thread pool is running); the task
  gets the environment and working directory kfp.local would have given a subprocess, a fresh
  `random`/numpy seed, its own temporary component module; `atexit` handlers run at its end as in a
  normal interpreter exit. A crash of the task (exception, `sys.exit`, a signal) is its exit status,
  exactly as kfp.local's subprocess reports it.
- A request the zygote cannot serve as a subprocess would be run falls back to kfp.local's own
  subprocess: a command that is not a lightweight Python component, or an environment that differs from
  the zygote's in a variable that libraries read when they are imported (`HF_*`, `OMP_*`, ...).
- The zygote imports the light modules (kfp's executor, alignpipe's steps) first and starts serving;
  the heavy imports follow while the first task (prepare-data, which needs none of them) runs.
- Opt out with `ALIGNPIPE_LOCAL_FORKSERVER=0` (every task a fresh subprocess, as kfp.local does it).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: Imported before the zygote serves its first request (what every task needs).
LIGHT = ("kfp.dsl.executor_main", "alignpipe.steps", "alignpipe.launch", "alignpipe.report")
#: Imported after the first request is handed on (what the training/evaluation tasks need).
HEAVY = ("torch", "numpy", "transformers", "datasets", "accelerate", "peft", "trl", "mlflow", "mlflow.tracking",
         "alignpipe.tracking", "alignpipe.models", "alignpipe.data", "alignpipe.rewards",
         "alignpipe.stages.sft", "alignpipe.stages.reward_model", "alignpipe.stages.rl",
         "alignpipe.stages.preference", "alignpipe.stages.evaluate", "alignpipe.stages.register")
#: Environment variables read at import time by the preloaded libraries (or their native code): a task
#: whose value differs from the zygote's runs as a plain subprocess.
IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DATASETS_", "TORCH", "PYTORCH_", "CUDA_",
                        "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOTO", "LD_", "PYTHON", "TRL_",
                        "ACCELERATE_", "DS_", "TOKENIZERS_", "MALLOC_", "XDG_", "PATH", "VIRTUAL_ENV", "HOME",
                        "TMP", "TEMP", "LANG", "LC_")
_HEADER = struct.Struct("!Q")


def _imports_light_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_PREFIXES)}


def kfp_task(full_command: list[str]) -> tuple[str, list[str]] | None:
    """(component source, executor arguments) of a kfp lightweight-component command, else None.

    kfp builds `sh -ec 'program_path=$(mktemp -d); printf "%s" "$0" > "$program_path/ephemeral_component.py";
    _KFP_RUNTIME=true python3 -m kfp.dsl.executor_main --component_module_path ... "$@"' SOURCE ARGS...`."""
    if len(full_command) < 4 or full_command[:2] != ["sh", "-ec"]:
        return None
    script = full_command[2]
    markers = ("mktemp -d", "ephemeral_component.py", "_KFP_RUNTIME=true", "-m kfp.dsl.executor_main",
               "--component_module_path", '"$@"')
    if not all(m in script for m in markers) or "pip" in script:
        return None
    return full_command[3], list(full_command[4:])


# ------------------------------------------------------------------------------------------ client


class ForkServer:
    """The parent's handle: `run(full_command, env_vars)` -> exit status, or None when the task must run
    as kfp.local's own subprocess. Thread-safe (kfp.local runs ParallelFor iterations in threads: each
    request is its own connection, and the zygote forks one supervisor per request)."""

    def __init__(self, env: dict[str, str] | None = None, log=None, output=None, heavy: tuple[str, ...] = HEAVY):
        """`output`: a file for the zygote's own output (import-time warnings); `log`: called with a line
        when a task falls back to a plain subprocess; `heavy`: the modules imported after the first request."""
        self.env = dict(os.environ if env is None else env)
        self._dir = tempfile.mkdtemp(prefix="alignpipe-forkserver-")
        self.address = str(Path(self._dir) / "zygote.sock")
        self._log = log
        self._lock = threading.Lock()
        self.served = 0
        self.fallbacks: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "alignpipe.forkserver", self.address, ",".join(heavy)], env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT if output else None)
        self.dead = False

    def _note(self, why: str) -> None:
        with self._lock:
            self.fallbacks.append(why)
        if self._log is not None:
            self._log(f"fork server: {why}; the task runs as a fresh subprocess")

    def _connect(self, timeout: float = 120.0) -> socket.socket | None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.dead = True
                return None
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.address)
                return s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)

    def run(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int | None:
        task = kfp_task(full_command)
        if task is None:
            self._note("not a lightweight Python component command")
            return None
        env = {**os.environ, **(env_vars or {})}
        if _imports_light_env(env) != _imports_light_env(self.env):
            changed = sorted(set(_imports_light_env(env).items()) ^ set(_imports_light_env(self.env).items()))
            self._note(f"the task's environment differs in {', '.join(sorted({k for k, _ in changed}))} "
                       "(read when libraries are imported)")
            return None
        if self.dead:
            return None
        conn = self._connect()
        if conn is None:
            self._note("the zygote is not running")
            return None
        source, args = task
        request = json.dumps({"source": source, "args": args, "env": env, "cwd": os.getcwd()}).encode()
        read_fd, write_fd = os.pipe()
        try:
            with conn:
                socket.send_fds(conn, [_HEADER.pack(len(request))], [write_fd])
                os.close(write_fd)
                write_fd = -1
                conn.sendall(request)
                with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace", newline=None) as out:
                    read_fd = -1
                    for line in iter(out.readline, ""):
                        print(line, end="")  # as kfp.local's run_local_subprocess does
                    print("\n")
                reply = b""
                while chunk := conn.recv(4096):
                    reply += chunk
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
        try:
            rc = int(json.loads(reply.decode())["rc"])
        except (ValueError, KeyError):
            rc = 1  # the supervisor died before it could report: a failure, never a silent success
            print("fork server: the task's supervisor ended without an exit status", flush=True)
        with self._lock:
            self.served += 1
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "ForkServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ zygote


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("request cut short")
        buf += chunk
    return buf


def _task_main(request: dict) -> int:
    """In the task process: what `sh -ec '... python3 -m kfp.dsl.executor_main ...'` would do."""
    import atexit
    import random
    import shutil
    import signal
    import traceback

    signal.signal(signal.SIGINT, signal.default_int_handler)  # the zygote ignores it; a task does not
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["_KFP_RUNTIME"] = "true"
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)
    program = tempfile.mkdtemp()
    path = os.path.join(program, "ephemeral_component.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(request["source"])
    sys.argv = [sys.executable, "--component_module_path", path, *request["args"]]
    rc = 0
    try:
        from kfp.dsl import executor_main

        executor_main.executor_main()
    except SystemExit as e:
        if e.code is None:
            rc = 0
        elif isinstance(e.code, int):
            rc = e.code
        else:
            print(e.code, file=sys.stderr)
            rc = 1
    except BaseException:  # noqa: BLE001 - reported as the interpreter would, then the exit status
        traceback.print_exc()
        rc = 1
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    shutil.rmtree(program, ignore_errors=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return rc & 0xFF


def _supervise(conn: socket.socket) -> None:
    """In a fork of the zygote: read one request, fork the task, report its exit status. Never returns."""
    import signal

    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 1)
        if len(header) != _HEADER.size or len(fds) != 1:
            raise EOFError("malformed request")
        request = json.loads(_recv_exact(conn, _HEADER.unpack(header)[0]).decode())
        out_fd = fds[0]
        pid = os.fork()
        if pid == 0:  # the task
            rc = 1
            try:
                conn.close()
                os.dup2(out_fd, 1)
                os.dup2(out_fd, 2)
                os.close(out_fd)
                rc = _task_main(request)
            finally:
                os._exit(rc)
        os.close(out_fd)
        _, status = os.waitpid(pid, 0)
        conn.sendall(json.dumps({"rc": os.waitstatus_to_exitcode(status)}).encode())
    except BaseException:  # noqa: BLE001 - no status sent: the client reports a failure
        code = 1
    finally:
        try:
            conn.close()
        finally:
            os._exit(code)


def _import_all(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a task that needs it imports (and fails on) it itself
            pass


def serve(address: str, heavy: tuple[str, ...] = HEAVY) -> None:
    """The zygote: import, listen on `address`, fork a supervisor per request, exit when the parent goes."""
    import signal

    parent = os.getppid()
    # Ctrl-C reaches the whole process group: the tasks stop, the zygote goes when its parent has gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["_KFP_RUNTIME"] = "true"
    _import_all(LIGHT)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(16)
    listener.settimeout(1.0)
    heavy_done = False
    while True:
        while True:  # reap finished supervisors
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if os.getppid() != parent:
            os._exit(0)
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing of the zygote's own output may end up in a task's
        # What the imports created is permanent: a task's garbage collections skip it (instead of walking
        # millions of objects each full collection), and its pages stay shared with the zygote.
        gc.freeze()
        if os.fork() == 0:
            listener.close()
            _supervise(conn)
        conn.close()
        if not heavy_done:
            _import_all(heavy)
            heavy_done = True


if __name__ == "__main__":
    serve(sys.argv[1], tuple(n for n in sys.argv[2].split(",") if n) if len(sys.argv) > 2 else HEAVY)
