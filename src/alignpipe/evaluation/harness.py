"""Standard benchmarks through lm-evaluation-harness (the `eval` extra), fully offline.

Tasks are lm-eval YAML files in `include_path` (a folder, or an `s3://` prefix that is fetched first;
default: `alignpipe/evaluation/tasks`, which ships `alignpipe_arith`). Before anything runs, every
requested task is checked: it must be defined in `include_path` (lm-eval's built-in tasks download
their data) and its data must be local — `dataset_path` a file builder (json, parquet, csv, text,
arrow) with `data_files` that are local paths (relative ones are read beside the YAML) or `s3://`
objects (fetched), or a local folder. Anything else is refused with one line; nothing is downloaded.

The checked tasks are run from derived YAML files that `include` the originals and override only
`dataset_kwargs` with absolute local paths, with HF_DATASETS_OFFLINE/HF_HUB_OFFLINE set. Models run on
lm-eval's HF backend (vLLM when the generator backend picks it: installed and a GPU present).

Results: `lm_eval/<task>/<metric>` (and `.../<metric>_stderr` where lm-eval gives one); the filter
name is appended when it is not `none` (`exact_match_strict-match`). Per-document scores come back too,
so the evaluate stage can give paired bootstrap CIs for deltas between models.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from alignpipe.base import UserError

#: Where the example tasks ship.
TASKS_DIR = Path(__file__).parent / "tasks"
#: `dataset_path` values that read local files (datasets' packaged builders).
FILE_BUILDERS = {"json", "parquet", "csv", "text", "arrow"}


class LmEvalError(UserError, ValueError):
    """An lm-eval setting that cannot run offline (unknown task, data that would be downloaded, missing extra)."""


def require_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise LmEvalError("lm_eval: lm-evaluation-harness is not installed (pip install 'alignpipe[eval]', "
                          "or remove lm_eval from the evaluate config)") from None


# --------------------------------------------------------------------------------------------------
# Task discovery and the offline check
# --------------------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> dict:
    """A task YAML with its `include`s merged, `!function` tags left unresolved (lm-eval's own loader)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=False, recursive=True)


def task_files(include_dir: Path) -> dict[str, Path]:
    """{task name: YAML file} for every single-task YAML under `include_dir`."""
    found: dict[str, Path] = {}
    for path in sorted(include_dir.rglob("*.yaml")) + sorted(include_dir.rglob("*.yml")):
        try:
            cfg = _load_yaml(path)
        except Exception:  # noqa: BLE001 - a file lm-eval could not read either; not a task of ours
            continue
        name = cfg.get("task")
        if isinstance(name, str):
            found.setdefault(name, path)
    return found


def _local_data_files(data_files: Any, base: Path, where: str) -> Any:
    """`data_files` with relative paths made absolute (against the YAML's folder) and s3:// fetched."""
    from alignpipe import storage

    if isinstance(data_files, dict):
        return {k: _local_data_files(v, base, where) for k, v in data_files.items()}
    if isinstance(data_files, (list, tuple)):
        return [_local_data_files(v, base, where) for v in data_files]
    text = str(data_files)
    if storage.is_remote(text):
        return str(storage.fetch_file(text))
    if "://" in text or text.startswith(("hf:", "hf://")):
        raise LmEvalError(f"{where}: data_files {text!r} would be downloaded; use a local path or s3:// URI")
    p = Path(text).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise LmEvalError(f"{where}: data file {p} not found (data_files are read relative to the YAML's folder)")
    return str(p)


def offline_overrides(name: str, path: Path) -> dict:
    """The `dataset_kwargs` that make task `name` read local files only; LmEvalError if it would download."""
    cfg = _load_yaml(path)
    where = f"lm_eval task {name!r} ({path})"
    dataset_path = cfg.get("dataset_path")
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    if dataset_path in FILE_BUILDERS:
        if not kwargs.get("data_files"):
            raise LmEvalError(f"{where}: dataset_path {dataset_path!r} needs dataset_kwargs.data_files "
                              "(local JSONL/Parquet paths or s3:// URIs)")
        kwargs["data_files"] = _local_data_files(kwargs["data_files"], path.parent, where)
        return kwargs
    if isinstance(dataset_path, str):
        local = Path(dataset_path).expanduser()
        local = local if local.is_absolute() else path.parent / local
        if local.is_dir():
            return {**kwargs, "_dataset_path": str(local)}
    raise LmEvalError(f"{where}: refusing to run, it would download dataset_path {dataset_path!r} from the "
                      "Hugging Face Hub (runs are offline: use dataset_path: json or parquet with local or s3:// "
                      "data_files, or a local folder)")


def _include_dir(include_path: str | None) -> Path:
    from alignpipe import storage

    if include_path is None:
        return TASKS_DIR
    if storage.is_remote(include_path):
        return Path(storage.fetch(include_path, require_manifest=False))
    p = Path(include_path).expanduser()
    if not p.is_dir():
        raise LmEvalError(f"lm_eval.include_path {include_path}: no such folder (task YAML files and their data)")
    return p


def prepare_tasks(tasks: list[str], include_path: str | None, out_dir: Path) -> Path:
    """Check every task and write its offline YAML to `out_dir`; returns `out_dir` (lm-eval's include path)."""
    include_dir = _include_dir(include_path)
    known = task_files(include_dir)
    for name in tasks:
        if name not in known:
            raise LmEvalError(
                f"lm_eval task {name!r} is not defined in {include_path or include_dir} (known: "
                f"{', '.join(sorted(known)) or 'none'}); lm-eval's built-in tasks download their data, so "
                "define the task in a YAML file there with local data")
        overrides = offline_overrides(name, known[name])
        derived: dict[str, Any] = {"include": str(known[name].resolve()), "task": name}
        local_dir = overrides.pop("_dataset_path", None)
        if local_dir:
            derived["dataset_path"] = local_dir
        derived["dataset_kwargs"] = overrides
        (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(derived, sort_keys=False))
    return out_dir


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """HF datasets and hub offline for the duration (env and datasets' already-imported config)."""
    keys = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    cfg = None
    try:
        import datasets.config as cfg  # type: ignore[no-redef]

        old = getattr(cfg, "HF_DATASETS_OFFLINE", None)
        cfg.HF_DATASETS_OFFLINE = True
    except ImportError:
        old = None
    try:
        yield
    finally:
        if cfg is not None:
            cfg.HF_DATASETS_OFFLINE = old
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def metric_name(key: str) -> tuple[str, bool] | None:
    """lm-eval's `acc,none` -> ("acc", False); `acc_stderr,none` -> ("acc_stderr", True); None if not a metric."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    name = metric if filt == "none" else f"{metric}_{filt}"
    return name, metric.endswith("_stderr")


def flatten_results(results: dict[str, dict]) -> dict[str, float]:
    """lm-eval's `results` section as {`lm_eval/<task>/<metric>`: value} (numbers only)."""
    out: dict[str, float] = {}
    for task, values in results.items():
        for key, value in values.items():
            parsed = metric_name(key)
            if parsed is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            out[f"lm_eval/{task}/{parsed[0]}"] = float(value)
    return out


def per_document(samples: dict[str, list[dict]], results: dict[str, dict]) -> dict[str, list[float]]:
    """{`lm_eval/<task>/<metric>`: per-document values ordered by doc_id} for the metrics in `results`."""
    out: dict[str, list[float]] = {}
    for task, rows in (samples or {}).items():
        names = {key.split(",", 1)[0] for key in results.get(task, {}) if "," in key and "_stderr" not in key}
        rows = sorted(rows, key=lambda r: r.get("doc_id", 0))
        for metric in sorted(names):
            values = [r.get(metric) for r in rows]
            if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                out[f"lm_eval/{task}/{metric}"] = [float(v) for v in values]
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_model(model_path: str, settings, backend: str = "hf", trust_remote_code: bool = False,
              seed: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Run the configured lm-eval tasks on one local model: (flat metrics, per-document values)."""
    require_lm_eval()
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="alignpipe-lm-eval-") as tmp, offline():
        include = prepare_tasks(list(settings.tasks), settings.include_path, Path(tmp))
        manager = TaskManager(include_path=str(include), include_defaults=False)
        model_args: dict[str, Any] = {"pretrained": model_path, "trust_remote_code": trust_remote_code}
        if backend == "vllm":
            model_args["gpu_memory_utilization"] = 0.5
        else:
            model_args["dtype"] = "auto"
        out = lm_eval.simple_evaluate(
            model="vllm" if backend == "vllm" else "hf", model_args=model_args, tasks=list(settings.tasks),
            num_fewshot=settings.num_fewshot, limit=settings.limit, batch_size=settings.batch_size,
            device=None if backend == "vllm" else ("cuda" if _cuda() else "cpu"),
            task_manager=manager, log_samples=True, random_seed=seed, numpy_random_seed=seed,
            torch_random_seed=seed, fewshot_random_seed=seed)
    if not out:
        raise LmEvalError("lm_eval returned no results (is this process not rank 0?)")
    results = out.get("results", {})
    return flatten_results(results), per_document(out.get("samples", {}), results)


# --------------------------------------------------------------------------------------------------
# The shipped example task
# --------------------------------------------------------------------------------------------------


def build_example_task(out_dir: str | Path = TASKS_DIR, n: int = 100, seed: int = 14) -> Path:
    """Write `alignpipe_arith.jsonl`: the demo's first `n` held-out problems as a two-way choice between
    the right reversed sum and a plausible wrong one (the demo's own wrong-answer generator)."""
    from alignpipe.data.demo import _wrong_answer, problems, reverse_sum

    _, held = problems(99, 0.15, 0)
    rng = random.Random(seed)
    path = Path(out_dir) / "alignpipe_arith.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for a, b in held[:n]:
            right, wrong = reverse_sum(a, b), _wrong_answer(a, b, rng)
            label = rng.randrange(2)
            choices = [wrong, right] if label else [right, wrong]
            row = {"question": f"{a}+{b}=", "choices": choices, "label": label, "answer": right}
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    return path
