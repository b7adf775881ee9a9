"""The code variant of the demo: programs printing the reversed-digit sum, graded by running them (reward
code_tests), through prepare-data's `demo:NAME` data set URIs and the rlvr pipeline (preset demo-code)."""

import json
from pathlib import Path

import pytest

from alignpipe import cli, data, presets, rewards, steps
from alignpipe.data import DataError
from alignpipe.data.demo import code_program, reverse_sum, write_demo_data


class Art:
    def __init__(self, path: Path):
        self.path = str(path)
        self.metadata: dict = {}


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_code_files_validate_and_their_programs_pass(tmp_path):
    files = write_demo_data(tmp_path)
    assert data.validate(files["code_sft_train"], "sft").ok
    for name in ("code_rl_train", "code_eval"):
        report = data.validate(files[name], "prompts")
        assert report.ok, report.problems
    ds = data.load(files["code_eval"], "prompts")
    assert "tests" in ds.column_names and len(ds) == 200
    # held-out code problems are the held-out arithmetic problems: never trained on, in either order
    train = {r["prompt"][0]["content"] for r in _rows(files["code_rl_train"])}
    assert not train & {r["prompt"][0]["content"] for r in _rows(files["code_eval"])}
    # the reference program passes its test, a wrong one does not, leading zeros included (55+45 -> "001")
    assert code_program(55, 45) == 'print("001")' and reverse_sum(55, 45) == "001"
    rows = _rows(files["code_eval"])[:6]
    funcs, _ = rewards.build([{"name": "code_tests"}])
    right = [[{"role": "assistant", "content": f'print("{r["answer"]}")'}] for r in rows]
    wrong = [[{"role": "assistant", "content": f'print("{r["answer"]}1")'}] for r in rows]
    kw = {"prompts": [r["prompt"] for r in rows], "tests": [r["tests"] for r in rows]}
    assert funcs[0](completions=right, **kw) == [1.0] * len(rows)
    assert funcs[0](completions=wrong, **kw) == [0.0] * len(rows)


def test_prepare_data_takes_demo_uris(tmp_path):
    splits = ("sft_train", "rl_train", "eval_set")
    out = {s: Art(tmp_path / s) for s in splits}
    summary = steps.prepare_data({"sft_train": "demo:code_sft_train", "rl_train": "demo:code_rl_train",
                                  "eval_set": "demo:code_eval"}, list(splits), out, seed=0, base_model="tiny")
    assert summary["eval_set"]["rows"] == 200 and summary["eval_set"]["source"] == "demo:code_eval"
    assert "tests" in json.loads(Path(out["rl_train"].path).read_text().splitlines()[0])
    with pytest.raises(DataError, match=r"rl_train=demo:nope: no such demo file \(choose from .*demo:code_rl_train"):
        steps.prepare_data({"sft_train": "demo:code_sft_train", "rl_train": "demo:nope", "eval_set": "demo:code_eval"},
                           list(splits), out, seed=0, base_model="tiny")


def test_preset_is_the_code_task():
    values = presets.values_for("demo-code", "rlvr")
    assert values["rl_data"] == "demo:code_rl_train" and values["eval_data"] == "demo:code_eval"
    assert [r["name"] for r in values["rewards"]] == ["code_tests"]
    assert [r["name"] for r in values["evaluate_config"]["rewards"]] == ["code_tests"]


#: The smallest run that goes through every step with the code reward (seconds, not learning).
QUICK = {"sft_steps": 2, "rl_steps": 1, "evaluate_config": {"limit": 8, "batch_size": 8, "max_new_tokens": 14,
                                                           "rewards": [{"name": "code_tests"}]},
         "sft_config": {"max_length": 64, "stop_at_accuracy": 1.0,  # (never reached in 2 steps)
                        "training": {"batch_size": 8, "warmup_steps": 0, "logging_steps": 1}},
         "rl_config": {"generation": {"max_new_tokens": 14}, "grpo": {"num_generations": 4},
                       "training": {"batch_size": 8, "logging_steps": 1}}}


def _args(params: dict) -> list[str]:
    return [a for k, v in params.items() for a in ("--param", f"{k}={json.dumps(v)}")]


def test_rlvr_runs_on_the_code_data(tmp_path, capsys):
    work = tmp_path / "code"
    rc = cli.main(["run", "rlvr", "--local", "--preset", "demo-code", "--workdir", str(work)] + _args(QUICK))
    assert rc == 0, capsys.readouterr().out
    s = json.loads((work / "summary.json").read_text())
    assert s["status"] == "succeeded" and set(s["eval"]) == {"base", "sft", "rl"}
    for m in s["eval"].values():
        assert 0.0 <= m["accuracy"] <= 1.0 and "reward/code_tests" in m


def test_rollouts_and_evaluation_are_long_enough_for_every_reference_program(tmp_path):
    """A cut-off program is a failed program: the preset's max_new_tokens must hold the longest reference
    program plus the end-of-turn token (`print("001")` + <|im_end|> = 13 tokens), or RL and evaluate would score
    right answers as 0."""
    from alignpipe.models.tiny import build_tokenizer

    tok = build_tokenizer()
    programs = {r["completion"][0]["content"] for r in _rows(write_demo_data(tmp_path)["code_sft_train"])}
    longest = max(len(tok(p + tok.eos_token, add_special_tokens=False)["input_ids"])  # (character level: the
                  for p in sorted(programs, key=len)[-20:])                           # longest texts suffice)
    values = presets.values_for("demo-code", "rlvr")
    assert longest == 13
    assert values["rl_config"]["generation"]["max_new_tokens"] >= longest
    assert values["evaluate_config"]["max_new_tokens"] >= longest
