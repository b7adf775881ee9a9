"""Each component's python_func called once, in pipeline order, with cheap configs and plain artifact objects."""

import json
import re
from pathlib import Path

import pytest

from alignpipe import components, steps, storage
from alignpipe.data import DataError


class Art:
    """What a component sees of a KFP artifact: .path, .metadata, and log_metric for Metrics."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.metadata: dict = {}
        self.logged: dict = {}

    def log_metric(self, name, value):
        self.logged[name] = value


TRAIN = {"max_length": 32, "training": {"batch_size": 16, "warmup_steps": 0, "logging_steps": 1}}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return {"dir": tmp_path_factory.mktemp("components")}


def arts(d: Path, *names):
    return {n: Art(d / n) for n in names}


def test_prepare_data_writes_demo_data_and_leaves_unused_placeholders(chain):
    d = chain["dir"]
    out = arts(d / "prepare", "sft_train", "preference_train", "preference_eval", "rl_train", "eval_set", "metrics")
    components.prepare_data.python_func(required=["sft_train", "preference_train", "rl_train", "eval_set"], seed=0,
                                        base_model="tiny",
                                        sft_data="", preference_data="", preference_eval_data="", rl_data="",
                                        eval_data="", **out)
    for split in ("sft_train", "preference_train", "preference_eval", "rl_train", "eval_set"):
        assert out[split].metadata["rows"] > 0 and len(out[split].metadata["digest"]) == 64
        assert out["metrics"].logged[f"data/{split}/rows"] == out[split].metadata["rows"]
    chain["data"] = out


#: The scaling arguments of the training components (one GPU, one node: this machine, no GPU).
SCALE = {"gpus": 1, "nodes": 1, "multinode_kind": "trainjob"}


def _exits_with_user_error(capsys, call) -> list[str]:
    """A component's user error: exit code 2 and `error:` lines on stderr, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("error: ") for line in err) and "Traceback" not in "\n".join(err)
    return err


