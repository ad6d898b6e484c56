"""Small insert mutations per second through convexpy's public API.

Each cell of the table is a fresh ``convexpy.Runtime`` on one store, driven
by N asyncio tasks that each call ``rt.mutation("bench:insert", {"n": i})`` in
a loop: first for a short warm-up, then for ``--seconds``. Throughput counts
the calls that completed inside the timed window; latency is per call, as the
caller sees it (commit included: on SQLite a call returns once its commit is
on disk). As a same-process baseline, the same loop is timed around a bare
``async def`` no-op and around ``asyncio.sleep(0)`` (one trip through the
event loop), so that ratios carry over between machines.

    python benchmarks/mutations.py                       # memory + sqlite, 1/8/64 callers
    python benchmarks/mutations.py --seconds 10 --callers 64 --json
    python benchmarks/mutations.py --repeat 3              # best of 3 on a noisy machine
    python benchmarks/mutations.py --profile sqlite:64   # cProfile one cell
    python benchmarks/mutations.py --profile memory:64 --profiler pyinstrument

Stores: ``memory`` and ``sqlite`` (``sqlite:///<tmpdir>/bench.db``, durable:
``synchronous=FULL``); ``sqlite-normal`` is also accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "apps" / "bench"
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

from _common import children_cpu_s  # noqa: E402
from _common import machine as common_machine  # noqa: E402

import convexpy  # noqa: E402

STORES = ("memory", "sqlite")
ALL_STORES = ("memory", "sqlite", "sqlite-normal")
BASELINES = ("baseline:noop", "baseline:sleep0")
FUNCTION = "bench:insert"

Call = Callable[[int], Awaitable[Any]]


@dataclass
class Cell:
    store: str
    callers: int
    seconds: float
    calls: int
    per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_percent: float
    """Process CPU time (all threads) over the timed window, as a percentage of one core."""


def machine() -> dict[str, Any]:
    return {**common_machine(), "busy_cores_before": busy_cores()}


def busy_cores(interval: float = 0.5) -> float | None:
    """How many cores other processes kept busy just before the run (Linux only)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as file:
            fields = [int(x) for x in file.readline().split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 == total0:
        return 0.0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def drive(
    call: Call, callers: int, warmup: float, seconds: float
) -> tuple[int, list[float], float]:
    """Run ``callers`` tasks calling ``call`` in a loop; return the number of calls
    that completed inside the timed window, their latencies (seconds), and the
    CPU time used during the window (all threads, and the SQLite store's
    writer process)."""
    clock = time.perf_counter
    start = clock() + warmup
    end = start + seconds
    latencies: list[list[float]] = [[] for _ in range(callers)]
    # Process CPU time when the window opens and closes, taken by whichever
    # worker notices first (a mutation on the memory store never yields, so a
    # loop callback could not be relied on to run in time).
    cpu: list[float] = []

    async def worker(number: int, out: list[float]) -> None:
        i = number * 1_000_000_000
        while True:
            t0 = clock()
            if t0 >= end:
                if len(cpu) < 2:
                    cpu.extend([cpu_now()] * (2 - len(cpu)))
                return
            if t0 >= start and not cpu:
                cpu.append(cpu_now())
            await call(i)
            t1 = clock()
            if start <= t1 <= end:
                out.append(t1 - t0)
            i += 1

    await asyncio.gather(*(worker(n, out) for n, out in enumerate(latencies)))
    merged = [latency for out in latencies for latency in out]
    return len(merged), merged, cpu[1] - cpu[0]


def cpu_now() -> float:
    return time.process_time() + children_cpu_s()


@asynccontextmanager
async def target(store: str) -> Any:
    """Yield a call function for one cell: a fresh runtime on ``store``, or a baseline."""
    if store == "baseline:noop":

        async def noop(n: int) -> int:
            return n

        yield noop
        return
    if store == "baseline:sleep0":

        async def yield_once(n: int) -> int:
            await asyncio.sleep(0)
            return n

        yield yield_once
        return
    with tempfile.TemporaryDirectory(prefix="convexpy-bench-") as tmp:
        if store == "memory":
            url = "memory"
        elif store == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
        elif store == "sqlite-normal":
            url = f"sqlite:///{tmp}/bench.db?synchronous=normal"
        else:
            raise ValueError(f"unknown store {store!r}")
        async with convexpy.Runtime(APP_DIR, store=url, crons=False) as rt:
            mutation = rt.mutation

            async def insert(n: int) -> Any:
                return await mutation(FUNCTION, {"n": n})

            yield insert


async def run_cell(
    store: str,
    callers: int,
    warmup: float,
    seconds: float,
    profiler: Any = None,
) -> Cell:
    """Time one cell; with ``profiler`` (``start()``/``stop()``), profile the timed part."""
    context: AbstractAsyncContextManager[Call] = target(store)
    async with context as call:
        if profiler is not None:
            await drive(call, callers, 0.0, warmup)  # warm up outside the profile
            profiler.start()
            try:
                calls, latencies, cpu = await drive(call, callers, 0.0, seconds)
            finally:
                profiler.stop()
        else:
            calls, latencies, cpu = await drive(call, callers, warmup, seconds)
    latencies.sort()
    return Cell(
        store=store,
        callers=callers,
        seconds=seconds,
        calls=calls,
        per_second=calls / seconds,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] if latencies else float("nan")) * 1000,
        cpu_percent=100 * cpu / seconds,
    )


