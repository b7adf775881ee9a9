"""Evaluation: generate on an eval set with one or several models, score the answers, and say which
differences are real.

Per model (each metric is observed per prompt, so every one gets a bootstrap CI over prompts):
- `accuracy`: share of prompts whose greedy answer gets the full verifiable reward of the rewards that
  apply to it (weighted sum >= the sum of their positive weights: every applicable reward says "correct";
  a reward returning None, e.g. for a null reference, does not apply); prompts where no reward with a
  positive weight applies are left out and counted in `skipped`;
- `reward/<name>`: mean of each verifiable reward on the greedy answers, and `reward/total`;
- with `k > 1`: `pass@k`, the unbiased estimator from `n >= k` samples per prompt (`n` defaults to k),
  and `maj@k`, majority voting over groups of k samples on canonical answers (the verifier's
  canonicalisation: "28" and "28.0" vote together);
- `kl_per_token`, `kl_per_sequence`: KL(model || kl_reference) on the model's own samples (temperature
  1), and `entropy`: its mean token entropy there — how far training moved the model;
- `accuracy_per_1k_tokens`, `tokens_to_correct`: token efficiency of the greedy answers;
- `cot_consistency`: among greedy answers with a reasoning block, the share whose final answer equals
  the answer stated at the end of the reasoning (`cot_with_reasoning`: the share with a block);
- `rm_score`: mean reward-model score of the greedy answers (when `reward_model` is set);
- `response_length`: mean tokens per greedy answer; `distinct_1`, `distinct_2`: distinct n-gram
  ratios over all answers (samples when k > 1), a diversity measure (corpus-level: no CI);
- `forgetting/<set>/accuracy` (and its rewards) on every `forgetting_data` set;
- `lm_eval/<task>/<metric>` (and `_stderr`) when `lm_eval` is set.

Deltas: every model against the baseline (default: the first model) and against the model listed
before it, with a paired percentile bootstrap CI (the same resampled prompts for both models).

Generation goes through `alignpipe.models.generate` (vLLM when installed and a GPU is present). On HF, one call
per model (`HFGenerator.generate_eval`) prefills each prompt once and decodes its greedy answer, its samples and
(with `kl`) the KL reference's logits on the same tokens in one batched decode, so greedy decoding, pass@k / maj@k
and KL share the prompt's forward pass and KL needs no second pass over the samples. With vLLM (or a generation
config `decode` does not reproduce), greedy answers, samples and the KL samples are separate `generate` calls and
KL and entropy are teacher-forced HF forward passes (`evaluation.scoring`).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alignpipe import models, rewards, tracking
from alignpipe.config import EvaluateConfig
from alignpipe.evaluation import metrics as M
from alignpipe.models.generate import Generations, make_generator
from alignpipe.rewards.text import completion_text
from alignpipe.stages.common import StageResult, Timer, base_lineage, load_data


def distinct_n(token_lists: list[list[int]], n: int) -> float:
    grams = [tuple(t[i:i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _correct(scored: dict[str, list[float]], weights: list[float]) -> list[float]:
    """Per row 1.0 (correct) / 0.0, judged by the rewards that apply to it (value not NaN): correct when their
    weighted sum reaches the sum of their positive weights. NaN when no reward with a positive weight applies."""
    columns = [v for k, v in scored.items() if k != "total"]
    out = []
    for i, total in enumerate(scored["total"]):
        full = sum(w for w, values in zip(weights, columns) if w > 0 and not math.isnan(values[i]))
        out.append(float("nan") if full <= 0 or math.isnan(total) else float(total >= full - 1e-9))
    return out


class ModelEval:
    """One model on one eval set: per-prompt observations (`Ratio`s), corpus-level values, samples."""

    def __init__(self) -> None:
        self.per_prompt: dict[str, M.Ratio] = {}
        self.corpus: dict[str, float] = {}
        self.examples: list[dict] = []
        self.samples: list[list[str]] | None = None

    def metrics(self) -> dict[str, float]:
        out = {name: r.value() for name, r in self.per_prompt.items()}
        out.update(self.corpus)
        return out


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


@dataclass
class KLSpec:
    """KL(model || reference): `reference` the reference model (None: the model is its own reference, KL 0);
    `load_candidate` loads the model as an HF causal LM for generators that hold none (vLLM)."""

    reference: object | None
    load_candidate: Callable[[], object]


def generations(generator, prompts: list, cfg: EvaluateConfig, greedy_only: bool = False,
                kl: KLSpec | None = None) -> Generations:
    """The greedy answers, `n` samples per prompt when k > 1, and KL/entropy on temperature-1 samples with `kl`:
    one shared-prefill decode on HF (`HFGenerator.generate_eval`), else separate `generate` calls and
    teacher-forced scoring."""
    n = max(cfg.n or cfg.k, cfg.k) if cfg.k > 1 and not greedy_only else 0
    want_kl = kl is not None and not greedy_only
    shares = getattr(generator, "shares_prefill", None)
    if callable(shares) and shares():
        return generator.generate_eval(prompts, n=n, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                       seed=cfg.seed + 1, greedy=True, kl=want_kl,
                                       kl_reference=kl.reference if want_kl else None)
    greedy = [o[0] for o in generator.generate(prompts, n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens,
                                               seed=cfg.seed)]
    samples = (generator.generate(prompts, n=n, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                  seed=cfg.seed + 1) if n else [[] for _ in prompts])
    out = Generations(greedy=greedy, samples=samples)
    if want_kl:
        from alignpipe.evaluation.scoring import kl_entropy

        kl_samples = samples if n and cfg.temperature == 1.0 else generator.generate(
            prompts, n=1, temperature=1.0, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + 2)
        candidate = getattr(generator, "model", None)
        if candidate is None:
            candidate = _to_device(kl.load_candidate())
        # the reference itself (e.g. the base model): one forward pass, KL 0
        out.kl, out.entropy = kl_entropy(candidate, candidate if kl.reference is None else kl.reference,
                                         generator.tokenizer, prompts, kl_samples, batch_size=cfg.batch_size)
    return out


def _token_ids(tok, texts: list[str]) -> list[list[int]]:
    return list(tok(texts, add_special_tokens=False)["input_ids"]) if texts else []


def evaluate_model(generator, dataset, funcs, weights, cfg: EvaluateConfig, rm=None,
                   greedy_only: bool = False, kl: KLSpec | None = None) -> ModelEval:
    prompts = list(dataset["prompt"])
    columns = {c: list(dataset[c]) for c in dataset.column_names if c != "prompt"}
    ev = ModelEval()
    pp = ev.per_prompt
    gens = generations(generator, prompts, cfg, greedy_only, kl)
    greedy = gens.greedy
    scored = rewards.score(funcs, weights, prompts, greedy, **columns)
    correct = _correct(scored, weights)
    pp["accuracy"] = M.Ratio.mean(correct)
    ev.corpus["skipped"] = float(sum(math.isnan(c) for c in correct))
    for name, values in scored.items():
        pp[f"reward/{name}"] = M.Ratio.mean([_nan(v) for v in values])
    ev.corpus["n"] = float(len(prompts))
    if greedy_only:
        return ev
    tok = generator.tokenizer
    lengths = [len(ids) for ids in _token_ids(tok, greedy)]
    pp["response_length"] = M.Ratio.mean(lengths)
    pp["accuracy_per_1k_tokens"] = M.Ratio(correct, lengths, scale=1000.0)
    pp["tokens_to_correct"] = M.Ratio([n * c for n, c in zip(lengths, correct)], correct)
    cot = [M.cot_consistency(a, cfg.cot_reasoning_pattern, cfg.cot_answer_pattern) for a in greedy]
    pp["cot_with_reasoning"] = M.Ratio.mean([float(c is not None) for c in cot])
    if any(c is not None for c in cot):
        pp["cot_consistency"] = M.Ratio.mean([float("nan") if c is None else float(c) for c in cot])
    answers_for_diversity = greedy
    n = max(cfg.n or cfg.k, cfg.k)
    if cfg.k > 1:
        samples = gens.samples
        flat = [s for outs in samples for s in outs]
        flat_cols = {c: [v for v in vals for _ in range(n)] for c, vals in columns.items()}
        flat_prompts = [p for p in prompts for _ in range(n)]
        flat_correct = _correct(rewards.score(funcs, weights, flat_prompts, flat, **flat_cols), weights)
        per_prompt = [flat_correct[i * n:(i + 1) * n] for i in range(len(prompts))]
        canon = [[M.canonical_answer(o) for o in outs] for outs in samples]
        # a prompt no reward applies to is left out (NaN); a single sample no reward applies to counts as wrong
        skip = [all(math.isnan(c) for c in cs) for cs in per_prompt]
        per_prompt = [[c == 1.0 for c in cs] for cs in per_prompt]
        pp[f"pass@{cfg.k}"] = M.Ratio.mean([math.nan if s else M.pass_at_k(n, sum(c), cfg.k)
                                            for s, c in zip(skip, per_prompt)])
        pp[f"maj@{cfg.k}"] = M.Ratio.mean([math.nan if s else M.maj_at_k(a, c, cfg.k)
                                           for s, a, c in zip(skip, canon, per_prompt)])
        answers_for_diversity = flat
    token_lists = _token_ids(tok, answers_for_diversity)
    ev.corpus["distinct_1"] = distinct_n(token_lists, 1)
    ev.corpus["distinct_2"] = distinct_n(token_lists, 2)
    if gens.kl is not None:
        add_kl(ev, gens.kl, gens.entropy)
    if rm is not None:
        pp["rm_score"] = M.Ratio.mean(rm(prompts=prompts, completions=greedy))
    ev.examples = [{"prompt": completion_text(p) if not isinstance(p, str) else p, "answer": greedy[i],
                    "reference": columns.get("answer", [None] * len(prompts))[i],
                   "correct": None if math.isnan(correct[i]) else bool(correct[i])}
                   for i, p in enumerate(prompts[:8])]
    return ev


def add_kl(ev: ModelEval, kl: list[list[list[float]]], ent: list[list[list[float]]]) -> None:
    """KL(candidate || reference) per token and per sequence, and the candidate's entropy, from per-prompt,
    per-sample, per-token values on its own temperature-1 samples."""
    tokens = [float(sum(len(s) for s in seqs)) for seqs in kl]
    ev.per_prompt["kl_per_token"] = M.Ratio([sum(sum(s) for s in seqs) for seqs in kl], tokens)
    ev.per_prompt["kl_per_sequence"] = M.Ratio.mean([M.kl_summary(seqs)["kl_per_sequence"] for seqs in kl])
    ev.per_prompt["entropy"] = M.Ratio([sum(sum(s) for s in seqs) for seqs in ent], tokens)


def intervals(per_prompt: dict[str, M.Ratio], cfg: EvaluateConfig) -> dict[str, list[float]]:
    """{metric: [ci_low, ci_high]} for every per-prompt metric (empty when bootstrap_resamples is 0)."""
    if not cfg.bootstrap_resamples:
        return {}
    out = {}
    for name, r in per_prompt.items():
        iv = M.bootstrap_ci(r, cfg.bootstrap_resamples, cfg.confidence, cfg.seed)
        out[name] = [iv.ci_low, iv.ci_high]
    return out


def deltas(observed: dict[str, dict[str, M.Ratio]], cfg: EvaluateConfig, baseline: str) -> dict[str, dict]:
    """{model: {reference model: {metric: {delta, ci_low, ci_high, n}}}} against the baseline and the
    model listed before each one, on the metrics both have per prompt."""
    names = list(observed)
    out: dict[str, dict] = {}
    for i, name in enumerate(names):
        refs = [r for r in (baseline, names[i - 1] if i > 0 else None) if r is not None and r != name]
        for ref in dict.fromkeys(refs):
            table = {}
            for metric, r in observed[name].items():
                other = observed[ref].get(metric)
                if other is None or len(other.num) != len(r.num):
                    continue
                iv = M.paired_bootstrap_delta(r, other, max(1, cfg.bootstrap_resamples), cfg.confidence, cfg.seed)
                d = iv.as_dict()
                d["delta"] = d.pop("value")
                if not cfg.bootstrap_resamples:
                    d["ci_low"] = d["ci_high"] = float("nan")
                table[metric] = d
            out.setdefault(name, {})[ref] = table
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def flat_metrics(results: dict, ci: dict, delta: dict) -> dict[str, float]:
    """`<model>/<metric>`, `<model>/<metric>_ci_low|_ci_high`, `<model>/delta_vs_<ref>/<metric>[_ci_low|_ci_high]`."""
    flat = {f"{name}/{k}": v for name, m in results.items() for k, v in m.items()}
    for name, per in ci.items():
        for k, (lo, hi) in per.items():
            flat[f"{name}/{k}_ci_low"], flat[f"{name}/{k}_ci_high"] = lo, hi
    for name, refs in delta.items():
        for ref, table in refs.items():
            for k, d in table.items():
                base = f"{name}/delta_vs_{ref}/{k}"
                flat[base], flat[f"{base}_ci_low"], flat[f"{base}_ci_high"] = d["delta"], d["ci_low"], d["ci_high"]
    return flat


def _reference_uri(cfg: EvaluateConfig, baseline: str) -> str:
    ref = cfg.kl_reference or baseline
    return cfg.models.get(ref, ref)


def run(cfg: EvaluateConfig) -> StageResult:
    dataset, report = load_data(cfg.data, "prompts")
    if cfg.limit:
        dataset = dataset.select(range(min(cfg.limit, len(dataset))))
    forgetting = {}
    for set_name, uri in cfg.forgetting_data.items():
        ds, rep = load_data(uri, "prompts")
        forgetting[set_name] = (ds.select(range(min(cfg.limit, len(ds)))) if cfg.limit else ds, rep)
    if cfg.lm_eval is not None:
        from alignpipe.evaluation import harness

        harness.require_lm_eval()
        with tempfile.TemporaryDirectory() as tmp:  # check every task before any model runs
            harness.prepare_tasks(list(cfg.lm_eval.tasks), cfg.lm_eval.include_path, Path(tmp))
    funcs, weights = rewards.build(cfg.rewards)
    rm = None
    if cfg.reward_model:
        rm = rewards.reward_model_reward(models.resolve(cfg.reward_model), batch_size=cfg.batch_size)
    baseline = cfg.baseline or next(iter(cfg.models))
    results: dict[str, dict] = {}
    observed: dict[str, dict[str, M.Ratio]] = {}
    examples: dict[str, list] = {}
    reference = None
    with Timer() as timer, tracking.stage_run("evaluate", cfg, cfg.tracking, cfg.run_name or "evaluate") as tr:
        tr.log_input(cfg.data, report.digest, "eval")
        for set_name, (_, rep) in forgetting.items():
            tr.log_input(cfg.forgetting_data[set_name], rep.digest, f"forgetting-{set_name}")
        if cfg.kl:
            reference, _ = models.load_policy(_reference_uri(cfg, baseline), trust_remote_code=cfg.trust_remote_code)
            reference = _to_device(reference)
        for name, uri in cfg.models.items():
            generator = make_generator(uri, cfg.backend, cfg.batch_size, cfg.trust_remote_code)
            kl = None
            if reference is not None:
                # the reference itself (e.g. the base model): no reference pass, KL 0
                same = uri == _reference_uri(cfg, baseline)
                kl = KLSpec(None if same else reference,
                            lambda uri=uri: models.load_policy(uri, trust_remote_code=cfg.trust_remote_code)[0])
            ev = evaluate_model(generator, dataset, funcs, weights, cfg, rm, kl=kl)
            for set_name, (ds, _) in forgetting.items():
                fev = evaluate_model(generator, ds, funcs, weights, cfg, None, greedy_only=True)
                ev.per_prompt.update({f"forgetting/{set_name}/{k}": v for k, v in fev.per_prompt.items()})
                ev.corpus[f"forgetting/{set_name}/n"] = fev.corpus["n"]
            backend = getattr(generator, "backend", "hf")
            release(generator)  # free the accelerator before the next model (or lm-eval) loads
            del generator
            if cfg.lm_eval is not None:
                from alignpipe.evaluation import harness

                lm_flat, lm_docs = harness.run_model(models.resolve(uri), cfg.lm_eval, backend,
                                                     cfg.trust_remote_code, cfg.seed)
                ev.per_prompt.update({k: M.Ratio.mean(v) for k, v in lm_docs.items()})
                ev.corpus.update({k: v for k, v in lm_flat.items() if k not in ev.per_prompt})
            observed[name], examples[name] = ev.per_prompt, ev.examples
            results[name] = ev.metrics()
            tr.log_metrics({f"eval/{name}/{k}": v for k, v in results[name].items() if _finite(v)})
        ci = {name: intervals(per, cfg) for name, per in observed.items()}
        delta = deltas(observed, cfg, baseline)
        flat = flat_metrics(results, ci, delta)
        tr.log_metrics({f"eval/{k}": v for k, v in flat.items() if ("_ci_" in k or "/delta_vs_" in k) and _finite(v)})
        payload = {"data": cfg.data, "data_digest": report.digest, "k": cfg.k, "baseline": baseline,
                   "confidence": cfg.confidence, "bootstrap_resamples": cfg.bootstrap_resamples,
                   "models": results, "ci": ci, "deltas": delta, "examples": examples,
                   "model_uris": dict(cfg.models),
                   "forgetting_data": {k: {"uri": cfg.forgetting_data[k], "digest": rep.digest}
                                       for k, (_, rep) in forgetting.items()}}
        out = Path(cfg.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(out)
        tr.log_dict(payload, "eval.json")
    lineage = base_lineage("evaluate", cfg, data=cfg.data, data_digest=report.digest, mlflow_run_id=tr.run_id,
                           parent_model=None)
    return StageResult("evaluate", str(out), flat, lineage, [], timer.seconds)


def release(generator) -> None:
    """Free what `generator` holds on the accelerator, so that the next model fits: a vLLM engine (which
    reserves its `gpu_memory_utilization` share of the GPU until it is shut down) has its engine core shut
    down and vLLM's process groups destroyed; then garbage is collected and the CUDA cache emptied. The caller
    drops its own reference afterwards."""
    import gc

    import torch

    llm = getattr(generator, "llm", None)
    cuda = torch.cuda.is_available()
    if llm is None and not cuda:
        # On the CPU the caller's `del` frees the model (no cycles hold it): a full gc.collect here walked every
        # object the ML libraries created at import (~0.3-1.6 s per model) for nothing.
        return
    if llm is not None:
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if callable(getattr(core, "shutdown", None)):
            core.shutdown()
        generator.llm = None
        del llm, core
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
        except ImportError:
            pass
        else:
            destroy_model_parallel()
            destroy_distributed_environment()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def _to_device(model):
    import torch

    return model.to("cuda") if torch.cuda.is_available() else model

