"""Instructions per job and per mutation, counted by valgrind: steady where wall time is not.

On a shared VM, wall and CPU time drift by 20% and more within a minute,
which hides a change of a few percent. The number of instructions a workload
executes does not drift. This script runs each workload twice under
``valgrind --tool=cachegrind --cache-sim=no`` (about 50 times slower than
normal), with ``-n`` and with ``-n / 10`` items, and divides the difference
by the difference in items, so start-up and shutdown cancel out:

* ``dispatch-memory``: :func:`dispatch.convexpy_dispatch` on the memory
  store (schedule N no-op jobs due now, run them all);
* ``schedule-memory``: only the scheduling, jobs due in 30 days;
* ``apscheduler``: :func:`dispatch.apscheduler_dispatch`, the baseline;
* ``mutations-memory`` / ``mutations-sqlite``: 64 callers each running
  ``bench:insert`` N / 64 times (for SQLite, the main process only: the
  writer process is not counted). Under valgrind only the main process is
  slowed, so the writer has always replied by the time enough commits
  wait for a commit to collect the reply: every batch would hold one
  commit, where a real run's hold about 32. So here only the loop's reader
  callback collects replies, and batches are as large as one turn of the
  loop makes them (32 on average with 64 callers).

Instructions are not time: an instruction that misses the cache or waits on
a lock costs more than one that does not, and valgrind's slow clock makes
whatever is cached per millisecond (id prefixes) look dearer. Compare
versions of convexpy with it, and confirm with ``dispatch.py``.

    python benchmarks/instructions.py                          # every workload, N=20,000
    python benchmarks/instructions.py dispatch-memory apscheduler -n 10000

Needs valgrind (``apt install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

WORKLOADS = (
    "dispatch-memory",
    "schedule-memory",
    "apscheduler",
    "mutations-memory",
    "mutations-sqlite",
)
CALLERS = 64
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000.0


async def run(workload: str, n: int) -> None:
    """Run ``workload`` with ``n`` items (what valgrind counts)."""
    import dispatch
    from _common import APP_DIR, schedule_jobs

    import convexpy

    if workload == "dispatch-memory":
        result = await dispatch.convexpy_dispatch("memory", n, drain_s=3600.0)
        assert result["completed"], result
    elif workload == "apscheduler":
        result = await dispatch.apscheduler_dispatch(n, drain_s=3600.0)
        assert result["completed"], result
    elif workload == "schedule-memory":
        async with convexpy.Runtime(APP_DIR, store="memory", crons=False) as rt:
            await schedule_jobs(rt, n, THIRTY_DAYS_MS)
    else:
        store = workload.removeprefix("mutations-")
        if store == "sqlite":  # see the module docstring
            from convexpy.store.sqlite import _WriterProcess

            _WriterProcess.collect = lambda self: None  # type: ignore[method-assign]
        with tempfile.TemporaryDirectory(prefix="convexpy-instructions-") as tmp:
            url = "memory" if store == "memory" else f"sqlite:///{tmp}/bench.db"
            async with convexpy.Runtime(HERE / "apps" / "bench", store=url, crons=False) as rt:

                async def caller() -> None:
                    for i in range(n // CALLERS):
                        await rt.mutation("bench:insert", {"n": i})

                await asyncio.gather(*(caller() for _ in range(CALLERS)))


def count(workload: str, n: int) -> int:
    """Instructions valgrind counts for one run of ``workload`` with ``n`` items."""
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        workload,
        "-n",
        str(n),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{workload} failed under valgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("workloads", nargs="*", help=f"some of {', '.join(WORKLOADS)} (all)")
    parser.add_argument("-n", type=int, default=20_000, help="items per run (default 20,000)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; pick from {WORKLOADS}")
    if args.child:
        asyncio.run(run(args.workloads[0], args.n))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt install valgrind)")
    small = max(CALLERS, args.n // 10)
    print(f"instructions per item: runs with {args.n:,} and {small:,} items, the difference")
    print(f"{'workload':<18} {'per item':>10}")
    for workload in args.workloads or WORKLOADS:
        large_n, small_n = args.n, small
        if workload.startswith("mutations-"):  # each caller runs n // CALLERS
            large_n, small_n = large_n // CALLERS * CALLERS, small_n // CALLERS * CALLERS
        per_item = (count(workload, args.n) - count(workload, small)) / (large_n - small_n)
        print(f"{workload:<18} {per_item:>10,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
