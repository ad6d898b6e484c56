"""Scheduled-job dispatch throughput: convexpy against APScheduler 3 and plain asyncio.

Every system runs ``-n`` no-op jobs that are due now, timed from the first
scheduling call to the last job finished, each in a fresh event loop:

* convexpy (``memory`` and durable ``sqlite``, ``synchronous=FULL``, in a temp
  dir): ``jobs:schedule`` mutations each ``run_after(0, internal.jobs.noop,
  {"i": i})`` 1,000 times, awaited one after another; the clock stops at the
  N-th ``success`` job event (``Runtime.listeners``). Each job is a scheduled
  mutation: read the job, run the handler, commit its ``success`` state.
* APScheduler 3 (``AsyncIOScheduler``, ``MemoryJobStore``, ``AsyncIOExecutor``):
  ``add_job(noop, "date", run_date=now, args=(i,))`` N times, yielding to the
  loop after every 1,000; the clock stops when the N-th job coroutine runs.
  ``AsyncIOExecutor`` has no pool: every due coroutine job becomes a task at
  once; ``misfire_grace_time=None`` (never skip) and ``max_instances`` large.
* asyncio ceiling: N no-op coroutine calls through 16 worker tasks fed from an
  ``asyncio.Queue`` (what any asyncio dispatcher with parallelism 16 pays at least).

"CPU us/job" is process CPU time (all threads) per job: steadier than wall time
on a shared machine. Also measured: scheduling throughput (``run_after`` calls/s
inside mutations, jobs due in 30 days so that nothing runs) and lateness at a
steady offered load (see ``benchmarks/scheduler.py``). Targets at N=20,000
on a 2-core machine, in one run: convexpy SQLite >= 3x APScheduler, convexpy memory >= 6x
(first 2x and 4x).

    python benchmarks/dispatch.py                     # N=20,000, best of 3 (in rounds)
    python benchmarks/dispatch.py -n 50000 --repeat 3 --json
    python benchmarks/dispatch.py --profile sqlite    # cProfile convexpy's dispatch, per job
    python benchmarks/dispatch.py --profile memory --profile-phase schedule
    python benchmarks/dispatch.py --profile memory --profiler pyinstrument
    python benchmarks/dispatch.py --postgres postgresql://postgres@127.0.0.1/postgres
    python benchmarks/dispatch.py --store postgresql://postgres@127.0.0.1/postgres --postgres-only

With ``--postgres URL`` (or ``--store URL``), three more systems run on that
server, each on a scratch database of its own: convexpy on the PostgreSQL
store in one process; in two (this one and ``_pg_worker.py``, each
scheduling half of the jobs, both running whatever is due; the clock stops
at the later last job); and procrastinate (``batch_defer_async`` 1,000 at a
time, then one worker with 16 slots; see ``_postgres.py``). When the server
runs on this machine, its CPU per job is measured too (all its processes).
``--postgres-only`` skips the other systems. Targets at N=20,000: two
convexpy processes >= 10,000 jobs/s and >= 20x procrastinate.

Needs APScheduler 3 (``pip install 'apscheduler>=3.10,<4'``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    APP_DIR,
    JobCounter,
    cpu_meter,
    describe_machine,
    dispatch_result,
    lateness_table,
    machine,
    measure_lateness,
    schedule_jobs,
    store_url,
    table,
    wait_set,
)
from _postgres import procrastinate_dispatch, scratch_database, server_cpu_meter

import convexpy

THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000.0
TARGETS = {"convexpy sqlite": 3.0, "convexpy memory": 6.0}


# -- the systems -------------------------------------------------------------------------


async def convexpy_dispatch(
    store: str, n: int, *, drain_s: float, parallelism: int = 16, profiler: Any = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="convexpy-bench-") as tmp:
        async with convexpy.Runtime(
            APP_DIR, store=store_url(store, tmp), crons=False, parallelism=parallelism
        ) as rt:
            counter = JobCounter()
            rt.listeners.append(counter)
            if profiler is not None:
                profiler.enable()
            server = store if store.startswith("postgresql:") else None
            async with server_cpu_meter(server, n) as server_cpu:
                with cpu_meter() as usage:
                    t0 = time.perf_counter()
                    await schedule_jobs(rt, n, 0.0)
                    scheduled = time.perf_counter() - t0
                    completed = await counter.wait_for(n, drain_s)
            if profiler is not None:
                profiler.disable()
            seconds = (counter.last_at if completed else time.perf_counter()) - t0
    result = dispatch_result(
        f"convexpy {store}",
        n,
        completed=completed and counter.outcomes.get("success") == n,
        seconds=seconds,
        scheduled=scheduled,
        usage=usage,
    )
    result["outcomes"] = counter.outcomes
    result.update(server_cpu)
    return result


async def convexpy_on_postgres(url: str, n: int, drain_s: float) -> dict[str, Any]:
    """:func:`convexpy_dispatch` in one process on a scratch database of ``url``'s server."""
    async with scratch_database(url) as database:
        result = await convexpy_dispatch(database, n, drain_s=drain_s)
    result["system"] = "convexpy postgresql"
    return result


