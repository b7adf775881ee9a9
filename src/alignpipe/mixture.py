"""`alignpipe mixture search`: which domain mixture to train RL on (MoDoMoDo-style).

1. **Candidates**: the uniform mixture, each single domain (when `include_vertices`), and Dirichlet(1) draws
   over the train data's domains, up to `candidates` weightings (or the list given in the config).
2. **Proxy runs**: for each weighting, the RL stage of `rl` (a stage config: path or mapping) for
   `proxy_steps` steps with `sampler: {name: mixture, weights: ...}`. Each proxy is a normal RL stage run, so
   a rerun of the search reuses the proxies it has already trained (content-addressed reuse).
3. **Score**: every proxy model is evaluated greedily on each set of `eval_data` (name -> prompts with
   `answer`; e.g. an in-domain and an out-of-domain split) with the evaluate stage; the objective is the mean
   of `metric` over the sets.
4. **Fit and propose**: a Scheffé quadratic mixture model (score ~ Σ b_i w_i + Σ b_ij w_i w_j, ridge; linear
   terms only when there are too few proxies for the pairs) is fitted to (weights, objective); the proposal
   is the weighting with the best predicted objective among the candidates, the simplex's vertices and
   `search_points` Dirichlet draws.

Writes ``mixture_search.json`` (candidates, per-set scores, the fit, the proposal) under `output_dir` and
returns it; the proposal is a sampler block for the RL config: ``sampler: {name: mixture, weights: {...}}``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from alignpipe.base import UserError
from alignpipe.config import RewardSpec, _Strict


class MixtureSearchError(UserError, ValueError):
    """A mixture search that cannot run as configured."""


class MixtureSearchConfig(_Strict):
    """A mixture search (`alignpipe mixture search --config FILE`)."""

    rl: str | dict[str, Any] = Field(description="The RL stage config of the proxy runs: a YAML path or a mapping "
                                     "(its train_data must have a `domain` column).")
    eval_data: dict[str, str] = Field(description="Held-out sets, name -> prompts file with `answer`; the objective "
                                      "is the mean of `metric` over them.")
    output_dir: str = Field(description="Where the proxy models and mixture_search.json go.")
    candidates: int | list[dict[str, float]] = Field(8, description="How many weightings to try (uniform, the "
                                                     "single domains, then Dirichlet draws), or the list itself.")
    include_vertices: bool = Field(True, description="Try each single domain among the candidates.")
    proxy_steps: int = Field(20, ge=1, description="RL steps of each proxy run.")
    metric: str = Field("accuracy", description="Evaluate metric the objective averages (greedy accuracy).")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="exact_match")],
                                      description="Rewards of the evaluation (what makes an answer correct).")
    eval_limit: int | None = Field(None, ge=1, description="Evaluate only the first N prompts of each set.")
    max_new_tokens: int = Field(1024, ge=1, description="Tokens generated per evaluation answer.")
    batch_size: int = Field(64, ge=1)
    ridge: float = Field(1e-3, ge=0, description="Ridge penalty of the fit.")
    search_points: int = Field(4000, ge=1, description="Dirichlet draws the proposal is chosen from.")
    seed: int = 0

    @field_validator("candidates")
    @classmethod
    def _enough(cls, v):
        if isinstance(v, int) and v < 2:
            raise ValueError("at least 2 candidates are needed to compare mixtures")
        return v


def candidate_weights(domains: list[str], n: int, seed: int = 0, vertices: bool = True) -> list[dict[str, float]]:
    """Uniform first, then each domain alone (if `vertices`), then Dirichlet(1) draws; `n` in all, distinct."""
    rng = random.Random(seed)
    out: list[dict[str, float]] = []

    def add(w: dict[str, float]) -> None:
        w = {d: round(v, 3) for d, v in w.items()}
        if w not in out and len(out) < n:
            out.append(w)

    add({d: 1.0 / len(domains) for d in domains})
    if vertices:
        for d in domains:
            add({e: float(e == d) for e in domains})
    while len(out) < n:
        add(_dirichlet(domains, rng))
    return out


def _dirichlet(domains: list[str], rng: random.Random) -> dict[str, float]:
    g = [rng.gammavariate(1.0, 1.0) for _ in domains]
    s = sum(g) or 1.0
    return {d: x / s for d, x in zip(domains, g)}


def _features(w: list[float], pairs: bool) -> list[float]:
    f = list(w)
    if pairs:
        f += [w[i] * w[j] for i in range(len(w)) for j in range(i + 1, len(w))]
    return f


class Fit:
    """Scheffé mixture model: score(w) = Σ b_i w_i (+ Σ b_ij w_i w_j), fitted by ridge least squares."""

    def __init__(self, domains: list[str], weights: list[dict[str, float]], scores: list[float], ridge: float = 1e-3):
        import numpy as np

        self.domains = domains
        d = len(domains)
        self.pairs = d > 1 and len(scores) >= d + d * (d - 1) // 2
        x = np.array([_features([w.get(k, 0.0) for k in domains], self.pairs) for w in weights], dtype=float)
        y = np.array(scores, dtype=float)
        a = x.T @ x + ridge * np.eye(x.shape[1])
        self.coef = np.linalg.solve(a, x.T @ y)
        pred = x @ self.coef
        ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
        self.r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0

    def predict(self, w: dict[str, float]) -> float:
        return float(sum(c * f for c, f in zip(self.coef, _features([w.get(k, 0.0) for k in self.domains],
                                                                     self.pairs))))

    def terms(self) -> dict[str, float]:
        names = list(self.domains)
        if self.pairs:
            names += [f"{a}*{b}" for i, a in enumerate(self.domains) for b in self.domains[i + 1:]]
        return {n: round(float(c), 6) for n, c in zip(names, self.coef)}


def propose(fit: Fit, tried: list[dict[str, float]], points: int, seed: int = 0) -> tuple[dict[str, float], float]:
    """The weighting with the best predicted score among `tried`, the vertices and `points` Dirichlet draws."""
    rng = random.Random(seed + 1)
    pool = list(tried) + [{e: float(e == d) for e in fit.domains} for d in fit.domains]
    pool += [_dirichlet(fit.domains, rng) for _ in range(points)]
    best = max(pool, key=fit.predict)
    return {d: round(v, 3) for d, v in best.items()}, fit.predict(best)


def _domains(train_data: str) -> list[str]:
    from alignpipe.stages.common import load_data

    ds, _ = load_data(train_data, "prompts")
    if "domain" not in ds.column_names:
        raise MixtureSearchError(f"{train_data}: domain: the RL train data have no `domain` column (add one per row: "
                                 "a mixture is a weighting of domains)")
    return sorted({str(d) for d in ds["domain"] if d is not None})


def _proxy_config(cfg: MixtureSearchConfig, weights: dict[str, float], output_dir: str, name: str):
    """The RL stage config of one proxy: `rl` as written (so derived defaults follow the proxy's max_steps),
    with the proxy's steps, sampler weights and output."""
    from alignpipe import config

    data = config.read_mapping(cfg.rl) if isinstance(cfg.rl, str) else json.loads(json.dumps(cfg.rl))
    data["output_dir"] = output_dir
    data["run_name"] = f"mixture-{name}"
    data.setdefault("training", {})["max_steps"] = cfg.proxy_steps
    if weights:  # (the probe that only checks the config keeps the config's own sampler)
        data["sampler"] = {**(data.get("sampler") or {}), "name": "mixture", "weights": weights}
    return config.validate("rl", data, f"mixture search: rl (proxy {name})")


def search(cfg: MixtureSearchConfig, say=print) -> dict[str, Any]:
    from alignpipe import config
    from alignpipe.stages import evaluate, rl

    probe = _proxy_config(cfg, {}, str(Path(cfg.output_dir) / "proxies" / "probe"), "probe")
    domains = _domains(probe.train_data)
    if len(domains) < 2:
        raise MixtureSearchError(f"{probe.train_data}: domain: one domain only ({domains}); a mixture search needs "
                                 "at least two")
    if isinstance(cfg.candidates, int):
        tried = candidate_weights(domains, cfg.candidates, cfg.seed, cfg.include_vertices)
    else:
        unknown = sorted({d for w in cfg.candidates for d in w} - set(domains))
        if unknown:
            raise MixtureSearchError(f"mixture search: candidates: domain(s) {unknown} not in the train data "
                                     f"(it has {domains})")
        tried = []
        for w in cfg.candidates:  # normalised over every domain (the fit works on the simplex)
            total = sum(max(0.0, float(v)) for v in w.values())
            if total <= 0:
                raise MixtureSearchError(f"mixture search: candidates: {w} has no positive weight")
            tried.append({d: round(max(0.0, float(w.get(d, 0.0))) / total, 6) for d in domains})
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    proxies: dict[str, str] = {}
    for i, w in enumerate(tried):
        name = f"mix{i}"
        proxy = _proxy_config(cfg, w, str(out / "proxies" / name), name)
        say(f"mixture search: proxy {name} ({i + 1}/{len(tried)}): weights {w}")
        rl.run(proxy)
        proxies[name] = proxy.output_dir
    scores: dict[str, dict[str, float]] = {name: {} for name in proxies}
    for set_name, uri in cfg.eval_data.items():
        ecfg = config.validate("evaluate", {
            "models": proxies, "data": uri, "output": str(out / f"eval-{set_name}.json"),
            "rewards": [r.model_dump(mode="json") for r in cfg.rewards], "k": 1, "kl": False,
            "bootstrap_resamples": 0, "tracking": False, "limit": cfg.eval_limit,
            "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size, "seed": cfg.seed},
            f"mixture search: eval {set_name}")
        metrics = evaluate.run(ecfg).metrics
        for name in proxies:
            key = f"{name}/{cfg.metric}"
            if key not in metrics:
                raise MixtureSearchError(f"mixture search: metric: evaluate reports no `{cfg.metric}` (it has "
                                         f"{sorted({k.split('/', 1)[1] for k in metrics})[:12]})")
            scores[name][set_name] = float(metrics[key])
    objective = [sum(scores[n].values()) / len(scores[n]) for n in proxies]
    fit = Fit(domains, tried, objective, cfg.ridge)
    best, predicted = propose(fit, tried, cfg.search_points, cfg.seed)
    result = {
        "domains": domains, "metric": cfg.metric, "proxy_steps": cfg.proxy_steps, "eval_data": cfg.eval_data,
        "candidates": [{"name": n, "weights": w, "scores": scores[n], "objective": o, "model": proxies[n]}
                       for n, w, o in zip(proxies, tried, objective)],
        "fit": {"model": "scheffe-quadratic" if fit.pairs else "scheffe-linear", "terms": fit.terms(),
                "r2": round(fit.r2, 4)},
        "proposal": {"weights": best, "predicted_objective": round(predicted, 4),
                     "sampler": {"name": "mixture", "weights": best}},
        "best_tried": max(({"name": n, "weights": w, "objective": o} for n, w, o in zip(proxies, tried, objective)),
                          key=lambda r: r["objective"]),
    }
    path = out / "mixture_search.json"
    path.write_text(json.dumps(result, indent=1))
    say(f"mixture search: proposal {best} (predicted {cfg.metric} {predicted:.3f}; best tried "
        f"{result['best_tried']['weights']} at {result['best_tried']['objective']:.3f}); written to {path}")
    return result


def load(path: str | Path, overrides: list[str] | None = None) -> MixtureSearchConfig:
    """A mixture search config from YAML, with dotted `key=value` overrides; one line per problem."""
    from pydantic import ValidationError

    from alignpipe.config import ConfigError, apply_overrides, format_validation_error, read_mapping

    data = apply_overrides(read_mapping(path), overrides, str(path))
    try:
        return MixtureSearchConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
