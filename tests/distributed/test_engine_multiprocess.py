"""alignpipe's own RL engine on two processes (issue 11, multi-process): `alignpipe stage rl` with `engine: alignpipe`
and `distributed.gpus: 2` re-launches itself under torchrun (gloo on the CPU); the ranks train data-parallel
(`alignpipe.rl.parallel`), rank 0 tracks and publishes.

Every launch runs inside a loopback-only network namespace (tests/netns.py). Probes reach the ranks through a
`sitecustomize` module on PYTHONPATH (torchrun sets RANK in each worker; the CLI and the agent have none).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import netns
from alignpipe.base import RESULT_MARKER

pytestmark = [pytest.mark.slow]

STEPS = 8
SAVE_AT = 4

#: A reward the freshly initialised tiny model can climb: the share of digits in a 6-token completion (~5% at first).
REWARDS = '''
def digit_share(prompts, completions, **kwargs):
    from alignpipe.rewards import completion_text

    return [sum(ch.isdigit() for ch in completion_text(c)) / 6 for c in completions]
'''

#: In each rank: the prompts it generates for (one line per draw) and a digest of the weights it saves; with
#: KILL_AFTER_CHECKPOINT=N every rank exits (status 3) as soon as checkpoint N is published.
PROBES = '''
import os
if os.environ.get("RANK") is not None:
    import hashlib, json
    from pathlib import Path
    probe, rank = Path(os.environ["PROBE_DIR"]), os.environ["RANK"]
    import alignpipe.models as m
    from alignpipe.rl import rollout, state
    _save, _sample, _checkpoint = m.save, rollout.sample, state.EngineCheckpoints.save

    def save(model, tokenizer, out_dir):
        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        (probe / f"digest-{rank}.txt").write_text(h.hexdigest())
        return _save(model, tokenizer, out_dir)

    def sample(model, tokenizer, prompts, *args, **kwargs):
        with open(probe / f"prompts-{rank}.jsonl", "a") as f:
            f.write(json.dumps([p[-1]["content"] for p in prompts]) + "\\n")
        return _sample(model, tokenizer, prompts, *args, **kwargs)

    def checkpoint(self, done, st):
        _checkpoint(self, done, st)
        if str(done) == os.environ.get("KILL_AFTER_CHECKPOINT"):
            os._exit(3)

    m.save, rollout.sample, state.EngineCheckpoints.save = save, sample, checkpoint
'''


def _require_netns() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"multi-process tests run only inside a loopback-only network namespace: {reason}")


def _prompts(path: Path) -> str:
    rows = [{"prompt": [{"role": "user", "content": f"{a}+{b}="}], "answer": str(a + b)}
            for a in range(10) for b in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _config(root: Path, out: Path) -> Path:
    cfg = {"model": "tiny", "output_dir": str(out), "train_data": _prompts(root / "prompts.jsonl"),
           "algorithm": "grpo", "engine": "alignpipe", "run_name": "engine-2-ranks",
           "generation": {"max_new_tokens": 6, "temperature": 1.0}, "grpo": {"num_generations": 8},
           "rewards": [{"name": "engine_rewards:digit_share"}],
           "engine_settings": {"epochs": 2, "minibatches": 2},
           # batch_size is per rank: 2 prompts x 8 completions on each, 4 prompts a step in all
           "training": {"max_steps": STEPS, "batch_size": 16, "learning_rate": 3e-3, "lr_scheduler": "constant",
                        "logging_steps": 1, "seed": 0, "save_steps": SAVE_AT, "save_minutes": None},
           "distributed": {"gpus": 2}}
    path = root / f"{out.name}.json"
    path.write_text(json.dumps(cfg))
    return path


def _launch(pod: Path, config: Path, state: Path, cache: Path, **env_extra: str) -> subprocess.CompletedProcess:
    """One "pod": `alignpipe stage rl` with its own temp, checkpoint and probe folders; state store and model cache
    as given."""
    hook, probe = pod / "hook", pod / "probe"
    for d in (hook, probe, pod / "t"):
        d.mkdir(parents=True)
    (hook / "engine_rewards.py").write_text(REWARDS)
    (hook / "sitecustomize.py").write_text(PROBES)
    env = {**os.environ, "ALIGNPIPE_CACHE_DIR": str(cache), "ALIGNPIPE_CHECKPOINT_DIR": str(pod / "ckpt"),
           "ALIGNPIPE_STATE_URI": str(state), "ALIGNPIPE_PROGRESS": "0", "ALIGNPIPE_LAUNCH_TIMEOUT_S": "300",
           "TMPDIR": str(pod / "t"), "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{pod}/mlflow.db",
           "PROBE_DIR": str(probe), **env_extra,
           "PYTHONPATH": os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)}
    cmd = netns.netns_command([sys.executable, "-m", "alignpipe.cli", "stage", "rl", "--config", str(config),
                               "--result", str(pod / "result.json")])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420, cwd=pod)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 2-rank run: (pod folder, completed process, model cache)."""
    _require_netns()
    root = tmp_path_factory.mktemp("engine-2-ranks")
    cache = root / "cache"
    proc = _launch(root / "pod", _config(root, root / "published" / "rl"), root / "state", cache)
    return root / "pod", proc, cache


