"""Data parallelism for the engine: the collectives it needs when `distributed.gpus > 1` (torchrun, one process per
device; gloo on the CPU, NCCL on GPUs). In one process every call here is a no-op or returns its input.

What runs where (see `alignpipe.rl.engine`): every rank holds the whole policy (and critic) and the same prompt
sampler; each step every rank draws the same global batch of prompts from the sampler and takes its own slice,
generates and scores its groups (a group of k completions never spans ranks, so group advantages stay local),
and backpropagates its share of the loss; gradients are averaged over the ranks before each optimizer step, each
rank's loss first weighted by its share of the mini-batch's tokens under token-mean aggregation, so the step
equals the single-process step over the whole batch. Per-prompt outcomes are gathered, so the sampler's
pass-rate store and the loop buffers change identically on every rank; metrics are reduced over the ranks.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch

#: Gradients are all-reduced in flat buckets of at most this many elements.
BUCKET_ELEMENTS = 1 << 24


def init() -> None:
    """Join torchrun's process group (env://) when this process is one rank of several; no-op otherwise or when
    the group is already up."""
    from alignpipe import settings
    from alignpipe.base import local_rank, world_size
    from alignpipe.distributed import backend

    if world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    kind = backend()
    if kind == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(kind, timeout=timedelta(seconds=settings.current().ddp_timeout_s))


class Comm:
    """The engine's view of the process group: `world` ranks, this one `rank`."""

    def __init__(self):
        import torch.distributed as dist

        self.on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.world = dist.get_world_size() if self.on else 1
        self.rank = dist.get_rank() if self.on else 0
        self.device = (torch.device("cuda", torch.cuda.current_device())
                       if self.on and dist.get_backend() == "nccl" else torch.device("cpu"))

    # ---- numbers ----------------------------------------------------------------------------------------
    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if not self.on:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order."""
        if not self.on:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def token_weight(self, tokens: float) -> float:
        """This rank's weight for a token-mean loss over `tokens` of the mini-batch's tokens: world x its share of
        all ranks' tokens, so that averaging the weighted gradients gives the gradient of the token mean over the
        whole mini-batch (1 in one process)."""
        if not self.on:
            return 1.0
        total = self.sum([tokens])[0]
        return self.world * tokens / total if total > 0 else 1.0

    # ---- tensors ----------------------------------------------------------------------------------------
    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor summed over the ranks (a copy; the input as is in one process)."""
        if not self.on:
            return t
        import torch.distributed as dist

        out = t.detach().to(self.device, copy=True)
        dist.all_reduce(out)
        return out.to(t.device)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers into every rank's `module` (as DDP does when it wraps a model)."""
        if not self.on:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                buf = t.data.to(self.device)
                dist.broadcast(buf, 0)
                if buf.data_ptr() != t.data.data_ptr():
                    t.data.copy_(buf)

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over the ranks (a missing one counts as zeros)."""
        if not self.on:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        groups: dict[tuple, list[torch.Tensor]] = {}
        for g in grads:
            groups.setdefault((g.dtype, g.device), []).append(g)
        for same in groups.values():
            i = 0
            while i < len(same):
                bucket, size = [], 0
                while i < len(same) and (not bucket or size + same[i].numel() <= BUCKET_ELEMENTS):
                    bucket.append(same[i])
                    size += same[i].numel()
                    i += 1
                flat = _flatten_dense_tensors(bucket)
                moved = flat.to(self.device)
                dist.all_reduce(moved)
                moved /= self.world
                for dst, src in zip(bucket, _unflatten_dense_tensors(moved.to(flat.device), bucket)):
                    dst.copy_(src)

    def barrier(self) -> None:
        if self.on:
            import torch.distributed as dist

            dist.barrier()


def combine(comm: Comm, sums: dict[str, tuple[float, float]], maxima: dict[str, float] | None = None
            ) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """({name: (sum, count)} added up over the ranks, {name: value} maximised over the ranks); names that only some
    ranks have are kept (one object all-gather)."""
    maxima = maxima or {}
    if not comm.on:
        return dict(sums), dict(maxima)
    out_s: dict[str, tuple[float, float]] = {}
    out_m: dict[str, float] = {}
    for part_s, part_m in comm.gather((sums, maxima)):
        for k, (s, c) in part_s.items():
            a, b = out_s.get(k, (0.0, 0.0))
            out_s[k] = (a + s, b + c)
        for k, v in part_m.items():
            out_m[k] = max(out_m.get(k, v), v)
    return out_s, out_m
