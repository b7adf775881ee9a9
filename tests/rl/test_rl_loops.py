"""SFT<->RL loops and rollout replay on the engine (issue 12): relift, replay, hints — on the tiny model, seeded."""

from __future__ import annotations

import pytest
import torch

from alignpipe import rl
from alignpipe.config import RLConfig
from alignpipe.models import build_tiny_model
from alignpipe.rewards import completion_text
from alignpipe.rl import loops, state


def exact_answer(prompts, completions, answer, **kwargs):
    """1 when the completion is exactly the answer: the untrained tiny model never writes it."""
    return [float(completion_text(c).strip() == str(a)) for c, a in zip(completions, answer)]


def _rows(n=100):
    return [{"prompt": [{"role": "user", "content": f"{a}+{b}="}], "answer": str(a + b)}
            for a in range(10) for b in range(10)][:n]


def _cfg(steps, tmp=None, **engine_settings):
    return RLConfig(model="tiny", train_data="unused", output_dir=str(tmp or "unused"), tracking=False,
                    algorithm="grpo", engine="alignpipe", generation=dict(max_new_tokens=6, temperature=1.0),
                    grpo=dict(num_generations=4), engine_settings=engine_settings,
                    training=dict(max_steps=steps, learning_rate=1e-3, batch_size=16, lr_scheduler="constant", seed=0,
                                  save_steps=1 if tmp else None, save_minutes=None))


RELIFT = dict(every=3, buffer=8, sft_steps=3, learning_rate=3e-3, batch_size=8)


def test_reference_column_order():
    assert loops.reference_text({"completion": "c", "solution": "s", "answer": "a"}) == "c"
    assert loops.reference_text({"completion": None, "solution": "s", "answer": "a"}) == "s"
    assert loops.reference_text({"answer": 7}) == "7"
    assert loops.reference_text({"completion": [{"role": "user", "content": "q"},
                                                {"role": "assistant", "content": "done"}]}) == "done"
    assert loops.reference_text({"prompt": "x"}) is None


def test_relift_runs_the_scheduled_sft_steps_and_the_demonstrations_become_likely(monkeypatch):
    cfg = _cfg(6, relift=RELIFT)
    model, tok = build_tiny_model(0)
    rows = _rows()
    demos_seen: list = []
    original = loops.ReliftBuffer.take

    def take(self, rows_):
        out = original(self, rows_)
        demos_seen.extend(out)
        return out

    monkeypatch.setattr(loops.ReliftBuffer, "take", take)
    before_model, _ = build_tiny_model(0)
    result = rl.train(cfg, model, tok, rows, [exact_answer], [1.0])
    h = result.history
    assert all(e["reward"] == 0.0 for e in h)  # every rollout failed: 4 prompts join the buffer each step
    assert [e["relift/buffer"] for e in h] == [4, 8, 4, 4, 8, 4]
    # flush when the buffer holds 8 (steps 2, 5) or every 3 steps (3, 6): 4 flushes x 3 SFT steps
    flushed = [int(e["step"]) for e in h if "relift/nll" in e]
    assert flushed == [2, 3, 5, 6]
    assert [e["relift/sft_steps"] for e in h] == [0, 3, 6, 6, 9, 12]
    assert len(demos_seen) == 24 and all(d[1] == r["answer"] for d in demos_seen for r in rows if r["prompt"] == d[0])
    before = loops.mean_nll(before_model, tok, demos_seen)
    after = loops.mean_nll(result.model, tok, demos_seen)
    assert after < 0.6 * before, (before, after)  # the policy's NLL of the demonstrations fell
    assert h[-1]["relift/nll"] < h[1]["relift/nll"]


class Killed(Exception):
    pass


def test_relift_buffer_survives_a_resume(tmp_path, monkeypatch):
    """Stopped after checkpoint 1 (4 prompts buffered, none flushed yet), the resumed run restores the buffer and the
    SFT optimizer and ends with the weights of an uninterrupted run."""
    from alignpipe import checkpoints

    monkeypatch.setenv("ALIGNPIPE_CHECKPOINT_DIR", str(tmp_path / "local"))
    cfg = _cfg(3, tmp=tmp_path / "out", relift=RELIFT)

    def run(store_dir):
        monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / store_dir))
        model, tok = build_tiny_model(0)
        return rl.train(cfg, model, tok, _rows(), [exact_answer], [1.0],
                        ckpt=checkpoints.Checkpoints("rl", cfg, "k" * 16))

    want = run("ref")
    original = state.EngineCheckpoints.save
    saved: list[dict] = []

    def save_then_stop(self, done, st):
        saved.append(st)
        original(self, done, st)
        raise Killed(done)

    monkeypatch.setattr(state.EngineCheckpoints, "save", save_then_stop)
    with pytest.raises(Killed):
        run("store")
    assert len(saved[0]["loops"]["relift"]["buffer"]["items"]) == 4
    monkeypatch.setattr(state.EngineCheckpoints, "save", original)
    got = run("store")
    # step 2: the 4 restored + 4 new prompts fill the buffer (8): flushed; step 3: every 3 -> flushed again
    assert [e["relift/buffer"] for e in got.history] == [4, 8, 4]
    assert got.history[-1]["relift/sft_steps"] == 6
    w, g = want.model.state_dict(), got.model.state_dict()
    assert [n for n in w if not torch.equal(w[n], g[n])] == []


