"""Run untrusted programs (model-written code) in a locked-down sandbox.

`Sandbox().run(source, stdin, Limits(...)) -> Result` runs one Python program as `__main__` in a fresh
process tree: no network, a private temp dir as the only writable path, rlimits, a scrubbed environment,
output capped, and every process of the run killed when it ends. The layer (bubblewrap, or the weaker
namespaces fallback) is chosen and probed once; see `alignpipe.sandbox.core` and docs/code-rewards.md.
"""

from .core import (
    LAYERS,
    Limits,
    Result,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
    default_sandbox,
    run_python,
)

__all__ = [
    "LAYERS",
    "Limits",
    "Result",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailable",
    "default_sandbox",
    "run_python",
]