def format_table(cells: list[Cell]) -> str:
    noop = {c.callers: c.per_second for c in cells if c.store == "baseline:noop"}
    rows = [("store", "callers", "mutations/s", "p50 ms", "p99 ms", "max ms", "CPU %", "vs no-op")]
    for c in cells:
        base = noop.get(c.callers)
        ratio = f"1/{base / c.per_second:,.0f}" if base and c.per_second else "-"
        if c.store == "baseline:noop":
            ratio = "1"
        rows.append(
            (
                c.store,
                str(c.callers),
                f"{c.per_second:,.0f}",
                f"{c.p50_ms:.3f}",
                f"{c.p99_ms:.3f}",
                f"{c.max_ms:.3f}",
                f"{c.cpu_percent:.0f}",
                ratio,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells_ = zip(row[1:], widths[1:], strict=True)
        cols = [row[0].ljust(widths[0])] + [value.rjust(width) for value, width in cells_]
        lines.append("  ".join(cols))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_callers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("callers must be positive integers")
    return values


def parse_stores(text: str) -> list[str]:
    stores = [part for part in text.replace(",", " ").split() if part]
    for store in stores:
        if store not in ALL_STORES:
            known = ", ".join(ALL_STORES)
            raise argparse.ArgumentTypeError(f"unknown store {store!r}: use {known}")
    return stores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per cell")
    parser.add_argument(
        "--callers", type=parse_callers, default=[1, 8, 64], help="e.g. 1,8,64 (default)"
    )
    parser.add_argument(
        "--stores", type=parse_stores, default=list(STORES), help="memory,sqlite (default)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each cell N times and keep the fastest"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the no-op baselines")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--profile",
        metavar="STORE:CALLERS",
        help="run one cell under a profiler and print where the time goes instead",
    )
    parser.add_argument(
        "--profiler",
        choices=("cprofile", "pyinstrument"),
        default="cprofile",
        help="cprofile (stdlib, deterministic, inflates call-heavy code) or pyinstrument "
        "(sampling; pip install pyinstrument)",
    )
    parser.add_argument("--profile-top", type=int, default=40, help="rows of --profile output")
    parser.add_argument(
        "--profile-out", help="also write the raw profile (pstats, or pyinstrument HTML) here"
    )
    args = parser.parse_args(argv)

    info = machine()
    if args.profile:
        return profile(args, info)

    plan = [(store, n) for store in args.stores for n in args.callers]
    if not args.no_baseline:
        plan = [(store, n) for store in BASELINES for n in args.callers] + plan
    if not args.json:
        print(
            f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
            f"{info['implementation']} {info['python']}, SQLite {info['sqlite']}, "
            f"convexpy {info['convexpy']} at {info['convexpy_commit']}"
        )
        busy = info["busy_cores_before"]
        if busy is not None and busy > 0.2:
            print(f"warning: {busy:.1f} cores were busy before starting; results will be skewed")
        best = f", best of {args.repeat}" if args.repeat > 1 else ""
        print(f"{args.seconds:g} s per cell after {args.warmup:g} s warm-up{best}; {FUNCTION}\n")
    cells = []
    for store, callers in plan:
        runs = [
            asyncio.run(run_cell(store, callers, args.warmup, args.seconds))
            for _ in range(max(1, args.repeat))
        ]
        cells.append(max(runs, key=lambda cell: cell.per_second))
        if not args.json:
            print(f"  {store:<16} {callers:>3} callers: {cells[-1].per_second:>12,.0f}/s")
    if args.json:
        settings = {"seconds": args.seconds, "warmup": args.warmup, "repeat": args.repeat}
        output = {"machine": info, "settings": settings, "cells": [asdict(c) for c in cells]}
        print(json.dumps(output, indent=2))
    else:
        print()
        print(format_table(cells))
    return 0


class _CProfile:
    def __init__(self) -> None:
        self.profile = cProfile.Profile()

    def start(self) -> None:
        self.profile.enable()

    def stop(self) -> None:
        self.profile.disable()


def profile(args: argparse.Namespace, info: dict[str, Any]) -> int:
    store, _, callers = args.profile.partition(":")
    parse_stores(store)
    n = parse_callers(callers or "64")[0]
    if args.profiler == "pyinstrument":
        from pyinstrument import Profiler

        # async_mode="disabled": sample the event-loop thread as is, not per task.
        profiler: Any = Profiler(interval=0.001, async_mode="disabled")
    else:
        profiler = _CProfile()
    cell = asyncio.run(run_cell(store, n, args.warmup, args.seconds, profiler))
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}\n"
        f"profiled ({args.profiler}) {store} x {n} callers: {cell.calls:,} mutations in "
        f"{args.seconds:g} s ({cell.per_second:,.0f}/s while profiled)\n"
    )
    if args.profiler == "pyinstrument":
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        if args.profile_out:
            Path(args.profile_out).write_text(profiler.output_html())
        return 0
    if args.profile_out:
        profiler.profile.dump_stats(args.profile_out)
    stats = pstats.Stats(profiler.profile, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    per_call = total / cell.calls * 1e6 if cell.calls else float("nan")
    print(f"profiled wall time on the loop thread {total:.2f} s = {per_call:.1f} us per mutation\n")
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(args.profile_top)
        print(f"== by {title} ==")
        print(out.getvalue().split("\n\n", 2)[-1].rstrip())
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
