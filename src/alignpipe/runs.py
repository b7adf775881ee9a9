"""Pipelines from the command line: look up, check parameters, compile, run locally (kfp.local), submit, upload.

- `load(name)`: the pipeline for a CLI name (`rlhf`, `rlvr`, `preference`, `sft`).
- `parse_params(pipeline, ["k=v", ...])`: typed values for the pipeline's parameters; unknown names and
  wrong types are errors. `check_params()` validates every stage config the parameters imply with the
  ONE schema (placeholder artifact paths), so a bad config dict fails before anything runs.
- `run_local()`: the pipeline through `kfp.local` (SubprocessRunner, no venv) with an MLflow parent run;
  one progress line per task, each task's output in `WORKDIR/logs/<task>.log`; writes `summary.json`.
- `compile_all()`, `submit()`, `upload()`: YAML packages and the KFP API (kfp.Client).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Iterator

from alignpipe import settings
from alignpipe.base import UserError
from alignpipe.config import parse_value
from alignpipe.pipelines import PIPELINES

_V = "/validate"  # placeholder artifact paths for compile/submit-time validation
PLACEHOLDER_PATHS: dict[str, dict[str, Any]] = {
    "sft": {"train_data": f"{_V}/sft_train", "output_dir": f"{_V}/sft"},
    "reward_model": {"model": f"{_V}/sft", "train_data": f"{_V}/pref", "output_dir": f"{_V}/rm"},
    "rl": {"model": f"{_V}/sft", "train_data": f"{_V}/rl", "output_dir": f"{_V}/rl"},
    "preference": {"model": f"{_V}/sft", "train_data": f"{_V}/pref", "output_dir": f"{_V}/dpo"},
    "evaluate": {"models": {"base": "tiny", "sft": f"{_V}/sft"}, "data": f"{_V}/eval", "output": f"{_V}/eval.json"},
    "register": {"model": f"{_V}/model", "metrics": f"{_V}/eval.json"},
    "route": {"model": f"{_V}/sft", "data": f"{_V}/rl", "output_dir": f"{_V}/route"},
}
#: KFP parameter type -> (python types accepted, name shown in errors).
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "String": ((str,), "a string"),
    "Integer": ((int,), "an integer"),
    "Float": ((int, float), "a number"),
    "Boolean": ((bool,), "true or false"),
    "List": ((list,), "a JSON list"),
    "Dict": ((dict,), "a JSON object"),
}


class PipelineError(UserError, ValueError):
    """A user error about a pipeline run/submission (unknown name, bad parameter, unreachable host)."""


# ------------------------------------------------------------------------------------------- lookup


def module(name: str):
    if name not in PIPELINES:
        raise PipelineError(f"unknown pipeline {name!r} (choose one of: {', '.join(PIPELINES)})")
    return importlib.import_module(f"alignpipe.pipelines.{name.replace('-', '_')}")


def load(name: str, platform=None):
    """The pipeline `name`, built for `platform` (a pipelines.common.Platform) or from the environment."""
    mod = module(name)
    return mod.build(platform) if platform is not None else getattr(mod, f"{name.replace('-', '_')}_pipeline")


def parameters(pipeline) -> dict[str, tuple[str, Any]]:
    """{parameter: (KFP type, default)} in signature order."""
    return {n: (s.type, s.default) for n, s in pipeline.component_spec.inputs.items()}


# --------------------------------------------------------------------------------------- parameters


def _coerce(name: str, kfp_type: str, value: Any, source: str) -> Any:
    accepted, shown = _TYPES.get(kfp_type, ((object,), kfp_type))
    if kfp_type == "String" and not isinstance(value, str):
        value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)  # `--param x=1` for a string
    if kfp_type == "Float" and isinstance(value, bool):
        value = None
    if kfp_type == "Integer" and (isinstance(value, bool) or not isinstance(value, int)):
        value = None if not (isinstance(value, float) and value.is_integer()) else int(value)
    if value is None or not isinstance(value, accepted):
        raise PipelineError(f"{source}: parameter {name}: expected {shown}")
    return float(value) if kfp_type == "Float" else value


def parse_params(pipeline, items: list[str] | None, source: str = "--param") -> dict[str, Any]:
    """`["sft_steps=20", "rl_config={...}"]` -> {name: typed value}; values are YAML/JSON."""
    params = parameters(pipeline)
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise PipelineError(f"{source} {item!r}: must look like name=value (e.g. sft_steps=50)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in params:
            raise PipelineError(f"{source} {key}: unknown parameter of {pipeline.name} "
                                f"(see `alignpipe params NAME`; e.g. {', '.join(list(params)[:6])}, ...)")
        value = parse_value(raw) if raw.strip() else ""
        out[key] = _coerce(key, params[key][0], value, source)
    return out


def check_params(pipeline, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """All parameters (defaults + given) checked for type, and every stage config validated by the schema."""
    from alignpipe import steps

    params = parameters(pipeline)
    unknown = sorted(set(given or {}) - set(params))
    if unknown:
        raise PipelineError(f"unknown parameter(s) of {pipeline.name}: {', '.join(unknown)}")
    values = {n: d for n, (_, d) in params.items()}
    values.update({k: _coerce(k, params[k][0], v, "parameter") for k, v in (given or {}).items()})
    for stage, sp in steps.STAGE_PARAMS.items():
        if sp.config_param not in values:
            continue
        config_param = sp.config_param
        typed = {t.arg: values[t.param] for t in sp.typed if t.param in values}
        paths = dict(PLACEHOLDER_PATHS[stage])
        if stage == "rl" and "reward_model_config" in values:
            paths["reward_model"] = f"{_V}/rm"
        steps.stage_config(stage, values[config_param], typed, paths, source=config_param)
    if "stages" in values:  # staged-rl: every stage's entry and RL config, for the compiled number of stages
        from alignpipe import rl_stages

        rl_stages.check(values, count=len(params["stages"][1] or []))
    for name in ("s3_secret", "mlflow_secret", "reward_secret"):
        if name in values and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", str(values[name])):
            raise PipelineError(f"parameter {name}: {values[name]!r} is not a Kubernetes Secret name")
    for name in steps.FORMAT_PARAMS:
        if name in values:
            steps.check_format(name, values[name])
    return values


# ------------------------------------------------------------------------------------------ compile


def platform_from(image: str | None = None, gpu_image: str | None = None, root: str | None = None):
    """Compile-time settings; with a pipeline root, training steps keep their state (checkpoints, reuse
    records) under it unless ALIGNPIPE_STATE_URI says otherwise."""
    from alignpipe.pipelines.common import Platform, _default_state_uri

    kwargs = {k: v for k, v in {"image": image, "gpu_image": gpu_image}.items() if v}
    if root:
        kwargs["state_uri"] = _default_state_uri(root)
    return Platform(**kwargs)


def pipeline_root(given: str | None = None) -> str | None:
    """Where a pipeline's artifacts (models included) land on the cluster: `--pipeline-root`, else
    ALIGNPIPE_ARTIFACT_ROOT, else None (KFP's own default, minio://mlpipeline/v2/artifacts)."""
    from alignpipe.pipelines.common import _setting

    return given or _setting("artifact_root") or None


def compile_one(name: str, path: str | Path, platform=None, params: dict[str, Any] | None = None,
                root: str | None = None) -> Path:
    """Compile pipeline `name` to `path`; `params` become the package's parameter defaults (e.g. a preset),
    `root` its default pipeline root."""
    from kfp import compiler

    root = pipeline_root(root)
    pipeline = load(name, platform or platform_from(root=root))  # a fresh build: the root below is set on it
    values = check_params(pipeline, params)
    given = {k: values[k] for k in (params or {})}
    if root:
        pipeline.pipeline_spec.default_pipeline_root = root
    compiler.Compiler().compile(pipeline, package_path=str(path), pipeline_parameters=given or None)
    return Path(path)


def preset_params(preset: str, name: str, platform=None) -> dict[str, Any]:
    """A preset's values for pipeline `name`: the parameters it has; a preset parameter that no pipeline
    has is an error (a typo would otherwise be ignored silently)."""
    from alignpipe import presets

    odd = sorted(set(presets.pipelines_named(preset)) - set(PIPELINES))
    if odd:
        raise PipelineError(f"{presets.path_of(preset)}: pipelines: unknown pipeline(s) {', '.join(odd)} "
                            f"(choose from {', '.join(PIPELINES)})")
    values = presets.values_for(preset, name)
    every = {n for p in PIPELINES for n in parameters(load(p))}
    unknown = sorted(set(values) - every)
    if unknown:
        raise PipelineError(f"{presets.path_of(preset)}: {', '.join(unknown)}: not a parameter of any pipeline "
                            "(see `alignpipe params NAME`)")
    own = parameters(load(name, platform))
    return {k: v for k, v in values.items() if k in own}


def compile_all(out_dir: str | Path, image: str | None = None, gpu_image: str | None = None,
                names: tuple[str, ...] = PIPELINES, preset: str | None = None,
                root: str | None = None) -> dict[str, Path]:
    """Every pipeline as a KFP package in `out_dir`: `<name>.yaml`, or `<name>-<preset>.yaml` with a preset's
    parameters as its defaults."""
    from alignpipe import presets

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    platform = platform_from(image, gpu_image, pipeline_root(root))
    written = {}
    for name in names:
        params = preset_params(preset, name, platform) if preset else None
        suffix = f"-{presets.label(preset)}" if preset else ""
        written[name] = compile_one(name, out / f"{name}{suffix}.yaml", platform, params, root)
    return written


# -------------------------------------------------------------------------------------- local runs

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")


class _TaskLogRouter(io.TextIOBase):
    """Stands in for sys.stdout during a kfp.local run: each task's output goes to logs/<task>.log, the
    console gets one line per task start/finish."""

    def __init__(self, log_dir: Path, console):
        self.log_dir = log_dir
        self.console = console
        self.all = (log_dir / "pipeline.log").open("a", encoding="utf-8")
        self.current = None
        self.task: str | None = None
        self.started: dict[str, float] = {}
        self.finished: dict[str, tuple[str, float]] = {}
        self.failed: str | None = None
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(line + "\n")
        return len(s)

    def flush(self) -> None:
        for f in (self.all, self.current):
            if f:
                f.flush()

    def log_path(self, task: str) -> Path:
        return self.log_dir / f"{task}.log"

    def _line(self, line: str) -> None:
        plain = _ANSI.sub("", line)
        self.all.write(plain)
        m = _START.search(plain)
        if m:
            self.task = m.group(1)
            if self.current:
                self.current.close()
            self.current = self.log_path(self.task).open("a", encoding="utf-8")
            self.started[self.task] = time.perf_counter()
            self.console.write(f"  > {self.task} ...\n")
            self.console.flush()
        if self.current:
            self.current.write(plain)
        m = _END.search(plain)
        if m:
            task, status = m.group(1), m.group(2)
            secs = time.perf_counter() - self.started.get(task, time.perf_counter())
            self.finished[task] = (status, secs)
            mark = "ok" if status == "SUCCESS" else status
            self.console.write(f"  < {task}: {mark} in {secs:.1f}s\n")
            self.console.flush()
            if status != "SUCCESS" and self.failed is None:
                self.failed = task

    def close(self) -> None:
        if self._buf:
            self._line(self._buf)
            self._buf = ""
        for f in (self.all, self.current):
            if f:
                f.close()
        self.current = None


def _last_error_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if (ln.startswith("error: ") or re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln)
                or ": error" in ln.lower()):
            return ln[:300]
    return ""