# ---- replay ---------------------------------------------------------------------------------------------------
def _group(index, step, rewards, k=2):
    from alignpipe.rl.rollout import Rollout

    ro = Rollout(torch.ones(k, 2, dtype=torch.long), torch.ones(k, 2, dtype=torch.long),
                 torch.ones(k, 3, dtype=torch.long), torch.ones(k, 3), ["x"] * k)
    raw = torch.tensor(rewards, dtype=torch.float)
    return loops.ReplayGroup(index, step, ro, torch.zeros(k, 3), torch.zeros(k, 3), raw.clone(), raw)


def test_replay_buffer_admission_and_staleness():
    from alignpipe.config import ReplaySettings

    buf = loops.ReplayBuffer(ReplaySettings(share=0.5, max_staleness=2))
    assert buf.slots(8) == 4 and buf.slots(3) == 1 and loops.ReplayBuffer(ReplaySettings(share=0.2)).slots(4) == 0
    assert not buf.admit(_group(0, 0, [1.0, 1.0]))  # all equal: no signal, not kept
    assert not buf.admit(_group(1, 0, [0.0, 0.0]))
    assert buf.admit(_group(2, 0, [0.0, 1.0]))
    assert buf.admit(_group(3, 1, [0.2, 0.5]))
    assert buf.admit(_group(4, 2, [0.0, 0.5]))
    assert buf.admit(_group(2, 2, [1.0, 0.5]))  # a newer group of prompt 2 replaces its older one
    assert sorted((g.index, g.step) for g in buf.groups) == [(2, 2), (3, 1), (4, 2)]
    now = loops.ReplayBuffer(ReplaySettings(share=0.5, max_staleness=2))
    now.admit(_group(9, 4, [0.0, 1.0]))
    assert now.take(1, 4) == [] and len(now.groups) == 1  # a group is not replayed into its own step
    buf.admit(_group(5, 0, [0.0, 1.0]))
    got = buf.take(2, 3)  # step 3: the step-0 group is 3 steps old > max_staleness: evicted; freshest first
    assert [(g.index, g.step) for g in got] == [(4, 2), (2, 2)]  # same step: admission order
    assert [(g.index, g.step) for g in buf.groups] == [(3, 1)]  # replayed groups leave the buffer
    import io

    saved = io.BytesIO()
    torch.save(buf.state_dict(), saved)  # the buffer travels in the engine checkpoint
    back = loops.ReplayBuffer(ReplaySettings(share=0.5, max_staleness=2))
    back.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=False))
    assert [(g.index, g.step, g.raw.tolist()) for g in back.groups] == [(3, 1, [pytest.approx(0.2), 0.5])] and back.replayed == 2
    assert [g.index for g in buf.take(4, 3)] == [3] and buf.replayed == 3
    buf.admit(_group(6, 3, [0.0, 1.0]))
    assert buf.take(4, 6) == [] and buf.groups == []  # 3 steps old: dropped


def digit_share(prompts, completions, **kwargs):
    return [sum(ch.isdigit() for ch in completion_text(c)) / 6 for c in completions]


def test_replayed_groups_are_trained_on_and_the_policy_still_learns(monkeypatch):
    generated: list[int] = []
    original = rl.rollout.sample

    def counting_sample(model, tok, prompts, k, *a, **kw):
        generated.append(len(prompts))
        return original(model, tok, prompts, k, *a, **kw)

    monkeypatch.setattr(rl.rollout, "sample", counting_sample)
    cfg = _cfg(10, replay=dict(share=0.5, max_staleness=1), epochs=2, minibatches=2)
    cfg.training.batch_size, cfg.training.learning_rate = 32, 3e-3  # 8 prompts x 4
    model, tok = build_tiny_model(0)
    result = rl.train(cfg, model, tok, _rows(), [digit_share], [1.0])
    h = result.history
    replayed = [int(e["replay/groups"]) for e in h]
    assert replayed[0] == 0 and all(0 <= r <= 4 for r in replayed) and sum(replayed) >= 20, replayed
    assert generated == [8 - r for r in replayed]  # replayed groups take the place of fresh prompts in the update
    assert [e["sampler/replay_share"] for e in h] == [r / 8 for r in replayed]
    assert h[-1]["replay/replayed_total"] == sum(replayed)
    assert h[-1]["optimizer_steps"] == 10 * 2 * 2
    r = [e["reward"] for e in h]
    assert r[0] < 0.15 and max(r[-2:]) > 0.25, r


# ---- hints ----------------------------------------------------------------------------------------------------
def starts_with_target(prompts, completions, target, **kwargs):
    """1 when the full answer starts with the row's `target`: the untrained tiny model never writes it unaided."""
    return [float(completion_text(c).startswith(t)) for c, t in zip(completions, target)]


