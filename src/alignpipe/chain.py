"""The demo chain as a plain sequence of `stages.X.run()` calls (in-process).

Kept deliberately flat so that each step maps onto one Kubeflow component.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from alignpipe import config, tracking
from alignpipe.data.demo import write_demo_data
from alignpipe.demo import demo_configs

STEPS = ["sft", "reward_model", "rl", "evaluate", "register"]


def _run_stage(name: str, cfg_dict: dict, console: Console):
    import importlib

    cfg = config.validate(name, cfg_dict, source=f"demo:{name}")
    console.print(f"[bold]>> {name}[/bold]")
    t = time.perf_counter()
    result = importlib.import_module(f"alignpipe.stages.{name}").run(cfg)
    shown = {k: round(v, 4) for k, v in result.metrics.items() if "/" in k and not k.startswith("eval/")}
    console.print(f"   done in {time.perf_counter() - t:.1f}s {json.dumps(shown)[:300]}")
    return result


def learning_table(eval_metrics: dict[str, dict], k: int | None = None) -> Table:
    table = Table(title="held-out evaluation")
    cols = ["accuracy"] + ([f"pass@{k}", f"maj@{k}"] if k and k > 1 else []) + ["rm_score", "response_length",
                                                                                  "distinct_2"]
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, m in eval_metrics.items():
        table.add_row(name, *[f"{m[c]:.3f}" if c in m else "-" for c in cols])
    return table


def run_demo(workdir: Path, seed: int = 0, console: Console | None = None) -> dict:
    console = console or Console(stderr=False)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ALIGNPIPE_WORKDIR", str(workdir))
    os.environ.setdefault("ALIGNPIPE_CHECKPOINT_DIR", str(workdir / "checkpoints"))
    start = time.perf_counter()
    write_demo_data(workdir / "data", seed=seed)
    cfgs = demo_configs(workdir, seed)
    summary: dict = {"pipeline": "rlhf", "status": "failed", "seed": seed}
    results = {}
    with tracking.pipeline_run("rlhf", tags={"alignpipe.seed": str(seed)}) as parent:
        summary["mlflow"] = {"tracking_uri": tracking.tracking_uri(), "run_id": parent.run_id}
        for name in STEPS:
            results[name] = _run_stage(name, cfgs[name], console)
    eval_data = json.loads(Path(cfgs["evaluate"]["output"]).read_text())["models"]
    reg = results["register"].lineage
    summary.update({
        "status": "succeeded",
        "eval": eval_data,
        "reward_model": {k: v for k, v in results["reward_model"].metrics.items() if "accuracy" in k},
        "registry": {"model_name": reg["model_name"], "version": reg["version"], "alias": reg["alias"],
                     "promoted": reg["promoted"] == "true", "reason": reg["reason"]},
        "stage_seconds": {n: round(r.seconds, 2) for n, r in results.items()},
        "seconds": round(time.perf_counter() - start, 2),
    })
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(learning_table(eval_data, cfgs["evaluate"].get("k")))
    console.print(f"registry: {reg['model_name']} v{reg['version']} -> {reg['alias']} ({reg['reason']})")
    console.print(f"summary: {workdir / 'summary.json'}  ({summary['seconds']:.0f}s)")
    return summary
