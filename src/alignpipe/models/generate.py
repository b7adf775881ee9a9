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
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence

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
        was_training = model.training
        model.eval()
        side = tok.padding_side
        tok.padding_side = "left"
        encoded = self.encode_many(prompts)
        stops = stop_token_ids(getattr(model, "generation_config", None), tok)
        out: list[list[str]] = []
        gen = torch.Generator(device="cpu").manual_seed(seed)
        try:
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
        finally:
            tok.padding_side = side
            model.train(was_training)
        return out


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
