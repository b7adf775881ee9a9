#!/usr/bin/env python
"""Miniature reproductions of the prompt-selection papers (issue 12) on the multi-domain demo data.

The data are the demo's multi-domain variant (`alignpipe.data.demo`: add2, sub2, add3 with reversed-digit
answers; `difficulty` = carries/borrows; `multi_ood_eval` = sub3, never trained on). Every run starts from the
same SFT model per seed (the tiny model, SFT on `multi_sft_train` until greedy accuracy on training prompts
reaches `--sft-stop`, as the demo presets do), then trains GRPO (TRL) with one sampler against another at
equal optimizer steps, and evaluates greedily on the held-out splits:

- `sec`      SEC: `bandit` vs `uniform` — held-out accuracy per domain;
- `dots`     DOTS: `difficulty_target` vs `uniform` — held-out accuracy at equal steps (the paper measures steps to
             a fixed accuracy; here the accuracy after --rl-steps and after half of them);
- `mixture`  MoDoMoDo: `alignpipe mixture search` (proxy runs over candidate weightings, scored in-domain) proposes a
             mixture; RL with it vs the uniform mixture — accuracy on the out-of-domain split (sub3).

    .venv/bin/python bench/curricula.py sec dots mixture --seeds 0 1 2      # the README table (slow: ~1 h on 2 cores)
    .venv/bin/python bench/curricula.py sec --seeds 0 --rl-steps 20 --quick  # a smoke run

Prints a markdown table and writes `out/bench/curricula.json`. Medians over seeds; every seed's numbers are in
the JSON. Results are what they are: a sampler that does not help on this miniature says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench" / "curricula"


def _log(msg: str) -> None:
    print(f"[curricula {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def data(seed: int) -> dict[str, str]:
    from alignpipe.data.demo import write_demo_data

    return write_demo_data(OUT / f"data-{seed}", seed=seed)


def sft_model(seed: int, files: dict[str, str], stop: float, max_steps: int = 1200) -> str:
    from alignpipe import config
    from alignpipe.stages import sft

    out = OUT / f"sft-{seed}-{stop}-{max_steps}"
    if (out / "MANIFEST.json").exists():
        return str(out)
    cfg = config.validate("sft", {
        "model": "tiny", "train_data": files["multi_sft_train"], "output_dir": str(out), "tracking": False,
        "max_length": 40, "stop_at_accuracy": stop or None, "accuracy_probe_size": 256,
        "accuracy_probe_every": 10,
        "training": {"max_steps": max_steps, "learning_rate": 1e-3, "batch_size": 64, "logging_steps": 50,
                     "lr_scheduler": "constant_with_warmup", "warmup_steps": min(20, max_steps - 1), "seed": seed}})
    t = time.perf_counter()
    sft.run(cfg)
    _log(f"seed {seed}: SFT model in {time.perf_counter() - t:.0f} s")
    return str(out)


def rl_run(name: str, seed: int, model: str, files: dict[str, str], steps: int, sampler: dict) -> tuple[str, float]:
    from alignpipe import config
    from alignpipe.stages import rl

    out = OUT / f"rl-{name}-{seed}-{steps}"
    cfg = config.validate("rl", {
        "model": model, "train_data": files["multi_rl_train"], "output_dir": str(out), "tracking": False,
        "rewards": [{"name": "exact_match"}], "sampler": sampler,
        "generation": {"max_new_tokens": 6, "temperature": 0.7},
        "grpo": {"num_generations": 8, "beta": 0.0, "loss_type": "dapo", "scale_rewards": "batch"},
        "training": {"max_steps": steps, "learning_rate": 3e-5, "batch_size": 64, "logging_steps": 10,
                     "lr_scheduler": "constant", "seed": seed}})
    t = time.perf_counter()
    rl.run(cfg)
    return str(out), time.perf_counter() - t


def evaluate(models: dict[str, str], uri: str, tag: str, limit: int | None) -> dict[str, dict[str, float]]:
    """Greedy held-out accuracy per model: overall (`all`) and per domain, scored with the verifier the RL
    stage trains on (exact_match) — the evaluate stage's greedy accuracy, split by the rows' `domain`."""
    from alignpipe import models as M
    from alignpipe import rewards
    from alignpipe.models.generate import HFGenerator

    rows = [json.loads(line) for line in Path(uri).read_text().splitlines() if line.strip()]
    rows = rows[:limit] if limit else rows
    funcs, weights = rewards.build([{"name": "exact_match"}])
    res: dict[str, dict[str, float]] = {}
    for name, path in models.items():
        model, tok = M.load_policy(path)
        outs = HFGenerator(model, tok, batch_size=256).generate([r["prompt"] for r in rows], n=1, temperature=0.0,
                                                                max_new_tokens=6, seed=0)
        scores = rewards.score(funcs, weights, [r["prompt"] for r in rows], [o[0] for o in outs],
                               answer=[r["answer"] for r in rows])["total"]
        hits = [float(s is not None and s >= 1.0) for s in scores]
        by: dict[str, list[float]] = {}
        for r, h in zip(rows, hits):
            by.setdefault(str(r.get("domain")), []).append(h)
        res[name] = {"all": sum(hits) / len(hits), **{d: sum(v) / len(v) for d, v in sorted(by.items())}}
    return res


def compare(kind: str, seed: int, files: dict[str, str], model: str, steps: int, limit: int | None) -> dict:
    samplers = {"sec": {"bandit": {"name": "bandit"}, "uniform": {"name": "uniform"}},
                "dots": {"difficulty_target": {"name": "difficulty_target"}, "uniform": {"name": "uniform"}}}[kind]
    result: dict = {"seed": seed, "steps": steps, "runs": {}}
    budgets = [steps // 2, steps] if kind == "dots" else [steps]
    for name, sampler in samplers.items():
        for b in budgets:
            path, wall = rl_run(f"{kind}-{name}", seed, model, files, b, sampler)
            acc = evaluate({name: path}, files["multi_eval"], f"{kind}-{name}-{seed}-{b}", limit)
            result["runs"][f"{name}@{b}"] = {"accuracy": acc[name], "wall_s": round(wall, 1)}
            _log(f"{kind} seed {seed}: {name} at {b} steps: {acc[name]} ({wall:.0f} s)")
    return result


def mixture(seed: int, files: dict[str, str], model: str, steps: int, limit: int | None, candidates: int,
            proxy_steps: int) -> dict:
    from alignpipe import mixture as mx

    rl_cfg = {"model": model, "train_data": files["multi_rl_train"], "tracking": False, "output_dir": "x",
              "rewards": [{"name": "exact_match"}], "generation": {"max_new_tokens": 6, "temperature": 0.7},
              "grpo": {"num_generations": 8, "beta": 0.0, "loss_type": "dapo", "scale_rewards": "batch"},
              "training": {"learning_rate": 3e-5, "batch_size": 64, "logging_steps": 10, "lr_scheduler": "constant",
                           "seed": seed}}
    t = time.perf_counter()
    found = mx.search(mx.MixtureSearchConfig(
        rl=rl_cfg, eval_data={"in_domain": files["multi_eval"]}, output_dir=str(OUT / f"search-{seed}"),
        candidates=candidates, proxy_steps=proxy_steps, eval_limit=limit, max_new_tokens=6, batch_size=256,
        seed=seed), say=_log)
    search_s = time.perf_counter() - t
    weights = found["proposal"]["weights"]
    uniform = {d: 1.0 for d in found["domains"]}
    result = {"seed": seed, "steps": steps, "proposal": weights, "search_s": round(search_s, 1),
              "fit": found["fit"], "runs": {}}
    for name, w in (("searched", weights), ("uniform", uniform)):
        path, wall = rl_run(f"mix-{name}", seed, model, files, steps, {"name": "mixture", "weights": w})
        ood = evaluate({name: path}, files["multi_ood_eval"], f"mix-ood-{name}-{seed}", limit)
        ind = evaluate({name: path}, files["multi_eval"], f"mix-in-{name}-{seed}", limit)
        result["runs"][name] = {"ood": ood[name]["all"], "in_domain": ind[name]["all"], "wall_s": round(wall, 1)}
        _log(f"mixture seed {seed}: {name} {w}: OOD {ood[name]['all']:.3f}, in-domain {ind[name]['all']:.3f}")
    return result


def _median(vals: list[float]) -> float:
    return round(statistics.median(vals), 3) if vals else float("nan")


def table(results: dict) -> str:
    lines = ["| reproduction | setting | ours | baseline | difference (median of seeds) | seeds |",
             "|---|---|---|---|---|---|"]
    for kind in ("sec", "dots"):
        if kind not in results:
            continue
        rs = results[kind]
        ours = "bandit" if kind == "sec" else "difficulty_target"
        steps = rs[0]["steps"]
        for key in sorted({k for r in rs for k in r["runs"][f"{ours}@{steps}"]["accuracy"]}):
            a = [r["runs"][f"{ours}@{steps}"]["accuracy"][key] for r in rs]
            b = [r["runs"][f"uniform@{steps}"]["accuracy"][key] for r in rs]
            lines.append(f"| {kind.upper()} | {ours} vs uniform, GRPO {steps} steps, held-out `{key}` | {_median(a):.3f} | "
                         f"{_median(b):.3f} | {_median([x - y for x, y in zip(a, b)]):+.3f} | {len(rs)} |")
        if kind == "dots":
            half = steps // 2
            a = [r["runs"][f"{ours}@{half}"]["accuracy"]["all"] for r in rs]
            b = [r["runs"][f"uniform@{half}"]["accuracy"]["all"] for r in rs]
            lines.append(f"| DOTS | same, after {half} steps, held-out `all` | {_median(a):.3f} | {_median(b):.3f} | "
                         f"{_median([x - y for x, y in zip(a, b)]):+.3f} | {len(rs)} |")
    if "mixture" in results:
        rs = results["mixture"]
        a = [r["runs"]["searched"]["ood"] for r in rs]
        b = [r["runs"]["uniform"]["ood"] for r in rs]
        lines.append(f"| MoDoMoDo | searched vs uniform mixture, GRPO {rs[0]['steps']} steps, OOD (sub3) | {_median(a):.3f} | "
                     f"{_median(b):.3f} | {_median([x - y for x, y in zip(a, b)]):+.3f} | {len(rs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kinds", nargs="+", choices=["sec", "dots", "mixture"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rl-steps", type=int, default=100)
    p.add_argument("--sft-stop", type=float, default=0.3)
    p.add_argument("--eval-limit", type=int, default=None, help="first N prompts of each held-out split")
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--proxy-steps", type=int, default=30)
    p.add_argument("--sft-steps", type=int, default=1200, help="SFT step cap (it stops earlier at --sft-stop)")
    p.add_argument("--quick", action="store_true", help="smoke run of the script itself: a few SFT and RL steps, "
                   "tiny evaluations (the numbers mean nothing)")
    args = p.parse_args(argv)
    if args.quick:
        args.rl_steps, args.eval_limit, args.candidates, args.proxy_steps = min(args.rl_steps, 4), 30, 3, 2
        args.sft_steps, args.sft_stop = 5, 0.0
    os.environ.setdefault("ALIGNPIPE_STATE_URI", str(OUT / "state"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for seed in args.seeds:
        files = data(seed)
        model = sft_model(seed, files, args.sft_stop, args.sft_steps)
        for kind in args.kinds:
            if kind == "mixture":
                r = mixture(seed, files, model, args.rl_steps, args.eval_limit, args.candidates, args.proxy_steps)
            else:
                r = compare(kind, seed, files, model, args.rl_steps, args.eval_limit)
            results.setdefault(kind, []).append(r)
            (OUT.parent / "curricula.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
