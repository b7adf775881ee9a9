"""The embedded tiny model: a small Qwen2 causal LM and a character-level tokenizer, built locally.

Nothing is downloaded: the tokenizer is character level (Qwen2's byte-level BPE with no merges,
plus the ChatML special tokens), and the model is randomly
initialised from a Qwen2 config with a fixed seed. The same seed gives byte-identical weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

PAD, EOS, BOS = "<|pad|>", "<|im_end|>", "<|im_start|>"
SPECIAL = [PAD, EOS, BOS]

# ChatML with generation markers, so TRL's assistant_only_loss can find assistant tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Defaults of the embedded model (~0.5M parameters); calibrated for the arithmetic demo.
TINY_DEFAULTS = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                     intermediate_size=512)


def build_tokenizer() -> Qwen2Tokenizer:
    """Character-level tokenizer: Qwen2's byte-level BPE with an empty merge list.

    Every byte is one token, so digits, operators and letters tokenize one character at a time.
    It is a plain `Qwen2Tokenizer`, so `AutoTokenizer.from_pretrained` reloads it identically.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL + sorted(alphabet))}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token=EOS, pad_token=PAD,
                         additional_special_tokens=[BOS], padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_config(vocab_size: int, **overrides) -> Qwen2Config:
    params = {**TINY_DEFAULTS, **overrides}
    return Qwen2Config(
        vocab_size=vocab_size,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        **params,
    )


def build_tiny_model(seed: int = 0, **overrides) -> tuple[Qwen2ForCausalLM, Qwen2Tokenizer]:
    """A freshly initialised tiny causal LM and its tokenizer, deterministic for `seed`."""
    tokenizer = build_tokenizer()
    config = build_config(len(tokenizer), **overrides)
    gen = torch.random.fork_rng(devices=[])
    with gen:
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model, tokenizer


def save_tiny_model(output_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """Build the tiny model and save it (safetensors + tokenizer) to `output_dir`."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_tiny_model(seed=seed, **overrides)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