def test_hints_keep_verified_hinted_completions_and_sft_makes_them_likely(monkeypatch):
    # answer "qr.." with a 2-char hint: the verifier (target = first 2 chars) accepts every hinted completion of the
    # even rows; odd rows' target "@@" is never produced: nothing kept for them
    words = ["qrst", "mnop", "wxyz", "hijk", "bcde", "lmno", "uvwx", "fghi"]
    rows = [{"prompt": f"word {n}:", "answer": words[n % 8], "target": words[n % 8][:2] if n % 2 == 0 else "@@"}
            for n in range(40)]
    hinted: list[tuple] = []
    original = rl.rollout.sample

    def spy(model, tok, prompts, k, *a, prefixes=None, **kw):
        if prefixes is not None:
            hinted.append((list(prompts), list(prefixes)))
        return original(model, tok, prompts, k, *a, prefixes=prefixes, **kw)

    monkeypatch.setattr(rl.rollout, "sample", spy)
    kept: list[tuple] = []
    run_sft = loops.SFTer.run

    def sft_spy(self, model, tok, examples, *a, **kw):
        kept.extend(examples)
        return run_sft(self, model, tok, examples, *a, **kw)

    monkeypatch.setattr(loops.SFTer, "run", sft_spy)
    cfg = _cfg(4, hints=dict(every=2, fraction=0.5, sft_steps=4, learning_rate=3e-3, batch_size=8))
    model, tok = build_tiny_model(0)
    result = rl.train(cfg, model, tok, rows, [starts_with_target], [1.0])
    h = result.history
    assert all(e["reward"] == 0.0 for e in h)  # never solved unaided
    assert [int(e["step"]) for e in h if "hints/kept" in e] == [2, 4]
    assert len(hinted) == 2
    by_prompt = {r["prompt"]: r for r in rows}
    expected = 0
    for prompts, prefixes in hinted:
        assert len(prompts) == 4  # hints.prompts default: the prompts of one step
        assert prefixes == [by_prompt[p]["answer"][:2] for p in prompts]  # ceil(0.5 x 4 chars)
        expected += 4 * sum(by_prompt[p]["target"] != "@@" for p in prompts)  # k = 4 completions each
    assert expected > 0 and len(kept) == expected == h[-1]["hints/kept_total"]
    assert sum(e["hints/kept"] for e in h if "hints/kept" in e) == expected
    assert h[-1]["hints/sft_steps"] == 4 * sum(1 for e in h if e.get("hints/kept", 0) > 0)
    assert all(not p.endswith(a[:2]) and a.startswith(by_prompt[p]["answer"][:2]) for p, a in kept)  # un-hinted
    before_model, _ = build_tiny_model(0)
    before = loops.mean_nll(before_model, tok, kept)
    after = loops.mean_nll(result.model, tok, kept)
    assert after < 0.7 * before, (before, after)  # the un-hinted kept completions became likelier


def test_all_loops_resume_to_the_same_weights(tmp_path, monkeypatch):
    """relift + hints + replay together, stopped after checkpoint 2 and resumed: the replay buffer, the relift
    buffer, both SFT optimizers and the hint counters come back, and the run ends with the uninterrupted run's
    weights and metrics."""
    from alignpipe import checkpoints

    monkeypatch.setenv("ALIGNPIPE_CHECKPOINT_DIR", str(tmp_path / "local"))
    cfg = _cfg(4, tmp=tmp_path / "out", relift=dict(RELIFT, every=2, buffer=100),
               hints=dict(every=3, fraction=0.5, sft_steps=2, learning_rate=3e-3),
               replay=dict(share=0.5, max_staleness=2))
    cfg.sampler.success_threshold = 0.5

    def run(store_dir):
        monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / store_dir))
        model, tok = build_tiny_model(0)
        return rl.train(cfg, model, tok, _rows(), [digit_share], [1.0],
                        ckpt=checkpoints.Checkpoints("rl", cfg, "k" * 16))

    want = run("ref")
    original = state.EngineCheckpoints.save
    saved: list[dict] = []

    def save_then_stop(self, done, st):
        original(self, done, st)
        if done == 2:
            saved.append(st)
            raise Killed(done)

    monkeypatch.setattr(state.EngineCheckpoints, "save", save_then_stop)
    with pytest.raises(Killed):
        run("store")
    looped = saved[0]["loops"]
    assert looped["replay"]["groups"] and looped["relift"]["sft"]["steps"] == 3 and "hints" in looped
    monkeypatch.setattr(state.EngineCheckpoints, "save", original)
    got = run("store")
    assert [h["step"] for h in got.history] == [1.0, 2.0, 3.0, 4.0]
    for key in ("reward", "replay/groups", "relift/buffer", "relift/sft_steps", "hints/sft_steps"):
        assert [h[key] for h in got.history] == [h[key] for h in want.history], key
    assert sum(h["replay/groups"] for h in got.history) > 0
    w, g = want.model.state_dict(), got.model.state_dict()
    assert [n for n in w if not torch.equal(w[n], g[n])] == []