def test_two_ranks_train_the_engine_in_step_and_rank0_tracks_and_publishes_once(reference):
    pod, proc, cache = reference
    probe, out = pod / "probe", pod.parent / "published" / "rl"
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"stage failed (rc {proc.returncode}):\n{logs[-6000:]}"
    for r in (0, 1):
        assert f"rl: rank {r} of 2 done" in proc.stderr, logs[-4000:]
    assert sum(RESULT_MARKER in ln for ln in proc.stdout.splitlines()) == 1

    # Each step the ranks generated for different prompts: each its own share of one global batch.
    drawn = [[json.loads(ln) for ln in (probe / f"prompts-{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(drawn[0]) == len(drawn[1]) == STEPS
    for a, b in zip(*drawn):
        assert len(a) == len(b) == 2 and not set(a) & set(b), (a, b)

    # Both ranks end with the same weights, and rank 0 published them once, complete.
    digests = [(probe / f"digest-{r}.txt").read_text() for r in (0, 1)]
    assert digests[0] == digests[1], "the ranks' weights differ after training"
    result = json.loads((pod / "result.json").read_text())
    assert result["lineage"]["world_size"] == "2" and result["lineage"]["engine"] == "alignpipe"
    assert Path(result["output"]) == out and (out / "MANIFEST.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["rl"]
    before = load_file(str(cache / "models" / "tiny-seed0" / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert sum(not before[k].equal(after[k]) for k in before) > len(before) // 2

    # The policy moved toward the reward (digits), measured over both ranks' completions.
    rewards = [h["reward"] for h in result["history"]]
    assert len(rewards) == STEPS
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.1, rewards
    assert result["metrics"]["train/optimizer_steps"] == STEPS * 2 * 2

    # One MLflow run (rank 0's), holding every step's metrics.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{pod}/mlflow.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1, [r.info.run_name for r in runs]
    history = client.get_metric_history(runs[0].info.run_id, "train/reward")
    assert [m.step for m in history] == list(range(1, STEPS + 1))
    assert [m.value for m in history] == pytest.approx(rewards)


def test_two_ranks_resume_from_a_checkpoint_with_the_weights_of_the_uninterrupted_run(reference, tmp_path):
    """Every rank exits once checkpoint SAVE_AT is published; the next pod (fresh checkpoint folder and temp, same
    state store) resumes on both ranks (policy, optimizer, sampler, each rank's RNG state) and ends with the
    uninterrupted run's weights, bit for bit (gloo on the CPU is deterministic)."""
    ref_pod, ref_proc, cache = reference
    assert ref_proc.returncode == 0, ref_proc.stderr[-3000:]
    config, state = _config(tmp_path, tmp_path / "published" / "rl"), tmp_path / "state"
    killed = _launch(tmp_path / "pod1", config, state, cache, KILL_AFTER_CHECKPOINT=str(SAVE_AT))
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert not (tmp_path / "published" / "rl").exists()
    assert list(state.glob(f"checkpoints/*/*/checkpoint-{SAVE_AT}/MANIFEST.json"))

    resumed = _launch(tmp_path / "pod2", config, state, cache)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    assert f"resuming from checkpoint {SAVE_AT}" in resumed.stderr
    drawn = (tmp_path / "pod2" / "probe" / "prompts-1.jsonl").read_text().splitlines()
    assert len(drawn) == STEPS - SAVE_AT  # rank 1 resumed too: it drew only the remaining steps
    want = (ref_pod / "probe" / "digest-0.txt").read_text()
    for r in (0, 1):
        assert (tmp_path / "pod2" / "probe" / f"digest-{r}.txt").read_text() == want, f"rank {r}"
    history = json.loads((tmp_path / "pod2" / "result.json").read_text())["history"]
    ref_history = json.loads((ref_pod / "result.json").read_text())["history"]
    assert [h["reward"] for h in history] == [h["reward"] for h in ref_history]


#: Run under torchrun (and imported in-process for the single-process reference): a fixed batch of 4 prompts x 4
#: completions with ragged lengths, the engine's mini-batch loss and gradient averaging on each rank's half of it.
WORKER = '''
import sys

import torch

from alignpipe.models import build_tiny_model
from alignpipe.rl import parallel, rollout
from alignpipe.rl.advantages import masked_whiten
from alignpipe.rl.engine import Plan, minibatch_loss
from alignpipe.rl.losses import LossInput
from alignpipe.rl.registry import AGGREGATIONS, KL_ESTIMATORS, LOSSES

K, GROUPS, P, T = 4, 4, 5, 6
CASES = [("ppo_clip", "token_mean"), ("ppo_clip", "seq_mean"), ("nft", "token_sum_norm")]


def batch():
    torch.manual_seed(0)
    model, tok = build_tiny_model(0)
    n = K * GROUPS
    lengths = torch.tensor([1, 6, 2, 5, 6, 6, 3, 6, 1, 1, 2, 2, 4, 6, 5, 6])  # rank 0 holds more tokens than rank 1
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    ro = rollout.Rollout(torch.randint(5, len(tok), (n, P)), torch.ones(n, P, dtype=torch.long),
                         torch.randint(5, len(tok), (n, T)), mask, [""] * n)
    with torch.no_grad():
        logp, _ = rollout.token_logprobs(model, ro, 1.0)
    noise = torch.randn(n, T)
    return dict(model=model, ro=ro, old=logp + 0.3 * noise, ref=logp - 0.1 * noise.abs(),
                adv=torch.randn(n)[:, None] * mask, scores=torch.rand(n))


def grads(b, rows, loss, aggregation, comm):
    model = b["model"]
    model.zero_grad(set_to_none=True)
    sub = b["ro"].select(rows)
    logp, ent = rollout.token_logprobs(model, sub, 1.0, entropy=True)
    p = Plan("grpo", loss, aggregation, "loss", False, False, True)
    li = LossInput(logp=logp, old_logp=b["old"][rows], advantages=b["adv"][rows], mask=sub.completion_mask,
                   scores=b["scores"][rows], group_size=K, ref_logp=b["ref"][rows], aggregation=aggregation,
                   max_tokens=T, options={"clip_eps": 0.2, "positive_threshold": 0.5})
    out, _, _ = minibatch_loss(li, p, LOSSES.get(loss), AGGREGATIONS.get(aggregation), KL_ESTIMATORS.get("k3"),
                               0.05, 0.01, ent, comm)
    out.backward()
    params = [q for q in model.parameters() if q.requires_grad]
    comm.average_grads(params)
    return {n: q.grad.clone() for n, q in model.named_parameters() if q.requires_grad}


if __name__ == "__main__":
    torch.set_num_threads(1)
    parallel.init()
    comm = parallel.Comm()
    b = batch()
    half = K * GROUPS // comm.world
    rows = torch.arange(comm.rank * half, (comm.rank + 1) * half)
    out = {f"{loss}/{agg}": grads(b, rows, loss, agg, comm) for loss, agg in CASES}
    x = b["old"][rows]
    out["whiten"] = masked_whiten(x, b["ro"].completion_mask[rows], all_sum=comm.all_sum)
    torch.save(out, f"{sys.argv[1]}/rank-{comm.rank}.pt")
'''


def test_the_two_rank_gradient_equals_the_single_process_gradient_over_the_same_batch(tmp_path):
    """Function level: each rank computes the engine's mini-batch loss on its half of a fixed batch (ragged lengths,
    so the ranks hold different token counts) and averages gradients; the result is the single-process gradient
    over the whole batch, for token_mean (token-weighted), seq_mean and token_sum_norm, with the KL and entropy
    terms; batch whitening (reinforce_pp, gae) over two ranks equals whitening the whole batch."""
    _require_netns()
    worker = tmp_path / "engine_grad_worker.py"
    worker.write_text(WORKER)
    cmd = netns.netns_command([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                               str(worker), str(tmp_path)])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    ranks = [torch.load(tmp_path / f"rank-{r}.pt") for r in (0, 1)]

    spec = importlib.util.spec_from_file_location("engine_grad_worker", worker)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from alignpipe.rl import parallel
    from alignpipe.rl.advantages import masked_whiten

    b = mod.batch()
    every = torch.arange(mod.K * mod.GROUPS)
    for loss, agg in mod.CASES:
        key = f"{loss}/{agg}"
        single = mod.grads(b, every, loss, agg, parallel.Comm())
        for r in (0, 1):
            assert ranks[r][key].keys() == single.keys()
            for name, g in single.items():
                assert torch.equal(ranks[0][key][name], ranks[1][key][name]), (key, name)  # the same on both ranks
                assert torch.allclose(ranks[r][key][name], g, rtol=1e-4, atol=1e-7), (key, name)
        assert any(g.abs().sum() > 0 for g in single.values()), key
    whole = masked_whiten(b["old"], b["ro"].completion_mask)
    assert torch.allclose(torch.cat([ranks[0]["whiten"], ranks[1]["whiten"]]), whole, atol=1e-5)
