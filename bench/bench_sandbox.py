"""Benchmark: the cost of isolation - a trivial program through the sandbox vs plain `subprocess.run`.

Not a test. For each concurrency (default 1, 4, 16) runs ``--n`` executions (default 64) of
``print(sum(range(1000)))`` in a thread pool, each either

- plain   = ``subprocess.run([python, "-I", "-B", "-c", program])`` (no isolation at all)
- sandbox = ``alignpipe.sandbox.Sandbox(layer).run(program)`` (bubblewrap, the namespaces fallback, or the
  seccomp layer - which runs only where its preconditions hold: here in the emulated pod, see
  docs/code-rewards.md "Cost of isolation")
- service = the same through the reward service on 127.0.0.1 (one batch of ``--n`` rows), with ``--service``

and prints executions/s, p50/p99 latency per execution and the ratio plain/sandbox in executions/s
(the sandbox's cost; the issue's target is <= 2x at concurrency >= 4), writing JSON to
``out/bench/sandbox.json``.

    .venv/bin/python bench/bench_sandbox.py --n 64 --concurrency 1 4 16 --service
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = "print(sum(range(1000)))\n"


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _measure(run_one, n: int, concurrency: int) -> dict:
    latencies: list[float] = []

    def timed(_):
        start = time.perf_counter()
        run_one()
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(timed, range(n)))
    wall = time.perf_counter() - start
    return {"exec_per_s": n / wall, "p50_ms": 1000 * _pct(latencies, 0.5), "p99_ms": 1000 * _pct(latencies, 0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--layer", default="auto")
    parser.add_argument("--service", action="store_true", help="also through the reward service")
    parser.add_argument("--out", default=str(ROOT / "out" / "bench" / "sandbox.json"))
    args = parser.parse_args()

    from alignpipe.sandbox import Limits, Sandbox

    box = Sandbox(args.layer)
    limits = Limits(wall_s=10)
    python = box.python

    def plain():
        # its own session, like the sandbox: with sched autogroup a session is a scheduling group, so a
        # plain run without one would get less CPU on a busy machine than a sandboxed run
        proc = subprocess.run([python, "-I", "-B", "-c", PROGRAM], capture_output=True, timeout=10,
                              start_new_session=True)
        assert proc.stdout == b"499500\n", proc

    def sandboxed():
        result = box.run(PROGRAM, limits=limits)
        assert result.ok and result.stdout == b"499500\n", result

    rows = []
    for c in args.concurrency:
        row = {"concurrency": c, "plain": _measure(plain, args.n, c), "sandbox": _measure(sandboxed, args.n, c)}
        row["cost_ratio"] = row["plain"]["exec_per_s"] / row["sandbox"]["exec_per_s"]
        if args.service:
            from alignpipe.sandbox.service import run_remote, serve

            server = serve("127.0.0.1", 0, "bench", workers=c, max_requests=4)
            url = f"http://127.0.0.1:{server.server_address[1]}"
            tests = ("stdio", [("", "499500")])
            start = time.perf_counter()
            passed = run_remote(url, [PROGRAM] * args.n, [tests] * args.n, limits, token="bench")
            wall = time.perf_counter() - start
            assert all(p == [True] for p in passed)
            row["service"] = {"exec_per_s": args.n / wall}
            server.shutdown()
            server.server_close()
        rows.append(row)
        line = (f"concurrency {c:>2}: plain {row['plain']['exec_per_s']:6.1f}/s p50 {row['plain']['p50_ms']:6.1f} ms "
                f"p99 {row['plain']['p99_ms']:6.1f} ms | sandbox {row['sandbox']['exec_per_s']:6.1f}/s "
                f"p50 {row['sandbox']['p50_ms']:6.1f} ms p99 {row['sandbox']['p99_ms']:6.1f} ms | "
                f"cost x{row['cost_ratio']:.2f}")
        if "service" in row:
            line += f" | service batch {row['service']['exec_per_s']:6.1f}/s"
        print(line, flush=True)
    report = {"layer": box.describe(), "n": args.n, "cpus": os.cpu_count(), "python": sys.version.split()[0],
              "machine": platform.platform(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"layer: {box.describe()}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
