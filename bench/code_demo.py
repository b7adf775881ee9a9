#!/usr/bin/env python
"""The code demo (preset `demo-code`, docs/code-rewards.md "The code demo"), stage by stage, per seed.

For each seed: the demo data written with that seed (as prepare-data does for `--param seed=N`: the train /
held-out split is the seed's), SFT from the tiny model with the preset's SFT settings (lr 1e-3, stop at 30%
greedy accuracy on training prompts, cap 800 steps) -> evaluate SFT on the 200 held-out code problems -> RL
(GRPO, the preset's 40 steps, `code_tests` through the real sandbox) -> evaluate RL. Every stage config is the
one the rlvr pipeline hands its stages for the preset (`alignpipe.steps.preset_stage_configs`) with the seed set,
tracking off; nothing else is changed. The held-out pass rate is evaluate's greedy `accuracy` (code_tests).

    OMP_NUM_THREADS=1 .venv/bin/python bench/code_demo.py --seeds 0 1 2   # the docs' table (~20 min a seed on 2 shared cores)
    .venv/bin/python bench/code_demo.py --seeds 0 --quick                 # a smoke run of the script (numbers mean nothing)

One process per seed is what the docs' numbers used (`--seeds 1` then `--seeds 2`); results per seed go to
`out/bench/code_demo/seed-N.json` (a seed already there is not rerun), and a markdown table over every seed
file there is printed with medians.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench" / "code_demo"


def _log(msg: str) -> None:
    print(f"[code_demo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _load() -> str:
    return os.getloadavg()[0].__format__(".1f")


def preset_configs(seed: int, quick: bool) -> dict[str, dict]:
    """The preset's stage configs (what the rlvr pipeline would hand each stage) with the seed set."""
    from alignpipe import presets, steps

    values = presets.values_for("demo-code", "rlvr")
    values["seed"] = seed
    cfgs = steps.preset_stage_configs(values)
    for stage in ("sft", "rl", "evaluate"):
        cfgs[stage]["tracking"] = False
    if quick:
        cfgs["sft"]["training"].update(max_steps=3, warmup_steps=0, logging_steps=1)
        cfgs["sft"]["stop_at_accuracy"] = None
        cfgs["rl"]["training"].update(max_steps=1, logging_steps=1)
        cfgs["evaluate"]["limit"] = 16
    return cfgs


def run_seed(seed: int, quick: bool) -> dict:
    from alignpipe import config
    from alignpipe.data.demo import write_demo_data
    from alignpipe.stages import evaluate, rl, sft

    work = OUT / (f"quick-{seed}" if quick else f"seed-{seed}")
    files = write_demo_data(work / "data", seed=seed)
    cfgs = preset_configs(seed, quick)
    res: dict = {"seed": seed, "quick": quick, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load": {}}

    def ev(name: str, model: str) -> float:
        cfg = copy.deepcopy(cfgs["evaluate"])
        cfg.update(models={name: model}, data=files["code_eval"], output=str(work / f"eval-{name}.json"))
        r = evaluate.run(config.validate("evaluate", cfg))
        res[f"{name}_eval_s"] = round(r.seconds, 1)
        return r.metrics[f"{name}/accuracy"] if f"{name}/accuracy" in r.metrics else r.metrics["accuracy"]

    scfg = dict(cfgs["sft"], train_data=files["code_sft_train"], output_dir=str(work / "sft"))
    res["load"]["sft_start"] = _load()
    r = sft.run(config.validate("sft", scfg))
    res.update(sft_steps=int(r.metrics["train/steps"]), sft_probe=r.metrics.get("train/probe_accuracy"),
               sft_wall_s=round(r.seconds, 1), sft_loss_last=r.metrics.get("train/loss_last"))
    res["load"]["sft_end"] = _load()
    _log(f"seed {seed}: SFT {res['sft_steps']} steps in {r.seconds:.0f} s (probe {res['sft_probe']}, load {_load()})")
    res["sft"] = ev("sft", str(work / "sft"))
    _log(f"seed {seed}: SFT held-out pass rate {res['sft']:.3f}")

    rcfg = dict(cfgs["rl"], model=str(work / "sft"), train_data=files["code_rl_train"], output_dir=str(work / "rl"))
    res["load"]["rl_start"] = _load()
    r = rl.run(config.validate("rl", rcfg))
    res["rl_wall_s"], res["rl_steps"] = round(r.seconds, 1), int(cfgs["rl"]["training"]["max_steps"])
    res["rl_reward_first_last"] = [r.metrics.get("train/reward_first"), r.metrics.get("train/reward_last")]
    res["load"]["rl_end"] = _load()
    _log(f"seed {seed}: RL {res['rl_steps']} steps in {r.seconds:.0f} s (load {_load()})")
    res["rl"] = ev("rl", str(work / "rl"))
    res["rl_minus_sft_points"] = round(100 * (res["rl"] - res["sft"]), 1)
    _log(f"seed {seed}: RL held-out pass rate {res['rl']:.3f} (SFT {res['sft']:.3f})")
    return res


def table(results: list[dict]) -> str:
    lines = ["| seed | SFT steps | SFT | RL | RL − SFT (points) | SFT wall | RL wall | evaluate (per model) | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["seed"]):
        loads = [float(v) for v in r["load"].values()]
        lines.append(f"| {r['seed']} | {r['sft_steps']} | {r['sft']:.3f} | {r['rl']:.3f} | {r['rl_minus_sft_points']:+.1f} | "
                     f"{r['sft_wall_s']:.0f} s | {r['rl_wall_s']:.0f} s ({r['rl_wall_s'] / r['rl_steps']:.1f} s/step) | "
                     f"{r['sft_eval_s']:.0f} s / {r['rl_eval_s']:.0f} s | {min(loads):.0f}-{max(loads):.0f} |")
    if len(results) > 1:
        med = lambda k: statistics.median(r[k] for r in results)  # noqa: E731
        lines.append(f"| **median** | {med('sft_steps'):.0f} | {med('sft'):.3f} | {med('rl'):.3f} | "
                     f"{med('rl_minus_sft_points'):+.1f} | {med('sft_wall_s'):.0f} s | {med('rl_wall_s'):.0f} s | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="a few steps per stage: checks the script, not the demo")
    p.add_argument("--rerun", action="store_true", help="run a seed again even if its result file exists")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ALIGNPIPE_STATE_URI", str(OUT / "state"))
    os.environ["ALIGNPIPE_FORCE_RERUN"] = "1"  # a bench trains: never reuse an earlier run's output (alignpipe.reuse)
    OUT.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        path = OUT / (f"quick-{seed}.json" if args.quick else f"seed-{seed}.json")
        if path.exists() and not args.rerun:
            _log(f"seed {seed}: {path} exists (--rerun to run it again)")
            continue
        t = time.perf_counter()
        res = run_seed(seed, args.quick)
        res["total_s"] = round(time.perf_counter() - t, 1)
        path.write_text(json.dumps(res, indent=1))
    pattern = "quick-*.json" if args.quick else "seed-*.json"
    print(table([json.loads(f.read_text()) for f in sorted(OUT.glob(pattern))]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