def _executor_outputs(run_dir: Path) -> dict[str, dict]:
    """{task: executor_output.json} of a finished kfp.local run (its on-disk layout: <run>/<task>/...)."""
    out = {}
    for f in sorted(run_dir.glob("*/executor_output.json")):
        try:
            out[f.parent.name] = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _metrics_of(executor_output: dict) -> dict[str, float]:
    art = executor_output.get("artifacts", {}).get("metrics", {}).get("artifacts", [])
    return dict(art[0].get("metadata", {})) if art else {}


@contextlib.contextmanager
def _tasks_through(server) -> Iterator[None]:
    """While a kfp.local run lasts, its SubprocessRunner's tasks are served by `server` (a
    forkserver.ForkServer); a task the server cannot take runs as kfp.local's own subprocess."""
    from kfp.local import subprocess_task_handler as handler

    plain = handler.run_local_subprocess

    def run(full_command, env_vars=None):
        rc = server.run(full_command, env_vars)
        return plain(full_command=full_command, env_vars=env_vars) if rc is None else rc

    handler.run_local_subprocess = run
    try:
        yield
    finally:
        handler.run_local_subprocess = plain


def run_local(name: str, params: dict[str, Any] | None = None, workdir: str | Path = "out/run",
              console=None, extra_summary: dict | None = None, fork_server: bool | None = None) -> dict:
    """Run pipeline `name` through kfp.local on this machine; returns (and writes) the summary.

    `fork_server` (default: ALIGNPIPE_LOCAL_FORKSERVER, on): tasks are forks of a warm process that imported
    the ML libraries once (`alignpipe.forkserver`) instead of fresh interpreters; False: kfp.local's own
    subprocesses."""
    console = console or sys.stdout
    pipeline = load(name)
    values = check_params(pipeline, params)  # before anything runs
    workdir = Path(workdir).resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ALIGNPIPE_WORKDIR", str(workdir))
    os.environ.setdefault("ALIGNPIPE_CHECKPOINT_DIR", str(workdir / "checkpoints"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    start = time.perf_counter()
    if fork_server is None:
        fork_server = settings.current().local_forkserver
    stack = contextlib.ExitStack()
    if fork_server:
        from alignpipe.forkserver import ForkServer

        zygote_log = stack.enter_context((workdir / "logs" / "forkserver.log").open("a", encoding="utf-8"))
        server = stack.enter_context(ForkServer(output=zygote_log, log=lambda line: print(line, flush=True)))
        stack.enter_context(_tasks_through(server))
    with stack:
        return _run_local(name, pipeline, values, params, workdir, console, extra_summary, start,
                          fork_server)


def _run_local(name, pipeline, values, params, workdir: Path, console, extra_summary, start: float,
               fork_server: bool) -> dict:
    from kfp import local

    from alignpipe import report, tracking

    summary: dict[str, Any] = {"pipeline": name, "status": "failed", "seed": values.get("seed"),
                               "params": {k: v for k, v in (params or {}).items()}, **(extra_summary or {})}
    router = _TaskLogRouter(workdir / "logs", console)
    console.write(f"{pipeline.name}: running locally (kfp.local), logs in {workdir / 'logs'}\n")
    task = None
    try:
        with tracking.pipeline_run(name, tags={"alignpipe.seed": str(values.get("seed")),
                                               "alignpipe.runner": "kfp.local"}) as parent:
            summary["mlflow"] = {"tracking_uri": tracking.tracking_uri(), "run_id": parent.run_id}
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "kfp"),
                       raise_on_error=True)
            saved = sys.stdout
            sys.stdout = router
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
                    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
                    task = pipeline(**(params or {}))
            finally:
                sys.stdout = saved
                router.close()
    except RuntimeError as e:
        failed = router.failed or "?"
        log = router.log_path(failed)
        why = _last_error_line(log)
        summary.update({"failed_task": failed, "log": str(log), "seconds": round(time.perf_counter() - start, 2)})
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        raise PipelineError(f"pipeline {name}: task {failed} failed{': ' + why if why else ''} "
                            f"(log: {log})") from e
    eval_art = task.outputs["eval_results"]
    eval_data = json.loads(Path(eval_art.path).read_text())
    registry = dict(task.outputs["registry"])
    run_dir = Path(eval_art.path).parents[1]
    execs = _executor_outputs(run_dir)
    stage_metrics = {t: _metrics_of(e) for t, e in execs.items()}
    summary.update({
        "status": "succeeded",
        "eval": eval_data["models"],
        "registry": registry,
        "stage_seconds": {t.replace("-", "_"): round(m["time/stage_seconds"], 2) for t, m in stage_metrics.items()
                          if "time/stage_seconds" in m},
        "task_seconds": {t: round(s, 2) for t, (_, s) in router.finished.items()},
        "kfp_run_dir": str(run_dir),
        "task_runner": "forkserver" if fork_server else "subprocess",
        "seconds": round(time.perf_counter() - start, 2),
    })
    if "reward-model" in stage_metrics:
        summary["reward_model"] = {k: v for k, v in stage_metrics["reward-model"].items() if "accuracy" in k}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    from rich.console import Console

    rc = Console(file=console)
    rc.print(report.learning_table(eval_data["models"], values.get("eval_k")))
    rc.print(f"registry: {registry.get('model_name')} v{registry.get('version')} -> {registry.get('alias')} "
             f"({registry.get('reason')})")
    rc.print(f"summary: {workdir / 'summary.json'}  ({summary['seconds']:.0f}s)")
    return summary


