"""Registration in the MLflow Model Registry with a promotion gate.

1. The model folder must be complete: a published folder's MANIFEST.json is verified (sizes and
   checksums) and config, safetensors weights and tokenizer must be present. Otherwise nothing is
   registered.
2. A new version is created. Its source is the published S3 location for `s3://` models (the
   registry points at the bucket; nothing is copied), or the files logged to this run's artifacts
   for local folders. Lineage tags: data digests, parent model, config hash, git sha, eval metrics.
3. Gate: alias `champion` only if `gate_metric` passes `gate_threshold` and beats the current
   champion (ties keep the champion); otherwise alias `challenger`. With `gate_on: ci_low` the gate
   value is the conservative end of the metric's bootstrap CI from evaluate (the lower bound; the upper
   one when lower is better), compared with the champion's gate value of the same kind. The gate metric
   may be a delta: `delta_vs_<model>/<metric>` (e.g. `delta_vs_base/accuracy` with threshold 0 and
   `gate_on: ci_low`: promote only on an improvement over the base that the CI says is real).
   Only like is compared with like: the champion must carry a value of the same gate metric (and `gate_on`),
   measured on the same eval data (digest) with the same `k`; otherwise the new version is `challenger`,
   with the reason in its `alignpipe.gate_decision` tag. A version is never promoted without a comparison
   while a champion exists.

Concurrent registrations of one model name are last-writer-wins: the gate reads the champion and sets the
alias in separate registry calls, so two registrations racing may both read the same champion.
"""

from __future__ import annotations

from alignpipe.base import UserError

import json
import math
from pathlib import Path

from alignpipe import models, storage, tracking
from alignpipe.config import RegisterConfig
from alignpipe.stages.common import StageResult, Timer, base_lineage

CHAMPION, CHALLENGER = "champion", "challenger"


class RegistrationError(UserError, ValueError):
    """The model cannot be registered; nothing was registered."""


def _model_view(data: dict, key: str) -> tuple[dict, dict]:
    """({metric: value}, {metric: (ci_low, ci_high)}) of one model, deltas as `delta_vs_<ref>/<metric>`."""
    per_model = data.get("models", data)
    values = dict(per_model[key])
    cis = {m: tuple(v) for m, v in (data.get("ci", {}).get(key) or {}).items()}
    for ref, table in (data.get("deltas", {}).get(key) or {}).items():
        for m, d in table.items():
            values[f"delta_vs_{ref}/{m}"] = d.get("delta")
            cis[f"delta_vs_{ref}/{m}"] = (d.get("ci_low"), d.get("ci_high"))
    return values, cis


def _number(v) -> float:
    return float("nan") if v is None else float(v)


def _eval_context(cfg: RegisterConfig) -> dict[str, str]:
    """What the gate value was measured on (`alignpipe.eval_data_digest`, `alignpipe.eval_k` tags): values
    are compared only between versions whose context is the same."""
    if not cfg.metrics or not Path(cfg.metrics).is_file():
        return {}
    data = json.loads(Path(cfg.metrics).read_text())
    if "models" not in data:
        return {}
    return {f"alignpipe.eval_{k}": str(data[src]) for k, src in (("data_digest", "data_digest"), ("k", "k"))
            if data.get(src) is not None}


def _not_comparable(champ, cfg: RegisterConfig, context: dict[str, str]) -> str | None:
    """Why the champion's gate value cannot be compared with this version's (None when it can)."""
    tags = champ.tags
    if tags.get("alignpipe.gate_metric") != cfg.gate_metric or tags.get("alignpipe.gate_on", "value") != cfg.gate_on:
        return (f"champion v{champ.version} has no {cfg.gate_metric} ({cfg.gate_on}) gate value to compare with "
                f"(it was gated on {tags.get('alignpipe.gate_metric', 'nothing')}); not promoted without a comparison")
    if tags.get("alignpipe.eval_data_digest") != context.get("alignpipe.eval_data_digest"):
        return (f"champion v{champ.version} was evaluated on other eval data (digest "
                f"{tags.get('alignpipe.eval_data_digest', 'unknown')}, this one "
                f"{context.get('alignpipe.eval_data_digest', 'unknown')}); not comparable")
    if tags.get("alignpipe.eval_k") != context.get("alignpipe.eval_k"):
        return (f"champion v{champ.version} was evaluated with k={tags.get('alignpipe.eval_k', 'unknown')}, this "
                f"one with k={context.get('alignpipe.eval_k', 'unknown')}; not comparable")
    value = float(tags.get("alignpipe.gate_value", "nan"))
    if math.isnan(value):
        return f"champion v{champ.version} has no {cfg.gate_metric} value; not promoted without a comparison"
    return None


def _gate_value(cfg: RegisterConfig) -> tuple[float | None, dict]:
    if not cfg.metrics:
        return None, {}
    path = Path(cfg.metrics)
    if not path.is_file():
        raise RegistrationError(f"{cfg.metrics}: metrics file not found (run evaluate first, or unset metrics)")
    data = json.loads(path.read_text())
    per_model = data.get("models", data)
    key = cfg.metrics_key or (list(per_model)[-1] if per_model else None)
    if key not in per_model:
        raise RegistrationError(f"{cfg.metrics}: no metrics for model {key!r} (metrics_key: one of {', '.join(per_model)})")
    metrics, cis = _model_view(data, key)
    if cfg.gate_metric not in metrics:
        raise RegistrationError(f"{cfg.metrics}: gate_metric {cfg.gate_metric!r} not found "
                                f"(choose one of: {', '.join(sorted(metrics))})")
    if cfg.gate_on == "ci_low":
        if cfg.gate_metric not in cis:
            raise RegistrationError(f"{cfg.metrics}: gate_on ci_low but no confidence interval for "
                                    f"{cfg.gate_metric!r} (evaluate with bootstrap_resamples > 0, or gate_on: value)")
        low, high = cis[cfg.gate_metric]
        return _number(low if cfg.higher_is_better else high), metrics
    return _number(metrics[cfg.gate_metric]), metrics


