"""Issue 15: `HFGenerator.generate_eval` decodes each prompt's greedy answer, its samples and the KL reference's
logits from one prefill — greedy answers identical to `generate`, samples reproducible under a seed and drawn from
the model's distribution, KL and entropy equal to a teacher-forced pass over the same tokens."""

from __future__ import annotations

import pytest
import torch

from alignpipe.evaluation.metrics import token_kl_entropy
from alignpipe.models.generate import HFGenerator, decode, stop_token_ids, top_p_filter
from alignpipe.models.tiny import L3_EOT, build_llama3_like_model, build_tiny_model

PROMPTS = [[{"role": "user", "content": f"{a}+{b}="}] for a, b in
           [(1, 2), (12, 30), (7, 99), (45, 5), (0, 0), (88, 11), (3, 41), (20, 9), (64, 64), (5, 17), (31, 2)]]
PROMPTS += ["7+5=", "123+4="]  # plain text: the tokenizer's special tokens, other lengths


@pytest.fixture(scope="module")
def pair():
    """Two tiny models initialised wide (initializer_range 0.4), so that greedy answers vary from prompt to prompt
    (at the default 0.02 nearly all are empty or one repeated character) and some stop before max_new_tokens."""
    a, tok = build_tiny_model(0, initializer_range=0.4)
    b, _ = build_tiny_model(1, initializer_range=0.4)
    return a.eval(), b.eval(), tok


def test_greedy_answers_are_those_of_generate(pair):
    """Same prompt batches (batch_size 4: several batches, different padding), the greedy row decoded beside samples
    and KL rows: the same answers as `generate`, which decodes the greedy rows alone with HF `generate`."""
    a, b, tok = pair
    gen = HFGenerator(a, tok, batch_size=4)
    expected = [o[0] for o in gen.generate(PROMPTS, n=1, temperature=0.0, max_new_tokens=8)]
    assert len(set(expected)) > 8 and min(map(len, expected)) < 8  # varied; some stop early
    out = gen.generate_eval(PROMPTS, n=3, temperature=0.8, max_new_tokens=8, seed=5, kl=True, kl_reference=b)
    assert out.greedy == expected
    assert [len(s) for s in out.samples] == [3] * len(PROMPTS)
    alone = gen.generate_eval(PROMPTS, n=0, max_new_tokens=8)
    assert alone.greedy == expected and alone.kl is None and alone.samples == [[]] * len(PROMPTS)


def test_greedy_applies_the_models_repetition_penalty_as_generate_does():
    """HF `generate` applies the generation config's repetition_penalty to greedy decoding (not to our sampling)."""
    model, tok = build_llama3_like_model()
    model.generation_config.repetition_penalty = 1.8
    gen = HFGenerator(model, tok, batch_size=8)
    expected = [o[0] for o in gen.generate(PROMPTS, max_new_tokens=10)]
    model.generation_config.repetition_penalty = 1.0
    plain = [o[0] for o in gen.generate(PROMPTS, max_new_tokens=10)]
    assert expected != plain  # the penalty changes answers: the check below is not vacuous
    model.generation_config.repetition_penalty = 1.8
    assert gen.shares_prefill()
    assert gen.generate_eval(PROMPTS, n=2, temperature=1.0, max_new_tokens=10).greedy == expected


def test_a_generation_config_decode_does_not_reproduce_is_left_to_generate(pair):
    a, _, tok = pair
    gen = HFGenerator(a, tok)
    assert gen.shares_prefill()
    a.generation_config.no_repeat_ngram_size = 2
    try:
        assert not gen.shares_prefill()
    finally:
        a.generation_config.no_repeat_ngram_size = 0


def test_samples_are_reproducible_under_a_seed(pair):
    a, b, tok = pair
    gen = HFGenerator(a, tok, batch_size=4)
    first = gen.generate_eval(PROMPTS, n=4, temperature=1.0, max_new_tokens=6, seed=3, kl=True, kl_reference=b)
    again = gen.generate_eval(PROMPTS, n=4, temperature=1.0, max_new_tokens=6, seed=3, kl=True, kl_reference=b)
    other = gen.generate_eval(PROMPTS, n=4, temperature=1.0, max_new_tokens=6, seed=4, kl=True, kl_reference=b)
    assert first == again
    assert first.samples != other.samples
    assert first.greedy == other.greedy
    # the global torch RNG is neither read nor reseeded
    torch.manual_seed(0)
    state = torch.get_rng_state()
    gen.generate_eval(PROMPTS[:2], n=2, max_new_tokens=3, seed=9)
    assert torch.equal(state, torch.get_rng_state())


