"""Evaluation: generate on an eval set with one or several models and score the answers.

Per model:
- `accuracy`: share of prompts whose greedy answer gets the full verifiable reward
  (weighted reward sum >= the sum of the weights, i.e. every verifiable reward says "correct");
- `reward/<name>`: mean of each verifiable reward on the greedy answers, and `reward/total`;
- with `k > 1`: `pass@k` (any of k samples correct) and `maj@k` (the most common of k sampled
  answers is correct);
- `rm_score`: mean reward-model score of the greedy answers (when `reward_model` is set);
- `response_length`: mean tokens per greedy answer; `distinct_1`, `distinct_2`: distinct n-gram
  ratios over all answers (samples when k > 1), a diversity measure.

Generation goes through `alignpipe.models.generate` (vLLM when installed and a GPU is present).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from alignpipe import models, rewards, tracking
from alignpipe.config import EvaluateConfig
from alignpipe.models.generate import make_generator
from alignpipe.rewards.text import completion_text, extract_answer, normalize
from alignpipe.stages.common import StageResult, Timer, base_lineage, load_data


def distinct_n(token_lists: list[list[int]], n: int) -> float:
    grams = [tuple(t[i:i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _correct(totals: list[float], full: float) -> list[bool]:
    return [not math.isnan(t) and t >= full - 1e-9 for t in totals]


def evaluate_model(generator, dataset, funcs, weights, cfg: EvaluateConfig, rm=None) -> tuple[dict, list]:
    prompts = list(dataset["prompt"])
    columns = {c: list(dataset[c]) for c in dataset.column_names if c != "prompt"}
    full = sum(w for w in weights if w > 0)
    greedy = [o[0] for o in generator.generate(prompts, n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens,
                                               seed=cfg.seed)]
    scored = rewards.score(funcs, weights, prompts, greedy, **columns)
    correct = _correct(scored["total"], full)
    metrics: dict[str, float] = {"accuracy": sum(correct) / max(1, len(correct)), "n": float(len(prompts))}
    for name, values in scored.items():
        finite = [v for v in values if not math.isnan(v)]
        metrics[f"reward/{name}"] = sum(finite) / len(finite) if finite else float("nan")
    tok = generator.tokenizer
    answers_for_diversity = greedy
    if cfg.k > 1:
        samples = generator.generate(prompts, n=cfg.k, temperature=cfg.temperature,
                                     max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + 1)
        flat = [s for outs in samples for s in outs]
        flat_cols = {c: [v for v in vals for _ in range(cfg.k)] for c, vals in columns.items()}
        flat_prompts = [p for p in prompts for _ in range(cfg.k)]
        flat_correct = _correct(rewards.score(funcs, weights, flat_prompts, flat, **flat_cols)["total"], full)
        per_prompt = [flat_correct[i * cfg.k:(i + 1) * cfg.k] for i in range(len(prompts))]
        metrics[f"pass@{cfg.k}"] = sum(any(c) for c in per_prompt) / max(1, len(prompts))
        majority = []
        for outs in samples:
            votes = Counter(normalize(extract_answer(completion_text(o))) for o in outs)
            top = votes.most_common(1)[0][0]
            majority.append(next(o for o in outs if normalize(extract_answer(completion_text(o))) == top))
        maj_correct = _correct(rewards.score(funcs, weights, prompts, majority, **columns)["total"], full)
        metrics[f"maj@{cfg.k}"] = sum(maj_correct) / max(1, len(prompts))
        answers_for_diversity = flat
    token_lists = [tok(a, add_special_tokens=False)["input_ids"] for a in answers_for_diversity]
    metrics["response_length"] = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in greedy) / max(
        1, len(greedy))
    metrics["distinct_1"] = distinct_n(token_lists, 1)
    metrics["distinct_2"] = distinct_n(token_lists, 2)
    if rm is not None:
        rm_scores = rm(prompts=prompts, completions=greedy)
        metrics["rm_score"] = sum(rm_scores) / max(1, len(rm_scores))
    examples = [{"prompt": completion_text(p) if not isinstance(p, str) else p, "answer": greedy[i],
                 "reference": columns.get("answer", [None] * len(prompts))[i], "correct": correct[i]}
                for i, p in enumerate(prompts[:8])]
    return metrics, examples


def run(cfg: EvaluateConfig) -> StageResult:
    dataset, report = load_data(cfg.data, "prompts")
    if cfg.limit:
        dataset = dataset.select(range(min(cfg.limit, len(dataset))))
    funcs, weights = rewards.build(cfg.rewards)
    rm = None
    if cfg.reward_model:
        rm = rewards.reward_model_reward(models.resolve(cfg.reward_model), batch_size=cfg.batch_size)
    results: dict[str, dict] = {}
    examples: dict[str, list] = {}
    with Timer() as timer, tracking.stage_run("evaluate", cfg, cfg.tracking, cfg.run_name or "evaluate") as tr:
        tr.log_input(cfg.data, report.digest, "eval")
        for name, uri in cfg.models.items():
            generator = make_generator(uri, cfg.backend, cfg.batch_size, cfg.trust_remote_code)
            results[name], examples[name] = evaluate_model(generator, dataset, funcs, weights, cfg, rm)
            tr.log_metrics({f"eval/{name}/{k}": v for k, v in results[name].items() if not math.isnan(v)})
        payload = {"data": cfg.data, "data_digest": report.digest, "models": results, "examples": examples,
                   "model_uris": dict(cfg.models)}
        out = Path(cfg.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(out)
        tr.log_dict(payload, "eval.json")
    flat = {f"{name}/{k}": v for name, m in results.items() for k, v in m.items()}
    lineage = base_lineage("evaluate", cfg, data=cfg.data, data_digest=report.digest, mlflow_run_id=tr.run_id,
                           parent_model=None)
    return StageResult("evaluate", str(out), flat, lineage, [], timer.seconds)
