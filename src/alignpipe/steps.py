"""What the Kubeflow component bodies call: assemble a stage config, run the stage, record its outputs.

A component body is ~10 lines: it hands this module the stage's `config` dict (a pipeline parameter),
the pipeline's typed parameters for that stage (steps, learning rate, ...) and its artifact paths.
`stage_config()` merges them — typed parameters and artifact paths win — and validates the result with
the ONE schema (`alignpipe.config`). The same function validates a pipeline's parameters at compile and
submit time (with placeholder paths), so a bad config dict fails before anything runs.

Also here: `STAGE_PARAMS`, the one table of typed pipeline parameters per stage; `prepare_data()`
(validate + digest every data set a pipeline needs, or write the demo data when no data set URI is
given); and `defaults()` (the pipelines' UI defaults, from the schema).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from alignpipe import config as _config
from alignpipe.base import UserError, report_user_error
from alignpipe.config import ConfigError


@dataclass(frozen=True)
class Typed:
    """One typed pipeline parameter: the component argument, the stage-config key it sets, the pipeline
    parameter that feeds it (the name users see in the UI and in `--param`)."""

    arg: str
    key: str
    param: str


@dataclass(frozen=True)
class StageParams:
    config_param: str              # the pipeline's dict parameter holding the rest of the stage config
    typed: tuple[Typed, ...]

    def by_arg(self) -> dict[str, str]:
        return {t.arg: t.key for t in self.typed}


def _scaling(prefix: str) -> tuple[Typed, ...]:
    """The scaling rows of a training stage: `<stage>_accelerator_count` IS the number of GPUs the stage uses
    (distributed.gpus; a config dict that sets it too is an error naming both), `<stage>_nodes` > 1 runs it
    as a TrainJob/PyTorchJob (`multinode_kind`)."""
    return (Typed("gpus", "distributed.gpus", f"{prefix}_accelerator_count"),
            Typed("nodes", "distributed.nodes", f"{prefix}_nodes"),
            Typed("multinode_kind", "distributed.multinode", "multinode_kind"))


#: THE table of pipeline parameters per stage; every lookup below (and in alignpipe.runs) derives from
#: it. Adding a knob: one row here, plus the component's and the pipelines' explicit signatures (the UI
#: reads those; tests/pipelines/test_compile.py checks they match this table). Keys listed here are
#: owned by the typed parameter: setting them in the stage's `config` dict is an error.
STAGE_PARAMS: dict[str, StageParams] = {
    "sft": StageParams("sft_config", (
        Typed("base_model", "model", "base_model"),
        Typed("max_steps", "training.max_steps", "sft_steps"),
        Typed("learning_rate", "training.learning_rate", "sft_learning_rate"),
        Typed("seed", "training.seed", "seed"), *_scaling("sft"))),
    "reward_model": StageParams("reward_model_config", (
        Typed("max_steps", "training.max_steps", "reward_model_steps"),
        Typed("learning_rate", "training.learning_rate", "reward_model_learning_rate"),
        Typed("seed", "training.seed", "seed"), *_scaling("reward_model"))),
    "rl": StageParams("rl_config", (
        Typed("algorithm", "algorithm", "rl_algorithm"),
        Typed("engine", "engine", "rl_engine"),
        Typed("rewards", "rewards", "rewards"),
        Typed("max_steps", "training.max_steps", "rl_steps"),
        Typed("learning_rate", "training.learning_rate", "rl_learning_rate"),
        Typed("seed", "training.seed", "seed"), *_scaling("rl"))),
    "preference": StageParams("preference_config", (
        Typed("max_steps", "training.max_steps", "preference_steps"),
        Typed("learning_rate", "training.learning_rate", "preference_learning_rate"),
        Typed("beta", "beta", "preference_beta"),
        Typed("seed", "training.seed", "seed"), *_scaling("preference"))),
    "evaluate": StageParams("evaluate_config", (
        Typed("k", "k", "evaluate_k"),
        Typed("seed", "seed", "seed"))),
    "register": StageParams("register_config", (
        Typed("model_name", "model_name", "registry_model_name"),
        Typed("gate_metric", "gate_metric", "gate_metric"),
        Typed("gate_threshold", "gate_threshold", "gate_threshold"))),
    "route": StageParams("route_config", (
        Typed("k", "k", "route_k"),
        Typed("threshold", "threshold", "route_threshold"),
        Typed("rewards", "rewards", "rewards"),
        Typed("seed", "seed", "seed"))),
}
def typed_args(stage: str, local_vars: dict[str, Any]) -> dict[str, Any]:
    """A component's typed arguments for `stage`, picked by the table from its `locals()`."""
    return {t.arg: local_vars[t.arg] for t in STAGE_PARAMS[stage].typed}


