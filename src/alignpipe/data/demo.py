"""Deterministic demo data: two-number addition with the answer's digits written in reverse.

`37+45=` -> `28` (82 reversed). Reversing the digits lets a tiny model emit the answer in the
order it is computed (least significant digit first, carrying left to right), so a ~0.5M-parameter
model can learn it on a CPU in seconds — and it is still an exactly verifiable answer.

The held-out split is over *unordered* pairs: neither `a+b` nor `b+a` of a held-out problem is
ever trained on, so held-out accuracy measures generalisation, not memory.

The code variant (`code_*` files) asks for a *program* that prints the reversed-digit sum, graded by
running it (reward `code_tests`, one stdin/stdout case per row). The program format is minimal so the
tiny model can learn it on a CPU: the completion is a single `print("28")` (a string, so reversed sums
with a leading zero, `001`, stay valid Python).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DOMAIN = "arithmetic"


def reverse_sum(a: int, b: int) -> str:
    return str(a + b)[::-1]


def _carries(a: int, b: int) -> int:
    n, carry = 0, 0
    while a or b:
        carry = 1 if (a % 10 + b % 10 + carry) >= 10 else 0
        n += carry
        a, b = a // 10, b // 10
    return n


def problems(max_operand: int = 99, heldout_fraction: float = 0.15, seed: int = 0) -> tuple[list, list]:
    """(train, heldout) lists of (a, b) pairs; the split is over unordered pairs."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in range(max_operand + 1) for b in range(a, max_operand + 1)]
    rng.shuffle(pairs)
    n_held = int(len(pairs) * heldout_fraction)
    held_pairs, train_pairs = pairs[:n_held], pairs[n_held:]

    def both_orders(ps):
        out = []
        for a, b in ps:
            out.append((a, b))
            if a != b:
                out.append((b, a))
        rng.shuffle(out)
        return out

    return both_orders(train_pairs), both_orders(held_pairs)


def _prompt(a: int, b: int) -> list[dict]:
    return [{"role": "user", "content": f"{a}+{b}="}]


def _wrong_answer(a: int, b: int, rng: random.Random) -> str:
    """A plausible wrong answer: one digit changed, a dropped carry, or the digits not reversed."""
    right = reverse_sum(a, b)
    for _ in range(20):
        kind = rng.random()
        if kind < 0.5:
            i = rng.randrange(len(right))
            cand = right[:i] + str((int(right[i]) + rng.choice([1, 9])) % 10) + right[i + 1:]
        elif kind < 0.75:
            cand = str(a + b + rng.choice([-10, -1, 1, 10]))[::-1] if a + b >= 10 else str(rng.randrange(10))
        else:
            cand = str(a + b) if str(a + b) != right else right + "1"
        if cand != right and cand:
            return cand
    return right + "1"


def sft_rows(pairs) -> list[dict]:
    return [{"prompt": _prompt(a, b), "completion": [{"role": "assistant", "content": reverse_sum(a, b)}]}
            for a, b in pairs]


def preference_rows(pairs, seed: int = 0) -> list[dict]:
    rng = random.Random(seed + 1)
    return [{"prompt": _prompt(a, b),
             "chosen": [{"role": "assistant", "content": reverse_sum(a, b)}],
             "rejected": [{"role": "assistant", "content": _wrong_answer(a, b, rng)}]}
            for a, b in pairs]


def prompt_rows(pairs) -> list[dict]:
    return [{"prompt": _prompt(a, b), "answer": reverse_sum(a, b), "domain": DOMAIN,
             "difficulty": _carries(a, b)} for a, b in pairs]


CODE_DOMAIN = "code"


def _code_prompt(a: int, b: int) -> list[dict]:
    return [{"role": "user", "content": f"code: print {a}+{b} reversed"}]


def code_program(a: int, b: int) -> str:
    """The reference program of the code variant (what SFT is trained on)."""
    return f'print("{reverse_sum(a, b)}")'


def code_sft_rows(pairs) -> list[dict]:
    return [{"prompt": _code_prompt(a, b), "completion": [{"role": "assistant", "content": code_program(a, b)}]}
            for a, b in pairs]


def code_prompt_rows(pairs) -> list[dict]:
    """RL/eval rows of the code variant: `answer` is the expected output, `tests` one stdin/stdout case
    (a JSON string, so the column has one Arrow type whatever the cases hold)."""
    return [{"prompt": _code_prompt(a, b), "answer": reverse_sum(a, b),
             "tests": json.dumps([{"stdin": "", "stdout": reverse_sum(a, b)}]),
             "domain": CODE_DOMAIN, "difficulty": _carries(a, b)} for a, b in pairs]


def write_demo_data(out_dir: str | Path, seed: int = 0, max_operand: int = 99,
                    heldout_fraction: float = 0.15, preference_pairs: int = 4000,
                    eval_pairs: int = 400, code_eval_pairs: int = 200) -> dict[str, str]:
    """Write every demo split to `out_dir`; returns {split name: path}.

    - sft_train.jsonl       prompt/completion (conversational) over the train pairs
    - sft_eval.jsonl        held-out prompt/completion (first `eval_pairs`)
    - preference_train.jsonl  correct-vs-wrong pairs on train problems
    - preference_eval.jsonl   the same on held-out problems (reward-model accuracy)
    - rl_train.jsonl        RL prompts + answers (train problems)
    - eval.jsonl            held-out prompts + answers (the evaluation set)
    - code_sft_train.jsonl  the code variant: prompt -> `print("<reversed sum>")` (train pairs)
    - code_rl_train.jsonl   code prompts + `tests` (one stdin/stdout case) on train problems
    - code_eval.jsonl       the same on held-out problems (reward `code_tests`; first `code_eval_pairs`)
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, held = problems(max_operand, heldout_fraction, seed)
    rng = random.Random(seed + 2)
    pref_train = rng.sample(train, min(preference_pairs, len(train)))
    splits = {
        "sft_train": sft_rows(train),
        "sft_eval": sft_rows(held[:eval_pairs]),
        "preference_train": preference_rows(pref_train, seed),
        "preference_eval": preference_rows(held[:eval_pairs], seed + 7),
        "rl_train": prompt_rows(train),
        "eval": prompt_rows(held),
        "code_sft_train": code_sft_rows(train),
        "code_rl_train": code_prompt_rows(train),
        "code_eval": code_prompt_rows(held[:code_eval_pairs]),
    }
    paths = {}
    for name, rows in splits.items():
        p = out / f"{name}.jsonl"
        tmp = p.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
        tmp.replace(p)
        paths[name] = str(p)
    return paths