def test_samples_follow_the_models_distribution_and_top_p(pair):
    """4000 samples of one prompt: first-token frequencies match softmax(logits / T); with top_p only the nucleus."""
    a, _, tok = pair
    gen = HFGenerator(a, tok, batch_size=1)
    ids = torch.tensor([gen.encode(PROMPTS[0])])
    with torch.no_grad():
        logits = a(input_ids=ids).logits[0, -1].float()
    n, temperature = 4000, 0.7
    enc_mask = torch.ones_like(ids)
    stops = stop_token_ids(a.generation_config, tok)
    g = torch.Generator().manual_seed(0)
    out, *_ = decode(a, ids, enc_mask, n, [temperature] * n, [1.0] * n, 1, stops, tok.pad_token_id, g)
    freq = torch.bincount(out[:, 0], minlength=logits.shape[0]).float() / n
    probs = torch.softmax(logits / temperature, -1)
    assert 0.5 * (freq - probs).abs().sum() < 0.05  # total variation; ~0.02 expected from 4000 draws
    temperature = 3.0  # flatter, so that the nucleus holds several tokens
    nucleus = top_p_filter(logits[None] / temperature, 0.6)[0] > float("-inf")
    assert 3 <= int(nucleus.sum()) < logits.shape[0] // 2
    out, *_ = decode(a, ids, enc_mask, 500, [temperature] * 500, [0.6] * 500, 1, stops, tok.pad_token_id, g)
    assert nucleus[out[:, 0]].all() and len(set(out[:, 0].tolist())) >= 3


def _teacher_forced(model, reference, prompt_ids: list[int], completion: list[int]):
    seq = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        lc, lr = model(input_ids=seq).logits[0].float(), reference(input_ids=seq).logits[0].float()
    sl = slice(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(completion))
    return token_kl_entropy(lc[sl], lr[sl])


def test_kl_and_entropy_equal_a_teacher_forced_pass_over_the_sampled_tokens(pair):
    """The KL rows' per-token KL(model || reference) and entropy, computed during decoding with the reference fed the
    sampled tokens in lockstep, equal a separate forward pass of both models over prompt + sampled tokens; the stop
    token is not scored, and a model against itself has KL 0."""
    a, b, tok = pair
    gen = HFGenerator(a, tok)
    prompts = PROMPTS[:5]
    side = tok.padding_side
    tok.padding_side = "left"
    enc = tok.pad({"input_ids": gen.encode_many(prompts)}, padding=True, return_tensors="pt")
    tok.padding_side = side
    stops = stop_token_ids(a.generation_config, tok)
    rows = [0.0, 1.0, 1.0, 1.0]  # greedy, three KL samples
    out, kl, ent, scored = decode(a, enc["input_ids"], enc["attention_mask"], 4, rows, [1.0] * 4, 6, stops,
                                  tok.pad_token_id, torch.Generator().manual_seed(1), reference=b, kl_rows=[1, 2, 3])
    assert kl.shape == ent.shape == scored.shape == (len(prompts) * 3, out.shape[1])
    checked = 0
    for p, prompt in enumerate(prompts):
        p_ids = gen.encode(prompt)
        for k, r in enumerate((1, 2, 3)):
            row, krow = p * 4 + r, p * 3 + k
            tokens = out[row].tolist()
            first_stop = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
            assert scored[krow].tolist() == [i < first_stop for i in range(len(tokens))]
            if first_stop == 0:
                continue
            want_kl, want_ent = _teacher_forced(a, b, p_ids, tokens[:first_stop])
            assert kl[krow][scored[krow]] == pytest.approx(want_kl, abs=2e-4)
            assert ent[krow][scored[krow]] == pytest.approx(want_ent, abs=2e-4)
            checked += 1
    assert checked >= 8
    _, kl_self, ent_self, scored_self = decode(a, enc["input_ids"], enc["attention_mask"], 2, [1.0, 1.0], [1.0, 1.0], 6,
                                               stops, tok.pad_token_id, torch.Generator().manual_seed(1),
                                               reference=a, kl_rows=[0, 1])
    assert (kl_self == 0).all() and (ent_self[scored_self] > 0).all()


def test_turn_end_stops_every_row():
    """Llama-3-like: `<|eot_id|>` (not EOS) ends the turn for greedy and sampled rows alike."""
    model, tok = build_llama3_like_model()
    chain = [tok.convert_tokens_to_ids(t) for t in ["Ċ", "4", "2", L3_EOT, "<|start_header_id|>", "u", "s", "e"]]
    with torch.no_grad():  # rig a bigram chain (as tests/models/test_generate.py does): after chain[i], chain[i+1]
        for param in model.model.layers.parameters():
            param.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.zero_()
        head.zero_()
        for k, (cur, nxt) in enumerate(zip(chain, chain[1:] + chain[-1:])):
            emb[cur, k], head[nxt, k] = 1.0, 50.0
    chat = [{"role": "user", "content": "21+21="}]
    out = HFGenerator(model, tok).generate_eval([chat, chat], n=2, temperature=1.0, max_new_tokens=12, seed=1)
    assert out.greedy == ["42", "42"] and out.samples == [["42", "42"], ["42", "42"]]
