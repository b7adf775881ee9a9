"""Text generation behind one interface: HF `generate` everywhere, vLLM when installed and a GPU is present.

`Generator.generate(prompts, n, temperature, max_new_tokens)` returns, for each prompt, `n`
completion strings. Prompts are plain strings or lists of chat messages (rendered with the
tokenizer's chat template, generation prompt added).

Both backends see what training saw and stop where a turn ends:
- prompts are tokenised by TRL's rule (`encode_prompt`): messages through the chat template (which writes
  its own BOS), plain strings with the tokenizer's special tokens (its BOS); vLLM gets these token ids;
- generation stops on every id of the model's `generation_config.eos_token_id` plus the tokenizer's EOS
  (`stop_token_ids`): Llama-3 ends turns with `<|eot_id|>`, which is not its EOS;
- sampling is temperature and top-p only, on both backends (`SAMPLING`): the model's own generation config
  (`top_k`, `repetition_penalty`, ...) is overridden, as TRL's GRPO rollouts do.

`HFGenerator.generate_eval` is what evaluation runs: for each prompt its greedy answer, `n` samples and, when asked,
per-token KL(model || reference) and entropy on the model's own temperature-1 samples, from ONE prefill of the
prompt (its KV cache repeated for every row) and one batched decode of all rows (`decode`), with the reference fed
the sampled tokens in lockstep. The greedy answers are those of `generate` (same prompt batches, same argmax over
the same logits); samples draw from a `torch.Generator` seeded with `seed` (reproducible, not `generate`'s stream).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch


#: Sampling knobs fixed on both backends (as TRL's rollouts fix them), whatever the model's generation config says.
SAMPLING = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


def render(tokenizer, prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt) -> list[int]:
    """A prompt's token ids, as TRL's trainers encode it: chat messages through the chat template with the
    generation prompt (the template writes any BOS), plain text with the tokenizer's special tokens (its BOS)."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    out = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def stop_token_ids(generation_config, tokenizer) -> list[int]:
    """Every id generation stops on: the generation config's `eos_token_id` (an id or a list) and the tokenizer's EOS."""
    ids = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def hf_sampling_kwargs(temperature: float, top_p: float) -> dict:
    """`model.generate` arguments for a sampling setting (greedy at temperature 0)."""
    if temperature > 0:
        return dict(do_sample=True, temperature=temperature, top_p=top_p, **SAMPLING)
    return dict(do_sample=False, temperature=None, top_p=None, top_k=None)


def vllm_sampling_kwargs(n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                         stop_ids: list[int]) -> dict:
    """`vllm.SamplingParams` arguments matching `hf_sampling_kwargs` (vLLM disables top-k with -1)."""
    return dict(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0, max_tokens=max_new_tokens,
                seed=seed, stop_token_ids=list(stop_ids), top_k=-1, min_p=SAMPLING["min_p"],
                repetition_penalty=SAMPLING["repetition_penalty"], skip_special_tokens=True)