#: component argument -> stage-config key, per stage (derived).
TYPED_KEYS: dict[str, dict[str, str]] = {stage: sp.by_arg() for stage, sp in STAGE_PARAMS.items()}

#: Keys set from artifact paths (never from the config dict).
PATH_KEYS: dict[str, tuple[str, ...]] = {
    "sft": ("train_data", "eval_data", "output_dir"),
    "reward_model": ("model", "train_data", "eval_data", "output_dir"),
    "rl": ("model", "train_data", "reward_model", "output_dir"),
    "preference": ("model", "train_data", "eval_data", "ref_model", "output_dir"),
    "evaluate": ("models", "data", "reward_model", "output"),
    "register": ("model", "metrics", "metrics_key"),
    "route": ("model", "data", "output_dir"),
}

#: Data sets prepare_data can hand on: output name -> data kind (alignpipe.data).
SPLITS: dict[str, str] = {
    "sft_train": "sft",
    "preference_train": "preference",
    "preference_eval": "preference",
    "rl_train": "prompts",
    "eval_set": "prompts",
}
#: The data set pipeline parameters: URI parameter -> prepare_data split. Each has a `<param>_format` parameter
#: (`format_param`): the source format, one of `alignpipe.data.convert.SOURCE_FORMATS`, default `auto`
#: (alignpipe's own format passes through unchanged; another tool's is detected and converted).
DATA_PARAMS: dict[str, str] = {"sft_data": "sft_train", "preference_data": "preference_train",
                               "preference_eval_data": "preference_eval", "rl_data": "rl_train", "eval_data": "eval_set"}
AUTO_FORMAT = "auto"


def format_param(data_param: str) -> str:
    """The format parameter of data set parameter `data_param` (sft_data -> sft_data_format)."""
    return f"{data_param}_format"


#: format parameter -> its data set parameter (derived).
FORMAT_PARAMS: dict[str, str] = {format_param(p): p for p in DATA_PARAMS}


def check_format(param: str, value: Any) -> str:
    """A `<dataset>_format` value, checked: ConfigError (one line) for a name that is not a source format."""
    from alignpipe.data.convert import SOURCE_FORMATS

    fmt = AUTO_FORMAT if value in (None, "") else value
    if fmt not in SOURCE_FORMATS:
        raise ConfigError(f"{param}: unknown data format {fmt!r} (choose one of: {', '.join(SOURCE_FORMATS)})")
    return fmt


#: A data set URI `demo:NAME` is the demo file NAME written by alignpipe.data.demo.write_demo_data (e.g.
#: demo:code_rl_train, the code variant); no URI at all means the demo files of DEMO_FILES.
DEMO_URI = "demo:"
#: prepare_data output -> file written by alignpipe.data.demo.write_demo_data.
DEMO_FILES = {"sft_train": "sft_train", "preference_train": "preference_train", "preference_eval": "preference_eval",
              "rl_train": "rl_train", "eval_set": "eval"}

# --------------------------------------------------------------------------------------------- dicts


