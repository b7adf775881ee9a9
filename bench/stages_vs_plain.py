#!/usr/bin/env python
"""Each alignpipe stage against the plain TRL/transformers script doing the same work, in one process.

For every stage — SFT (plain, and packed/padding-free on variable-length data), reward model, DPO, GRPO,
RLOO, evaluate (against a plain `model.generate` loop) — the bench runs, alternating, `--reps` times:

- `plain`: the script a user would write with TRL/transformers alone (load, train, save; no tracking);
- `alignpipe`: `alignpipe.stages.X.run(cfg)` with tracking on (a local sqlite MLflow store);
- `alignpipe, tracking off`: the same with `tracking: false`, so that MLflow's share is measured apart.

The tiny model (`alignpipe.models.tiny`), the demo data (`alignpipe.data.demo.write_demo_data`), the batch,
learning rate, steps and logging interval are identical; there is no evaluation during training.
`Trainer.train` (and `generate`, for evaluate) are timed from the outside, the same way for both, which splits
each run into a fixed part (wall - train: validation, loading, MLflow run, saving/publishing, hashing) and a
per-step part (train / steps). The ratio is plain / alignpipe wall time (1.0 = as fast as plain; higher is better
for alignpipe); "at N steps" projects both from their fixed and per-step medians.

    .venv/bin/python bench/stages_vs_plain.py              # full: every stage, 3 repetitions; rewrites the
                                                            # table in README.md (section Speed)
    .venv/bin/python bench/stages_vs_plain.py --quick      # a smoke test: a few steps, 1 repetition, no doc write
    .venv/bin/python bench/stages_vs_plain.py --only sft grpo --profile out/prof   # + a cProfile per variant
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "README.md"
BEGIN, END = "<!-- bench:stages_vs_plain:begin -->", "<!-- bench:stages_vs_plain:end -->"

LOGGING_STEPS = 10
PROJECT_STEPS = 1000  # the "realistic step count" the fixed cost is amortised over

#: name -> (steps in full mode, steps in quick mode); evaluate counts prompts instead of steps
STEPS = {"sft": (40, 4), "sft_packed": (20, 3), "reward_model": (40, 3), "dpo": (30, 3),
         "grpo": (15, 2), "rloo": (15, 2), "evaluate": (384, 32)}
#: stages where alignpipe also runs with tracking off (MLflow's share, measured apart); the others skip that variant
TRACKING_OFF = ("sft", "grpo")
#: sft_packed: packed rows per batch and their length (the unpacked reference takes as many examples as hold as many
#: tokens, `Bench.unpacked_batch`)
PACKED_ROWS, PACKED_LENGTH = 16, 256
UNPACKED = "alignpipe, packing off"

TIMES = {"train": 0.0, "generate": 0.0, "train_cpu": 0.0, "generate_cpu": 0.0}


def _patch_timers() -> None:
    """Time Trainer.train and generate from the outside, identically for the plain script and the stage."""
    import transformers
    from transformers.generation.utils import GenerationMixin

    train, generate = transformers.Trainer.train, GenerationMixin.generate

    def timed_train(self, *a, **k):
        t, c = time.perf_counter(), time.process_time()
        try:
            return train(self, *a, **k)
        finally:
            TIMES["train"] += time.perf_counter() - t
            TIMES["train_cpu"] += time.process_time() - c

    def timed_generate(self, *a, _run=None, **k):
        t, c = time.perf_counter(), time.process_time()
        try:
            return (_run or generate)(self, *a, **k)
        finally:
            TIMES["generate"] += time.perf_counter() - t
            TIMES["generate_cpu"] += time.process_time() - c

    transformers.Trainer.train = timed_train
    GenerationMixin.generate = timed_generate

    from alignpipe.models import generate as gen_module  # evaluate decodes with its own loop (generate_eval)

    decode = gen_module.decode
    gen_module.decode = lambda model, *a, **k: timed_generate(model, *a, _run=decode, **k)


# --------------------------------------------------------------------------------------------------
# Work
# --------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, root: Path):
        from alignpipe import models
        from alignpipe.data.demo import write_demo_data

        self.root = root
        self.data = write_demo_data(root / "data")
        self.data["sft_varlen"] = self._varlen(root / "data" / "sft_varlen.jsonl")
        self.tiny = models.resolve("tiny")  # the cached tiny model folder both sides load
        self.n = 0
        self._unpacked_batch: int | None = None
        self.varlen_lengths: tuple[int, float, int] | None = None  # min, mean, max tokens of an sft_varlen example

    @staticmethod
    def _varlen(path: Path, rows: int = 4000, seed: int = 0) -> str:
        """Variable-length SFT rows: 1..24 addition problems per prompt, the reversed sums as the answer
        (about 25 to 270 tokens with the chat template), so that padding wastes most of an unpacked batch."""
        from alignpipe.data.demo import reverse_sum

        rng = random.Random(seed)
        with path.open("w") as f:
            for _ in range(rows):
                k = min(24, 1 + int(rng.expovariate(1 / 5)))
                pairs = [(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(k)]
                f.write(json.dumps({
                    "prompt": [{"role": "user", "content": " ".join(f"{a}+{b}=" for a, b in pairs)}],
                    "completion": [{"role": "assistant", "content": " ".join(reverse_sum(a, b) for a, b in pairs)}],
                }) + "\n")
        return str(path)

    def out(self, tag: str) -> str:
        self.n += 1
        return str(self.root / "out" / f"{tag}-{self.n}")

    def rows(self, name: str) -> list[dict]:
        with open(self.data[name]) as f:
            return [json.loads(line) for line in f]

    # ---- shared settings ------------------------------------------------------------------------

    @staticmethod
    def _plain_args(steps: int, batch: int, lr: float, out: str, scheduler: str = "constant_with_warmup") -> dict:
        return dict(output_dir=out + "-ckpt", use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                    logging_steps=LOGGING_STEPS, save_strategy="no", max_steps=steps, per_device_train_batch_size=batch,
                    learning_rate=lr, lr_scheduler_type=scheduler, seed=0, data_seed=0, disable_tqdm=True,
                    dataloader_num_workers=0)

    @staticmethod
    def _training(steps: int, batch: int, lr: float, scheduler: str = "constant_with_warmup") -> dict:
        return dict(max_steps=steps, batch_size=batch, learning_rate=lr, lr_scheduler=scheduler,
                    logging_steps=LOGGING_STEPS)

    def _save(self, trainer, tok, out: str) -> None:
        trainer.save_model(out)
        tok.save_pretrained(out)

    # ---- SFT ------------------------------------------------------------------------------------

    def plain_sft(self, steps: int, packed: bool = False) -> dict:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        model = AutoModelForCausalLM.from_pretrained(self.tiny)
        tok = AutoTokenizer.from_pretrained(self.tiny)
        ds = Dataset.from_list(self.rows("sft_varlen" if packed else "sft_train"))
        out = self.out("plain-sft")
        args = SFTConfig(**self._plain_args(steps, PACKED_ROWS if packed else 64, 1e-3, out),
                         max_length=PACKED_LENGTH if packed else 32, packing=packed, completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        trainer.train()
        self._save(trainer, tok, out)
        return _sft_info(trainer)

    def alignpipe_sft(self, steps: int, tracking: bool, packed: bool = False) -> dict:
        from alignpipe.config import SFTConfig
        from alignpipe.stages import sft

        cfg = SFTConfig(model=self.tiny, train_data=self.data["sft_varlen" if packed else "sft_train"],
                        output_dir=self.out("ap-sft"), tracking=tracking, packing=packed,
                        max_length=PACKED_LENGTH if packed else 32,
                        training=self._training(steps, PACKED_ROWS if packed else 64, 1e-3))
        res = sft.run(cfg)
        return _history_info(res.history)

    @property
    def unpacked_batch(self) -> int:
        """Examples per unpacked batch that hold the tokens of PACKED_ROWS packed rows of PACKED_LENGTH (the mean
        example length of the variable-length data, truncated like the packer truncates), so that the packed and
        unpacked runs see about equal tokens at equal steps."""
        if self._unpacked_batch is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.tiny)
            lengths = [len(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True,
                                                   return_dict=True)["input_ids"]) for r in self.rows("sft_varlen")]
            self.varlen_lengths = (min(lengths), statistics.mean(lengths), max(lengths))
            truncated = [min(PACKED_LENGTH, n) for n in lengths]
            self._unpacked_batch = round(PACKED_ROWS * PACKED_LENGTH / statistics.mean(truncated))
        return self._unpacked_batch

    def alignpipe_sft_unpacked_varlen(self, steps: int) -> dict:
        """Reference for packing: alignpipe with `packing: false` on the same variable-length data (padded to the
        longest example of each batch), `unpacked_batch` examples a step (about the packed run's tokens)."""
        from alignpipe.config import SFTConfig
        from alignpipe.stages import sft

        cfg = SFTConfig(model=self.tiny, train_data=self.data["sft_varlen"], output_dir=self.out("ap-sft-unpacked"),
                        tracking=True, packing=False, max_length=PACKED_LENGTH,
                        training=self._training(steps, self.unpacked_batch, 1e-3))
        return _history_info(sft.run(cfg).history)

    # ---- reward model ---------------------------------------------------------------------------

    def plain_reward_model(self, steps: int) -> dict:
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        tok = AutoTokenizer.from_pretrained(self.tiny)
        model = AutoModelForSequenceClassification.from_pretrained(self.tiny, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        out = self.out("plain-rm")
        args = RewardConfig(**self._plain_args(steps, 32, 5e-4, out), max_length=32, center_rewards_coefficient=0.01)
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(self.rows("preference_train")),
                                processing_class=tok)
        trainer.train()
        self._save(trainer, tok, out)
        return _history_info(trainer.state.log_history)

    def alignpipe_reward_model(self, steps: int, tracking: bool) -> dict:
        from alignpipe.config import RewardModelConfig
        from alignpipe.stages import reward_model

        cfg = RewardModelConfig(model=self.tiny, train_data=self.data["preference_train"], output_dir=self.out("ap-rm"),
                                tracking=tracking, max_length=32, training=self._training(steps, 32, 5e-4))
        return _history_info(reward_model.run(cfg).history)

    # ---- DPO ------------------------------------------------------------------------------------

    def plain_dpo(self, steps: int) -> dict:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import DPOConfig, DPOTrainer

        model = AutoModelForCausalLM.from_pretrained(self.tiny)
        tok = AutoTokenizer.from_pretrained(self.tiny)
        out = self.out("plain-dpo")
        args = DPOConfig(**self._plain_args(steps, 32, 1e-4, out), beta=0.1, loss_type=["sigmoid"], max_length=32)
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(self.rows("preference_train")),
                             processing_class=tok)
        trainer.train()
        self._save(trainer, tok, out)
        return _history_info(trainer.state.log_history)

    def alignpipe_dpo(self, steps: int, tracking: bool) -> dict:
        from alignpipe.config import PreferenceConfig
        from alignpipe.stages import preference

        cfg = PreferenceConfig(model=self.tiny, train_data=self.data["preference_train"], output_dir=self.out("ap-dpo"),
                               tracking=tracking, beta=0.1, max_length=32, training=self._training(steps, 32, 1e-4))
        return _history_info(preference.run(cfg).history)

    # ---- GRPO / RLOO ----------------------------------------------------------------------------

    def plain_rl(self, steps: int, algorithm: str) -> dict:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if algorithm == "grpo":
            from trl import GRPOConfig as Config, GRPOTrainer as Trainer
            extra = dict(loss_type="dapo", scale_rewards="batch")
        else:
            from trl import RLOOConfig as Config, RLOOTrainer as Trainer
            extra = {}

        def exact_match(prompts, completions, answer, **kwargs):
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return [float(t.strip() == a.strip()) for t, a in zip(texts, answer)]

        model = AutoModelForCausalLM.from_pretrained(self.tiny)
        tok = AutoTokenizer.from_pretrained(self.tiny)
        out = self.out(f"plain-{algorithm}")
        args = Config(**self._plain_args(steps, 64, 3e-5, out, scheduler="constant"), num_generations=8,
                      max_completion_length=5, temperature=0.7, beta=0.0, use_vllm=False, **extra)
        trainer = Trainer(model=model, reward_funcs=[exact_match], args=args,
                          train_dataset=Dataset.from_list(self.rows("rl_train")), processing_class=tok)
        trainer.train()
        self._save(trainer, tok, out)
        return _history_info(trainer.state.log_history)

    def alignpipe_rl(self, steps: int, tracking: bool, algorithm: str) -> dict:
        from alignpipe.config import GenerationSettings, GRPOSettings, RLConfig
        from alignpipe.stages import rl

        # RLOO reads no loss_type / scale_rewards (the config refuses settings an algorithm ignores)
        grpo = dict(loss_type="dapo", scale_rewards="batch") if algorithm == "grpo" else {}
        cfg = RLConfig(model=self.tiny, train_data=self.data["rl_train"], output_dir=self.out(f"ap-{algorithm}"),
                       tracking=tracking, algorithm=algorithm,
                       generation=GenerationSettings(max_new_tokens=5, temperature=0.7),
                       grpo=GRPOSettings(num_generations=8, beta=0.0, **grpo),
                       training=self._training(steps, 64, 3e-5, scheduler="constant"))
        return _history_info(rl.run(cfg).history)

    # ---- evaluate -------------------------------------------------------------------------------

    def plain_evaluate(self, prompts: int) -> dict:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(self.tiny).eval()
        tok = AutoTokenizer.from_pretrained(self.tiny)
        tok.padding_side = "left"
        rows = self.rows("eval")[:prompts]
        correct = 0
        with torch.no_grad():
            for i in range(0, len(rows), 256):
                chunk = rows[i:i + 256]
                texts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in chunk]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                gen = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.eos_token_id)
                outs = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                correct += sum(o.strip() == r["answer"] for o, r in zip(outs, chunk))
        out = Path(self.out("plain-eval") + ".json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"accuracy": correct / len(rows)}))
        return {"steps": len(rows)}

    def alignpipe_evaluate(self, prompts: int, tracking: bool) -> dict:
        from alignpipe.config import EvaluateConfig
        from alignpipe.stages import evaluate

        cfg = EvaluateConfig(models={"tiny": self.tiny}, data=self.data["eval"], output=self.out("ap-eval") + ".json",
                             k=1, kl=False, bootstrap_resamples=0, max_new_tokens=5, batch_size=256, limit=prompts,
                             tracking=tracking)
        evaluate.run(cfg)
        return {"steps": prompts}


def _history_info(history: list[dict]) -> dict:
    losses = [h["loss"] for h in history if "loss" in h]
    tokens = [h["num_tokens"] for h in history if "num_tokens" in h]
    return {"loss_last": losses[-1] if losses else None, "num_tokens": tokens[-1] if tokens else None}


def _sft_info(trainer) -> dict:
    return _history_info(trainer.state.log_history)


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------


def variants(b: Bench, stage: str):
    """(label, callable(steps)) for plain, alignpipe with tracking, alignpipe without."""
    if stage in ("sft", "sft_packed"):
        packed = stage == "sft_packed"
        return [("plain", lambda s: b.plain_sft(s, packed)),
                ("alignpipe", lambda s: b.alignpipe_sft(s, True, packed)),
                ("alignpipe, tracking off", lambda s: b.alignpipe_sft(s, False, packed))]
    if stage in ("grpo", "rloo"):
        return [("plain", lambda s: b.plain_rl(s, stage)),
                ("alignpipe", lambda s: b.alignpipe_rl(s, True, stage)),
                ("alignpipe, tracking off", lambda s: b.alignpipe_rl(s, False, stage))]
    plain, ap = getattr(b, f"plain_{stage}"), getattr(b, f"alignpipe_{stage}")
    return [("plain", plain), ("alignpipe", lambda s: ap(s, True)), ("alignpipe, tracking off", lambda s: ap(s, False))]


def measure(fn, steps: int, profile: Path | None = None) -> dict:
    gc.collect()
    for k in TIMES:
        TIMES[k] = 0.0
    prof = None
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t, c = time.perf_counter(), time.process_time()
    info = fn(steps)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if prof is not None:
        prof.disable()
        profile.parent.mkdir(parents=True, exist_ok=True)
        prof.dump_stats(str(profile))
    inner = TIMES["train"] or TIMES["generate"]
    inner_cpu = TIMES["train_cpu"] or TIMES["generate_cpu"]
    return {"wall": wall, "inner": inner, "cpu": cpu, "inner_cpu": inner_cpu, "steps": steps, **(info or {})}


def run_stage(b: Bench, stage: str, steps: int, reps: int, warmup: int, profile_dir: Path | None,
              first: bool) -> dict:
    vs = variants(b, stage)
    if stage not in TRACKING_OFF:
        vs = vs[:2]
    if stage == "sft_packed":  # packing's own gain: the same data with packing off, in the same alternation
        vs.append((UNPACKED, b.alignpipe_sft_unpacked_varlen))
    # first-use costs (imports, the sqlite store's migrations) out of the timings: every variant before the
    # first stage, then the plain script (it imports the stage's trainer first)
    for _, fn in (vs if first else vs[:1]):
        measure(fn, warmup)
    results: dict[str, list[dict]] = {label: [] for label, _ in vs}
    for rep in range(reps):
        order = vs if rep % 2 == 0 else vs[::-1]
        for label, fn in order:
            prof = None
            if profile_dir is not None and rep == 0:
                prof = profile_dir / f"{stage}-{label.replace(', ', '-').replace(' ', '_')}.prof"
            r = measure(fn, steps, prof)
            results[label].append(r)
            print(f"  {stage:<12} rep {rep + 1} {label:<24} wall {r['wall']:6.2f} s (train {r['inner']:6.2f} s)"
                  f"   cpu {r['cpu']:6.2f} s (train {r['inner_cpu']:6.2f} s)", flush=True)
    extra = {"unpacked_batch": b.unpacked_batch, "varlen_lengths": b.varlen_lengths} if stage == "sft_packed" else {}
    return {"stage": stage, "steps": steps, "results": results, **extra}


def med(rs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rs)


def summarise(s: dict) -> dict:
    res, steps = s["results"], s["steps"]
    row = {"stage": s["stage"], "steps": steps, "reps": len(res["plain"])}
    for label, key in [("plain", "p"), ("alignpipe", "a"), ("alignpipe, tracking off", "o")]:
        rs = res.get(label)
        if not rs:
            continue
        wall, inner = med(rs, "wall"), med(rs, "inner")
        row[f"{key}_wall"], row[f"{key}_inner"] = wall, inner
        row[f"{key}_fixed"] = statistics.median(r["wall"] - r["inner"] for r in rs)
        row[f"{key}_step_ms"] = 1000 * inner / steps
        row[f"{key}_cpu"] = med(rs, "cpu")
        row[f"{key}_fixed_cpu"] = statistics.median(r["cpu"] - r["inner_cpu"] for r in rs)
        row[f"{key}_step_cpu_ms"] = 1000 * med(rs, "inner_cpu") / steps
    row["ratio"] = row["p_wall"] / row["a_wall"]
    row["step_ratio"] = row["p_step_ms"] / row["a_step_ms"] if row["a_step_ms"] else float("nan")
    row["tracking_s"] = row["a_wall"] - row["o_wall"] if "o_wall" in row else None
    row["cpu_ratio"] = row["p_cpu"] / row["a_cpu"]
    row["tracking_cpu_s"] = row["a_cpu"] - row["o_cpu"] if "o_cpu" in row else None
    n = PROJECT_STEPS if s["stage"] != "evaluate" else 10 * steps
    row["project_n"] = n
    row["ratio_at_n"] = ((row["p_fixed"] + n * row["p_step_ms"] / 1000) /
                         (row["a_fixed"] + n * row["a_step_ms"] / 1000))
    if UNPACKED in res:
        row.update(packing_summary(res, steps), unpacked_batch=s["unpacked_batch"], varlen_lengths=s["varlen_lengths"])
    return row


def packing_summary(res: dict[str, list[dict]], steps: int) -> dict:
    """sft_packed: real tokens per second of `Trainer.train` (wall and CPU), tokens per step and the last logged
    loss (the mean over the last LOGGING_STEPS steps), medians over repetitions, for alignpipe packed, alignpipe
    unpacked and TRL's own packing (`plain`). Tokens are real tokens for all three: alignpipe counts the packed rows'
    non-padding tokens, TRL an unpacked batch's attention mask and its padding-free batch's flattened length."""
    out = {}
    for key, label in (("packed", "alignpipe"), ("unpacked", UNPACKED), ("trl", "plain")):
        rs = [r for r in res.get(label, []) if r.get("num_tokens")]
        if not rs:
            continue
        out[f"tokens_s_{key}"] = statistics.median(r["num_tokens"] / r["inner"] for r in rs)
        out[f"tokens_cpu_s_{key}"] = statistics.median(r["num_tokens"] / r["inner_cpu"] for r in rs)
        out[f"tokens_step_{key}"] = statistics.median(r["num_tokens"] / steps for r in rs)
        losses = [r["loss_last"] for r in rs if r.get("loss_last") is not None]
        out[f"loss_{key}"] = statistics.median(losses) if losses else None
    return out


LABELS = {"sft": "SFT", "sft_packed": "SFT packed (var-length)", "reward_model": "reward model", "dpo": "DPO",
          "grpo": "GRPO (8x8 gen.)", "rloo": "RLOO (8x8 gen.)", "evaluate": "evaluate vs generate loop"}


def table(rows: list[dict]) -> str:
    lines = ["| work | plain | alignpipe | plain / alignpipe | CPU time plain / alignpipe | fixed plain / alignpipe "
             "| per step plain / alignpipe | tracking (wall) | at N steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = "prompts" if r["stage"] == "evaluate" else "steps"
        per = "per prompt" if r["stage"] == "evaluate" else ""
        lines.append(
            f"| {LABELS[r['stage']]}, {r['steps']} {unit} | {r['p_wall']:.1f} s | {r['a_wall']:.1f} s "
            f"| **{r['ratio']:.2f}x** | {r['cpu_ratio']:.2f}x | {r['p_fixed']:.2f} / {r['a_fixed']:.2f} s "
            f"| {r['p_step_ms']:.1f} / {r['a_step_ms']:.1f} ms{(' ' + per) if per else ''} "
            f"| {_tracking(r)} | {r['ratio_at_n']:.2f}x @ {r['project_n']} |")
    notes = [packing_note(r) for r in rows if r.get("loss_packed") is not None and r.get("loss_unpacked") is not None]
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")


def packing_note(r: dict) -> str:
    trl = (f" TRL's own packing (the `plain` column: padding-free, the batch flattened into one sequence, which "
           f"without a varlen attention kernel gets one causal mask over all of it): "
           f"{r['tokens_s_trl']:.0f} tokens/s, loss {r['loss_trl']:.3f}." if r.get("loss_trl") is not None else "")
    lo, mean, hi = r["varlen_lengths"]
    return (f"Packing (`packing: true` vs `false`, alignpipe, tracking on, the same variable-length examples of "
            f"{lo}–{hi} tokens, mean {mean:.0f}, truncated to {PACKED_LENGTH}; {r['steps']} steps of about equal "
            f"tokens: a batch of {PACKED_ROWS} packed rows of "
            f"{PACKED_LENGTH} vs {r['unpacked_batch']} examples): {r['tokens_s_packed']:.0f} tokens/s packed vs {r['tokens_s_unpacked']:.0f} "
            f"unpacked (**{r['tokens_s_packed'] / r['tokens_s_unpacked']:.2f}x** wall, "
            f"{r['tokens_cpu_s_packed'] / r['tokens_cpu_s_unpacked']:.2f}x CPU); real tokens a step "
            f"{r['tokens_step_packed']:.0f} vs {r['tokens_step_unpacked']:.0f}; loss over the last {LOGGING_STEPS} "
            f"steps {r['loss_packed']:.3f} vs {r['loss_unpacked']:.3f}.{trl}")


def _tracking(r: dict) -> str:
    if r.get("tracking_s") is None:
        return "–"
    return f"{r['tracking_s']:+.2f} s ({r['tracking_cpu_s']:+.2f} s CPU)"


def block(rows: list[dict], meta: str) -> str:
    return "\n".join([
        BEGIN,
        "",
        f"Written by `bench/stages_vs_plain.py` ({meta}). Ratio = plain wall time / alignpipe wall time, medians; "
        "fixed = wall − `Trainer.train` (for evaluate: − `generate`); tracking = alignpipe with − without MLflow; "
        f"\"at N steps\" projects both from their fixed and per-step medians.",
        "",
        table(rows),
        "",
        END,
    ])


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC}: no {BEGIN} ... {END} markers")
    DOC.write_text(doc[: doc.index(BEGIN)] + text + doc[doc.index(END) + len(END):])
    print(f"wrote {DOC.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke test: a few steps, one repetition, no doc write")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick: 1)")
    ap.add_argument("--only", nargs="*", choices=list(STEPS), help="stages to run (default: all)")
    ap.add_argument("--steps", type=int, default=None, help="override the step count of every stage")
    ap.add_argument("--profile", type=Path, default=None, help="write a cProfile of each variant's first repetition here")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite the table in README.md")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args(argv)

    reps = args.reps or (1 if args.quick else 3)
    stages = args.only or list(STEPS)
    with tempfile.TemporaryDirectory(prefix="alignpipe-bench-") as tmp:
        root = Path(tmp)
        os.environ.update({
            "ALIGNPIPE_WORKDIR": str(root), "ALIGNPIPE_CACHE_DIR": str(root / "cache"),
            "ALIGNPIPE_CHECKPOINT_DIR": str(root / "ckpt"), "ALIGNPIPE_PROGRESS": "0",
            "ALIGNPIPE_FORCE_RERUN": "1",  # every repetition trains: no reuse of an earlier repetition's output
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": "bench",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1",
            "HF_MLFLOW_LOG_ARTIFACTS": "0", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"})
        os.environ.pop("ALIGNPIPE_PARENT_RUN_ID", None)
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        import transformers

        transformers.logging.set_verbosity_error()
        import datasets

        datasets.disable_progress_bars()
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        _patch_timers()
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        b = Bench(root)
        raw, rows, failed = [], [], []
        t0 = time.perf_counter()
        for stage in stages:
            full, quick = STEPS[stage]
            steps = args.steps or (quick if args.quick else full)
            try:
                s = run_stage(b, stage, steps, reps, warmup=2 if stage != "evaluate" else 8, profile_dir=args.profile,
                              first=not raw and not failed)
            except Exception as e:  # noqa: BLE001 - one broken stage must not hide the others' figures
                import traceback

                traceback.print_exc()
                failed.append(f"{stage}: {type(e).__name__}: {e}"[:300])
                continue
            raw.append(s)
            rows.append(summarise(s))
        total = time.perf_counter() - t0
    print()
    meta = (f"{reps} repetition{'s' if reps > 1 else ''}, alternating, {os.cpu_count()} CPU cores, "
            f"torch threads {args.threads or 'default'}, load average {os.getloadavg()[0]:.1f} at the end, "
            f"logging every {LOGGING_STEPS} steps, {total:.0f} s in all")
    text = table(rows)
    print(text)
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "raw": raw}, indent=1, default=str))
    if not args.quick and not args.no_write and not args.only and not args.steps and not failed:
        write_doc(block(rows, meta))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