class HFGenerator:
    backend = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self._encoded: dict[str, list[int]] = {}  # prompt -> ids: evaluate encodes each prompt for greedy and samples

    def encode(self, prompt) -> list[int]:
        """`encode_prompt`, memoised per generator (the chat template costs ~1 ms a prompt on the CPU)."""
        key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)
        ids = self._encoded.get(key)
        if ids is None:
            ids = self._encoded[key] = encode_prompt(self.tokenizer, prompt)
        return ids

    def encode_many(self, prompts: Sequence) -> list[list[int]]:
        """`encode` for many prompts: the chat prompts not seen yet go through the chat template in one batched
        call (the same ids as one by one, in half the time)."""
        keys = [p if isinstance(p, str) else json.dumps(p, sort_keys=True, default=str) for p in prompts]
        new = {k: p for k, p in zip(keys, prompts) if k not in self._encoded and not isinstance(p, str)}
        if len(new) > 1:
            out = self.tokenizer.apply_chat_template([list(p) for p in new.values()], add_generation_prompt=True,
                                                     tokenize=True, return_dict=True)
            self._encoded.update({k: list(ids) for k, ids in zip(new, out["input_ids"])})
        return [self._encoded[k] if k in self._encoded else self.encode(p) for k, p in zip(keys, prompts)]

    @torch.no_grad()
    def generate(self, prompts: Sequence, n: int = 1, temperature: float = 0.0, max_new_tokens: int = 64,
                 top_p: float = 1.0, seed: int = 0) -> list[list[str]]:
        tok, model = self.tokenizer, self.model
        with self._decoding():
            encoded = self.encode_many(prompts)
            stops = stop_token_ids(getattr(model, "generation_config", None), tok)
            out: list[list[str]] = []
            gen = torch.Generator(device="cpu").manual_seed(seed)
            for i in range(0, len(encoded), self.batch_size):
                chunk = encoded[i:i + self.batch_size]
                enc = tok.pad({"input_ids": chunk}, padding=True, return_tensors="pt").to(model.device)
                kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=stops,
                              num_return_sequences=n, **hf_sampling_kwargs(temperature, top_p))
                if temperature > 0:
                    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                seqs = model.generate(**enc, **kwargs)
                completions = tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                for j in range(len(chunk)):
                    out.append([c.strip() for c in completions[j * n:(j + 1) * n]])
        return out

    @contextmanager
    def _decoding(self, *others) -> Iterator[None]:
        """Left padding and eval mode (this generator's model and `others`) for the block; each put back after."""
        tok = self.tokenizer
        models = [self.model] + [m for m in others if m is not None and m is not self.model]
        modes = [m.training for m in models]
        side = tok.padding_side
        tok.padding_side = "left"
        for m in models:
            m.eval()
        try:
            yield
        finally:
            tok.padding_side = side
            for m, mode in zip(models, modes):
                m.train(mode)

    def shares_prefill(self) -> bool:
        """Whether `generate_eval` can decode this model (`decode` does what HF `generate` would): its generation
        config sets nothing outside `DECODE_CONFIG_KEYS` (e.g. no `no_repeat_ngram_size`)."""
        if getattr(getattr(self.model, "config", None), "is_encoder_decoder", False):
            return False
        config = getattr(self.model, "generation_config", None)
        if config is None:
            return True
        diff = config.to_diff_dict()
        return set(diff) <= DECODE_CONFIG_KEYS and getattr(config, "num_beams", 1) in (None, 1)

    @torch.no_grad()
    def generate_eval(self, prompts: Sequence, n: int = 0, temperature: float = 1.0, max_new_tokens: int = 64,
                      top_p: float = 1.0, seed: int = 0, greedy: bool = True, kl: bool = False,
                      kl_reference=None) -> Generations:
        """For each prompt, from one prefill and one batched decode (`decode`): its greedy answer (`greedy`), `n`
        samples at `temperature` / `top_p` and, with `kl`, per-token KL(model || `kl_reference`) and entropy on
        the model's temperature-1 samples — the `n` samples when `temperature` is 1 and `top_p` 1, else one more
        row per prompt sampled at temperature 1. `kl_reference` None or this generator's model: KL 0.

        Prompts go in batches of `batch_size` (the same batches as `generate`, so the greedy answers are the same);
        each batch decodes prompts x rows at once. Samples come from a generator seeded with `seed`: the same
        arguments give the same samples."""
        tok, model = self.tokenizer, self.model
        rows: list[tuple[float, float]] = ([(0.0, 1.0)] if greedy else []) + [(temperature, top_p)] * n
        kl_rows: list[int] = []
        if kl:
            if n and temperature == 1.0 and top_p == 1.0:
                kl_rows = list(range(len(rows) - n, len(rows)))
            else:
                kl_rows = [len(rows)]
                rows.append((1.0, 1.0))
        if not rows:
            raise ValueError("generate_eval: nothing to generate (greedy=False, n=0, kl=False)")
        with self._decoding(kl_reference):
            encoded = self.encode_many(prompts)
            stops = stop_token_ids(getattr(model, "generation_config", None), tok)
            pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
            penalty = getattr(getattr(model, "generation_config", None), "repetition_penalty", None) or 1.0
            device = next(model.parameters()).device
            gen = torch.Generator(device=device).manual_seed(seed)
            result = Generations(greedy=[] if greedy else None, samples=[],
                                 kl=[] if kl else None, entropy=[] if kl else None)
            first_sample = 1 if greedy else 0
            for i in range(0, len(encoded), self.batch_size):
                chunk = encoded[i:i + self.batch_size]
                enc = tok.pad({"input_ids": chunk}, padding=True, return_tensors="pt").to(device)
                out, kls, ents, scored = decode(
                    model, enc["input_ids"], enc["attention_mask"], len(rows), [t for t, _ in rows],
                    [p for _, p in rows], max_new_tokens, stops, pad_id, gen, penalty, kl_reference, kl_rows)
                texts = [t.strip() for t in tok.batch_decode(out.cpu(), skip_special_tokens=True)]
                for j in range(len(chunk)):
                    mine = texts[j * len(rows):(j + 1) * len(rows)]
                    if greedy:
                        result.greedy.append(mine[0])
                    result.samples.append(mine[first_sample:first_sample + n])
                if kls is not None:
                    kls, ents, scored = kls.cpu(), ents.cpu(), scored.cpu()
                    k = len(kl_rows)
                    for j in range(len(chunk)):
                        result.kl.append([kls[r][scored[r]].tolist() for r in range(j * k, (j + 1) * k)])
                        result.entropy.append([ents[r][scored[r]].tolist() for r in range(j * k, (j + 1) * k)])
        return result