async def convexpy_on_postgres_twice(url: str, n: int, drain_s: float) -> dict[str, Any]:
    """Two convexpy processes on one scratch database, each scheduling half
    of the jobs (from the same start) and both running whatever is due: this
    one and ``_pg_worker.py``. The clock stops at the later of the two
    processes' last finished job; CPU counts both processes."""
    async with scratch_database(url) as database:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("_pg_worker.py")), database,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert worker.stdin is not None and worker.stdout is not None
        try:
            if await worker.stdout.readline() != b"ready\n":
                raise RuntimeError("the second process did not start")
            async with convexpy.Runtime(APP_DIR, store=database, crons=False, parallelism=16) as rt:
                counter = JobCounter()
                rt.listeners.append(counter)
                theirs = [0, 0.0]  # the worker's finished count and last finish
                all_done = asyncio.Event()

                def check(_event: object = None) -> None:
                    if counter.finished + theirs[0] >= n:
                        all_done.set()

                rt.listeners.append(check)

                async def listen() -> None:
                    assert worker.stdout is not None
                    async for line in worker.stdout:
                        _finished, count, last_at = line.split()
                        theirs[:] = [int(count), float(last_at)]
                        check()

                listener = asyncio.create_task(listen())
                half = n // 2
                async with server_cpu_meter(database, n) as server_cpu:
                    with cpu_meter() as usage:
                        t0 = time.perf_counter()
                        worker.stdin.write(f"go {half} {n - half}\n".encode())
                        await schedule_jobs(rt, half, 0.0)
                        scheduled = time.perf_counter() - t0
                        await wait_set(all_done, drain_s)
                completed = counter.finished + theirs[0] == n
                listener.cancel()
                ends = [counter.last_at, float(theirs[1])]
                seconds = (max(ends) if completed else time.perf_counter()) - t0
        finally:
            worker.stdin.close()
            await worker.wait()
    return {
        **dispatch_result(
            "convexpy postgresql x2",
            n,
            completed=completed,
            seconds=seconds,
            scheduled=scheduled,
            usage=usage,
        ),
        **server_cpu,
    }


async def apscheduler_dispatch(n: int, *, drain_s: float) -> dict[str, Any]:
    from apscheduler.executors.asyncio import AsyncIOExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    done = asyncio.Event()
    count = 0
    last = 0.0

    async def noop(i: int) -> None:
        nonlocal count, last
        count += 1
        if count == n:
            last = time.perf_counter()
            done.set()

    scheduler = AsyncIOScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": AsyncIOExecutor()},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": n},
        timezone=UTC,
    )
    scheduler.start()
    try:
        with cpu_meter() as usage:
            t0 = time.perf_counter()
            now = datetime.now(UTC)
            for i in range(n):
                scheduler.add_job(noop, "date", run_date=now, args=(i,))
                if i % 1000 == 999:
                    await asyncio.sleep(0)
            scheduled = time.perf_counter() - t0
            completed = await wait_set(done, drain_s)
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
    seconds = (last if completed else time.perf_counter()) - t0
    return dispatch_result(
        "APScheduler 3 memory",
        n,
        completed=completed,
        seconds=seconds,
        scheduled=scheduled,
        usage=usage,
    )


async def asyncio_ceiling(n: int, workers: int = 16) -> dict[str, Any]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    done = asyncio.Event()
    count = 0

    async def noop(i: int) -> None:
        return None

    async def worker() -> None:
        nonlocal count
        while True:
            i = await queue.get()
            await noop(i)
            count += 1
            if count == n:
                done.set()

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    with cpu_meter() as usage:
        t0 = time.perf_counter()
        for i in range(n):
            queue.put_nowait(i)
        await done.wait()
        seconds = time.perf_counter() - t0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return dispatch_result(
        f"asyncio ceiling ({workers} workers)",
        n,
        completed=True,
        seconds=seconds,
        scheduled=0.0,
        usage=usage,
    )