# ------------------------------------------------------------------------------------- KFP API

HEALTHZ = "/apis/v2beta1/healthz"


def check_host(host: str, timeout: float = 10.0) -> None:
    """Fail fast (bounded) when the KFP API does not answer; kfp.Client itself retries for ~30 s."""
    if not re.match(r"^https?://", host):
        raise PipelineError(f"--host {host!r}: give the KFP API URL with its scheme, e.g. http://localhost:8080")
    url = host.rstrip("/") + HEALTHZ
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - the user's own KFP endpoint
            r.read(1024)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):  # reachable; auth is checked by the real calls
            return
        raise PipelineError(f"--host {host}: KFP API answered {e.code} on {HEALTHZ} (is this the KFP API URL?)") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise PipelineError(f"--host {host}: KFP API unreachable ({reason}); check the URL or the port-forward "
                            f"(kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80)") from None


def client(host: str, namespace: str | None = None):
    """kfp.Client for `host`; credentials from KF_PIPELINES_SA_TOKEN_PATH (a projected SA token) if set."""
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    check_host(host)
    kwargs: dict[str, Any] = {"host": host.rstrip("/")}
    s = settings.current()
    token_path = s.kfp_sa_token_path
    if token_path and Path(token_path).is_file():
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=token_path)
    ns = namespace or s.namespace
    if ns:
        kwargs["namespace"] = ns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(**kwargs)


