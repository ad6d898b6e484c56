"""Helpers shared by benchmarks/scheduler.py and benchmarks/dispatch.py.

The app they run is ``benchmarks/apps/sched_bench`` (``jobs:noop``,
``jobs:schedule``, ``jobs:offer``, ``jobs:probe``).
"""

from __future__ import annotations

import asyncio
import bisect
import os
import platform
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "apps" / "sched_bench"
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import convexpy  # noqa: E402

BATCH = 1000
"""Jobs scheduled per mutation (Convex's per-transaction limit)."""


# -- the machine -------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "convexpy_commit": git_commit(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "convexpy": convexpy.__version__,
        "platform": platform.platform(),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` if ``convexpy/`` has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "convexpy"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def describe_machine(info: dict[str, Any]) -> str:
    text = (
        f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{info['implementation']} {info['python']}, SQLite {info['sqlite']}, "
        f"convexpy {info['convexpy']} ({info['convexpy_commit'] or 'unknown commit'})"
    )
    load = info["loadavg_1m"]
    if load is not None and load > 0.5:
        text += f"\nwarning: load average {load:.2f} at start; other processes skew results"
    return text


# -- numbers and tables --------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    all_rows = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(all_rows):
        cells = [row[0].ljust(widths[0])]
        cells += [value.rjust(width) for value, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def store_url(store: str, directory: str | Path) -> str:
    """``memory``, a fresh durable SQLite file in ``directory``, or a
    PostgreSQL URL as it is."""
    if store == "memory" or store.startswith(("postgresql://", "postgres://")):
        return store
    if store == "sqlite":
        return f"sqlite:///{Path(directory).resolve() / 'bench.db'}"
    raise ValueError(f"unknown store {store!r}: use memory or sqlite")


def file_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 1e6


def proc_status_kb(field: str, pid: str = "self") -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in kB; 0 if
    unknown (or the process just exited)."""
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children() -> list[str]:
    """Pids of this process's live children (Linux; empty elsewhere)."""
    pids: list[str] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as file:
                pids += file.read().split()
    except OSError:
        pass
    return pids


def children_status_kb(field: str) -> int:
    """A ``/proc/<pid>/status`` memory field summed over the live children, in kB."""
    return sum(proc_status_kb(field, pid) for pid in _children())


def children_cpu_s() -> float:
    """CPU seconds used so far by the live child processes (the SQLite store's
    writer): ``os.times()`` only counts children once they are waited for."""
    total = 0
    for pid in _children():
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:  # it just exited
            pass
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_meter() -> Iterator[dict[str, float]]:
    """Measure wall and CPU seconds of a block, the process's and its live
    children's (``cpu_s`` is their sum); the dict is filled on exit."""
    result: dict[str, float] = {}
    wall, cpu, children = time.perf_counter(), time.process_time(), children_cpu_s()
    try:
        yield result
    finally:
        result["wall_s"] = time.perf_counter() - wall
        result["children_cpu_s"] = children_cpu_s() - children
        result["cpu_s"] = time.process_time() - cpu + result["children_cpu_s"]


# -- waiting on jobs -------------------------------------------------------------------


def dispatch_result(
    system: str,
    n: int,
    *,
    completed: bool,
    seconds: float,
    scheduled: float,
    usage: dict[str, float],
) -> dict[str, Any]:
    """One system's row of the dispatch table: ``n`` jobs in ``seconds``, the
    scheduling done after ``scheduled`` s, ``usage`` from :func:`cpu_meter`."""
    return {
        "system": system,
        "jobs": n,
        "completed": completed,
        "seconds": seconds,
        "jobs_per_s": n / seconds,
        "scheduling_done_s": scheduled,
        "cpu_percent": 100 * usage["cpu_s"] / usage["wall_s"],
        "cpu_us_per_job": usage["cpu_s"] / n * 1e6,
    }


async def wait_set(event: asyncio.Event, within_s: float) -> bool:
    """Wait for ``event``; False if ``within_s`` seconds pass first."""
    try:
        await asyncio.wait_for(event.wait(), within_s)
    except TimeoutError:
        return False
    return True


class JobCounter:
    """A ``Runtime.listeners`` entry that counts finished jobs and notes the last one."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.finished = 0
        self.last_at = 0.0
        self._target = 0
        self._reached = asyncio.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("type") != "job":
            return
        outcome = event["outcome"]
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.finished += 1
        self.last_at = time.perf_counter()
        if self.finished >= self._target > 0:
            self._reached.set()

    async def wait_for(self, count: int, within_s: float) -> bool:
        """Wait until ``count`` jobs finished in all; False if ``within_s`` seconds pass first."""
        self._target = count
        if self.finished >= count:
            return True
        self._reached.clear()
        try:
            await asyncio.wait_for(self._reached.wait(), within_s)
        except TimeoutError:
            return False
        return True


async def schedule_jobs(
    rt: convexpy.Runtime, jobs: int, delay_ms: float, first: int = 0
) -> list[float]:
    """Schedule ``jobs`` no-op jobs, ``BATCH`` per mutation, one mutation after another.

    Returns each mutation's latency in seconds.
    """
    latencies = []
    clock = time.perf_counter
    for start in range(first, first + jobs, BATCH):
        count = min(BATCH, first + jobs - start)
        t0 = clock()
        await rt.mutation("jobs:schedule", {"first": start, "count": count, "delay_ms": delay_ms})
        latencies.append(clock() - t0)
    return latencies


# -- lateness at a steady offered load -----------------------------------------------


async def measure_lateness(
    store: str,
    *,
    rate: float,
    seconds: float,
    warmup: float = 1.0,
    max_delay_ms: float = 500.0,
    tick_s: float = 0.005,
    parallelism: int = 16,
    seed: int = 1,
    drain_s: float = 120.0,
) -> dict[str, Any]:
    """Offer ``rate`` jobs/s for ``warmup + seconds`` on the system clock; each job is due
    a uniform random 0..``max_delay_ms`` after it is scheduled. Lateness is the job
    handler's start (wall clock) minus its ``scheduledTime``; jobs offered during the
    warm-up are not counted.

    Every ``tick_s`` the producer starts (without awaiting) one mutation scheduling
    the jobs owed since the last tick, so the offered rate stays steady however long
    a commit takes.

    A job due before its scheduling mutation has committed cannot start on time
    (``run_after(0)`` means "after commit"), so ``after_commit`` lateness is also
    reported: start minus the later of ``scheduledTime`` and that commit.
    """
    import tempfile

    rng = random.Random(seed)
    total = round(rate * (warmup + seconds))
    skip = round(rate * warmup)
    with tempfile.TemporaryDirectory(prefix="convexpy-bench-") as tmp:
        async with convexpy.Runtime(
            APP_DIR, store=store_url(store, tmp), crons=False, parallelism=parallelism
        ) as rt:
            assert rt.app is not None
            starts: dict[int, tuple[float, float]] = rt.app.modules["jobs"].STARTS
            starts.clear()
            counter = JobCounter()
            rt.listeners.append(counter)
            producers: set[asyncio.Task[Any]] = set()
            offer_latency: list[float] = []
            committed: dict[int, float] = {}  # first probe of a mutation -> commit, epoch ms

            async def offer(first: int, delays: list[float]) -> None:
                t0 = time.perf_counter()
                await rt.mutation("jobs:offer", {"first": first, "delays": delays})
                committed[first] = time.time() * 1000.0
                offer_latency.append(time.perf_counter() - t0)

            offered = 0
            loop = asyncio.get_running_loop()
            with cpu_meter() as usage:
                t0 = loop.time()
                while offered < total:
                    owed = min(total, int((loop.time() - t0) * rate) + 1)
                    while offered < owed:
                        n = min(BATCH, owed - offered)
                        delays = [rng.uniform(0.0, max_delay_ms) for _ in range(n)]
                        task = asyncio.create_task(offer(offered, delays))
                        producers.add(task)
                        task.add_done_callback(producers.discard)
                        offered += n
                    await asyncio.sleep(tick_s)
                offer_seconds = loop.time() - t0
                await asyncio.gather(*producers)
                completed = await counter.wait_for(total, drain_s)
        late = sorted(start - at for k, (at, start) in starts.items() if k >= skip)
        firsts = sorted(committed)
        after_commit = []
        for k, (at, start) in starts.items():
            if k >= skip:
                commit = committed[firsts[bisect.bisect_right(firsts, k) - 1]]
                after_commit.append(start - max(at, commit))
        after_commit.sort()
        due_before_commit = sum(
            1
            for k, (at, _) in starts.items()
            if k >= skip and committed[firsts[bisect.bisect_right(firsts, k) - 1]] > at
        )
        offer_latency.sort()
    return {
        "store": store,
        "offered_per_s": rate,
        "achieved_offer_per_s": total / offer_seconds if offer_seconds else float("nan"),
        "seconds": seconds,
        "warmup": warmup,
        "max_delay_ms": max_delay_ms,
        "jobs": len(late),
        "completed": completed,
        "outcomes": dict(counter.outcomes),
        "min_ms": late[0] if late else float("nan"),
        "p50_ms": percentile(late, 0.50),
        "p90_ms": percentile(late, 0.90),
        "p99_ms": percentile(late, 0.99),
        "p999_ms": percentile(late, 0.999),
        "max_ms": late[-1] if late else float("nan"),
        "due_before_commit": due_before_commit,
        "after_commit_p50_ms": percentile(after_commit, 0.50),
        "after_commit_p99_ms": percentile(after_commit, 0.99),
        "after_commit_max_ms": after_commit[-1] if after_commit else float("nan"),
        "offer_mutation_p50_ms": percentile(offer_latency, 0.5) * 1000,
        "offer_mutation_p99_ms": percentile(offer_latency, 0.99) * 1000,
        "cpu_percent": 100 * usage["cpu_s"] / usage["wall_s"],
    }


def lateness_table(results: list[dict[str, Any]]) -> str:
    header = (
        "store",
        "offered/s",
        "jobs",
        "min ms",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "p99 after commit",
        "CPU %",
    )
    rows = [
        (
            r["store"],
            f"{r['achieved_offer_per_s']:,.0f}",
            f"{r['jobs']:,}" + ("" if r["completed"] else " (timeout)"),
            f"{r['min_ms']:.2f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['p999_ms']:.2f}",
            f"{r['max_ms']:.2f}",
            f"{r['after_commit_p99_ms']:.2f}",
            f"{r['cpu_percent']:.0f}",
        )
        for r in results
    ]
    return table(header, rows)