#: Generation-config keys `decode` honours as HF `generate` does with `HFGenerator`'s arguments: ids, caching and
#: output flags, the sampling knobs every call overrides, and `repetition_penalty` (which `generate` applies to greedy
#: decoding). A model whose generation config sets anything else (no_repeat_ngram_size, suppress_tokens,
#: min_new_tokens, ...) is decoded by `generate` (`HFGenerator.shares_prefill` is False).
DECODE_CONFIG_KEYS = frozenset({
    "_from_model_config", "transformers_version", "bos_token_id", "eos_token_id", "pad_token_id",
    "decoder_start_token_id", "use_cache", "output_attentions", "output_hidden_states", "output_scores",
    "output_logits", "return_dict_in_generate", "max_length", "max_new_tokens", "num_return_sequences",
    "do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "length_penalty", "early_stopping"})


@dataclass
class Generations:
    """Per prompt: the greedy answer (None when not asked for), `n` samples, and for each KL sample (the `n`
    samples when drawn at temperature 1, else one more sample at temperature 1) the per-token KL(model ||
    reference) and the model's entropy over the tokens it sampled before stopping (the stop token not scored)."""

    greedy: list[str] | None
    samples: list[list[str]]
    kl: list[list[list[float]]] | None = None
    entropy: list[list[list[float]]] | None = None


def _forward_kwargs(model) -> tuple[str, dict]:
    """(the forward argument a KV cache goes in: `cache` in recent transformers, else `past_key_values`; extra
    arguments: `logits_to_keep=1` where the model takes it, so that the prefill computes one row of logits)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), ({"logits_to_keep": 1} if "logits_to_keep" in params
                                                                  else {})


def _next_logits(model, input_ids, attention_mask, position_ids, cache, kwargs: tuple[str, dict]) -> torch.Tensor:
    """The float logits of each row's next token, the KV cache extended in place."""
    cache_kw, extra = kwargs
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                **extra, **{cache_kw: cache})
    return out.logits[:, -1].float()


def top_p_filter(scores: torch.Tensor, top_p: float | torch.Tensor) -> torch.Tensor:
    """HF's `TopPLogitsWarper`: keep the smallest set of tokens whose probability sums to >= top_p (at least one);
    `top_p` one value or one per row."""
    sorted_logits, sorted_idx = torch.sort(scores, descending=False)
    threshold = 1 - top_p[:, None] if isinstance(top_p, torch.Tensor) else 1 - top_p
    remove = sorted_logits.softmax(-1).cumsum(-1) <= threshold
    remove[..., -1:] = False
    return scores.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))