def _get(d: dict, dotted: str, default: Any = None) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _set(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = d
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _pop(d: dict, dotted: str) -> None:
    parts = dotted.split(".")
    node = d
    for part in parts[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(parts[-1], None)
    if len(parts) > 1 and not node:  # drop an emptied block (e.g. `training: {}`)
        parent = _get(d, ".".join(parts[:-2])) if len(parts) > 2 else d
        if isinstance(parent, dict) and parent.get(parts[-2]) == {}:
            parent.pop(parts[-2])


# ------------------------------------------------------------------------------------------ defaults


def defaults() -> dict[str, dict[str, Any]]:
    """Per stage: {"typed": {component arg: default}, "config": {}} — the schema's own defaults.

    These are the compiled pipelines' UI defaults: settings for real models. A base model has no default
    (an empty `base_model` fails the run at prepare-data with one line). The demo's settings are a
    preset (`alignpipe run NAME --local --preset demo`, `alignpipe.presets`)."""
    out: dict[str, dict[str, Any]] = {}
    for stage, sp in STAGE_PARAMS.items():
        typed = {}
        for t in sp.typed:
            value = "" if t.key == "model" else _config.default_value(stage, t.key)
            typed[t.arg] = value
        out[stage] = {"typed": typed, "config": {}}
    return out


# ---------------------------------------------------------------------------------------- configs


def stage_config(stage: str, config: dict | None, typed: dict[str, Any], paths: dict[str, Any],
                 source: str | None = None, notes: list[str] | None = None):
    """The validated config of `stage`: the `config` dict, then typed parameters, then artifact paths, then
    the pipelines' rules (`pipeline_choices`; the lines they say are appended to `notes`).

    Raises ConfigError (one line per problem) if the config dict sets a key owned by a typed parameter or
    an artifact, or if the result fails the schema."""
    source = source or f"{stage}_config"
    if not isinstance(config or {}, dict):
        raise ConfigError(f"{source}: must be a mapping of config keys (got {type(config).__name__})")
    data = copy.deepcopy(dict(config or {}))
    owned = {t.key: f"the pipeline parameter {t.param}" for t in STAGE_PARAMS[stage].typed}
    owned.update({key: "the pipeline (an artifact path)" for key in PATH_KEYS[stage]})
    problems = [f"{source}: {key}: set by {who}, not in the config dict (remove it)"
                for key, who in owned.items() if _get(data, key) is not None]
    if problems:
        raise ConfigError("\n".join(problems))
    for name, value in typed.items():
        if name not in TYPED_KEYS[stage]:
            raise ConfigError(f"{source}: {name}: not a typed parameter of {stage}")
        if value is not None:
            _set(data, TYPED_KEYS[stage][name], value)
    for key, value in paths.items():
        if value is not None:
            _set(data, key, value)
    said = pipeline_choices(stage, data)
    if notes is not None:
        notes.extend(said)
    return _config.validate(stage, data, source=source)


#: What the pipelines decide for a stage beyond the table; each choice is logged by the step and recorded in
#: its output's metadata (`pipeline_choices`).
PPO_ENGINE_NOTE = ("rl_algorithm=ppo runs on engine alignpipe (TRL 1.x has no PPO; rl_engine=trl does not apply "
                   "to ppo)")
CRITIC_NOTE = "PPO critic initialised from the reward model (engine_settings.critic.init: reward_model)"


def pipeline_choices(stage: str, data: dict) -> list[str]:
    """Apply the pipelines' rules to an assembled (not yet validated) stage config `data`; one line per rule applied.

    - rl, `algorithm: ppo` with `engine: trl`: PPO exists on alignpipe's engine only (TRL 1.x removed it), so
      the step runs it there; `rl_engine` chooses the engine of grpo and rloo.
    - rl with a reward model (the rlhf pipeline) and a critic (`gae`, which ppo uses): the critic's value head
      starts from the reward model (`engine_settings.critic.init: reward_model`) unless the `rl_config` dict sets
      `engine_settings.critic.init` itself (or `critic: null`)."""
    notes: list[str] = []
    if stage != "rl":
        return notes
    if data.get("algorithm") == "ppo" and data.get("engine", "trl") == "trl":
        data["engine"] = "alignpipe"
        notes.append(PPO_ENGINE_NOTE)
    es = data.get("engine_settings") if isinstance(data.get("engine_settings"), dict) else {}
    gae = es.get("advantage") == "gae" or (es.get("advantage") is None and data.get("algorithm") == "ppo")
    critic = es.get("critic", {})
    if (data.get("engine") == "alignpipe" and gae and data.get("reward_model") and isinstance(critic, dict)
            and "init" not in critic):
        _set(data, "engine_settings.critic.init", "reward_model")
        notes.append(CRITIC_NOTE)
    return notes


def dataset_path(artifact) -> str | None:
    """Path of a data set artifact, or None for a placeholder prepare_data left empty (optional split)."""
    if artifact is None:
        return None
    meta = getattr(artifact, "metadata", None) or {}
    if meta.get("rows") == 0:
        return None
    p = Path(artifact.path)
    if not p.exists() or (p.is_file() and p.stat().st_size == 0):
        return None
    return artifact.path


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """The component runner's error boundary: a UserError (bad config, data, model, storage, ...) prints
    one `error:` line per problem and ends the task with exit code 2, no traceback; anything else is a
    bug and keeps its traceback."""
    try:
        yield
    except UserError as e:
        raise SystemExit(report_user_error(e)) from None


def run_component(stage: str, config: dict | None, typed: dict[str, Any], paths: dict[str, Any],
                  metrics=None, report=None, output=None):
    """Validate, run the stage (`alignpipe.launch.run_stage`), log metrics, write the HTML report, tag the
    output. User errors end the task with one line and exit code 2 (`user_errors_exit`)."""
    from alignpipe import launch

    launch.quiet_libraries()
    with user_errors_exit():
        notes: list[str] = []
        cfg = stage_config(stage, config, typed, paths, notes=notes)
        for note in notes:
            print(f"{stage}: {note}", flush=True)
        result = launch.run_stage(stage, cfg)
    _record(result, cfg, metrics, report, output)
    return result


def _record(result, cfg, metrics=None, report=None, output=None) -> None:
    from alignpipe import report as _report

    if metrics is not None:
        _report.log_metrics(metrics, result)
    if report is not None:
        _report.write_html(report.path, result, cfg)
    if output is not None:
        output.metadata.update({k: v for k, v in result.lineage.items()})
        output.metadata["seconds"] = round(result.seconds, 2)
        if getattr(cfg, "stage", None) == "rl" and cfg.engine == "alignpipe":
            es = cfg.engine_settings
            gae = es.advantage == "gae" or (es.advantage is None and cfg.algorithm == "ppo")
            output.metadata["critic"] = es.critic.init if gae and es.critic is not None else "none"


# ----------------------------------------------------------------------------------- prepare_data


def _copy_data(src_uri: str, dest: Path) -> None:
    """Copy a data set (jsonl/parquet file or save_to_disk folder; local or s3://) to an artifact path."""
    from alignpipe import storage
    from alignpipe.data import DataError

    try:
        if storage.is_remote(src_uri):
            from alignpipe.data.io import local_path

            local = local_path(src_uri)
        else:
            local = storage.to_path(src_uri)
    except storage.StorageError as e:
        raise DataError(str(e)) from None
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if local.is_dir():
        shutil.copytree(local, dest)
    else:
        shutil.copyfile(local, dest)


def prepare_data(uris: dict[str, str], required: list[str], outputs: dict[str, Any], seed: int = 0,
                 base_model: str | None = None, formats: dict[str, str] | None = None) -> dict:
    """Validate every data set the pipeline needs and hand each on as a Dataset artifact.

    - `uris`: split -> data set URI ("" = not given). If no URI is given at all, the embedded demo data
      (seed `seed`) is written instead.
    - `formats`: split -> source format (`alignpipe.data.convert.SOURCE_FORMATS`; missing or "" = `auto`).
      `auto`: a data set that passes as alignpipe's own format is handed on unchanged; otherwise its format
      is detected and it is converted (`alignpipe.data.convert`). What was detected is printed and recorded
      in the artifact's metadata (`source_format`, `detected`). A row that cannot be converted is a problem
      `PATH:LINE: problem (fix)`; with any, the step fails with every one of them and their count.
    - `required`: the splits this pipeline trains/evaluates on; a missing one is an error.
    - `outputs`: split -> KFP Dataset artifact (`.path`, `.metadata`). Splits not given are left as empty
      placeholders with `metadata["rows"] = 0` (`dataset_path()` maps them to None).
    - `base_model`: the pipeline's base model; empty is an error (there is no silent default outside a
      preset). None skips the check (callers that train nothing).
    Raises DataError listing every problem of every data set before anything is trained."""
    if base_model is not None and not str(base_model).strip():
        raise ConfigError("base_model: empty — set the pipeline parameter base_model to a hub id (e.g. "
                          "Qwen/Qwen2.5-0.5B-Instruct), an s3:// or local model folder, or `tiny` for the embedded "
                          "test model (or run with --preset demo)")
    from alignpipe.data import DataError

    unknown = sorted(set(uris) - set(SPLITS)) + sorted(set(required) - set(SPLITS)) + sorted(set(formats or {}) - set(SPLITS))
    if unknown:
        raise ConfigError(f"prepare_data: unknown split(s) {', '.join(unknown)} (choose from {', '.join(SPLITS)})")
    param_of = {split: param for param, split in DATA_PARAMS.items()}
    fmts = {split: check_format(format_param(param_of[split]), (formats or {}).get(split)) for split in SPLITS}
    given = {k: v for k, v in uris.items() if v}
    demo = not given
    problems: list[str] = []
    if not demo:
        missing = [s for s in required if not given.get(s)]
        if missing:
            raise DataError([f"prepare_data: no data set URI for {s} (give one, or give none to run on the demo data)"
                             for s in missing])
    tmp = Path(tempfile.mkdtemp(prefix="alignpipe-data-"))
    summary: dict[str, dict] = {}
    try:
        named = {s: u[len(DEMO_URI):] for s, u in given.items() if str(u).startswith(DEMO_URI)}
        if demo or named:
            from alignpipe.data.demo import write_demo_data

            files = write_demo_data(tmp, seed=seed)
            unknown_demo = sorted(f"{s}={DEMO_URI}{n}" for s, n in named.items() if n not in files)
            if unknown_demo:
                raise DataError([f"prepare_data: {u}: no such demo file (choose from "
                                 f"{', '.join(DEMO_URI + f for f in files)})" for u in unknown_demo])
            if demo:
                given = {s: files[DEMO_FILES[s]] for s in SPLITS}
            else:
                given = {s: files[named[s]] if s in named else u for s, u in given.items()}
        for split, kind in SPLITS.items():
            art = outputs.get(split)
            if art is None:
                continue
            uri = given.get(split)
            if not uri:
                Path(art.path).parent.mkdir(parents=True, exist_ok=True)
                Path(art.path).write_bytes(b"")
                art.metadata.update({"rows": 0, "source": "", "kind": kind})
                continue
            shown = "demo" if demo else DEMO_URI + named[split] if split in named else uri
            step = _data_step(uri, kind, fmts[split])
            info = step.reused(Path(art.path)) if step is not None else None
            if info is not None:
                info["source"] = shown
                print(f"{format_param(param_of[split]).removesuffix('_format')}: {uri}: reused {info['reused_from']} "
                      f"(the same bytes were taken in before; ALIGNPIPE_FORCE_RERUN=1 or --rerun takes them in again)",
                      flush=True)
                art.metadata.update(info)
                summary[split] = info
                continue
            report, source = _take_in(uri, kind, fmts[split], Path(art.path), format_param(param_of[split]))
            if not report.ok:
                problems.extend(report.problems)
                continue
            info = {"rows": report.rows, "format": report.format, "digest": report.digest, "kind": kind,
                    "source": shown, **source}
            art.metadata.update(info)
            summary[split] = info
            if step is not None:
                step.record(Path(art.path), info)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        raise DataError(problems)
    return summary


def _data_step(uri: str, kind: str, fmt: str):
    """The reuse identity of data set `uri` (alignpipe.reuse.DataStep), or None when it cannot be read (then
    taking it in reports why)."""
    from alignpipe import reuse
    from alignpipe.data import DataError
    from alignpipe.data.io import local_path

    try:
        local = local_path(uri)
        return reuse.DataStep(local, kind, fmt) if local.exists() else None
    except (DataError, OSError, UserError):
        return None


def _take_in(uri: str, kind: str, fmt: str, dest: Path, param: str):
    """Hand data set `uri` on to `dest` in alignpipe's format: (validation report, source metadata).

    `alignpipe` (or `auto` on a file that passes as alignpipe's format): validated and copied unchanged.
    Otherwise converted from `fmt` (`auto`: detected) to JSON Lines at `dest` and validated there. The
    report's problems are `PATH:LINE: problem (fix)` lines, one per row that cannot be taken in."""
    from alignpipe import data
    from alignpipe.data import convert

    if fmt in (AUTO_FORMAT, "alignpipe"):
        report = data.validate(uri, kind)
        if report.ok or fmt == "alignpipe":
            if report.ok:
                _copy_data(uri, dest)
                if fmt == AUTO_FORMAT:
                    print(f"{param}: {uri}: detected format alignpipe: the rows pass as {report.format} "
                          "(handed on unchanged)", flush=True)
            detected = f"detected format alignpipe ({report.format})" if fmt == AUTO_FORMAT else ""
            return report, {"source_format": "alignpipe", "detected": detected}
    try:
        table = convert.read_source(uri)
        rows, conv = convert.convert_table(table, fmt, kind)
    except convert.ConversionError as e:
        if fmt == AUTO_FORMAT:  # neither alignpipe's format nor a known one: alignpipe's own problems say most
            return report, {}
        return _failed(uri, kind, [f"{param}={fmt}: {p}" if not p.startswith(uri) else p for p in e.problems]), {}
    if fmt == AUTO_FORMAT and conv.source_format == "alignpipe":  # looks like ours, yet does not validate
        return report, {}
    if conv.detected:
        print(f"{param}: {uri}: {conv.detected}", flush=True)
    if conv.problems:
        closing = (f"{uri}: {len(conv.problems)} of {conv.rows_in} rows cannot be converted from {conv.source_format} "
                   f"({kind}); nothing is trained on a partly converted data set (fix the rows, or convert it with "
                   f"`alignpipe data convert --from {conv.source_format} --max-bad N` and give the converted file)")
        return _failed(uri, kind, [*conv.problems, closing]), {}
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    from alignpipe.data.io import write_jsonl

    write_jsonl([row for _, row in rows], dest)
    report = data.validate(str(dest), kind)
    if not report.ok:
        return _failed(uri, kind, [f"{uri}: after conversion from {conv.source_format}: {p}" for p in report.problems]), {}
    print(f"{param}: {uri}: converted {report.rows} of {conv.rows_in} rows from {conv.source_format} to "
          f"{report.format}", flush=True)
    return report, {"source_format": conv.source_format, "detected": conv.detected, "converted_rows": report.rows}


def _failed(uri: str, kind: str, problems: list[str]):
    from alignpipe.data.errors import ValidationReport

    return ValidationReport(path=uri, kind=kind, rows=0, format="unknown", digest="", problems=problems)


def registry_outputs(result) -> dict:
    """The register step's output parameter: {model_name, version, alias, promoted, reason}."""
    lin = result.lineage
    return {"model_name": lin.get("model_name"), "version": lin.get("version"), "alias": lin.get("alias"),
            "promoted": lin.get("promoted") == "true", "reason": lin.get("reason", "")}


def preset_stage_configs(values: dict[str, Any]) -> dict[str, dict]:
    """Stage config dicts (without artifact paths) from pipeline parameter values, e.g. a preset's
    (`alignpipe.runs.preset_params("demo", "rlhf")`): each stage's `<stage>_config` dict with its typed
    parameters set — what a pipeline would hand each stage."""
    out: dict[str, dict] = {}
    for stage, sp in STAGE_PARAMS.items():
        cfg = copy.deepcopy(values.get(sp.config_param) or {})
        for t in sp.typed:
            if t.param in values:
                _set(cfg, t.key, copy.deepcopy(values[t.param]))
        out[stage] = cfg
    return out
