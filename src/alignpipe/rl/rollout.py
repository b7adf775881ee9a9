"""Sampling k completions per prompt as token ids, and per-token log-probs / entropies / values of them.

Prompts are encoded exactly as `alignpipe.models.generate` (and TRL's trainers) encode them
(`encode_prompt`: the chat template's BOS for messages, the tokenizer's for text), generation stops on
every stop id (`stop_token_ids`: the generation config's list plus the tokenizer's EOS), and they are
sampled with HF `generate`; the engine needs token ids and log-probs, which the string interface of
`HFGenerator` does not return.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignpipe.models.generate import encode_prompt, stop_token_ids


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, T]
    completion_mask: torch.Tensor  # [N, T] float: tokens up to and including the first EOS
    texts: list[str]  # decoded completions, N = prompts x k

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], 1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask.to(self.prompt_mask.dtype)], 1)

    def select(self, idx: torch.Tensor) -> "Rollout":
        return Rollout(self.prompt_ids[idx], self.prompt_mask[idx], self.completion_ids[idx],
                       self.completion_mask[idx], [self.texts[i] for i in idx.tolist()])


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int | list[int] | None) -> torch.Tensor:
    """1 for each token up to and including the first stop token (all tokens when there is none);
    `eos_token_id` is one id or several (e.g. Llama-3's `<|eot_id|>` and `<|end_of_text|>`)."""
    n, t = completion_ids.shape
    stops = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not stops:
        return torch.ones(n, t)
    is_eos = torch.isin(completion_ids, torch.tensor(stops, dtype=completion_ids.dtype))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full((n,), t, dtype=torch.long))
    return (torch.arange(t)[None, :] <= first[:, None]).float()


@torch.no_grad()
def sample(model, tokenizer, prompts: list, k: int, max_new_tokens: int, temperature: float,
           top_p: float = 1.0, prefixes: list[str] | None = None) -> Rollout:
    """k completions per prompt. `prefixes` (one text per prompt, e.g. a hint) are tokenized without special
    tokens and appended to the encoded prompt (after a chat template's generation prompt, i.e. as the start of the
    answer): the completions continue them, and the rollout's prompt ids include them."""
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stops = stop_token_ids(getattr(model, "generation_config", None), tokenizer)
    try:
        ids = [encode_prompt(tokenizer, p) for p in prompts]
        if prefixes is not None:
            ids = [i + list(tokenizer(x, add_special_tokens=False)["input_ids"]) for i, x in zip(ids, prefixes)]
        enc = tokenizer.pad({"input_ids": ids}, padding=True,
                            return_tensors="pt").to(model.device)
        seqs = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                              min_p=0.0, repetition_penalty=1.0, max_new_tokens=max_new_tokens,
                              num_return_sequences=k, pad_token_id=tokenizer.pad_token_id, eos_token_id=stops)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    p = enc["input_ids"].shape[1]
    comp = seqs[:, p:].cpu()
    mask = completion_mask(comp, stops)
    comp = torch.where(mask > 0, comp, torch.full_like(comp, tokenizer.pad_token_id))
    texts = [t.strip() for t in tokenizer.batch_decode(comp, skip_special_tokens=True)]
    return Rollout(enc["input_ids"].cpu().repeat_interleave(k, 0), enc["attention_mask"].cpu().repeat_interleave(k, 0),
                   comp, mask, texts)


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_logprobs(model, ro: Rollout, temperature: float, entropy: bool = False):
    """(log-probs [N, T] of the completion tokens, entropies [N, T] or None) at the sampling temperature."""
    device = next(model.parameters()).device
    ids, am = ro.input_ids.to(device), ro.attention_mask.to(device)
    logits = model(input_ids=ids, attention_mask=am, position_ids=_positions(am)).logits
    p = ro.prompt_ids.shape[1]
    logits = logits[:, p - 1:-1].float() / max(temperature, 1e-6)
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, ro.completion_ids.to(device)[..., None]).squeeze(-1).cpu()
    ent = None
    if entropy:
        ent = -(logp_all.exp() * logp_all).sum(-1).cpu()
    return logp, ent


def token_values(critic, ro: Rollout) -> torch.Tensor:
    """The critic's value of the state before each completion token, [N, T]."""
    device = next(critic.parameters()).device
    ids, am = ro.input_ids.to(device), ro.attention_mask.to(device)
    v = critic(input_ids=ids, attention_mask=am, position_ids=_positions(am))
    p = ro.prompt_ids.shape[1]
    return v[:, p - 1:-1].float().cpu()
