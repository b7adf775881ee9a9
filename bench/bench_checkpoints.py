"""Benchmark: what checkpointing to the object store costs, and what a rerun with reuse costs (issue 10).

Not a test. SFT on the tiny model (``--steps`` optimizer steps, default 20), in this process, medians of
``--runs`` rounds (default 3); each round uses a fresh state store (``ALIGNPIPE_STATE_URI``, a local folder,
or under ``--state`` e.g. an ``s3://`` URI):

- plain      = no checkpoints (``save_steps: null, save_minutes: null``), reuse off
- checkpoint = a checkpoint every ``--every`` steps (default 5) published to the store (manifest last)
- rerun      = the checkpoint run's config again, to another output, reuse on: it copies the recorded output
  (the first two runs train with reuse off; both record their output, the checkpoint run last)

Prints the medians and the ratios checkpoint/plain (the cost of checkpointing) and rerun/checkpoint (the
target is <= 5%), and writes JSON to ``out/bench/checkpoints.json``.

    .venv/bin/python bench/bench_checkpoints.py --steps 20 --every 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ALIGNPIPE_PROGRESS", "0")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--state", default=None, help="state store root (default: a temp folder)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "checkpoints.json"))
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
    os.environ.update(ALIGNPIPE_CACHE_DIR=str(work / "cache"), ALIGNPIPE_CHECKPOINT_DIR=str(work / "ckpt"),
                      ALIGNPIPE_WORKDIR=str(work))
    from alignpipe.config import SFTConfig
    from alignpipe.data.demo import write_demo_data
    from alignpipe.stages import sft

    data = write_demo_data(work / "data", seed=0, max_operand=30, preference_pairs=10, eval_pairs=10)["sft_train"]

    def cfg(out: Path, every: int | None) -> SFTConfig:
        return SFTConfig(model="tiny", train_data=data, output_dir=str(out), max_length=32, tracking=False,
                         training=dict(max_steps=a.steps, save_steps=every, save_minutes=None, batch_size=8,
                                       learning_rate=1e-3, logging_steps=a.steps))

    def timed(c: SFTConfig, force: bool) -> tuple[float, dict]:
        os.environ["ALIGNPIPE_FORCE_RERUN"] = "1" if force else "0"
        start = time.perf_counter()
        result = sft.run(c)
        return time.perf_counter() - start, result.lineage

    sft.run(cfg(work / "warmup", None))  # imports, the tiny model's build, first-call costs
    times: dict[str, list[float]] = {"plain": [], "checkpoint": [], "rerun": []}
    for i in range(a.runs):
        os.environ["ALIGNPIPE_STATE_URI"] = f"{a.state.rstrip('/')}/round{i}" if a.state else str(work / f"state{i}")
        t, _ = timed(cfg(work / f"plain{i}", None), force=True)
        times["plain"].append(t)
        t, _ = timed(cfg(work / f"ckpt{i}", a.every), force=True)
        times["checkpoint"].append(t)
        t, lineage = timed(cfg(work / f"rerun{i}", a.every), force=False)
        assert lineage.get("reused_from"), "the rerun did not reuse"
        times["rerun"].append(t)
        print(f"round {i}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"steps": a.steps, "every": a.every, "runs": a.runs, "state": a.state or "local folder",
           "median_s": med, "times_s": times,
           "checkpoint_over_plain": med["checkpoint"] / med["plain"],
           "rerun_over_first": med["rerun"] / med["checkpoint"],
           "cpus": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"plain {med['plain']:.2f} s, checkpoint every {a.every} {med['checkpoint']:.2f} s "
          f"(x{out['checkpoint_over_plain']:.3f}), rerun with reuse {med['rerun']:.2f} s "
          f"({100 * out['rerun_over_first']:.1f}% of the first run) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
