#!/usr/bin/env python
"""Miniature reproductions of the prompt-selection and SFT<->RL papers (issue 12) on the multi-domain demo data.

The data are the demo's multi-domain variant (`alignpipe.data.demo`: add2, sub2, add3 with reversed-digit
answers; `difficulty` = carries/borrows; `multi_ood_eval` = sub3, never trained on). Per seed, every run starts
from the same SFT model (the tiny model, SFT on `multi_sft_train` until greedy accuracy on 256 training prompts
reaches `--sft-stop`, probed every `--sft-probe-every` steps, at most `--sft-steps`), then trains GRPO on
alignpipe's RL engine (`engine: alignpipe`: the engine is the one path with rollout replay and relift) for the
same number of rollout steps in every arm, evaluated greedily on the held-out split (`multi_eval`, 200 problems
per domain) every `--eval-every` steps and at the end (the model is evaluated in the training process, between
steps, with the RNG state set aside; evaluation time is not counted as training time):

- `uniform`   the baseline of all four: prompts drawn uniformly (the three domains have 4000 training problems
              each, so this is also the uniform *mixture* in expectation);
- `sec`       SEC: `bandit` sampler (domain x difficulty-bucket arms) — held-out accuracy per domain;
- `dots`      DOTS: `difficulty_target` sampler + rollout replay (`engine_settings.replay`) — rollout steps and
              training wall time to reach a fixed held-out accuracy (the SFT start's + `--dots-gain`);
- `relift`    ReLIFT: uniform sampler + `engine_settings.relift` (prompts whose every completion failed -> SFT
              steps on their reference answers) at the same number of rollout steps (the SFT steps it adds are
              counted and reported, and its wall time includes them) — accuracy on the hardest difficulty bucket
              (`hard`: held-out problems with difficulty >= 2, i.e. two or more carries: add2 and add3) and overall;
- `mixture`   MoDoMoDo: `alignpipe mixture search` (proxy RL runs over candidate domain weightings, scored on the
              in-domain held-out split) proposes a mixture; RL with it vs the uniform baseline — accuracy on the
              out-of-domain split (sub3);
- `dots-sampler`, `dots-replay`  DOTS's two parts alone (difficulty_target without replay; replay with uniform),
              listed in the table as ablations.

    .venv/bin/python bench/curricula.py sec dots relift mixture --seeds 0 1 2   # the README table
    .venv/bin/python bench/curricula.py dots relift sec mixture dots-sampler dots-replay --seeds 0 --sft-seed 0 \
        --sft-steps 1200 --lr 1e-4 --dots-gain 0.03 --json out/bench/curricula-s0.json   # (and s1, s2: as run)
    .venv/bin/python bench/curricula.py sec dots relift mixture --seeds 0 --quick  # a smoke run of the script
    .venv/bin/python bench/curricula.py --merge out/bench/curricula-s0.json out/bench/curricula-s1.json ...

Writes `out/bench/curricula.json` (or `--json PATH`) after every run (`--resume` skips the runs it holds, so
seeds can run in separate processes and be merged) and prints a markdown table. Medians over seeds; every
seed's numbers and learning curves are in the JSON. Results are what they are: an arm that does not help on this
miniature says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench" / "curricula"
JSON = ROOT / "out" / "bench" / "curricula.json"

#: What each reproduction runs beside the uniform baseline: arm -> (sampler block, engine_settings block).
ARMS = {"sec": ("bandit", {"name": "bandit"}, {}),
        "dots": ("dots", {"name": "difficulty_target"}, {"replay": {}}),
        "relift": ("relift", {"name": "uniform"}, {"relift": {}}),
        # DOTS's two parts alone (ablations)
        "dots-sampler": ("dots_sampler_only", {"name": "difficulty_target"}, {}),
        "dots-replay": ("dots_replay_only", {"name": "uniform"}, {"replay": {}})}
KINDS = ("sec", "dots", "relift", "mixture", "dots-sampler", "dots-replay")
#: Arms the table lists as DOTS ablations when every seed has them (`dots_explore0`: the DOTS arm as first run,
#: before the difficulty_target fix that made its `explore` share hold for batches under 10 prompts).
ABLATIONS = {"dots_sampler_only": "difficulty_target alone (no replay)", "dots_replay_only": "replay alone (uniform)",
             "dots_explore0": "difficulty_target + replay, before the explore fix (no uniform slots)"}
#: The hardest difficulty bucket of the held-out set (ReLIFT's measure): difficulty >= this.
HARD = 2


def _log(msg: str) -> None:
    print(f"[curricula {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def data(seed: int) -> dict[str, str]:
    """The multi-domain demo files of `seed` (written once: processes running other seeds read the same files)."""
    from alignpipe.data.demo import write_demo_data

    folder, names = OUT / f"data-{seed}", ("multi_sft_train", "multi_rl_train", "multi_eval", "multi_ood_eval")
    if all((folder / f"{n}.jsonl").exists() for n in names):
        return {n: str(folder / f"{n}.jsonl") for n in names}
    return write_demo_data(folder, seed=seed)


def _rows(uri: str, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in Path(uri).read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def sft_model(seed: int, files: dict[str, str], stop: float, max_steps: int, probe_every: int) -> tuple[str, float]:
    """The SFT start of `seed` (trained once, reused by every arm and by a rerun) and its wall time."""
    from alignpipe import config
    from alignpipe.stages import sft

    out = OUT / f"sft-{seed}-{stop}-{max_steps}-{probe_every}"
    if (out / "MANIFEST.json").exists():
        return str(out), float("nan")
    cfg = config.validate("sft", {
        "model": "tiny", "train_data": files["multi_sft_train"], "output_dir": str(out), "tracking": False,
        "max_length": 40, "stop_at_accuracy": stop or None, "accuracy_probe_size": 256,
        "accuracy_probe_every": probe_every,
        "training": {"max_steps": max_steps, "learning_rate": 1e-3, "batch_size": 64, "logging_steps": 50,
                     "lr_scheduler": "constant_with_warmup", "warmup_steps": min(20, max_steps - 1), "seed": seed}})
    t = time.perf_counter()
    res = sft.run(cfg)
    wall = time.perf_counter() - t
    _log(f"seed {seed}: SFT model in {wall:.0f} s, {res.metrics.get('train/steps')} steps")
    return str(out), wall


class Scorer:
    """Greedy held-out accuracy of a model (in memory), scored with the verifier RL trains on (exact_match):
    `all`, per domain, `hard` (difficulty >= HARD) and per difficulty (`d0`, `d1`, ...)."""

    def __init__(self, model, tokenizer, rows: list[dict]):
        from alignpipe import rewards
        from alignpipe.models.generate import HFGenerator

        self.rows = rows
        self.gen = HFGenerator(model, tokenizer, batch_size=256)
        self.funcs, self.weights = rewards.build([{"name": "exact_match"}])

    def __call__(self) -> dict[str, float]:
        import torch

        from alignpipe import rewards

        prompts = [r["prompt"] for r in self.rows]
        with torch.random.fork_rng():
            outs = self.gen.generate(prompts, n=1, temperature=0.0, max_new_tokens=6, seed=0)
        scores = rewards.score(self.funcs, self.weights, prompts, [o[0] for o in outs],
                               answer=[r["answer"] for r in self.rows])["total"]
        hits = [float(s is not None and not math.isnan(s) and s >= 1.0) for s in scores]
        return accuracy_table(self.rows, hits)


def accuracy_table(rows: list[dict], hits: list[float]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r, h in zip(rows, hits):
        keys = [str(r.get("domain")), f"d{r.get('difficulty')}"]
        if isinstance(r.get("difficulty"), int) and r["difficulty"] >= HARD:
            keys.append("hard")
        for key in keys:
            by.setdefault(key, []).append(h)
    return {"all": round(sum(hits) / len(hits), 4), **{k: round(sum(v) / len(v), 4) for k, v in sorted(by.items())},
            "n_hard": len(by.get("hard", []))}


def rl_config(seed: int, model: str, files: dict[str, str], steps: int, lr: float, sampler: dict,
              engine_settings: dict | None = None, output_dir: str = "x") -> dict:
    """The RL stage config every arm shares: GRPO on alignpipe's engine, 8 prompts x 8 completions per rollout step,
    6 new tokens at temperature 0.7, exact-match reward, constant lr, no KL."""
    return {"model": model, "train_data": files["multi_rl_train"], "output_dir": output_dir, "tracking": False,
            "engine": "alignpipe", "algorithm": "grpo", "rewards": [{"name": "exact_match"}], "sampler": sampler,
            "engine_settings": engine_settings or {}, "generation": {"max_new_tokens": 6, "temperature": 0.7},
            "grpo": {"num_generations": 8},
            "training": {"max_steps": steps, "learning_rate": lr, "batch_size": 64, "logging_steps": 10,
                         "lr_scheduler": "constant", "seed": seed}}


def engine_run(seed: int, model_path: str, files: dict[str, str], steps: int, lr: float, sampler: dict,
               engine_settings: dict, eval_every: int, eval_limit: int | None) -> dict:
    """Train one arm on the engine (the rl stage's engine call, without its publishing) and evaluate the policy on
    the held-out split every `eval_every` rollout steps and at the end; the OOD split at the end."""
    from alignpipe import config, models, rewards, rl
    from alignpipe.stages import rl as rl_stage

    cfg = config.validate("rl", rl_config(seed, model_path, files, steps, lr, sampler, engine_settings))
    rl_stage.check(cfg)
    model, tok = models.load_policy(model_path, train=True)
    funcs, weights = rewards.build(cfg.rewards)
    held = Scorer(model, tok, _rows(files["multi_eval"], eval_limit))
    curve: list[dict] = []
    clock = {"start": time.perf_counter(), "eval": 0.0}

    def log(entry: dict) -> None:
        step = int(entry["step"])
        if step % eval_every and step != steps:
            return
        t = time.perf_counter()
        point = {"step": step, "train_s": round(t - clock["start"] - clock["eval"], 1), "acc": held(),
                 "reward": round(entry["reward"], 4)}
        for key in ("relift/sft_steps", "replay/replayed_total"):
            if key in entry:
                point[key.replace("/", "_")] = entry[key]
        curve.append(point)
        clock["eval"] += time.perf_counter() - t
        _log(f"seed {seed} {sampler['name']}{'+' + '+'.join(engine_settings) if engine_settings else ''}: step {step}, "
             f"held-out {point['acc']['all']:.3f}, {point['train_s']:.0f} s training")

    res = rl.train(cfg, model, tok, _rows(files["multi_rl_train"]), funcs, weights, log=log)
    train_s = curve[-1]["train_s"]
    ood = Scorer(res.model, tok, _rows(files["multi_ood_eval"], eval_limit))()
    last = res.history[-1]
    out = {"sampler": sampler, "engine_settings": engine_settings, "curve": curve, "final": curve[-1]["acc"],
           "ood": ood["all"], "train_s": train_s, "reward_first": round(res.history[0]["reward"], 4),
           "reward_last": round(sum(h["reward"] for h in res.history[-10:]) / min(10, len(res.history)), 4)}
    for key in ("relift/sft_steps", "replay/replayed_total"):
        if key in last:
            out[key.replace("/", "_")] = last[key]
    return out


def search_mixture(seed: int, files: dict[str, str], model: str, lr: float, candidates: int, proxy_steps: int,
                   eval_limit: int | None) -> dict:
    """`alignpipe mixture search` with proxies on the same engine and settings, scored on the in-domain held-out
    split (the OOD split stays unseen until the final comparison)."""
    from alignpipe import mixture as mx

    t = time.perf_counter()
    found = mx.search(mx.MixtureSearchConfig(
        rl=rl_config(seed, model, files, proxy_steps, lr, {"name": "uniform"}),
        eval_data={"in_domain": files["multi_eval"]}, output_dir=str(OUT / f"search-{seed}-{proxy_steps}-{lr}"),
        candidates=candidates, proxy_steps=proxy_steps, eval_limit=eval_limit, max_new_tokens=6, batch_size=256,
        seed=seed), say=_log)
    return {"proposal": found["proposal"]["weights"], "fit": found["fit"], "search_s": round(time.perf_counter() - t, 1),
            "candidates": [{"weights": c["weights"], "objective": c["objective"]} for c in found["candidates"]]}


# ---- the table ------------------------------------------------------------------------------------------------
#: Prompts per rollout step and completions per prompt of every arm (rl_config).
PROMPTS, K = 8, 8


def generated(point: dict) -> float:
    """Completions generated up to an evaluation point (replayed groups are not generated again)."""
    return float((point["step"] * PROMPTS - point.get("replay_replayed_total", 0)) * K)


def steps_to(curve: list[dict], threshold: float, key: str = "all") -> tuple[float, float, float]:
    """(rollout steps, training seconds, completions generated) at the first evaluation whose accuracy reaches
    `threshold` (replayed groups are not generated again); (inf, inf, inf) when none does."""
    for p in curve:
        if p["acc"][key] >= threshold - 1e-9:
            return float(p["step"]), float(p["train_s"]), generated(p)
    return math.inf, math.inf, math.inf


def _median(vals: list[float]) -> float:
    return statistics.median(vals) if vals else float("nan")


def _fmt(x: float, digits: int = 3) -> str:
    return "not reached" if math.isinf(x) else f"{x:.{digits}f}"


def _per_seed(vals: list[float], digits: int = 3) -> str:
    return " / ".join("-" if math.isinf(v) else f"{v:.{digits}f}" for v in vals)


def table(results: dict) -> str:
    s, seeds = results["settings"], [r for r in results["seeds"] if "uniform" in r.get("runs", {})]
    if not seeds:
        return "(no complete seed yet)"
    steps = s["rl_steps"]
    lines = ["| reproduction | measure | ours | uniform baseline | difference (median of per-seed differences) | "
             "per seed (ours vs baseline) |", "|---|---|---|---|---|---|"]

    def row(label: str, measure: str, ours: list[float], base: list[float], digits: int = 3, pts: bool = True):
        diffs = [a - b for a, b in zip(ours, base)]
        d = _median(diffs)
        dtxt = "-" if math.isnan(d) or math.isinf(d) else (f"{100 * d:+.1f} pts" if pts else f"{d:+.{digits}f}")
        lines.append(f"| {label} | {measure} | {_fmt(_median(ours), digits)} | {_fmt(_median(base), digits)} | {dtxt} | "
                     f"{_per_seed(ours, digits)} vs {_per_seed(base, digits)} |")

    base = [r["runs"]["uniform"] for r in seeds]
    start = [r["sft"]["acc"] for r in seeds]
    keys = ("all", "add2", "sub2", "add3", "hard")
    lines.append("| start (SFT, the same for every arm) | held-out greedy accuracy " + " / ".join(f"`{k}`" for k in keys)
                 + " (median) | " + " / ".join(f"{_median([x[k] for x in start]):.3f}" for k in keys)
                 + " | | | `all` per seed: " + " / ".join(f"{x['all']:.3f}" for x in start) + " |")
    row("uniform GRPO (the baseline) vs its SFT start", f"held-out `all` after {steps} rollout steps",
        [b["final"]["all"] for b in base], [x["all"] for x in start])
    if all("bandit" in r["runs"] for r in seeds):
        ours = [r["runs"]["bandit"] for r in seeds]
        for key in ("all", "add2", "sub2", "add3"):
            row("SEC: bandit vs uniform", f"held-out `{key}` after {steps} steps", [o["final"][key] for o in ours],
                [b["final"][key] for b in base])
    if all("dots" in r["runs"] for r in seeds):
        ours = [r["runs"]["dots"] for r in seeds]
        thr = [r["sft"]["acc"]["all"] + s["dots_gain"] for r in seeds]
        a = [steps_to(o["curve"], t) for o, t in zip(ours, thr)]
        b = [steps_to(x["curve"], t) for x, t in zip(base, thr)]
        label = "DOTS: difficulty_target + replay vs uniform"
        row(label, f"rollout steps to held-out `all` >= start + {s['dots_gain']:.2f} (evaluated every "
            f"{s['eval_every']})", [x[0] for x in a], [x[0] for x in b], 0, pts=False)
        row(label, "completions generated to the same", [x[2] for x in a], [x[2] for x in b], 0, pts=False)
        row(label, "training seconds to the same (arms ran at different times: load differs)", [x[1] for x in a],
            [x[1] for x in b], 0, pts=False)
        row(label, f"held-out `all` after {steps} steps", [o["final"]["all"] for o in ours],
            [x["final"]["all"] for x in base])
        row(label, f"completions generated in {steps} steps", [generated(o["curve"][-1]) for o in ours],
            [generated(x["curve"][-1]) for x in base], 0, pts=False)
    for arm, what in ABLATIONS.items():
        if all(arm in r["runs"] for r in seeds) and all("dots" in r["runs"] for r in seeds):
            ours = [r["runs"][arm] for r in seeds]
            thr = [r["sft"]["acc"]["all"] + s["dots_gain"] for r in seeds]
            label = f"DOTS ablation: {what} vs uniform"
            row(label, f"rollout steps to held-out `all` >= start + {s['dots_gain']:.2f}",
                [steps_to(o["curve"], t)[0] for o, t in zip(ours, thr)],
                [steps_to(x["curve"], t)[0] for x, t in zip(base, thr)], 0, pts=False)
            row(label, f"held-out `all` after {steps} steps", [o["final"]["all"] for o in ours],
                [x["final"]["all"] for x in base])
    if all("relift" in r["runs"] for r in seeds):
        ours = [r["runs"]["relift"] for r in seeds]
        label = "ReLIFT: relift vs plain GRPO"
        row(label, f"held-out `hard` (difficulty >= {HARD}) after {steps} rollout steps",
            [o["final"]["hard"] for o in ours], [x["final"]["hard"] for x in base])
        row(label, f"held-out `all` after {steps} rollout steps", [o["final"]["all"] for o in ours],
            [x["final"]["all"] for x in base])
        lines.append(f"| {label} | SFT steps added (8 demonstrations each) / training seconds (median) | "
                     f"{_median([o.get('relift_sft_steps', 0) for o in ours]):.0f} / "
                     f"{_median([o['train_s'] for o in ours]):.0f} s | 0 / {_median([x['train_s'] for x in base]):.0f} s"
                     f" | | SFT steps: " + " / ".join(f"{o.get('relift_sft_steps', 0):.0f}" for o in ours) + " |")
    if all("searched" in r["runs"] for r in seeds):
        ours = [r["runs"]["searched"] for r in seeds]
        label = "MoDoMoDo: searched vs uniform mixture"
        row(label, f"OOD (sub3) accuracy after {steps} steps", [o["ood"] for o in ours], [x["ood"] for x in base])
        row(label, f"held-out `all` (in-domain) after {steps} steps", [o["final"]["all"] for o in ours],
            [x["final"]["all"] for x in base])
        props = "; ".join(", ".join(f"{d} {w:.2f}" for d, w in r["search"]["proposal"].items()) for r in seeds)
        lines.append(f"| {label} | proposed weights per seed | {props} | add2 0.33, sub2 0.33, add3 0.33 | | |")
    return "\n".join(lines)


def settings_line(s: dict) -> str:
    return (f"Settings: tiny model; SFT on `multi_sft_train` (lr 1e-3, batch 64) until greedy accuracy on 256 training "
            f"prompts >= {s['sft_stop']} (probed every {s['sft_probe_every']} steps, at most {s['sft_steps']}); then "
            f"GRPO on alignpipe's engine, {s['rl_steps']} rollout steps of 8 prompts x 8 completions, 6 new tokens, "
            f"temperature 0.7, lr {s['lr']} constant, no KL, exact-match reward; held-out = `multi_eval` "
            f"({s['eval_limit'] or 600} problems, greedy), OOD = `multi_ood_eval` (sub3); relift defaults (every 4 "
            f"steps or 16 prompts, 2 SFT steps of 8 at lr 1e-4); replay defaults (share 0.25, staleness 2); "
            f"difficulty_target defaults (target 0.5); bandit defaults; mixture search {s['candidates']} candidates x "
            f"{s['proxy_steps']} proxy steps scored in-domain; seeds {s['seeds']}"
            + (f" (RL only: one data split and SFT start, of seed {s['sft_seed']}, for all)"
               if s.get("sft_seed") is not None else " (each its own data split, SFT start and RL runs)") + ".")


# ---- main -----------------------------------------------------------------------------------------------------
def _save(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def merge(paths: list[str], out: Path) -> dict:
    parts = [json.loads(Path(p).read_text()) for p in paths]
    results = {"settings": parts[0]["settings"], "seeds": sorted((r for p in parts for r in p["seeds"]),
                                                                 key=lambda r: r["seed"])}
    results["settings"]["seeds"] = [r["seed"] for r in results["seeds"]]
    _save(out, results)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kinds", nargs="*", help="any of: " + ", ".join(KINDS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rl-steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4, help="RL learning rate")
    p.add_argument("--eval-every", type=int, default=20, help="held-out evaluation every N rollout steps")
    p.add_argument("--dots-gain", type=float, default=0.05,
                   help="DOTS threshold: the SFT start's held-out accuracy + this")
    p.add_argument("--sft-stop", type=float, default=0.3)
    p.add_argument("--sft-steps", type=int, default=1000, help="SFT step cap (it stops earlier at --sft-stop)")
    p.add_argument("--sft-probe-every", type=int, default=50, help="SFT accuracy probe every N steps")
    p.add_argument("--sft-seed", type=int, default=None, help="one data split and SFT start (of this seed) for "
                   "every seed, which then varies the RL runs only (default: each seed its own data split and SFT)")
    p.add_argument("--eval-limit", type=int, default=None, help="first N prompts of each held-out split")
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--proxy-steps", type=int, default=20)
    p.add_argument("--json", type=Path, default=JSON, help="results file (written after every run)")
    p.add_argument("--resume", action="store_true", help="keep the runs --json already holds and skip them")
    p.add_argument("--merge", nargs="+", metavar="JSON", help="merge per-process results files into --json, print "
                   "the table and exit")
    p.add_argument("--quick", action="store_true", help="smoke run of the script itself: a few SFT and RL steps, "
                   "tiny evaluations (the numbers mean nothing)")
    args = p.parse_args(argv)
    if args.merge:
        results = merge(args.merge, args.json)
        print(settings_line(results["settings"]) + "\n\n" + table(results))
        return 0
    if not args.kinds or set(args.kinds) - set(KINDS):
        p.error(f"kinds: {' '.join(args.kinds) or '(none)'}: name one or more of: " + ", ".join(KINDS))
    if args.quick:
        args.rl_steps, args.eval_limit, args.candidates, args.proxy_steps = min(args.rl_steps, 4), 30, 3, 2
        args.sft_steps, args.sft_stop, args.eval_every = 5, 0.0, 2
    os.environ.setdefault("ALIGNPIPE_STATE_URI", str(OUT / "state"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("rl_steps", "lr", "eval_every", "dots_gain", "sft_stop", "sft_steps",
                                              "sft_probe_every", "sft_seed", "eval_limit", "candidates", "proxy_steps", "seeds")}
    results = {"settings": settings, "seeds": []}
    if args.resume and args.json.exists():
        results = json.loads(args.json.read_text())
        results["settings"]["seeds"] = sorted(set(results["settings"]["seeds"]) | set(args.seeds))
    for seed in args.seeds:
        rec = next((r for r in results["seeds"] if r["seed"] == seed), None)
        if rec is None:
            rec = {"seed": seed, "runs": {}}
            results["seeds"].append(rec)
        start_seed = seed if args.sft_seed is None else args.sft_seed
        files = data(start_seed)
        model, sft_s = sft_model(start_seed, files, args.sft_stop, args.sft_steps, args.sft_probe_every)
        if "sft" not in rec:
            from alignpipe import models

            m, tok = models.load_policy(model)
            rec["sft"] = {"acc": Scorer(m, tok, _rows(files["multi_eval"], args.eval_limit))(),
                          "ood": Scorer(m, tok, _rows(files["multi_ood_eval"], args.eval_limit))()["all"],
                          "wall_s": round(sft_s, 1), "model": model}
            _log(f"seed {seed}: SFT start held-out {rec['sft']['acc']}, OOD {rec['sft']['ood']}")
            _save(args.json, results)
        arms = [("uniform", {"name": "uniform"}, {})] + [ARMS[k] if k in ARMS else ("searched", None, {})
                                                        for k in args.kinds]  # in the order named
        for name, sampler, es in arms:
            if name in rec["runs"]:
                continue
            if name == "searched":
                if "search" not in rec:
                    rec["search"] = search_mixture(seed, files, model, args.lr, args.candidates, args.proxy_steps,
                                                   args.eval_limit)
                    _save(args.json, results)
                sampler = {"name": "mixture", "weights": rec["search"]["proposal"]}
            r = engine_run(seed, model, files, args.rl_steps, args.lr, sampler, es, args.eval_every, args.eval_limit)
            rec["runs"][name] = r
            _save(args.json, results)
            _log(f"seed {seed}: {name}: held-out {r['final']['all']:.3f} (hard {r['final'].get('hard', 0):.3f}), OOD "
                 f"{r['ood']:.3f}, {r['train_s']:.0f} s training; curve "
                 + ", ".join(f"{c['step']}:{c['acc']['all']:.3f}" for c in r["curve"]))
    print(settings_line(results["settings"]) + "\n\n" + table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