def submit(name: str, host: str, params: dict[str, Any] | None = None, experiment: str = "alignpipe",
           namespace: str | None = None, run_name: str | None = None, image: str | None = None,
           root: str | None = None) -> dict:
    """Compile `name` and create a run on the KFP API; returns {run_id, experiment, url}."""
    import tempfile

    from kfp import compiler

    pipeline = load(name, platform_from(image, root=pipeline_root(root)))
    check_params(pipeline, params)
    c = client(host, namespace)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, package_path=str(path))
        s = settings.current()
        sa = s.pipeline_service_account
        run = c.create_run_from_pipeline_package(
            str(path), arguments=params or {}, run_name=run_name or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            experiment_name=experiment, namespace=namespace or s.namespace,
            service_account=sa, pipeline_root=pipeline_root(root))
    return {"run_id": run.run_id, "experiment": experiment, "url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}"}


def _version_name() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from alignpipe.tracking import git_sha

    try:
        v = version("alignpipe")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        v = "0"
    sha = (git_sha() or "")[:8]
    return f"v{v}" + (f"-{sha}" if sha else "") + time.strftime("-%Y%m%d-%H%M%S")


def upload(host: str, namespace: str | None = None, image: str | None = None, gpu_image: str | None = None,
           version: str | None = None, root: str | None = None) -> dict[str, dict]:
    """Create every pipeline in the KFP API, or add a version to one that exists (the Helm chart's upload
    job). Images, GPU resource, node selector, tolerations and secret names come from the environment
    (ALIGNPIPE_*), as for `compile`."""
    import tempfile

    c = client(host, namespace)
    version = version or _version_name()
    done: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        paths = compile_all(d, image=image, gpu_image=gpu_image, root=root)
        for name, path in paths.items():
            kfp_name = load(name).name
            pipeline_id = c.get_pipeline_id(kfp_name)
            if pipeline_id is None:
                p = c.upload_pipeline(str(path), pipeline_name=kfp_name,
                                      description=(load(name).component_spec.description or "")[:1000])
                done[name] = {"pipeline_id": p.pipeline_id, "created": True}
            else:
                v = c.upload_pipeline_version(str(path), pipeline_version_name=f"{kfp_name}-{version}",
                                              pipeline_id=pipeline_id)
                done[name] = {"pipeline_id": pipeline_id, "version_id": v.pipeline_version_id, "created": False}
    return done
