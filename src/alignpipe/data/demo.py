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

The multi-domain variant (`multi_*` files, issue 12) adds verifiable domains of graded difficulty for
samplers, curricula and mixtures, in the same reversed-digit answer format (`MULTI_DOMAINS`):
`add2` (the demo's task, `37+45=` -> `28`, difficulty = carries 0-2), `sub2` (`82-45=` -> `73`, 37
reversed; a >= b, difficulty = borrows 0-1) and `add3` (`374+458=` -> `238`, difficulty = carries 0-3), plus
an out-of-domain held-out split `sub3` (`832-458=` -> `473`, borrows 0-2) that no training file holds.
Every held-out problem is held out in both orders; the existing files are not touched by any of this
(their bytes are pinned by tests/data/test_demo_unchanged.py).
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


MULTI_DOMAINS = ("add2", "sub2", "add3")
OOD_DOMAIN = "sub3"


def _borrows(a: int, b: int) -> int:
    """Borrows of the column subtraction a - b (a >= b)."""
    n, borrow = 0, 0
    while a or b:
        borrow = 1 if (a % 10 - b % 10 - borrow) < 0 else 0
        n += borrow
        a, b = a // 10, b // 10
    return n


def multi_problem(domain: str, a: int, b: int) -> dict:
    """One problem of the multi-domain data: prompt text, reversed-digit answer, difficulty."""
    if domain in ("add2", "add3"):
        return {"text": f"{a}+{b}=", "answer": reverse_sum(a, b), "difficulty": _carries(a, b)}
    if domain in ("sub2", "sub3"):
        if a < b:
            raise ValueError(f"{domain}: {a}-{b} is negative (the demo's subtractions have a >= b)")
        return {"text": f"{a}-{b}=", "answer": str(a - b)[::-1], "difficulty": _borrows(a, b)}
    raise ValueError(f"unknown demo domain {domain!r} (one of {', '.join(MULTI_DOMAINS + (OOD_DOMAIN,))})")


def _unordered_split(rng: random.Random, pairs: list, n_held: int, n_train: int, ordered: bool) -> tuple[list, list]:
    """Shuffle unordered pairs, hold out the first `n_held`, train on (at most `n_train` of) the rest; additive
    pairs (`ordered` False) are used in a random order each, so neither order of a held-out pair is trained on."""
    rng.shuffle(pairs)
    held, train = pairs[:n_held], pairs[n_held:n_held + n_train]
    if not ordered:
        held = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in held]
        train = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in train]
    return train, held


def multi_problems(seed: int = 0, train_per_domain: int = 4000, eval_per_domain: int = 200,
                   ood_eval: int = 200) -> dict[str, tuple[list, list]]:
    """domain -> (train, held-out) lists of (a, b); the OOD domain has no train problems."""
    out = {}
    rng = random.Random(seed + 1000)
    add2 = [(a, b) for a in range(100) for b in range(a, 100)]
    out["add2"] = _unordered_split(rng, add2, eval_per_domain, train_per_domain, ordered=False)
    sub2 = [(a, b) for a in range(100) for b in range(a + 1)]
    out["sub2"] = _unordered_split(rng, sub2, eval_per_domain, train_per_domain, ordered=True)
    seen: set = set()
    add3: list = []
    while len(add3) < eval_per_domain + train_per_domain:
        a, b = sorted((rng.randrange(100, 1000), rng.randrange(100, 1000)))
        if (a, b) not in seen:
            seen.add((a, b))
            add3.append((a, b))
    out["add3"] = _unordered_split(rng, add3, eval_per_domain, train_per_domain, ordered=False)
    sub3: set = set()
    while len(sub3) < ood_eval:
        b, a = sorted((rng.randrange(100, 1000), rng.randrange(100, 1000)))
        sub3.add((a, b))
    out[OOD_DOMAIN] = ([], sorted(sub3, key=lambda p: rng.random()))
    return out


def _multi_rows(items, kind: str) -> list[dict]:
    rows = []
    for domain, a, b in items:
        p = multi_problem(domain, a, b)
        prompt = [{"role": "user", "content": p["text"]}]
        if kind == "sft":
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": p["answer"]}],
                         "domain": domain, "difficulty": p["difficulty"]})
        else:
            rows.append({"prompt": prompt, "answer": p["answer"], "domain": domain, "difficulty": p["difficulty"]})
    return rows


def multi_splits(seed: int = 0, train_per_domain: int = 4000, eval_per_domain: int = 200,
                 ood_eval: int = 200) -> dict[str, list[dict]]:
    """The multi-domain demo files: multi_sft_train, multi_rl_train (the same train problems, all of
    MULTI_DOMAINS, shuffled together), multi_eval (held-out, `eval_per_domain` of each domain) and
    multi_ood_eval (the OOD domain, never trained on)."""
    probs = multi_problems(seed, train_per_domain, eval_per_domain, ood_eval)
    rng = random.Random(seed + 1001)
    train = [(d, a, b) for d in MULTI_DOMAINS for a, b in probs[d][0]]
    rng.shuffle(train)
    held = [(d, a, b) for d in MULTI_DOMAINS for a, b in probs[d][1]]
    rng.shuffle(held)  # (so that an evaluate `limit` still samples every domain)
    return {"multi_sft_train": _multi_rows(train, "sft"), "multi_rl_train": _multi_rows(train, "prompts"),
            "multi_eval": _multi_rows(held, "prompts"),
            "multi_ood_eval": _multi_rows([(OOD_DOMAIN, a, b) for a, b in probs[OOD_DOMAIN][1]], "prompts")}


def write_demo_data(out_dir: str | Path, seed: int = 0, max_operand: int = 99,
                    heldout_fraction: float = 0.15, preference_pairs: int = 4000,
                    eval_pairs: int = 400, code_eval_pairs: int = 200, multi_train_per_domain: int = 4000,
                    multi_eval_per_domain: int = 200) -> dict[str, str]:
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
    - multi_sft_train.jsonl, multi_rl_train.jsonl  the multi-domain variant (`MULTI_DOMAINS`, each row with
      `domain` and `difficulty`; `multi_train_per_domain` problems of each domain)
    - multi_eval.jsonl      its held-out problems (`multi_eval_per_domain` of each domain)
    - multi_ood_eval.jsonl  the out-of-domain held-out split (`OOD_DOMAIN`), for mixture experiments
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
        **multi_splits(seed, multi_train_per_domain, multi_eval_per_domain, multi_eval_per_domain),
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
