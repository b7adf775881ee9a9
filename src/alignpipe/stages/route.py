"""Route: split training prompts by the current model's pass rate (DeReason-style), easy ones to SFT, hard
ones to RL.

For every prompt, `k` samples (temperature `temperature`, through `alignpipe.models.generate`, vLLM when
installed and a GPU is present) are scored by the verifiable `rewards` (`alignpipe.rewards`). A sample passes
when every reward that applies to it gives its full value (the rule of evaluate's accuracy: weighted sum >= the
sum of the positive weights of the rewards that apply). pass rate = passing samples / k.

- **easy** (pass rate >= `threshold`) -> `easy.jsonl`, SFT rows `{prompt, completion}`: the prompt as it is and
  its reference solution as the completion (an assistant message when the prompt is a chat). The reference is the
  `reference` column; `auto` takes `completion`, else `solution`, else `answer` — the first the row has, non-empty.
  `answer` comes last because it is often only the final answer (for code prompts it is the expected output, not
  a program); in the demo tasks it is the whole reply. An easy prompt without a reference stays an RL prompt
  (counted as `route/easy_without_reference`).
- **hard** (pass rate < `threshold`) -> `hard.jsonl`, RL prompt rows: the row as it came (`prompt`, `answer`,
  `domain`, `difficulty`, ...), with `pass_rate` added.
- `pass_rates.json`: per prompt {index, pass_rate, passes, k, routed (easy|hard), domain, difficulty}, with the
  threshold, counts and a per-domain summary; it is also logged to MLflow (`route.json`) with the counts
  (`route/easy`, `route/hard`, `route/mean_pass_rate`, ...).

An empty split is an error unless `allow_empty` (the SFT or RL step after it would have nothing to train on).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from alignpipe import rewards, tracking
from alignpipe.base import UserError
from alignpipe.config import RouteConfig
from alignpipe.models.generate import make_generator
from alignpipe.stages.common import StageResult, Timer, base_lineage, load_data, published_output

EASY_FILE, HARD_FILE, PASS_RATES_FILE = "easy.jsonl", "hard.jsonl", "pass_rates.json"
REFERENCE_COLUMNS = ("completion", "solution", "answer")


class RouteError(UserError, ValueError):
    """Routing left a split empty (and `allow_empty` is off)."""


def passes(scored: dict[str, list[float]], weights: list[float]) -> list[bool]:
    """Per completion: passes when the rewards that apply to it (value not NaN) give their full weighted value
    (weighted sum >= the sum of their positive weights); no applicable reward with a positive weight = fails."""
    columns = [v for name, v in scored.items() if name != "total"]
    out = []
    for i, total in enumerate(scored["total"]):
        full = sum(w for w, values in zip(weights, columns) if w > 0 and not math.isnan(values[i]))
        out.append(bool(full > 0 and not math.isnan(total) and total >= full - 1e-9))
    return out


def pass_rates(generator, rows: list[dict], funcs, weights, cfg: RouteConfig) -> list[tuple[int, float]]:
    """(passing samples, pass rate) per row, from `cfg.k` samples each."""
    prompts = [r["prompt"] for r in rows]
    samples = generator.generate(prompts, n=cfg.k, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                 top_p=cfg.top_p, seed=cfg.seed)
    columns = sorted({c for r in rows for c in r if c != "prompt"})
    flat = [s for outs in samples for s in outs]
    flat_prompts = [p for p in prompts for _ in range(cfg.k)]
    flat_cols = {c: [r.get(c) for r in rows for _ in range(cfg.k)] for c in columns}
    ok = passes(rewards.score(funcs, weights, flat_prompts, flat, **flat_cols), weights)
    out = []
    for i in range(len(rows)):
        n = sum(ok[i * cfg.k:(i + 1) * cfg.k])
        out.append((n, n / cfg.k))
    return out


def reference_of(row: dict, column: str = "auto") -> str | None:
    """An easy prompt's SFT target: `column`, or with `auto` the first of completion/solution/answer it has."""
    for c in (REFERENCE_COLUMNS if column == "auto" else (column,)):
        value = row.get(c)
        if isinstance(value, list) and value and isinstance(value[-1], dict):  # a completion as messages
            value = value[-1].get("content")
        if isinstance(value, str) and value.strip():
            return value
        if value is not None and not isinstance(value, (str, list, dict)):  # e.g. a numeric answer
            return str(value)
    return None