def test_prepare_data_fails_early_on_bad_data(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    out = arts(tmp_path, "sft_train", "preference_train", "preference_eval", "rl_train", "eval_set", "metrics")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        steps.prepare_data({"sft_train": str(bad), "eval_set": str(bad)}, ["sft_train", "eval_set"],
                           {k: out[k] for k in ("sft_train", "eval_set")}, 0, base_model="tiny")
    err = _exits_with_user_error(capsys, lambda: components.prepare_data.python_func(
        required=["sft_train", "eval_set"], seed=0, base_model="tiny", sft_data=str(bad), preference_data="",
        preference_eval_data="", rl_data="", eval_data=str(bad), **out))
    assert any("bad.jsonl:1" in line for line in err)
    with pytest.raises(DataError, match="no data set URI for eval_set"):
        steps.prepare_data({"sft_train": str(bad), "eval_set": ""}, ["sft_train", "eval_set"],
                           {k: out[k] for k in ("sft_train", "eval_set")}, 0, base_model="tiny")


def test_prepare_data_fails_without_a_base_model(tmp_path, capsys):
    """No silent default model outside a preset: an empty base_model stops the run before any training."""
    out = arts(tmp_path, "sft_train", "preference_train", "preference_eval", "rl_train", "eval_set", "metrics")
    err = _exits_with_user_error(capsys, lambda: components.prepare_data.python_func(
        required=["sft_train", "eval_set"], seed=0, base_model=" ", sft_data="", preference_data="",
        preference_eval_data="", rl_data="", eval_data="", **out))
    assert len(err) == 1 and re.match(r"^error: base_model: empty .*--preset demo\)$", err[0])


def test_sft(chain):
    d, data = chain["dir"], chain["data"]
    out = arts(d / "sft", "model", "metrics", "report")
    components.sft.python_func(**SCALE, config=TRAIN, base_model="tiny:0", max_steps=3, learning_rate=1e-3, seed=0,
                               train_data=data["sft_train"], **out)
    storage.read_manifest(out["model"].path)  # published, MANIFEST.json last
    assert out["model"].metadata["stage"] == "sft" and out["model"].metadata["train_digest"]
    assert "time/stage_seconds" in out["metrics"].logged
    html = Path(out["report"].path).read_text()
    assert "<svg" in html and "<script" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    chain["sft"] = out["model"]


def test_reward_model(chain):
    d, data = chain["dir"], chain["data"]
    out = arts(d / "rm", "model", "metrics", "report")
    components.reward_model.python_func(**SCALE, config=TRAIN, max_steps=2, learning_rate=5e-4, seed=0,
                                        sft_model=chain["sft"],
                                        train_data=data["preference_train"], eval_data=data["preference_eval"], **out)
    storage.read_manifest(out["model"].path)
    assert "eval/pairwise_accuracy" in out["metrics"].logged
    chain["rm"] = out["model"]


def test_rl(chain):
    d, data = chain["dir"], chain["data"]
    out = arts(d / "rl", "model", "metrics", "report")
    cfg = {"generation": {"max_new_tokens": 5}, "grpo": {"num_generations": 4}, "training": {"batch_size": 8,
                                                                                         "logging_steps": 1}}
    components.rl.python_func(**SCALE, config=cfg, algorithm="grpo", engine="trl",
                              rewards=[{"name": "exact_match"}, {"name": "reward_model", "weight": 0.1}], max_steps=2,
                              learning_rate=3e-5, seed=0, sft_model=chain["sft"], train_data=data["rl_train"],
                              reward_model=chain["rm"], **out)
    storage.read_manifest(out["model"].path)
    assert out["model"].metadata["algorithm"] == "grpo"
    chain["rl"] = out["model"]


def test_preference(chain):
    d, data = chain["dir"], chain["data"]
    out = arts(d / "dpo", "model", "metrics", "report")
    components.preference.python_func(**SCALE, config=TRAIN, max_steps=2, learning_rate=5e-5, beta=0.1, seed=0,
                                      sft_model=chain["sft"], train_data=data["preference_train"],
                                      eval_data=data["preference_eval"], **out)
    storage.read_manifest(out["model"].path)


def test_evaluate(chain):
    d, data = chain["dir"], chain["data"]
    out = arts(d / "eval", "results", "metrics", "report")
    components.evaluate.python_func(config={"limit": 8, "max_new_tokens": 5, "batch_size": 8}, k=1, seed=0,
                                    base_model="tiny:0", tuned_name="rl", eval_data=data["eval_set"],
                                    sft_model=chain["sft"], tuned_model=chain["rl"], reward_model=chain["rm"], **out)
    results = json.loads(Path(out["results"].path).read_text())
    assert set(results["models"]) == {"base", "sft", "rl"}
    assert "rl/accuracy" in out["metrics"].logged
    assert "<h2>Evaluation</h2>" in Path(out["report"].path).read_text()
    chain["eval"] = out["results"]


def test_register(chain):
    out = arts(chain["dir"] / "reg", "metrics")
    reg = components.register.python_func(config={}, model_name="pipelines-test", gate_metric="accuracy",
                                          gate_threshold=2.0, metrics_key="rl", model=chain["rl"],
                                          eval_results=chain["eval"], **out)
    assert reg["model_name"] == "pipelines-test" and reg["alias"] == "challenger" and reg["promoted"] is False
    assert int(reg["version"]) >= 1


def test_component_rejects_owned_keys_in_config(chain, capsys):
    out = arts(chain["dir"] / "bad", "model", "metrics", "report")
    err = _exits_with_user_error(capsys, lambda: components.sft.python_func(
        config={"training": {"max_steps": 9}}, base_model="tiny:0", max_steps=3, learning_rate=1e-3, seed=0, **SCALE,
        train_data=Art(Path("/nonexistent")), **out))
    assert err == ["error: sft_config: training.max_steps: set by the pipeline parameter sft_steps, not in the "
                   "config dict (remove it)"]
