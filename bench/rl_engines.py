#!/usr/bin/env python
"""alignpipe's RL engine against TRL, and an Echo-Chamber-style comparison of RL algorithms on the demo task.

1. **Throughput**: rollout steps/s of GRPO on the alignpipe engine vs TRL's GRPOTrainer on the same config (the
   demo SFT model, the same prompts x generations, completion length, learning rate), alternating, `--reps`
   repetitions, medians; the training call is timed from outside (`rl.train` vs `trainer.train` incl. its
   construction), so model loading and publishing are not counted. Ratio = engine steps/s / TRL steps/s.
2. **Algorithms** (Echo Chamber, Zhao et al. 2025, in miniature): starting from the same demo SFT model (a short
   SFT with an accuracy stop), each algorithm runs the same number of optimizer steps through `stage rl`, and the
   published model's greedy accuracy on the demo's held-out split is measured; `--seeds` seeds, medians, and
   the median wall time of the stage. Algorithms: PPO (critic + GAE), GRPO on both engines, RLOO, REINFORCE++,
   NFT (alignpipe engine), expert iteration (rounds x SFT steps = the same optimizer steps).

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "rewards-and-algorithms.md"
BEGIN, END = "<!-- bench:rl_engines:begin -->", "<!-- bench:rl_engines:end -->"

#: shared RL settings: 8 prompts x 4 completions per step, 5 new tokens, constant lr, no KL
GEN = {"max_new_tokens": 5, "temperature": 0.7}
K = 4
BATCH = 32
LR = 1e-4

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
                        "warmup_steps": 0, "logging_steps": 10, "seed": seed, "save_steps": None,
                        "save_minutes": None}}
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and key in cfg else value
    if cfg["algorithm"] == "expert_iteration":
        rounds = ei_rounds(steps)
        cfg.pop("grpo")
        cfg["expert_iteration"] = {"rounds": rounds, "samples_per_prompt": K, "prompts_per_round": 64,
                                   "sft_steps_per_round": max(1, steps // rounds)}
        cfg["training"]["batch_size"] = BATCH
    return cfg


def ei_rounds(steps: int) -> int:
    """Expert-iteration rounds such that rounds x SFT steps per round = `steps` (4 when it divides)."""
    return next(r for r in (4, 3, 5, 2) if steps % r == 0) if any(steps % r == 0 for r in (4, 3, 5, 2)) else 1


def timed_training():
    """Patch the rl stage so the training call (engine or TRL trainer) is timed from outside; returns the list the
    durations are appended to."""
    import transformers

    from alignpipe import rl

    times: list[float] = []
    train, engine = transformers.Trainer.train, rl.train

    def timed_trainer(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return train(self, *a, **k)
        finally:
            times.append(time.perf_counter() - t0)

    def timed_engine(*a, **k):
        t0 = time.perf_counter()
        try:
            return engine(*a, **k)
        finally:
            times.append(time.perf_counter() - t0)

    transformers.Trainer.train = timed_trainer
    rl.train = timed_engine
    return times


def throughput(base: str, data: dict, tmp: Path, steps: int, reps: int, times: list[float]) -> dict:
    from alignpipe import config
    from alignpipe.stages import rl as rl_stage

    res: dict[str, list[float]] = {"alignpipe": [], "trl": []}
    for rep in range(reps):
        for engine in (("alignpipe", "trl") if rep % 2 == 0 else ("trl", "alignpipe")):
            over = {"algorithm": "grpo", "engine": engine}
            if engine == "trl":
                over["grpo"] = {"num_generations": K, "beta": 0.0}
            cfg = rl_config(base, data, tmp / f"tp-{engine}-{rep}", steps, 0, over)
            n = len(times)
            rl_stage.run(config.validate("rl", cfg))
            res[engine].append(steps / sum(times[n:]))
            print(f"throughput {engine} rep {rep}: {res[engine][-1]:.2f} steps/s", flush=True)
    return {k: statistics.median(v) for k, v in res.items()}


def compare(base: str, data: dict, tmp: Path, steps: int, seeds: list[int]) -> dict:
    from alignpipe import config
    from alignpipe.stages import rl as rl_stage

    out: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        for label, over in ALGORITHMS.items():
            cfg = rl_config(base, data, tmp / f"cmp-{len(out.get(label, {}).get('acc', []))}-{abs(hash(label))}-{seed}",
                            steps, seed, over)
            t0 = time.perf_counter()
            rl_stage.run(config.validate("rl", cfg))
            wall = time.perf_counter() - t0
            acc = heldout_accuracy(cfg["output_dir"], data["eval"])
            rec = out.setdefault(label, {"acc": [], "wall": []})
            rec["acc"].append(acc)
            rec["wall"].append(wall)
            print(f"{label} seed {seed}: held-out {acc:.3f}, {wall:.1f} s", flush=True)
    return out


def table(sft_acc: float, tp: dict, cmp: dict, steps: int, seeds: list[int], reps: int, tp_steps: int,
          total_s: float) -> str:
    load = os.getloadavg()[0]
    lines = [f"Written by `bench/rl_engines.py` (2 CPU cores shared with other work, load average {load:.1f} at the "
             f"end, torch threads 1, {total_s:.0f} s in all). Demo task, operands 0..30; start: the demo SFT model "
             f"(SFT stopped at 30% greedy accuracy on 256 training problems), held-out greedy accuracy "
             f"**{sft_acc:.3f}** on the {sum(1 for _ in open(DATA['eval']))} held-out problems. Every RL run: "
             f"{BATCH // K} prompts x {K} completions per step, {GEN['max_new_tokens']} new tokens, temperature "
             f"{GEN['temperature']}, lr {LR:g} constant, no KL, exact-match reward.", "",
             f"**Throughput** (GRPO, {tp_steps} steps, {reps} repetitions alternating, medians, training call only): "
             f"alignpipe engine {tp['alignpipe']:.2f} steps/s, TRL GRPOTrainer {tp['trl']:.2f} steps/s: "
             f"**{tp['alignpipe'] / tp['trl']:.2f}x**.", "",
             f"**Algorithms at equal optimizer steps** ({steps} each; expert iteration: {ei_rounds(steps)} rounds x "
             f"{max(1, steps // ei_rounds(steps))} SFT steps on 64 prompts x {K} samples; seeds "
             f"{', '.join(map(str, seeds))}; medians):", "",
             "| algorithm | held-out accuracy (median) | change vs SFT | per seed | stage wall time (median) |",
             "|---|---|---|---|---|"]
    for label, rec in cmp.items():
        med = statistics.median(rec["acc"])
        lines.append(f"| {label} | {med:.3f} | {100 * (med - sft_acc):+.1f} pts | "
                     f"{' / '.join(f'{a:.3f}' for a in rec['acc'])} | {statistics.median(rec['wall']):.1f} s |")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC}: no {BEGIN} ... {END} markers")
    head, rest = doc.split(BEGIN, 1)
    DOC.write_text(head + BEGIN + "\n\n" + text + "\n\n" + END + rest.split(END, 1)[1])


DATA: dict = {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: few steps, 1 seed, 1 rep; no doc write")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per algorithm")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tp-steps", type=int, default=10, help="steps per throughput run")
    ap.add_argument("--sft", help="an SFT model folder to start from (default: train the demo SFT model first)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.reps, args.tp_steps = 4, 1, 1, 2
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    _env(tmp)
    import torch

    torch.set_num_threads(1)
    from alignpipe.data.demo import write_demo_data

    DATA.update(write_demo_data(tmp / "data", seed=0, max_operand=30, preference_pairs=400, eval_pairs=100))
    base = args.sft or sft_model(DATA, tmp / "sft")
    sft_acc = heldout_accuracy(base, DATA["eval"])
    print(f"SFT held-out accuracy {sft_acc:.3f}", flush=True)
    times = timed_training()
    tp = throughput(base, DATA, tmp, args.tp_steps, args.reps, times)
    cmp = compare(base, DATA, tmp, args.steps, list(range(args.seeds)))
    text = table(sft_acc, tp, cmp, args.steps, list(range(args.seeds)), args.reps, args.tp_steps,
                 time.perf_counter() - start)
    print(text)
    if not args.quick:
        write_doc(text)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
