#!/usr/bin/env python
"""alignpipe's RL engine against TRL, and an Echo-Chamber-style comparison of RL algorithms on the demo task.

Every RL run uses the demo's RL settings (`presets/demo.yaml`): 8 prompts x 8 completions per step, 5 new
tokens, temperature 0.7, constant lr, no KL, token-mean (DAPO) loss, exact-match reward (the `rlvr` pipeline's
reward: the `rlhf` demo adds a 0.1-weighted reward model, not used here), except the budget: the demo runs 300
steps at lr 3e-5, the bench `--steps` (48) at lr 6e-5, about the same lr x steps as 100 steps at 3e-5, where
both engines' GRPO gained 4-5 points in calibration (the step count is what 2 shared cores allow for 3 seeds,
7 algorithms and 2 columns). TRL's GRPO keeps
`scale_rewards: group` (the demo sets `batch` against blown-up reward-model differences, absent here, and the
engine's `grpo` estimator scales by the group's std), so both engines run the same algorithm.

1. **Throughput**: steps/s of GRPO on the alignpipe engine vs TRL's GRPOTrainer on that config, `--reps` pairs
   (one run of each engine at the same time, so both see the same load), medians. The algorithm call is timed
   (engine: `rl.train`; TRL: trainer construction + `trainer.train`), not model loading or publishing.
2. **Algorithms at equal optimizer steps** (Echo Chamber, Zhao et al. 2025, in miniature): from the same demo
   SFT model, each algorithm runs `--steps` optimizer steps through `stage rl` and the published model's greedy
   accuracy on the demo's held-out split is measured; `--seeds` seeds, medians. Algorithms: PPO (critic + GAE),
   GRPO on both engines, RLOO, REINFORCE++, NFT (alignpipe engine), expert iteration (4 rounds x steps/4 SFT
   steps). The per-step training reward is kept (first and last tenth of the steps in the table).
3. **Algorithms at equal wall time**: the budget is the median training time (the timed algorithm call) of
   GRPO (TRL) at equal steps; each algorithm gets `max_steps = round(budget / its median seconds per optimizer
   step at equal steps)` (expert iteration: a multiple of its 4 rounds), i.e. a step count computed from a
   measured per-step time, not a clock-based stop; a run whose computed steps equal `--steps` is the equal-step
   run itself. The table gives the steps and the measured training time of each.

Runs go to `--jobs` worker processes (one torch thread each); every finished run is appended to `--results`
(JSON lines) and a rerun with the same file skips the runs already there.

    .venv/bin/python bench/rl_engines.py            # full: writes the table into docs/rewards-and-algorithms.md
    .venv/bin/python bench/rl_engines.py --quick    # smoke test: 1 rep, 1 seed, a few steps, no doc write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "rewards-and-algorithms.md"
BEGIN, END = "<!-- bench:rl_engines:begin -->", "<!-- bench:rl_engines:end -->"

#: shared RL settings, the demo preset's: 8 prompts x 8 completions per step, 5 new tokens, constant lr, no KL
GEN = {"max_new_tokens": 5, "temperature": 0.7}
K = 8
BATCH = 64
LR = 6e-5
EI_ROUNDS = 4

ALGORITHMS = {  # label -> rl config overrides (equal optimizer steps: one per rollout step on the engine)
    "PPO (alignpipe)": {"algorithm": "ppo", "engine": "alignpipe",
                        "engine_settings": {"critic": {"learning_rate": 3e-4}}},
    "GRPO (alignpipe)": {"algorithm": "grpo", "engine": "alignpipe"},
    "GRPO (TRL)": {"algorithm": "grpo", "engine": "trl", "grpo": {"num_generations": K, "beta": 0.0}},
    "RLOO (alignpipe)": {"algorithm": "rloo", "engine": "alignpipe"},
    "REINFORCE++ (alignpipe)": {"algorithm": "grpo", "engine": "alignpipe",
                                "engine_settings": {"advantage": "reinforce_pp"}},
    "NFT (alignpipe)": {"algorithm": "grpo", "engine": "alignpipe", "engine_settings": {"loss": "nft"}},
    "expert iteration (TRL SFT)": {"algorithm": "expert_iteration", "engine": "trl"},
}
#: the equal-wall-time budget is this algorithm's median training time at equal steps
BUDGET_LABEL = "GRPO (TRL)"


def _env(tmp: Path) -> None:
    os.environ.update({"ALIGNPIPE_CACHE_DIR": str(tmp / "cache"), "ALIGNPIPE_CHECKPOINT_DIR": str(tmp / "ckpt"),
                       "ALIGNPIPE_WORKDIR": str(tmp / "work"), "ALIGNPIPE_FORCE_RERUN": "1", "HF_HUB_OFFLINE": "1",
                       "ALIGNPIPE_PROGRESS": "0", "TRL_EXPERIMENTAL_SILENCE": "1", "TOKENIZERS_PARALLELISM": "false",
                       "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"})


def sft_model(data: dict, out: Path) -> str:
    """The demo's SFT starting point: the tiny model trained until greedy accuracy on 256 training problems
    reaches 30% (the demo preset's stop), at most 800 steps."""
    from alignpipe.config import SFTConfig
    from alignpipe.stages import sft

    sft.run(SFTConfig(model="tiny", train_data=data["sft_train"], output_dir=str(out), max_length=32, tracking=False,
                      stop_at_accuracy=0.3, accuracy_probe_size=256, accuracy_probe_every=10,
                      training=dict(max_steps=800, learning_rate=1e-3, lr_scheduler="constant_with_warmup",
                                    warmup_steps=20, batch_size=64, logging_steps=10, seed=0)))
    return str(out)


def heldout_accuracy(model_dir: str, eval_path: str) -> float:
    """Greedy exact-match accuracy on the held-out split."""
    from alignpipe import models
    from alignpipe.models.generate import HFGenerator

    rows = [json.loads(line) for line in open(eval_path)]
    model, tok = models.load_policy(model_dir)
    outs = HFGenerator(model, tok, batch_size=256).generate([r["prompt"] for r in rows], n=1, temperature=0.0,
                                                           max_new_tokens=GEN["max_new_tokens"])
    return sum(o[0].strip() == r["answer"] for o, r in zip(outs, rows)) / len(rows)


def rl_config(base: str, data: dict, out: Path, steps: int, seed: int, overrides: dict) -> dict:
    cfg = {"model": base, "train_data": data["rl_train"], "output_dir": str(out), "tracking": False,
           "rewards": [{"name": "exact_match"}], "generation": dict(GEN), "grpo": {"num_generations": K},
           "training": {"max_steps": steps, "learning_rate": LR, "batch_size": BATCH, "lr_scheduler": "constant",
                        "warmup_steps": 0, "logging_steps": 1, "seed": seed, "save_steps": None,
                        "save_minutes": None}}
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    if cfg["algorithm"] == "expert_iteration":
        cfg.pop("grpo")
        cfg["expert_iteration"] = {"rounds": EI_ROUNDS, "samples_per_prompt": K, "prompts_per_round": 64,
                                   "sft_steps_per_round": max(1, steps // EI_ROUNDS)}
    return cfg


def ei_steps(steps: float) -> int:
    """Expert iteration's optimizer steps nearest `steps`: a whole number of SFT steps in each of its rounds."""
    return EI_ROUNDS * max(1, round(steps / EI_ROUNDS))


# ------------------------------------------------------------------------------------------------ worker side

_W: dict = {}


def _timed_algorithms(times: list[float]) -> None:
    """Wrap the rl stage's algorithm calls (engine: `_run_alignpipe`; TRL: `_run_grpo` etc., trainer construction
    and training; expert iteration: its sampling and SFT rounds) so each call's duration is appended to `times`."""
    from alignpipe.stages import rl as rl_stage

    def wrap(fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times.append(time.perf_counter() - t0)
        return timed

    rl_stage._run_alignpipe = wrap(rl_stage._run_alignpipe)
    for name in list(rl_stage.ALGORITHMS):
        rl_stage.ALGORITHMS[name] = wrap(rl_stage.ALGORITHMS[name])


def _worker_init(root: str, data: dict) -> None:
    _env(Path(tempfile.mkdtemp(prefix="worker-", dir=root)))
    import torch

    torch.set_num_threads(1)
    # imported here, so that no run's timed algorithm call pays for the first import of its trainer
    import trl  # noqa: F401
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer, SFTTrainer  # noqa: F401

    from alignpipe import rl  # noqa: F401
    from alignpipe.models.generate import HFGenerator  # noqa: F401

    DATA.update(data)
    _W["times"] = []
    _timed_algorithms(_W["times"])


def run_job(job: dict) -> dict:
    """One unit of work in a worker: the SFT start (`kind: sft`) or one rl stage run (`throughput`, `steps`,
    `time`); returns the job with its measurements."""
    import shutil

    out = Path(job["out"])
    if job["kind"] == "sft":
        base = sft_model(DATA, out)
        return {**job, "acc": heldout_accuracy(base, DATA["eval"]), "load": os.getloadavg()[0]}
    from alignpipe import config
    from alignpipe.stages import rl as rl_stage

    over = ALGORITHMS[job["label"]]
    cfg = rl_config(job["base"], DATA, out, job["steps"], job["seed"], over)
    times = _W["times"]
    n = len(times)
    t0 = time.perf_counter()
    res = rl_stage.run(config.validate("rl", cfg))
    stage_s = time.perf_counter() - t0
    rec = {**job, "stage_s": stage_s, "train_s": sum(times[n:]), "load": os.getloadavg()[0],
           "optimizer_steps": res.metrics.get("train/optimizer_steps", res.metrics.get("train/steps")),
           "rewards": [h["reward"] if "reward" in h else h["mean_reward"] for h in res.history
                       if "reward" in h or "mean_reward" in h]}
    if job["kind"] != "throughput":
        rec["acc"] = heldout_accuracy(str(out), DATA["eval"])
    shutil.rmtree(out, ignore_errors=True)
    return rec


# ------------------------------------------------------------------------------------------------ driver side


def job_key(job: dict) -> str:
    return "|".join(str(job.get(k, "")) for k in ("kind", "label", "seed", "steps", "rep"))


def load_results(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {job_key(r): r for r in recs}


def run_jobs(pool, jobs: list[dict], results: dict[str, dict], path: Path) -> list[dict]:
    """Run the jobs not already in `results` (keyed by job_key), appending each finished one to `path`; returns
    the records of all `jobs` in order."""
    todo = [j for j in jobs if job_key(j) not in results]
    futures = [(j, pool.submit(run_job, j)) for j in todo]
    for j, fut in futures:
        rec = {**fut.result(), "finished": time.time()}
        results[job_key(rec)] = rec
        with path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        desc = f"{rec['kind']} {rec.get('label', '')} seed {rec.get('seed', '-')} steps {rec.get('steps', '-')}"
        acc = f"held-out {rec['acc']:.3f}, " if rec.get("acc") is not None else ""
        print(f"{desc}: {acc}train {rec.get('train_s', 0):.1f} s, load {rec['load']:.1f}", flush=True)
    return [results[job_key(j)] for j in jobs]


def equal_time_steps(records: list[dict], steps: int) -> tuple[float, dict[str, int], dict[str, float]]:
    """From the equal-step runs: the budget (median training seconds of BUDGET_LABEL), each algorithm's median
    seconds per optimizer step, and the optimizer steps that fill the budget (expert iteration: a multiple of its
    rounds)."""
    def runs(label):
        return [r for r in records if r["kind"] == "steps" and r["label"] == label and r["steps"] == steps]

    budget = statistics.median(r["train_s"] for r in runs(BUDGET_LABEL))
    per_step, n_steps = {}, {}
    for label in ALGORITHMS:
        rs = runs(label)
        if not rs:
            continue
        per_step[label] = statistics.median(r["train_s"] / max(1.0, r["optimizer_steps"] or r["steps"]) for r in rs)
        n = budget / per_step[label]
        n_steps[label] = ei_steps(n) if ALGORITHMS[label]["algorithm"] == "expert_iteration" else max(1, round(n))
    return budget, n_steps, per_step


def time_jobs(step_jobs: list[dict], n_steps: dict[str, int], steps: int, results: dict[str, dict]) -> list[dict]:
    """The equal-wall-time jobs; one whose steps equal the equal-step run's is that run (recorded as done)."""
    jobs = []
    for j in step_jobs:
        tj = {**j, "kind": "time", "steps": n_steps[j["label"]], "out": j["out"] + "-time"}
        if tj["steps"] == steps and job_key(j) in results:
            results[job_key(tj)] = {**results[job_key(j)], "kind": "time", "reused": True}
        jobs.append(tj)
    return jobs


def _fmt_seeds(vals: list[float]) -> str:
    return " / ".join(f"{v:.3f}" for v in vals)


def _tenths(rewards: list[float]) -> tuple[float, float] | None:
    if not rewards:
        return None
    n = max(1, len(rewards) // 10)
    return sum(rewards[:n]) / n, sum(rewards[-n:]) / n


def table(sft_acc: float, n_eval: int, tp: dict, step_recs: list[dict], time_recs: list[dict], budget: float,
          per_step: dict[str, float], steps: int, seeds: list[int], reps: int, tp_steps: int, jobs: int,
          total_s: float) -> str:
    loads = [r["load"] for r in step_recs + time_recs if "load" in r]
    load = (f"load average {statistics.median(loads):.1f} median ({min(loads):.1f}-{max(loads):.1f}) at the end of "
            f"each run" if loads else "load not recorded")
    lines = [f"Written by `bench/rl_engines.py` (2 CPU cores shared with other work, {jobs} runs at a time, torch "
             f"threads 1 each; {load}; {total_s / 60:.0f} min in all). Demo task, operands 0..30; start: the demo "
             f"SFT model (SFT stopped at 30% greedy accuracy on 256 training problems), held-out greedy accuracy "
             f"**{sft_acc:.3f}** on the {n_eval} held-out problems (one problem = {100 / n_eval:.1f} points). Every "
             f"RL run has the demo preset's RL settings but a shorter budget at a higher lr (the demo: 300 steps at "
             f"lr 3e-5): {BATCH // K} prompts x {K} completions per step, {GEN['max_new_tokens']} new tokens, "
             f"temperature {GEN['temperature']}, lr {LR:g} constant, no KL, token-mean (DAPO) loss, group-scaled "
             f"advantages, exact-match reward; seeds "
             f"{', '.join(map(str, seeds))}; medians.", ""]
    if tp:
        lines += [f"**Throughput** (GRPO, {tp_steps} steps, {reps} pair{'s' if reps != 1 else ''} run side by side, medians, the algorithm "
                  f"call only): alignpipe engine {tp['alignpipe']:.2f} steps/s, TRL GRPOTrainer {tp['trl']:.2f} "
                  f"steps/s: **{tp['alignpipe'] / tp['trl']:.2f}x**.", ""]
    lines += [f"**Equal optimizer steps** ({steps} each; expert iteration: {EI_ROUNDS} rounds x {steps // EI_ROUNDS} "
              f"SFT steps of {BATCH} sequences on the verified samples of 64 prompts x {K}). Training reward: the "
              f"mean exact-match reward of the sampled completions over the first and the last tenth of the steps "
              f"(expert iteration: of its first and last round's samples).", "",
              "| algorithm | held-out accuracy | vs SFT | per seed | training reward first -> last | "
              "training time | s / step |",
              "|---|---|---|---|---|---|---|"]
    for label in ALGORITHMS:
        rs = [r for r in step_recs if r["label"] == label]
        if not rs:
            continue
        med = statistics.median(r["acc"] for r in rs)
        fl = [t for t in (_tenths(r["rewards"]) for r in rs) if t]
        rw = (f"{statistics.median(a for a, _ in fl):.3f} -> {statistics.median(b for _, b in fl):.3f}"
              if fl else "-")
        lines.append(f"| {label} | {med:.3f} | {100 * (med - sft_acc):+.1f} pts | {_fmt_seeds([r['acc'] for r in rs])} "
                     f"| {rw} | {statistics.median(r['train_s'] for r in rs):.0f} s | {per_step[label]:.2f} |")
    if time_recs:
        lines += ["", f"**Equal wall time** (budget {budget:.0f} s: the median training time of {BUDGET_LABEL} above; "
                  f"each algorithm's optimizer steps = budget / its median seconds per step above, rounded; an "
                  f"algorithm whose steps come out at {steps} reuses its equal-step runs):", "",
                  "| algorithm | optimizer steps | held-out accuracy | vs SFT | per seed | training time |",
                  "|---|---|---|---|---|---|"]
        for label in ALGORITHMS:
            rs = [r for r in time_recs if r["label"] == label]
            if not rs:
                continue
            med = statistics.median(r["acc"] for r in rs)
            lines.append(f"| {label} | {rs[0]['steps']} | {med:.3f} | {100 * (med - sft_acc):+.1f} pts | "
                         f"{_fmt_seeds([r['acc'] for r in rs])} | {statistics.median(r['train_s'] for r in rs):.0f} s |")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC}: no {BEGIN} ... {END} markers")
    head, rest = doc.split(BEGIN, 1)
    DOC.write_text(head + BEGIN + "\n\n" + text + "\n\n" + END + rest.split(END, 1)[1])


def table_from_results(results: dict[str, dict], args, n_eval: int, seeds: list[int], total_s: float) -> int:
    recs = list(results.values())
    sft = [r for r in recs if r["kind"] == "sft"]
    if not sft:
        raise SystemExit("--table-only: the results file has no SFT record")
    tp_recs = [r for r in recs if r["kind"] == "throughput"]
    tp = {eng: statistics.median(r["steps"] / r["train_s"] for r in tp_recs if r["label"] == label)
          for eng, label in (("alignpipe", "GRPO (alignpipe)"), ("trl", "GRPO (TRL)"))} if tp_recs else {}
    step_recs = [r for r in recs if r["kind"] == "steps" and r["steps"] == args.steps and r["seed"] in seeds]
    budget, n_steps, per_step = equal_time_steps(step_recs, args.steps)
    time_recs = [r for r in recs if r["kind"] == "time" and r["seed"] in seeds and r["steps"] == n_steps[r["label"]]]
    # an equal-step run that is also the equal-time run is not in the file as such
    done = {(r["label"], r["seed"]) for r in time_recs}
    time_recs += [{**r, "kind": "time"} for r in step_recs if n_steps[r["label"]] == args.steps
                  and (r["label"], r["seed"]) not in done]
    ends = [r["finished"] for r in recs if "finished" in r]
    span = max(ends) - min(ends) if len(ends) > 1 else total_s  # first to last finished run: a lower bound
    text = table(sft[-1]["acc"], n_eval, tp, step_recs, time_recs, budget, per_step, args.steps, seeds,
                 len(tp_recs) // 2, tp_recs[0]["steps"] if tp_recs else 0, args.jobs, span)
    print(text)
    if not args.quick:
        write_doc(text)
        print(f"wrote {DOC}")
    return 0


DATA: dict = {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: few steps, 1 seed, 1 rep; no doc write")
    ap.add_argument("--steps", type=int, default=48, help="optimizer steps per algorithm (a multiple of 4)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2, help="throughput pairs (0: skip the throughput runs)")
    ap.add_argument("--tp-steps", type=int, default=8, help="steps per throughput run")
    ap.add_argument("--no-equal-time", action="store_true", help="skip the equal-wall-time runs")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (worker processes, one torch thread each)")
    ap.add_argument("--results", help="JSON-lines file of finished runs: appended to, and runs already in it are "
                    "skipped (default: a new file in the temporary folder)")
    ap.add_argument("--table-only", action="store_true", help="no runs: the table from the --results file as it "
                    "is (e.g. after stopping a run; algorithms or seeds missing there are left out) and write the doc")
    ap.add_argument("--sft", help="an SFT model folder to start from (default: train the demo SFT model first)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.reps, args.tp_steps = 4, 1, 1, 2
    if args.steps % EI_ROUNDS:
        raise SystemExit(f"--steps {args.steps}: must be a multiple of {EI_ROUNDS} (expert iteration's rounds)")
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    results_path = Path(args.results) if args.results else tmp / "results.jsonl"
    results = load_results(results_path)
    print(f"results: {results_path} ({len(results)} runs already there)", flush=True)
    _env(tmp)
    from alignpipe.data.demo import write_demo_data

    DATA.update(write_demo_data(tmp / "data", seed=0, max_operand=30, preference_pairs=400, eval_pairs=100))
    n_eval = sum(1 for _ in open(DATA["eval"]))
    seeds = list(range(args.seeds))
    if args.table_only:
        return table_from_results(results, args, n_eval, seeds, time.perf_counter() - start)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(str(tmp), dict(DATA))) as pool:
        sft_job = {"kind": "sft", "label": "sft", "steps": 0, "out": args.sft or str(tmp / "sft")}
        if args.sft and (job_key(sft_job) not in results or results[job_key(sft_job)]["out"] != args.sft):
            # a given SFT model: only its held-out accuracy is measured (and recorded)
            rec = {**sft_job, "acc": pool.submit(heldout_accuracy, args.sft, DATA["eval"]).result(),
                   "load": os.getloadavg()[0]}
            results[job_key(rec)] = rec
            with results_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        # (a rerun with the same --results reuses the first run's SFT model)
        sft_rec = run_jobs(pool, [sft_job], results, results_path)[0]
        sft_acc, base = sft_rec["acc"], sft_rec["out"]
        print(f"SFT held-out accuracy {sft_acc:.3f}", flush=True)
        tp = {}
        if args.reps:
            tp_jobs = [{"kind": "throughput", "label": label, "seed": 0, "steps": args.tp_steps, "rep": rep,
                        "base": base, "out": str(tmp / f"tp-{i}-{rep}")}
                       for rep in range(args.reps) for i, label in enumerate(("GRPO (alignpipe)", "GRPO (TRL)"))]
            recs = run_jobs(pool, tp_jobs, results, results_path)
            tp = {eng: statistics.median(r["steps"] / r["train_s"] for r in recs if r["label"] == label)
                  for eng, label in (("alignpipe", "GRPO (alignpipe)"), ("trl", "GRPO (TRL)"))}
        # the slowest algorithms first, so the workers finish together
        order = sorted(ALGORITHMS, key=lambda lb: (lb not in ("PPO (alignpipe)", "GRPO (TRL)"), lb))
        step_jobs = [{"kind": "steps", "label": label, "seed": seed, "steps": args.steps, "base": base,
                      "out": str(tmp / f"run-{list(ALGORITHMS).index(label)}-{seed}")}
                     for seed in seeds for label in order]
        step_recs = run_jobs(pool, step_jobs, results, results_path)
        budget, n_steps, per_step = equal_time_steps(step_recs, args.steps)
        time_recs = []
        if not args.no_equal_time:
            print(f"equal wall time: budget {budget:.1f} s -> steps {n_steps}", flush=True)
            time_recs = run_jobs(pool, time_jobs(step_jobs, n_steps, args.steps, results), results, results_path)
    text = table(sft_acc, n_eval, tp, step_recs, time_recs, budget, per_step, args.steps, seeds, args.reps,
                 args.tp_steps, args.jobs, time.perf_counter() - start)
    print(text)
    if not args.quick:
        write_doc(text)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
