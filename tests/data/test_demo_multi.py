"""The multi-domain demo data (issue 12 §3): verifiable domains of graded difficulty (`domain`, `difficulty`),
a per-domain held-out split and an out-of-domain split, written by the same `write_demo_data`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from alignpipe import cli, rewards
from alignpipe.data.demo import MULTI_DOMAINS, OOD_DOMAIN, multi_problem, write_demo_data

MULTI_FILES = {"multi_sft_train": "sft", "multi_rl_train": "prompts", "multi_eval": "prompts",
               "multi_ood_eval": "prompts"}
#: difficulty levels of each domain (carries for additions, borrows for subtractions)
LEVELS = {"add2": {0, 1, 2}, "sub2": {0, 1}, "add3": {0, 1, 2, 3}, "sub3": {0, 1, 2}}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    return write_demo_data(tmp_path_factory.mktemp("multi"), seed=0)


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _text(row: dict) -> str:
    return row["prompt"][0]["content"]


@pytest.mark.parametrize("name", sorted(MULTI_FILES))
def test_files_pass_data_validate(files, name, capsys):
    assert cli.main(["data", "validate", files[name], "--kind", MULTI_FILES[name]]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("OK ")


def test_every_domain_and_difficulty_bucket_is_populated(files):
    def buckets(name):
        return Counter((r["domain"], r["difficulty"]) for r in _rows(files[name]))

    in_domain = {(d, lvl) for d in MULTI_DOMAINS for lvl in LEVELS[d]}
    for name in ("multi_sft_train", "multi_rl_train", "multi_eval"):
        got = buckets(name)
        assert set(got) == in_domain, (name, sorted(got))
        assert min(got.values()) >= (10 if name == "multi_eval" else 100), (name, sorted(got.items()))
    ood = buckets("multi_ood_eval")
    assert set(ood) == {(OOD_DOMAIN, lvl) for lvl in LEVELS[OOD_DOMAIN]} and min(ood.values()) >= 10
    per_domain = Counter(r["domain"] for r in _rows(files["multi_eval"]))
    assert per_domain == {d: 200 for d in MULTI_DOMAINS}


def test_held_out_problems_are_never_trained_on(files):
    def key(row):  # a+b and b+a are the same problem
        a, op, b = row["prompt"][0]["content"].rstrip("=").partition("+" if "+" in _text(row) else "-")
        return (op, *sorted((a, b))) if op == "+" else (op, a, b)

    train = {key(r) for r in _rows(files["multi_sft_train"])}
    assert train == {key(r) for r in _rows(files["multi_rl_train"])}
    assert not train & {key(r) for r in _rows(files["multi_eval"])}
    assert not train & {key(r) for r in _rows(files["multi_ood_eval"])}


def test_answers_are_correct_by_the_verifier_reward(files):
    rows = _rows(files["multi_rl_train"])[:400] + _rows(files["multi_eval"]) + _rows(files["multi_ood_eval"])
    for r in rows:  # the answer is the result's digits reversed; the difficulty counts carries/borrows
        a, op, b = _text(r).rstrip("=").partition("+" if "+" in _text(r) else "-")
        result = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert r["answer"] == str(result)[::-1] and result >= 0
        assert multi_problem(r["domain"], int(a), int(b))["difficulty"] == r["difficulty"]
    assert multi_problem("add3", 999, 1)["difficulty"] == 3 and multi_problem("sub2", 50, 45)["difficulty"] == 1
    assert multi_problem("sub3", 832, 458) == {"text": "832-458=", "answer": "473", "difficulty": 2}
    # graded by the demo's verifier (exact_match): the reference scores 1, the unreversed result 0
    exact_match = rewards.build([{"name": "exact_match"}])[0][0]
    kw = {"prompts": [r["prompt"] for r in rows], "answer": [r["answer"] for r in rows]}
    right = [[{"role": "assistant", "content": r["answer"]}] for r in rows]
    assert exact_match(completions=right, **kw) == [1.0] * len(rows)
    unreversed = [(i, r["answer"][::-1]) for i, r in enumerate(rows) if int(r["answer"][::-1]) != int(r["answer"])]
    assert len(unreversed) > len(rows) // 2
    scores = exact_match(completions=[[{"role": "assistant", "content": t}] for _, t in unreversed],
                         prompts=[rows[i]["prompt"] for i, _ in unreversed], answer=[rows[i]["answer"] for i, _ in unreversed])
    assert scores == [0.0] * len(unreversed)


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    a = write_demo_data(tmp_path / "a", seed=0)
    b = write_demo_data(tmp_path / "b", seed=0)
    c = write_demo_data(tmp_path / "c", seed=1)
    for name in MULTI_FILES:
        assert Path(a[name]).read_bytes() == Path(b[name]).read_bytes()
    assert Path(a["multi_eval"]).read_bytes() != Path(c["multi_eval"]).read_bytes()


def test_preset_takes_the_multi_files():
    # (prepare-data resolves demo:NAME for any file write_demo_data writes: tests/pipelines/test_code_demo.py)
    from alignpipe import presets

    values = presets.values_for("demo-multi", "rlvr")
    assert (values["sft_data"], values["rl_data"], values["eval_data"]) == (
        "demo:multi_sft_train", "demo:multi_rl_train", "demo:multi_eval")
    assert [r["name"] for r in values["rewards"]] == ["exact_match"]



def _answer_nll(model_dir: str, rows: list[dict]) -> float:
    """Mean per-token negative log-likelihood of the reference answers (and the end-of-turn token) after the
    chat-formatted prompts: teacher-forced, so it moves before greedy accuracy does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            prompt = tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tok(r["answer"] + tok.eos_token, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + a_ids])
            logp = model(ids).logits[0, len(p_ids) - 1:-1].log_softmax(-1)
            total -= logp.gather(1, torch.tensor(a_ids)[:, None]).sum().item()
            count += len(a_ids)
    return total / count


def test_short_sft_learns_every_new_domain(files, tmp_path):
    """A short SFT (60 steps) on multi_sft_train: on each domain's held-out problems the answers' likelihood
    rises far above the untrained model's. (Greedy exact-match accuracy is still ~0 after a few hundred steps:
    like the main demo, the tiny model leaves a plateau only later; see docs/stages-and-data.md.)"""
    from alignpipe import models
    from alignpipe.config import SFTConfig
    from alignpipe.stages import sft

    out = tmp_path / "sft"
    sft.run(SFTConfig(model="tiny", train_data=files["multi_sft_train"], output_dir=str(out), max_length=40,
                      tracking=False, training=dict(max_steps=60, learning_rate=3e-3, warmup_steps=10, batch_size=32,
                                                    logging_steps=20, seed=0)))
    held = _rows(files["multi_eval"]) + _rows(files["multi_ood_eval"])
    for domain in MULTI_DOMAINS:
        rows = [r for r in held if r["domain"] == domain][:64]
        base, trained = _answer_nll(models.resolve("tiny"), rows), _answer_nll(str(out), rows)
        assert trained < 0.5 * base, (domain, base, trained)
