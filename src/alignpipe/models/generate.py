"""Text generation behind one interface: HF `generate` everywhere, vLLM when installed and a GPU is present.

`Generator.generate(prompts, n, temperature, max_new_tokens)` returns, for each prompt, `n`
completion strings. Prompts are plain strings or lists of chat messages (rendered with the
tokenizer's chat template, generation prompt added).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch


def render(tokenizer, prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


class HFGenerator:
    backend = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @torch.no_grad()
    def generate(self, prompts: Sequence, n: int = 1, temperature: float = 0.0, max_new_tokens: int = 64,
                 top_p: float = 1.0, seed: int = 0) -> list[list[str]]:
        tok, model = self.tokenizer, self.model
        was_training = model.training
        model.eval()
        side = tok.padding_side
        tok.padding_side = "left"
        texts = [render(tok, p) for p in prompts]
        out: list[list[str]] = []
        gen = torch.Generator(device="cpu").manual_seed(seed)
        try:
            for i in range(0, len(texts), self.batch_size):
                chunk = texts[i:i + self.batch_size]
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, num_return_sequences=n)
                if temperature > 0:
                    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                    kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
                else:
                    kwargs.update(do_sample=False)
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

        self.tokenizer = tokenizer
        self.llm = LLM(model=model_path, trust_remote_code=trust_remote_code, gpu_memory_utilization=0.5)

    def generate(self, prompts: Sequence, n: int = 1, temperature: float = 0.0, max_new_tokens: int = 64,
                 top_p: float = 1.0, seed: int = 0) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
        results = self.llm.generate([render(self.tokenizer, p) for p in prompts], params)
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
