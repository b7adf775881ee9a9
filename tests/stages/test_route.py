"""The route stage on hand-made prompts whose pass rate is known: a reward passes the first `passes` of the k samples
of each prompt (its `passes` column), whatever the model writes."""

import json
from pathlib import Path

import mlflow
import pytest

from alignpipe.config import ConfigError, RouteConfig, validate
from alignpipe.rewards import register
from alignpipe.stages import route

K = 4


def route_test_known_reward(prompts, completions, passes=None, k: int = K, **kwargs):
    """1.0 for the first `passes[i]` of each prompt's k consecutive samples (route scores them prompt by prompt)."""
    return [1.0 if (i % k) < passes[i] else 0.0 for i in range(len(completions))]


@pytest.fixture(autouse=True)
def _known_reward():
    """Registered for this module's tests only (at import time it would be in every other test's registry too)."""
    from alignpipe.rewards import registry

    register("route_test_known")(route_test_known_reward)
    yield
    registry._REGISTRY.pop("route_test_known", None)


def _chat(text):
    return [{"role": "user", "content": text}]


ROWS = [  # passes of K=4 -> pass rate
    {"prompt": _chat("1+1="), "answer": "2", "completion": "full worked 2", "passes": 4, "domain": "add2", "difficulty": 0},
    {"prompt": _chat("2+2="), "answer": "4", "solution": "solution 4", "passes": 2, "domain": "add2", "difficulty": 1},
    {"prompt": _chat("3+3="), "answer": "6", "passes": 3, "domain": "sub2", "difficulty": 2},
    {"prompt": _chat("4+4="), "answer": "8", "passes": 1, "domain": "sub2", "difficulty": 1},
    {"prompt": _chat("5+5="), "answer": "01", "passes": 0, "domain": "add2", "difficulty": 2},
    {"prompt": _chat("6+6="), "answer": "21", "passes": 4, "domain": "sub2", "difficulty": 0},
]


def _data(tmp_path) -> str:
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return str(p)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_route_splits_by_known_pass_rate(tmp_path):
    out = tmp_path / "routed"
    cfg = RouteConfig(model="tiny", data=_data(tmp_path), output_dir=str(out), k=K, threshold=0.5,
                      max_new_tokens=3, rewards=[{"name": "route_test_known", "kwargs": {"k": K}}])
    result = route.run(cfg)

    easy, hard = _read(out / route.EASY_FILE), _read(out / route.HARD_FILE)
    rates = json.loads((out / route.PASS_RATES_FILE).read_text())
    assert [r["pass_rate"] for r in rates["prompts"]] == [1.0, 0.5, 0.75, 0.25, 0.0, 1.0]
    # easy: pass rate >= 0.5 with a reference; the SFT target is completion, else solution, else answer
    assert [(r["prompt"][0]["content"], r["completion"]) for r in easy] == [
        ("1+1=", [{"role": "assistant", "content": "full worked 2"}]),
        ("2+2=", [{"role": "assistant", "content": "solution 4"}]),
        ("3+3=", [{"role": "assistant", "content": "6"}]), ("6+6=", [{"role": "assistant", "content": "21"}])]
    # hard: the RL rows as they came (answer, domain, difficulty kept), + pass_rate
    assert [(r["prompt"][0]["content"], r["answer"], r["domain"], r["difficulty"], r["pass_rate"]) for r in hard] == [
        ("4+4=", "8", "sub2", 1, 0.25), ("5+5=", "01", "add2", 2, 0.0)]
    assert [r["routed"] for r in rates["prompts"]] == ["easy", "easy", "easy", "hard", "hard", "easy"]
    assert result.metrics["route/easy"] + result.metrics["route/hard"] == result.metrics["route/prompts"] == 6
    assert result.metrics["route/easy"] == 4 and result.metrics["route/easy_without_reference"] == 0
    assert result.metrics["route/mean_pass_rate"] == pytest.approx(3.5 / 6)
    assert rates["by_domain"]["add2"] == {"prompts": 3, "easy": 2, "hard": 1, "mean_pass_rate": pytest.approx(0.5)}
    assert result.lineage["easy"] == "4" and result.lineage["hard"] == "2" and result.lineage["parent_model"] == "tiny"
    assert (out / "MANIFEST.json").exists()  # published like every stage output

    run = mlflow.get_run(result.lineage["mlflow_run_id"])  # counts in MLflow
    assert run.data.metrics["route/easy"] == 4 and run.data.metrics["route/hard"] == 2
    assert run.data.tags["alignpipe.stage"] == "route"

    # the easy split is valid SFT data, the hard one valid RL prompts
    from alignpipe import data

    assert data.validate(str(out / route.EASY_FILE), "sft").ok
    assert data.validate(str(out / route.HARD_FILE), "prompts").ok


def test_threshold_moves_prompts_and_an_empty_split_is_an_error(tmp_path):
    kw = dict(model="tiny", data=_data(tmp_path), k=K, max_new_tokens=2, tracking=False,
              rewards=[{"name": "route_test_known", "kwargs": {"k": K}}])
    r = route.run(RouteConfig(output_dir=str(tmp_path / "a"), threshold=0.75, **kw))
    assert (r.metrics["route/easy"], r.metrics["route/hard"]) == (3, 3)
    # an easy prompt without the chosen reference column stays an RL prompt
    r = route.run(RouteConfig(output_dir=str(tmp_path / "s"), threshold=0.5, reference="solution", **kw))
    assert (r.metrics["route/easy"], r.metrics["route/hard"], r.metrics["route/easy_without_reference"]) == (1, 5, 3)
    with pytest.raises(route.RouteError, match="the hard split is empty: 6 prompts, mean pass rate 0.583"):
        route.run(RouteConfig(output_dir=str(tmp_path / "b"), threshold=0.0, **kw))
    assert not (tmp_path / "b").exists()  # nothing half-written is published
    r = route.run(RouteConfig(output_dir=str(tmp_path / "c"), threshold=0.0, allow_empty=True, **kw))
    assert (r.metrics["route/easy"], r.metrics["route/hard"]) == (6, 0)


def test_route_config_is_checked():
    with pytest.raises(ConfigError, match="reward_model is not a verifiable reward"):
        validate("route", {"model": "tiny", "data": "d", "output_dir": "o", "rewards": [{"name": "reward_model"}]})
    with pytest.raises(ConfigError, match="threshold"):
        validate("route", {"model": "tiny", "data": "d", "output_dir": "o", "threshold": 1.5})
