"""What every part of alignpipe shares, and nothing else: the user-error base, the stage result and
where-am-I rank helpers.

This is the leaf of the dependency graph: it imports nothing from alignpipe (and nothing heavy), so
any module may import it. The CLI, the per-rank entry point and the component runner catch
`UserError` — and only that — to print one line per problem and exit 2 without a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

#: Exit code of a run that stopped on a user error (bad config, data, model, storage, ...).
USER_ERROR_EXIT = 2
#: Printed (one line, stdout) by global rank 0 when a distributed stage succeeded, followed by the
#: StageResult JSON: how the multi-node runner reads the result back from the master pod's log.
RESULT_MARKER = "ALIGNPIPE_RESULT_JSON: "
#: Exit status after a preemption checkpoint (128 + SIGTERM, what a process killed by SIGTERM reports):
#: non-zero, so KFP retries the step, and the retry resumes from that checkpoint.
PREEMPTED_EXIT = 143


class UserError(Exception):
    """A problem the user can fix (bad config, data, URI, credentials, settings).

    Every domain error of alignpipe subclasses this. Its message is one line per problem, each naming
    the file or field and the fix; the entry points print it without a traceback and exit 2.
    """


def report_user_error(e: BaseException, prefix: str = "") -> int:
    """Print a user error as `error: ...` lines on stderr; return the exit code (2)."""
    for line in str(e).splitlines() or [type(e).__name__]:
        print(f"error: {prefix}{line}", file=sys.stderr, flush=True)
    return USER_ERROR_EXIT


@dataclass
class StageResult:
    """What a stage returns: its numbers, where its output is, and where everything came from."""

    stage: str
    output: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str))


# --------------------------------------------------------------------------------------------------
# Where am I (torchrun sets these; a single process is rank 0 of 1)
# --------------------------------------------------------------------------------------------------


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def local_device(cuda: bool) -> str:
    """This process's device: `cuda:LOCAL_RANK` when a GPU is present (under torchrun each rank has its own;
    a bare `cuda` would put every rank on GPU 0), else `cpu`. The caller says whether CUDA is available, so
    this module needs no torch."""
    return f"cuda:{local_rank()}" if cuda else "cpu"


def barrier() -> None:
    """Wait for every rank (no-op unless a process group is up). Rank 0 calls it before publishing, so
    that a step whose peer failed publishes nothing: torchrun stops the waiting rank instead."""
    dist = sys.modules.get("torch.distributed")  # never import torch here: a single process needs none
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()


# --------------------------------------------------------------------------------------------------
# Plug-in registries (RL advantages/losses/KL estimators, prompt samplers)
# --------------------------------------------------------------------------------------------------


class Registry:
    """Plug-ins of one kind: name -> function or class, with optional attributes (e.g. `needs_critic=True`).

    `register(name)` is the decorator; the registered object gets its name as attribute `name_attr`.
    `get(name)` also imports `pkg.mod:obj` for plug-ins outside the package (`example` is shown in errors)."""

    def __init__(self, kind: str, *, name_attr: str = "plugin_name", example: str = "pkg.mod:func",
                 what: str = "a function"):
        self.kind, self.name_attr, self.example, self.what = kind, name_attr, example, what
        self._items: dict[str, Any] = {}

    def register(self, name: str, **attrs: Any) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            for k, v in attrs.items():
                setattr(obj, k, v)
            setattr(obj, self.name_attr, name)
            self._items[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def get(self, name: str) -> Any:
        """The plug-in registered as `name`, or `pkg.mod:obj` imported; ValueError with the choices otherwise."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            module, _, attr = name.partition(":")
            try:
                obj = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ValueError(f"{self.kind} {name!r} cannot be imported ({e})") from None
            if not callable(obj):
                raise ValueError(f"{self.kind} {name!r} is not {self.what}")
            return obj
        raise ValueError(f"unknown {self.kind} {name!r} (choose one of: {', '.join(self.names())}, "
                         f"or a dotted path {self.example})")
