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


# --------------------------------------------------------------------------------------------------
# A tiny model with Llama-3's generation properties (for tests of generation and tokenisation)
# --------------------------------------------------------------------------------------------------

L3_EOT, L3_EOS, L3_BOS, L3_PAD = "<|eot_id|>", "<|end_of_text|>", "<|begin_of_text|>", "<|finetune_right_pad_id|>"
L3_HEADERS = ["<|start_header_id|>", "<|end_header_id|>"]
#: The turn-end token first (id 0), then EOS, BOS, padding and the header markers.
L3_SPECIAL = [L3_EOT, L3_EOS, L3_BOS, L3_PAD, *L3_HEADERS]

# Llama-3's chat template (BOS written by the template, each turn ends with <|eot_id|>, not with EOS),
# with generation markers for assistant-only loss.
L3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def build_llama3_like_tokenizer():
    """Character-level tokenizer with Llama-3's special-token layout: EOS `<|end_of_text|>`, turns ending with
    `<|eot_id|>`, and a BOS `<|begin_of_text|>` that encoding plain text adds (as Llama-3's tokenizer does) and
    the chat template writes itself."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(L3_SPECIAL + alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single=f"{L3_BOS} $A", pair=f"{L3_BOS} $A {L3_BOS} $B", special_tokens=[(L3_BOS, vocab[L3_BOS])])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=L3_BOS, eos_token=L3_EOS, pad_token=L3_PAD,
                                  additional_special_tokens=[L3_EOT, *L3_HEADERS], padding_side="left")
    tok.chat_template = L3_CHAT_TEMPLATE
    return tok


def build_llama3_like_model(seed: int = 0, **overrides):
    """A tiny Llama causal LM whose generation config stops on two ids, `<|eot_id|>` (the turn end, not the
    tokenizer's EOS) and `<|end_of_text|>`, with a BOS and untied output embeddings, like Llama-3-8B-Instruct."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_llama3_like_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in L3_SPECIAL}
    params = {**TINY_DEFAULTS, "hidden_size": 64, "intermediate_size": 128, **overrides}
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=256, tie_word_embeddings=False,
                         bos_token_id=ids[L3_BOS], eos_token_id=[ids[L3_EOS], ids[L3_EOT]],
                         pad_token_id=ids[L3_PAD], **params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = ids[L3_BOS]
    model.generation_config.eos_token_id = [ids[L3_EOS], ids[L3_EOT]]
    model.generation_config.pad_token_id = ids[L3_PAD]
    return model, tokenizer


def save_llama3_like_model(output_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """Build the Llama-3-like tiny model and save it (safetensors + tokenizer) to `output_dir`."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_llama3_like_model(seed=seed, **overrides)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
