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