def repetition_penalize(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF's `RepetitionPenaltyLogitsProcessor`: every token already in the row (prompt, padding included) has its
    logit divided by `penalty` (multiplied when negative)."""
    picked = torch.gather(scores, 1, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, seen, picked)


def _kl_entropy(logits: torch.Tensor, ref_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: KL(softmax(logits) || softmax(ref_logits)) and the entropy of softmax(logits)
    (`alignpipe.evaluation.metrics.token_kl_entropy`, which teacher-forced scoring uses)."""
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    if ref_logits is logits:  # the model against itself: KL 0 exactly
        return torch.zeros(logits.shape[0], device=logits.device), -(p * logp).sum(-1)
    logq = torch.log_softmax(ref_logits, -1)
    return (p * (logp - logq)).sum(-1).clamp_min(0.0), -(p * logp).sum(-1)


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows_per_prompt: int,
           temperatures: Sequence[float], top_ps: Sequence[float], max_new_tokens: int, stop_ids: Sequence[int],
           pad_id: int, generator: torch.Generator | None = None, repetition_penalty: float = 1.0,
           reference=None, kl_rows: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                 torch.Tensor | None, torch.Tensor | None]:
    """Decode `rows_per_prompt` rows for each left-padded prompt from one prefill: the prompt's KV cache is
    repeated for its rows, then all rows decode together, one token a step, until every row has stopped.

    Row r of a prompt (r < rows_per_prompt) decodes greedily when `temperatures[r]` is 0, else samples at that
    temperature and `top_ps[r]` (from `generator`); `repetition_penalty` applies to the greedy rows (HF `generate`
    applies the model's to greedy decoding). For the rows `kl_rows` (indices r), the model's logits at each step
    are compared with `reference`'s on the same tokens (its own prefill and cache, fed the sampled tokens in
    lockstep; `reference` = `model` or None: KL 0, entropy only).

    Returns (tokens [N, T] with `pad_id` after a row's stop token, N = prompts x rows_per_prompt; kl and entropy
    [P x len(kl_rows), T]; scored [same], True for the tokens sampled before the row stopped) — the last three None
    without `kl_rows`."""
    device = input_ids.device
    R, N = rows_per_prompt, input_ids.shape[0] * rows_per_prompt
    fwd = _forward_kwargs(model)
    from transformers import DynamicCache

    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    position = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    cache = DynamicCache(config=model.config)
    logits = _next_logits(model, input_ids, attention_mask, position, cache, fwd)
    temps = torch.tensor(list(temperatures), dtype=torch.float32, device=device).repeat(input_ids.shape[0])
    greedy = temps == 0
    sampled = (~greedy).nonzero().squeeze(-1)
    tops = torch.tensor(list(top_ps), dtype=torch.float32, device=device).repeat(input_ids.shape[0])[sampled]
    filter_top_p = bool((tops < 1.0).any())
    if R > 1:
        cache.batch_repeat_interleave(R)
        logits = logits.repeat_interleave(R, 0)
    mask = attention_mask.repeat_interleave(R, 0)
    last = position[:, -1:].repeat_interleave(R, 0)
    seen = input_ids.repeat_interleave(R, 0) if repetition_penalty != 1.0 and bool(greedy.any()) else None

    kl_idx = None
    ref_logits = ref_cache = None
    if kl_rows:
        kl_idx = (torch.arange(input_ids.shape[0], device=device)[:, None] * R
                  + torch.tensor(list(kl_rows), device=device)[None, :]).reshape(-1)
        if reference is not None and reference is not model:
            ref_cache = DynamicCache(config=reference.config)
            ref_kw = _forward_kwargs(reference)
            ref_logits = _next_logits(reference, input_ids, attention_mask, position, ref_cache, ref_kw)
            if len(kl_rows) > 1:
                ref_cache.batch_repeat_interleave(len(kl_rows))
                ref_logits = ref_logits.repeat_interleave(len(kl_rows), 0)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    tokens, kls, ents, scored = [], [], [], []
    pad = torch.tensor(pad_id, dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        nxt = torch.empty(N, dtype=torch.long, device=device)
        if bool(greedy.any()):
            g = logits[greedy]
            if seen is not None:
                g = repetition_penalize(g, seen[greedy], repetition_penalty)
            nxt[greedy] = g.argmax(-1)
        if sampled.numel():
            scores = logits[sampled] / temps[sampled, None]
            if filter_top_p:
                scores = torch.where(tops[:, None] < 1.0, top_p_filter(scores, tops), scores)
            nxt[sampled] = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(-1)
        nxt = torch.where(done, pad, nxt)
        stopped = torch.isin(nxt, stops)
        if kl_idx is not None:
            own = logits[kl_idx]
            kl, ent = _kl_entropy(own, own if ref_logits is None else ref_logits)
            kls.append(kl)
            ents.append(ent)
            scored.append(~(done[kl_idx] | stopped[kl_idx]))
        tokens.append(nxt)
        done = done | stopped
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(N, 1)], 1)
        last = last + 1
        if seen is not None:
            seen = torch.cat([seen, nxt[:, None]], 1)
        logits = _next_logits(model, nxt[:, None], mask, last, cache, fwd)
        if ref_cache is not None:
            ref_logits = _next_logits(reference, nxt[kl_idx, None], mask[kl_idx], last[kl_idx], ref_cache, ref_kw)
    out = torch.stack(tokens, 1)
    if kl_idx is None:
        return out, None, None, None
    return out, torch.stack(kls, 1), torch.stack(ents, 1), torch.stack(scored, 1)