def sft_row(row: dict, reference: str) -> dict:
    """{prompt, completion} in the prompt's own shape (chat messages -> an assistant message)."""
    prompt = row["prompt"]
    completion = [{"role": "assistant", "content": reference}] if isinstance(prompt, list) else reference
    return {"prompt": prompt, "completion": completion}


def _write_jsonl(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def run(cfg: RouteConfig) -> StageResult:
    dataset, report = load_data(cfg.data, "prompts")
    if cfg.limit:
        dataset = dataset.select(range(min(cfg.limit, len(dataset))))
    rows = [dict(r) for r in dataset]
    funcs, weights = rewards.build(cfg.rewards)
    with Timer() as timer, tracking.stage_run("route", cfg, cfg.tracking, cfg.run_name or "route") as tr, \
            published_output(cfg.output_dir) as out_dir:
        tr.log_input(cfg.data, report.digest, "train")
        generator = make_generator(cfg.model, cfg.backend, cfg.batch_size, cfg.trust_remote_code)
        rates = pass_rates(generator, rows, funcs, weights, cfg)
        easy, hard, records = [], [], []
        without_reference = 0
        for i, (row, (n, rate)) in enumerate(zip(rows, rates)):
            ref = reference_of(row, cfg.reference) if rate >= cfg.threshold else None
            if rate >= cfg.threshold and ref is None:
                without_reference += 1
            routed = "easy" if ref is not None else "hard"
            (easy if ref is not None else hard).append(sft_row(row, ref) if ref is not None else {**row, "pass_rate": rate})
            records.append({"index": i, "pass_rate": rate, "passes": n, "k": cfg.k, "routed": routed,
                            "domain": row.get("domain"), "difficulty": row.get("difficulty")})
        if not cfg.allow_empty and (not easy or not hard):
            empty = "easy" if not easy else "hard"
            mean = sum(r for _, r in rates) / max(1, len(rates))
            raise RouteError(f"route: the {empty} split is empty: {len(rows)} prompts, mean pass rate {mean:.3f}, "
                             f"threshold {cfg.threshold} (move the threshold, change k or the rewards, or set "
                             "allow_empty: true)")
        by_domain: dict[str, dict] = {}
        for rec in records:
            d = by_domain.setdefault(str(rec["domain"]), {"prompts": 0, "easy": 0, "hard": 0, "pass_rate_sum": 0.0})
            d["prompts"] += 1
            d[rec["routed"]] += 1
            d["pass_rate_sum"] += rec["pass_rate"]
        for d in by_domain.values():
            d["mean_pass_rate"] = d.pop("pass_rate_sum") / d["prompts"]
        metrics = {"route/prompts": float(len(rows)), "route/easy": float(len(easy)), "route/hard": float(len(hard)),
                   "route/easy_without_reference": float(without_reference),
                   "route/mean_pass_rate": sum(r for _, r in rates) / max(1, len(rates)),
                   "route/solved_never": float(sum(n == 0 for n, _ in rates)),
                   "route/solved_always": float(sum(n == cfg.k for n, _ in rates))}
        payload = {"data": cfg.data, "data_digest": report.digest, "model": cfg.model, "k": cfg.k,
                   "threshold": cfg.threshold, "counts": {k.split("/", 1)[1]: v for k, v in metrics.items()},
                   "by_domain": by_domain, "prompts": records}
        _write_jsonl(easy, out_dir / EASY_FILE)
        _write_jsonl(hard, out_dir / HARD_FILE)
        (out_dir / PASS_RATES_FILE).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        tr.log_metrics(metrics)
        tr.log_dict(payload, "route.json")
    lineage = base_lineage("route", cfg, data=cfg.data, data_digest=report.digest, mlflow_run_id=tr.run_id,
                           easy=str(len(easy)), hard=str(len(hard)), threshold=str(cfg.threshold), k=str(cfg.k))
    return StageResult("route", cfg.output_dir, metrics, lineage, [], timer.seconds)
