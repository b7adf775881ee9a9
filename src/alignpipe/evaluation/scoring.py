"""Teacher-forced scoring of sampled completions: per-token KL(candidate || reference) and entropy.

The completions are the candidate's own samples (strings from the generator). Each is tokenized on
its own and appended to the tokenized prompt (the prompt rendered as for generation), so the scored
tokens are exactly the completion's tokens; the end-of-sequence token is not scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignpipe.base import UserError
from alignpipe.evaluation.metrics import token_kl_entropy
from alignpipe.models.generate import encode_prompt


class ScoringError(UserError, ValueError):
    """The models cannot be compared token by token (e.g. different vocabularies)."""


def _ids(tokenizer, prompts: Sequence, completions: Sequence[Sequence[str]]) -> list[tuple[list[int], list[int]]]:
    rows = []
    for prompt, outs in zip(prompts, completions):
        p_ids = encode_prompt(tokenizer, prompt)
        for c in outs:
            rows.append((p_ids, tokenizer(c, add_special_tokens=False)["input_ids"]))
    return rows


@torch.no_grad()
def _logits(model, batch: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(r) for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, r in enumerate(batch):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()


@torch.no_grad()
def kl_entropy(candidate, reference, tokenizer, prompts: Sequence, completions: Sequence[Sequence[str]],
               batch_size: int = 32) -> tuple[list[list[list[float]]], list[list[list[float]]]]:
    """Per prompt, per sample, per completion token: (KL(candidate || reference), candidate entropy).

    `completions[i]` are the candidate's samples for `prompts[i]`. Both models read the same token ids
    (the candidate's tokenizer), so they must share a vocabulary."""
    v_c = candidate.get_output_embeddings().weight.shape[0]
    v_r = reference.get_output_embeddings().weight.shape[0]
    if v_c != v_r:
        raise ScoringError(f"KL needs the candidate and the reference to share a vocabulary "
                           f"({v_c} vs {v_r} output tokens); set kl_reference to a model of the same family or kl: false")
    rows = _ids(tokenizer, prompts, completions)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kls: list[list[float]] = []
    ents: list[list[float]] = []
    modes = (candidate.training, reference.training)
    candidate.eval()
    reference.eval()
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            seqs = [p + c for p, c in chunk]
            lc = _logits(candidate, seqs, pad)
            lr = lc if reference is candidate else _logits(reference, seqs, pad)  # the model against itself: KL 0
            for i, (p, c) in enumerate(chunk):
                if not c:
                    kls.append([])
                    ents.append([])
                    continue
                # logits at position t predict token t+1: the completion's tokens are predicted from len(p)-1 on
                sl = slice(len(p) - 1, len(p) - 1 + len(c))
                kl, ent = token_kl_entropy(lc[i, sl], lr[i, sl])
                kls.append(kl.tolist())
                ents.append(ent.tolist())
    finally:
        candidate.train(modes[0])
        reference.train(modes[1])
    out_kl, out_ent, i = [], [], 0
    for outs in completions:
        out_kl.append(kls[i:i + len(outs)])
        out_ent.append(ents[i:i + len(outs)])
        i += len(outs)
    return out_kl, out_ent