class VLLMGenerator:
    backend = "vllm"

    def __init__(self, model_path: str, tokenizer, trust_remote_code: bool = False):
        from vllm import LLM  # noqa: PLC0415 - optional GPU dependency

        from transformers import GenerationConfig

        self.tokenizer = tokenizer
        self.llm = LLM(model=model_path, trust_remote_code=trust_remote_code, gpu_memory_utilization=0.5)
        try:
            gen_config = GenerationConfig.from_pretrained(model_path)
        except (OSError, ValueError):  # no generation_config.json: the tokenizer's EOS only
            gen_config = None
        self.stop_ids = stop_token_ids(gen_config, tokenizer)

    def generate(self, prompts: Sequence, n: int = 1, temperature: float = 0.0, max_new_tokens: int = 64,
                 top_p: float = 1.0, seed: int = 0) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(**vllm_sampling_kwargs(n, temperature, top_p, max_new_tokens, seed, self.stop_ids))
        results = self.llm.generate([{"prompt_token_ids": encode_prompt(self.tokenizer, p)} for p in prompts], params)
        return [[o.text.strip() for o in r.outputs] for r in results]


def vllm_usable() -> bool:
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def make_generator(model_uri: str, backend: str = "auto", batch_size: int = 64, trust_remote_code: bool = False):
    """A generator for a model location; `auto` picks vLLM when installed and a GPU is present."""
    from alignpipe import models

    if backend == "vllm" or (backend == "auto" and vllm_usable()):
        if not vllm_usable():
            raise RuntimeError("backend=vllm needs the `gpu` extra (vllm) and a CUDA GPU (use backend: hf)")
        path = models.resolve(model_uri)
        return VLLMGenerator(path, models.load_tokenizer(path, trust_remote_code), trust_remote_code)
    model, tok = models.load_policy(model_uri, trust_remote_code=trust_remote_code)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return HFGenerator(model, tok, batch_size=batch_size)
