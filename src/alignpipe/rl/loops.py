"""SFT<->RL loops and rollout replay inside the engine's loop (issue 12): `relift`, `hints`, `replay`.

- `ReliftBuffer` (ReLIFT): prompts whose every completion failed, with their reference solution; flushed into
  SFT steps on a schedule.
- `hint_round` (ReGFT-style): hinted generation for never-solved prompts, verified, kept as SFT examples.
- `ReplayBuffer` (DOTS rollout replay): recent groups with unequal rewards, their behaviour log-probs and
  advantages, replayed within a staleness bound.
- `SFTer`: completion-only SFT steps on (prompt, answer) pairs with its own AdamW (used by relift and hints).

All of them have `state_dict` / `load_state_dict`: they are part of the engine's checkpoint (`rl/state.py`).

Why a separate optimizer for the SFT steps: the RL optimizer's Adam moments track policy-gradient steps (small,
noisy, advantage-weighted); SFT gradients on demonstrations are of another scale and direction, and feeding them
through the same moments would distort the RL steps that follow (and its LR schedule counts RL updates only).
A second AdamW over the same parameters keeps both estimates clean and lets the SFT steps have their own
learning rate; its state is checkpointed with the engine's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch

from alignpipe.models.generate import encode_prompt

from . import rollout

#: Columns a reference solution is read from, first present and non-empty wins.
REFERENCE_COLUMNS = ("completion", "solution", "answer")


def reference_text(row: dict) -> str | None:
    """The row's reference solution: `completion` (a full demonstration, as SFT data has), else `solution` (a worked
    solution), else `answer` (the final answer only). Conversational values ([{role, content}, ...]) give the
    last assistant message's content."""
    for col in REFERENCE_COLUMNS:
        v = row.get(col)
        if isinstance(v, list):
            msgs = [m for m in v if isinstance(m, dict) and m.get("role") == "assistant"]
            v = msgs[-1].get("content") if msgs else None
        if v is not None and str(v).strip():
            return str(v)
    return None