async def scheduling_rate(store: str, n: int) -> dict[str, Any]:
    """``run_after`` calls/s inside mutations (1,000 per mutation), jobs due in 30 days."""
    with tempfile.TemporaryDirectory(prefix="convexpy-bench-") as tmp:
        async with convexpy.Runtime(APP_DIR, store=store_url(store, tmp), crons=False) as rt:
            with cpu_meter() as usage:
                latencies = await schedule_jobs(rt, n, THIRTY_DAYS_MS)
    latencies.sort()
    return {
        "store": store,
        "jobs": n,
        "seconds": usage["wall_s"],
        "jobs_per_s": n / usage["wall_s"],
        "mutation_p50_ms": latencies[len(latencies) // 2] * 1000,
        "cpu_percent": 100 * usage["cpu_s"] / usage["wall_s"],
        "cpu_us_per_job": usage["cpu_s"] / n * 1e6,
    }


# -- output ----------------------------------------------------------------------------


def dispatch_table(results: list[dict[str, Any]]) -> str:
    aps = next((r["jobs_per_s"] for r in results if r["system"].startswith("APScheduler")), None)
    rows = []
    for r in results:
        ratio = f"{r['jobs_per_s'] / aps:.2f}x" if aps else "-"
        target = TARGETS.get(r["system"])
        verdict = ""
        if target is not None and aps:
            verdict = f">= {target:g}x: " + ("ok" if r["jobs_per_s"] >= target * aps else "MISSED")
        rows.append(
            (
                r["system"],
                f"{r['jobs']:,}" + ("" if r["completed"] else " (INCOMPLETE)"),
                f"{r['seconds']:.3f}",
                f"{r['jobs_per_s']:,.0f}",
                f"{1e6 / r['jobs_per_s']:.1f}",
                ratio,
                f"{r['cpu_percent']:.0f}",
                f"{r['cpu_us_per_job']:.1f}",
                verdict,
            )
        )
    header = (
        "system",
        "jobs",
        "seconds",
        "jobs/s",
        "us/job",
        "vs APScheduler",
        "CPU %",
        "CPU us/job",
        "target",
    )
    return table(header, rows)


PG_TARGETS = {"convexpy postgresql x2": (10_000.0, 20.0)}
"""Issue targets on PostgreSQL: jobs/s, and times procrastinate's."""


def postgres_table(results: list[dict[str, Any]]) -> str:
    """The PostgreSQL rows: each against procrastinate, and the server's CPU per job."""
    rows = [r for r in results if "server_cpu_us_per_job" in r]
    base = next((r["jobs_per_s"] for r in rows if r["system"].startswith("procrastinate")), None)
    body = []
    for r in rows:
        server = r["server_cpu_us_per_job"]
        verdict = ""
        if r["system"] in PG_TARGETS and base:
            per_s, times = PG_TARGETS[r["system"]]
            ok = r["jobs_per_s"] >= per_s and r["jobs_per_s"] >= times * base
            verdict = f">= {per_s:,.0f}/s and {times:g}x: " + ("ok" if ok else "MISSED")
        body.append(
            (
                r["system"],
                f"{r['jobs_per_s']:,.0f}" + ("" if r["completed"] else " (INCOMPLETE)"),
                f"{r['jobs_per_s'] / base:.1f}x" if base else "-",
                f"{r['cpu_us_per_job']:.1f}",
                "-" if server is None else f"{server:.1f}",
                verdict,
            )
        )
    header = (
        "system",
        "jobs/s",
        "vs procrastinate",
        "client CPU us/job",
        "server CPU us/job",
        "target",
    )
    return table(header, body)


def scheduling_table(results: list[dict[str, Any]]) -> str:
    rows = [
        (
            r["store"],
            f"{r['jobs']:,}",
            f"{r['jobs_per_s']:,.0f}",
            f"{r['mutation_p50_ms']:.1f}",
            f"{r['cpu_percent']:.0f}",
            f"{r['cpu_us_per_job']:.1f}",
        )
        for r in results
    ]
    header = ("store", "jobs", "run_after/s", "mutation p50 ms", "CPU %", "CPU us/job")
    return table(header, rows)


# -- profiling ---------------------------------------------------------------------------


class _Profiler:
    """cProfile or pyinstrument behind one ``enable``/``disable`` interface."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "pyinstrument":
            from pyinstrument import Profiler

            # async_mode="disabled": sample the event-loop thread as is, not per task.
            self.sampler: Any = Profiler(interval=0.001, async_mode="disabled")
        else:
            self.sampler = cProfile.Profile()

    def enable(self) -> None:
        if self.kind == "pyinstrument":
            self.sampler.start()
        else:
            self.sampler.enable()

    def disable(self) -> None:
        if self.kind == "pyinstrument":
            self.sampler.stop()
        else:
            self.sampler.disable()


async def profiled_run(store: str, n: int, phase: str, profiler: _Profiler) -> dict[str, Any]:
    """Profile scheduling ``n`` jobs due now, or dispatching them (scheduled while the
    dispatcher is paused, then released at once)."""
    with tempfile.TemporaryDirectory(prefix="convexpy-bench-") as tmp:
        async with convexpy.Runtime(APP_DIR, store=store_url(store, tmp), crons=False) as rt:
            counter = JobCounter()
            rt.listeners.append(counter)
            rt.dispatcher.paused = True
            if phase == "schedule":
                profiler.enable()
            t0 = time.perf_counter()
            await schedule_jobs(rt, n, 0.0)
            t1 = time.perf_counter()
            if phase == "schedule":
                profiler.disable()
            await asyncio.sleep(0.05)  # let the dispatcher's loop move them to its ready queue
            if phase == "dispatch":
                profiler.enable()
            t2 = time.perf_counter()
            rt.dispatcher.resume()
            completed = await counter.wait_for(n, 600.0)
            t3 = counter.last_at
            if phase == "dispatch":
                profiler.disable()
    seconds = t1 - t0 if phase == "schedule" else t3 - t2
    return {"completed": completed, "seconds": seconds, "per_s": n / seconds}


def _short(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    for marker in ("/convexpy/", "/asyncio/", "/site-packages/", "/benchmarks/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line}({name})" if line else name


def per_job_table(stats: pstats.Stats, n: int, total: float, top: int) -> str:
    """convexpy's own functions by cumulative time, per job and as a share of the total."""
    rows = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for key, (_cc, calls, own, cum, _callers) in raw.items():
        if "/convexpy/" in key[0] or "sched_bench" in key[0]:
            rows.append((cum, own, calls, key))
    rows.sort(reverse=True)
    # Frames entered before the profiler was switched on can add up to more than
    # the profiled total; keep the shares readable.
    total = max(total, rows[0][0] if rows else total)
    body = [
        (
            _short(key),
            f"{cum / n * 1e6:.1f}",
            f"{100 * cum / total:.0f}%",
            f"{own / n * 1e6:.1f}",
            f"{calls / n:.2f}",
        )
        for cum, own, calls, key in rows[:top]
    ]
    header = ("function (convexpy)", "cum us/job", "cum %", "own us/job", "calls*/job")
    return table(header, body)


def profile(args: argparse.Namespace, info: dict[str, Any]) -> int:
    store, phase = args.profile, args.profile_phase
    profiler = _Profiler(args.profiler)
    result = asyncio.run(profiled_run(store, args.n, phase, profiler))
    print(describe_machine(info))
    what = "dispatching" if phase == "dispatch" else "scheduling (1,000 per mutation)"
    print(
        f"profiled ({args.profiler}) {what} {args.n:,} jobs on convexpy {store}: "
        f"{result['per_s']:,.0f} jobs/s while profiled"
        + ("" if result["completed"] else " (INCOMPLETE)")
    )
    if args.profiler == "pyinstrument":
        print(profiler.sampler.output_text(unicode=True, color=False, show_all=False))
        return 0
    if args.profile_out:
        profiler.sampler.dump_stats(args.profile_out)
    stats = pstats.Stats(profiler.sampler, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    idle = sum(
        v[2] for k, v in raw.items() if k[2] in ("<method 'poll' of 'select.epoll' objects>",)
    )
    print(
        f"main-thread CPU under cProfile {total:.2f} s = {total / args.n * 1e6:.0f} us per job, "
        f"of which {100 * idle / total:.0f}% waiting in epoll (aiosqlite threads, fsync); "
        "cProfile inflates call-heavy code, read shares rather than absolute times; "
        "*a coroutine's calls include its resumptions\n"
    )
    print(per_job_table(stats, args.n, total, args.profile_top))
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(args.profile_top)
    print("\n== all functions by own time ==")
    print(out.getvalue().split("\n\n", 2)[-1].rstrip())
    return 0


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=20_000, help="jobs per system (20,000)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="best of N runs per system, in rounds (3)"
    )
    parser.add_argument("--drain", type=float, default=300.0, help="give up after this many s")
    parser.add_argument("--rate", type=float, default=1000.0, help="lateness: offered jobs/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="lateness: measured seconds")
    parser.add_argument("--no-lateness", action="store_true", help="skip the lateness runs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--postgres",
        "--store",
        metavar="URL",
        help="also convexpy on PostgreSQL and procrastinate there (a scratch database per run "
        "on this server; needs CREATE DATABASE)",
    )
    parser.add_argument(
        "--postgres-only",
        action="store_true",
        help="with --postgres: only the PostgreSQL systems (no scheduling or lateness runs)",
    )
    parser.add_argument(
        "--profile", choices=("memory", "sqlite"), help="profile convexpy on this store instead"
    )
    parser.add_argument(
        "--profile-phase",
        choices=("dispatch", "schedule"),
        default="dispatch",
        help="dispatch (default): jobs scheduled while paused, then released; "
        "schedule: the scheduling mutations",
    )
    parser.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    parser.add_argument("--profile-top", type=int, default=35, help="rows of --profile output")
    parser.add_argument("--profile-out", help="also write the raw cProfile stats here")
    args = parser.parse_args(argv)

    info = machine()
    if args.profile:
        return profile(args, info)
    if not args.json:
        print(describe_machine(info))
        print(f"N = {args.n:,} no-op jobs due now per system, best of {args.repeat}\n", flush=True)

    plans: list[tuple[str, Any]] = [
        ("convexpy memory", lambda: convexpy_dispatch("memory", args.n, drain_s=args.drain)),
        ("convexpy sqlite", lambda: convexpy_dispatch("sqlite", args.n, drain_s=args.drain)),
        ("APScheduler 3 memory", lambda: apscheduler_dispatch(args.n, drain_s=args.drain)),
        ("asyncio ceiling", lambda: asyncio_ceiling(args.n)),
    ]
    if args.postgres and args.postgres_only:
        plans = []
    if args.postgres:
        plans += [
            (
                "convexpy postgresql",
                lambda: convexpy_on_postgres(args.postgres, args.n, args.drain),
            ),
            (
                "convexpy postgresql x2",
                lambda: convexpy_on_postgres_twice(args.postgres, args.n, args.drain),
            ),
            ("procrastinate", lambda: procrastinate_dispatch(args.postgres, args.n)),
        ]
    # Round robin: each round runs every system once, so that a slow phase of
    # a shared machine does not fall on one system's runs only.
    all_runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in plans}
    for _ in range(max(1, args.repeat)):
        for name, make in plans:
            gc.collect()  # start each run without the previous one's garbage
            all_runs[name].append(asyncio.run(make()))
    dispatch = []
    for name, _ in plans:
        runs = all_runs[name]
        best = max(runs, key=lambda r: (r["completed"], r["jobs_per_s"]))
        best["runs_jobs_per_s"] = [r["jobs_per_s"] for r in runs]
        dispatch.append(best)
        if not args.json:
            print(f"  {name:<24} {best['jobs_per_s']:>10,.0f} jobs/s", flush=True)
    scheduling = []
    for store in () if args.postgres_only else ("memory", "sqlite"):
        gc.collect()
        scheduling.append(asyncio.run(scheduling_rate(store, args.n)))
    lateness = []
    if not (args.no_lateness or args.postgres_only):
        for store in ("memory", "sqlite"):
            # A finished run's runtime is cyclic garbage: collected now, not in
            # the middle of the next measurement (a 50 ms pause on this machine).
            gc.collect()
            lateness.append(
                asyncio.run(measure_lateness(store, rate=args.rate, seconds=args.seconds))
            )

    if args.json:
        output = {
            "machine": info,
            "settings": vars(args),
            "dispatch": dispatch,
            "scheduling": scheduling,
            "lateness": lateness,
        }
        print(json.dumps(output, indent=2))
        return 0
    print("\ndispatch, first scheduling call to last job done:")
    print(dispatch_table(dispatch))
    if args.postgres:
        print("\non PostgreSQL (server CPU: the local server's processes, all of them):")
        print(postgres_table(dispatch))
    if scheduling:
        print(f"\nscheduling, {args.n:,} jobs due in 30 days, 1,000 per mutation:")
        print(scheduling_table(scheduling))
    if lateness:
        print(
            f"\nlateness at {args.rate:,.0f} jobs/s offered for {args.seconds:g} s, "
            "delays 0-500 ms (handler start - scheduledTime):"
        )
        print(lateness_table(lateness))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
