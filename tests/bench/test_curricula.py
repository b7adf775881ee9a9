"""bench/curricula.py's measures on hand-made results (no training): per-bucket accuracy, steps to a threshold,
the table's differences and a merge of per-process result files."""

import importlib.util
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("curricula", ROOT / "bench" / "curricula.py")
curricula = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curricula)


def test_accuracy_table_splits_by_domain_difficulty_and_hard_bucket():
    rows = [{"domain": "add2", "difficulty": 0}, {"domain": "add2", "difficulty": 2},
            {"domain": "add3", "difficulty": 3}, {"domain": "sub2", "difficulty": 1}]
    acc = curricula.accuracy_table(rows, [1.0, 0.0, 1.0, 1.0])
    assert acc["all"] == 0.75 and acc["add2"] == 0.5 and acc["add3"] == 1.0 and acc["sub2"] == 1.0
    assert acc["hard"] == 0.5 and acc["n_hard"] == 2  # difficulty >= 2: the add2 miss and the add3 hit
    assert acc["d0"] == 1.0 and acc["d2"] == 0.0


def test_steps_to_threshold_first_checkpoint_reaching_it():
    curve = [{"step": 20, "train_s": 10.0, "acc": {"all": 0.30}}, {"step": 40, "train_s": 21.0, "acc": {"all": 0.36}},
             {"step": 60, "train_s": 33.0, "acc": {"all": 0.34}}]
    assert curricula.steps_to(curve, 0.35) == (40.0, 21.0, 40 * 8 * 8)
    assert curricula.steps_to(curve, 0.30) == (20.0, 10.0, 20 * 8 * 8)
    assert curricula.steps_to(curve, 0.40) == (math.inf, math.inf, math.inf)
    replayed = [{**p, "replay_replayed_total": 2 * p["step"] - 2} for p in curve]  # 2 of 8 groups replayed per step
    assert curricula.steps_to(replayed, 0.35)[2] == (40 * 8 - 78) * 8


def _seed(seed, uniform_final, dots_curve, relift_hard):
    acc = {"all": 0.30, "add2": 0.4, "sub2": 0.5, "add3": 0.1, "hard": 0.1}

    def run(final, curve=None, **extra):
        return {"final": final, "curve": curve or [{"step": 100, "train_s": 50.0, "acc": final}], "ood": 0.1,
                "train_s": 50.0, **extra}

    u = {**acc, "all": uniform_final, "hard": 0.10}
    return {"seed": seed, "sft": {"acc": acc, "ood": 0.05},
            "runs": {"uniform": run(u, [{"step": 50, "train_s": 25.0, "acc": {"all": 0.33}},
                                        {"step": 100, "train_s": 50.0, "acc": u}]),
                     "dots": run({**acc, "all": 0.40}, dots_curve),
                     "relift": run({**acc, "hard": relift_hard}, relift_sft_steps=50.0)}}


def test_table_reports_medians_of_per_seed_differences(tmp_path):
    reach = [{"step": 50, "train_s": 30.0, "acc": {"all": 0.36}}, {"step": 100, "train_s": 60.0, "acc": {"all": 0.4}}]
    late = [{"step": 50, "train_s": 30.0, "acc": {"all": 0.31}}, {"step": 100, "train_s": 60.0, "acc": {"all": 0.4}}]
    settings = {"rl_steps": 100, "eval_every": 50, "dots_gain": 0.05}
    parts = []
    for i, s in enumerate([_seed(0, 0.36, reach, 0.20), _seed(1, 0.35, late, 0.16), _seed(2, 0.36, reach, 0.08)]):
        p = tmp_path / f"s{i}.json"
        p.write_text(json.dumps({"settings": {**settings, "seeds": [i]}, "seeds": [s]}))
        parts.append(str(p))
    results = curricula.merge(list(reversed(parts)), tmp_path / "all.json")
    assert [r["seed"] for r in results["seeds"]] == [0, 1, 2] and results["settings"]["seeds"] == [0, 1, 2]
    text = curricula.table(results)
    # DOTS: threshold 0.35; dots reaches it at 50, 100, 50 steps; uniform (0.33 at 50) at 100 on every seed
    steps_row = next(line for line in text.splitlines() if "rollout steps to" in line)
    assert "| 50 | 100 | -50 |" in steps_row
    # ReLIFT hard bucket: +10, +6, -2 points over uniform's 0.10 -> median +6.0 pts
    hard_row = next(line for line in text.splitlines() if "`hard`" in line and "ReLIFT" in line)
    assert "+6.0 pts" in hard_row and "| 0.160 | 0.100 |" in hard_row