def verified_model_dir(uri: str) -> Path:
    """Local folder of a complete, verified model; raises RegistrationError otherwise."""
    try:
        local = storage.fetch(uri, require_manifest=True)
    except storage.StorageError as e:
        raise RegistrationError(f"refusing to register {uri}: {e}") from None
    missing = models.missing_files(local)
    if missing:
        raise RegistrationError(f"refusing to register {uri}: incomplete model folder, missing {', '.join(missing)}")
    return Path(local)


def _better(new: float, old: float, higher: bool) -> bool:
    return new > old if higher else new < old


def run(cfg: RegisterConfig) -> StageResult:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    local = verified_model_dir(cfg.model)
    value, eval_metrics = _gate_value(cfg)
    context = _eval_context(cfg)
    try:
        with Timer() as timer, tracking.stage_run("register", cfg, True, cfg.run_name or "register") as tr:
            import mlflow

            client = MlflowClient()
            try:
                client.get_registered_model(cfg.model_name)
            except MlflowException:
                client.create_registered_model(cfg.model_name, description="Policies trained by alignpipe")
            if storage.is_remote(cfg.model):
                source = cfg.model
            else:
                mlflow.log_artifacts(str(local), artifact_path="model")
                source = mlflow.get_artifact_uri("model")
            lineage = base_lineage("register", cfg, model_uri=cfg.model, **cfg.lineage)
            tags = {f"alignpipe.{k}": v for k, v in lineage.items()}
            tags.update({f"eval.{tracking.metric_key(k)}": str(v) for k, v in eval_metrics.items()})
            if value is not None:
                tags.update({"alignpipe.gate_metric": cfg.gate_metric, "alignpipe.gate_value": str(value),
                             "alignpipe.gate_on": cfg.gate_on, **context})
            mv = client.create_model_version(cfg.model_name, source=source, run_id=tr.run_id, tags=tags)

            champion_value, reason, incomparable = None, "", None
            try:
                champ = client.get_model_version_by_alias(cfg.model_name, CHAMPION)
            except MlflowException:
                champ = None
            if champ is not None:
                incomparable = _not_comparable(champ, cfg, context)
                if incomparable is None:
                    champion_value = float(champ.tags["alignpipe.gate_value"])
            gate = cfg.gate_metric if cfg.gate_on == "value" else (
                f"{cfg.gate_metric}[{'ci_low' if cfg.higher_is_better else 'ci_high'}]")
            if value is None or math.isnan(value):
                promoted, reason = False, "no gate metric"
            elif not (value >= cfg.gate_threshold if cfg.higher_is_better else value <= cfg.gate_threshold):
                promoted, reason = False, f"{gate}={value:.4g} does not pass threshold {cfg.gate_threshold}"
            elif incomparable is not None:
                promoted, reason = False, f"{gate}={value:.4g} passes {cfg.gate_threshold}, but {incomparable}"
            elif champion_value is not None and not _better(value, champion_value, cfg.higher_is_better):
                promoted, reason = False, f"{gate}={value:.4g} does not beat champion v{champ.version} ({champion_value:.4g})"
            else:
                promoted, reason = True, f"{gate}={value:.4g} passes {cfg.gate_threshold}" + (
                    f" and beats champion v{champ.version} ({champion_value:.4g})" if champion_value is not None else "")
            alias = CHAMPION if promoted else CHALLENGER
            client.set_registered_model_alias(cfg.model_name, alias, mv.version)
            client.set_model_version_tag(cfg.model_name, mv.version, "alignpipe.gate_decision", reason)
            metrics = {"registry/version": float(mv.version), "registry/promoted": float(promoted)}
            if value is not None:
                metrics[f"registry/{cfg.gate_metric}" + ("" if cfg.gate_on == "value" else "_ci_low")] = value
            tr.log_metrics(metrics)
            tr.set_tags({"alignpipe.registered_model": f"{cfg.model_name}/{mv.version}", "alignpipe.alias": alias})
    except MlflowException as e:
        text = " ".join(str(e).split()) or type(e).__name__
        # keep the endpoint (start) and the root cause (end) of MLflow's long retry messages
        short = text if len(text) <= 400 else f"{text[:150]} ... {text[-230:]}"
        raise RegistrationError(
            f"MLflow at {tracking.tracking_uri()} failed during registration ({short}); {cfg.model} stays "
            "published and unregistered (re-run register once the tracking server is reachable)") from None
    lineage.update({"model_name": cfg.model_name, "version": str(mv.version), "alias": alias,
                    "promoted": str(promoted).lower(), "reason": reason, "source": source,
                    "mlflow_run_id": tr.run_id})
    return StageResult("register", f"models:/{cfg.model_name}/{mv.version}", metrics, lineage, [], timer.seconds)