# ---- SFT on (prompt, answer) pairs ------------------------------------------------------------------------
def encode_examples(tokenizer, examples: list[tuple[Any, str]]) -> rollout.Rollout:
    """(prompt, answer text) pairs as a `Rollout`: prompts encoded as for generation (left-padded), the answer's
    tokens plus EOS as the completion (right-padded; the mask covers the answer and its EOS)."""
    prompts = [encode_prompt(tokenizer, p) for p, _ in examples]
    answers = [list(tokenizer(a, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
               for _, a in examples]
    pw, cw = max(map(len, prompts)), max(map(len, answers))
    pad = tokenizer.pad_token_id
    pid = torch.tensor([[pad] * (pw - len(p)) + p for p in prompts])
    pm = torch.tensor([[0] * (pw - len(p)) + [1] * len(p) for p in prompts])
    cid = torch.tensor([a + [pad] * (cw - len(a)) for a in answers])
    cm = torch.tensor([[1.0] * len(a) + [0.0] * (cw - len(a)) for a in answers])
    return rollout.Rollout(pid, pm, cid, cm, [a for _, a in examples])


def mean_nll(model, tokenizer, examples: list[tuple[Any, str]], batch_size: int = 32) -> float:
    """Mean per-token negative log-likelihood of the answers given their prompts (temperature 1, no gradient)."""
    total, tokens = 0.0, 0.0
    with torch.no_grad():
        for s in range(0, len(examples), batch_size):
            ro = encode_examples(tokenizer, examples[s:s + batch_size])
            logp, _ = rollout.token_logprobs(model, ro, 1.0)
            total += float(-(logp * ro.completion_mask).sum())
            tokens += float(ro.completion_mask.sum())
    return total / max(tokens, 1.0)


class SFTer:
    """Completion-only SFT steps on the policy with its own AdamW (see the module doc for why) and its own RNG for
    drawing batches, both checkpointed."""

    def __init__(self, params: list[torch.nn.Parameter], learning_rate: float, seed: int, weight_decay: float = 0.0):
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
        self.rng = random.Random(seed)
        self.steps = 0

    def run(self, model, tokenizer, examples: list[tuple[Any, str]], steps: int, batch_size: int,
            max_grad_norm: float) -> list[float]:
        """`steps` optimizer steps, each on `batch_size` examples drawn without replacement (reshuffled when the
        examples run out); returns each step's NLL (token mean, before the step)."""
        nlls: list[float] = []
        order: list[int] = []
        for _ in range(steps):
            batch = []
            while len(batch) < min(batch_size, len(examples)):
                if not order:
                    order = list(range(len(examples)))
                    self.rng.shuffle(order)
                batch.append(examples[order.pop()])
            ro = encode_examples(tokenizer, batch)
            logp, _ = rollout.token_logprobs(model, ro, 1.0)
            mask = ro.completion_mask
            loss = -(logp * mask).sum() / mask.sum().clamp(min=1)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, max_grad_norm)
            self.opt.step()
            self.steps += 1
            nlls.append(float(loss.detach()))
        return nlls

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"optimizer": self.opt.state_dict(), "rng": [version, list(internal), gauss], "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.steps = state["steps"]


# ---- relift -------------------------------------------------------------------------------------------------
class ReliftBuffer:
    """Prompts every completion of which failed, keyed by prompt index (a prompt failed again while buffered is
    kept once), in admission order, with their reference solution; prompts without one are skipped (counted)."""

    def __init__(self, settings, threshold: float):
        self.settings, self.threshold = settings, threshold
        self.items: dict[int, str] = {}
        self.skipped = 0  # failed prompts without a reference solution

    def admit(self, indices: list[int], group_rewards: list[list[float]], rows: list[dict]) -> int:
        """Buffer each prompt whose every reward is below the threshold; returns how many were added."""
        added = 0
        for i, rs in zip(indices, group_rewards):
            if rs and all(r < self.threshold for r in rs) and i not in self.items:
                ref = reference_text(rows[i])
                if ref is None:
                    self.skipped += 1
                    continue
                self.items[int(i)] = ref
                added += 1
        return added

    def due(self, done: int) -> bool:
        """After `done` rollout steps: flush when the buffer is full or every `every` steps (if not empty)."""
        return bool(self.items) and (len(self.items) >= self.settings.buffer or done % self.settings.every == 0)

    def take(self, rows: list[dict]) -> list[tuple[Any, str]]:
        out = [(rows[i]["prompt"], ref) for i, ref in self.items.items()]
        self.items = {}
        return out

    def state_dict(self) -> dict:
        return {"items": [[i, r] for i, r in self.items.items()], "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.items = {int(i): r for i, r in state["items"]}
        self.skipped = state.get("skipped", 0)


# ---- hints --------------------------------------------------------------------------------------------------
def hint_of(reference: str, fraction: float) -> str:
    """The first ceil(fraction x len) characters of the reference (at least one, fewer than all unless fraction 1)."""
    n = max(1, math.ceil(len(reference) * fraction))
    return reference[:n]


@dataclass
class HintRound:
    prompts: int  # never-solved prompts hinted
    generated: int  # completions generated
    kept: list[tuple[Any, str]]  # (prompt without the hint, hint + completion) accepted by the verifier


# ---- replay -------------------------------------------------------------------------------------------------
@dataclass
class ReplayGroup:
    """One prompt's group as it was trained: its k rows of the rollout, the behaviour log-probs (at its sampling
    temperature), its advantages and rewards, and the rollout step that generated it."""

    index: int
    step: int
    ro: rollout.Rollout
    old_logp: torch.Tensor  # [k, T]
    adv: torch.Tensor  # [k, T]
    scores: torch.Tensor  # [k]
    raw: torch.Tensor  # [k]


class ReplayBuffer:
    """Admission: a group enters when its rewards are not all equal (it still carries a learning signal); a newer
    group of the same prompt replaces the older. Staleness: at step s a group generated at step g is eligible while
    s - g <= max_staleness and dropped after. Each group is replayed at most once, freshest first."""

    def __init__(self, settings):
        self.settings = settings
        self.groups: list[ReplayGroup] = []
        self.replayed = 0

    def admit(self, group: ReplayGroup) -> bool:
        if float(group.raw.max() - group.raw.min()) <= 1e-9:
            return False
        self.groups = [g for g in self.groups if g.index != group.index] + [group]
        return True

    def evict(self, step: int) -> None:
        self.groups = [g for g in self.groups if step - g.step <= self.settings.max_staleness]

    def take(self, n: int, step: int, exclude: set[int] = frozenset()) -> list[ReplayGroup]:
        """Up to `n` eligible groups (freshest first, prompts in `exclude` skipped), removed from the buffer."""
        self.evict(step)
        pick = sorted((g for g in self.groups if g.index not in exclude and g.step < step),
                      key=lambda g: -g.step)[:max(0, n)]
        chosen = {id(g) for g in pick}
        self.groups = [g for g in self.groups if id(g) not in chosen]
        self.replayed += len(pick)
        return pick

    def slots(self, n_prompts: int) -> int:
        """Most groups of an update replay may fill."""
        return int(math.floor(self.settings.share * n_prompts + 1e-9))

    def state_dict(self) -> dict:
        return {"groups": [g.__dict__ | {"ro": g.ro.__dict__} for g in self.groups], "replayed": self.replayed}

    def load_state_dict(self, state: dict) -> None:
        self.groups = [ReplayGroup(**{**g, "ro": rollout.Rollout(**g["ro"])}) for g in state["groups"]]
        self.replayed = state.get("replayed", 0)
