"""The durable scheduler at scale: a million far-future jobs, restart, timing accuracy.

Part 1, capacity (SQLite, durable ``synchronous=FULL``, in a temp dir): a fresh
subprocess schedules ``--jobs`` no-op jobs due in 30 days, 1,000 per mutation
(``jobs:schedule`` loops ``ctx.scheduler.run_after``), one mutation after another.
Reported: jobs/s, the database's size (main file + ``-wal`` while open, and after a
clean close) and the growth of the process's peak RSS (``VmHWM``) over its
baseline after imports, plus the peak RSS of the store's writer process.
Then another fresh subprocess restarts on that file and reports the time
until ``Runtime.__aenter__`` returns and until a newly scheduled
``run_after(0)`` job has run (its job event), both from process spawn
(interpreter start and imports included) and from just before ``__aenter__``.
Targets: peak RSS growth + writer RSS < 300 MB, restart to first job < 3 s.

Part 2, timing accuracy (system clock): a producer offers a steady ``--rate``
jobs/s (default 1,000) for ``--seconds`` after a warm-up, each due 0-500 ms
after it is scheduled (``run_at``); lateness is the job handler's wall-clock
start minus its ``scheduledTime``. Memory and SQLite. Target: p99 < 10 ms.
"p99 after commit" discounts the jobs that fell due before the mutation that
scheduled them had committed.

    python benchmarks/scheduler.py                      # both parts, 1M jobs
    python benchmarks/scheduler.py --jobs 100000 --seconds 5
    python benchmarks/scheduler.py --part lateness --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    APP_DIR,
    BATCH,
    JobCounter,
    children_status_kb,
    describe_machine,
    file_mb,
    lateness_table,
    machine,
    measure_lateness,
    percentile,
    proc_status_kb,
    schedule_jobs,
    table,
)

import convexpy
from convexpy.store._sqlite_jobs import STATE_CODES
from convexpy.store.jobs import JobState

THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000.0
RSS_TARGET_MB = 300.0
RESTART_TARGET_S = 3.0
LATENESS_TARGET_MS = 10.0


def db_files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


# -- subprocesses ----------------------------------------------------------------------


def child_schedule(db: Path, jobs: int) -> dict[str, Any]:
    """Schedule ``jobs`` far-future jobs on a fresh SQLite file, in this process."""
    baseline_rss = proc_status_kb("VmRSS")
    baseline_hwm = proc_status_kb("VmHWM")
    baseline_maxrss = maxrss_kb()

    async def run() -> dict[str, Any]:
        async with convexpy.Runtime(APP_DIR, store=f"sqlite:///{db}", crons=False) as rt:
            progress = max(BATCH, jobs // 10 // BATCH * BATCH)
            latencies: list[float] = []
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            for first in range(0, jobs, progress):
                count = min(progress, jobs - first)
                latencies += await schedule_jobs(rt, count, THIRTY_DAYS_MS, first)
                done = first + count
                rate = done / (time.perf_counter() - t0)
                print(
                    f"  scheduled {done:,} / {jobs:,} ({rate:,.0f}/s, "
                    f"RSS {proc_status_kb('VmRSS') / 1024:,.0f} MB)",
                    file=sys.stderr,
                )
            seconds = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            open_mb = file_mb(*db_files(db))
            end_rss = proc_status_kb("VmRSS")
            writer_peak = children_status_kb("VmHWM")  # the store's writer process
        latencies.sort()
        return {
            "jobs": jobs,
            "mutations": len(latencies),
            "seconds": seconds,
            "jobs_per_s": jobs / seconds,
            "cpu_percent": 100 * cpu / seconds,
            "mutation_p50_ms": percentile(latencies, 0.5) * 1000,
            "mutation_p99_ms": percentile(latencies, 0.99) * 1000,
            "db_open_mb": open_mb,
            "db_closed_mb": file_mb(*db_files(db)),
            "baseline_rss_mb": baseline_rss / 1024,
            "end_rss_mb": end_rss / 1024,
            "peak_rss_mb": proc_status_kb("VmHWM") / 1024,
            "peak_rss_growth_mb": (proc_status_kb("VmHWM") - baseline_hwm) / 1024,
            "maxrss_growth_mb": (maxrss_kb() - baseline_maxrss) / 1024,
            "writer_peak_rss_mb": writer_peak / 1024,
            "memory_mb": (proc_status_kb("VmHWM") - baseline_hwm + writer_peak) / 1024,
        }

    return asyncio.run(run())


def child_restart(db: Path, timeout: float) -> dict[str, Any]:
    """Open the runtime on ``db`` and run one ``run_after(0)`` job; wall-clock times."""
    imported = time.time()

    async def run() -> dict[str, Any]:
        rt = convexpy.Runtime(APP_DIR, store=f"sqlite:///{db}")
        counter = JobCounter()
        rt.listeners.append(counter)
        enter = time.time()
        async with rt:
            ready = time.time()
            await rt.mutation("jobs:schedule", {"first": -1, "count": 1, "delay_ms": 0})
            ran = await counter.wait_for(1, timeout)
            job_done = time.time()
        return {
            "imported": imported,
            "enter": enter,
            "ready": ready,
            "job_done": job_done,
            "job_ran": ran and counter.outcomes.get("success") == 1,
            "peak_rss_mb": proc_status_kb("VmHWM") / 1024,
        }

    return asyncio.run(run())


def run_child(args: list[str]) -> tuple[dict[str, Any], float]:
    """Run this script as a child; its JSON result and the wall time it was spawned."""
    spawned = time.time()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args[:2]} failed with exit status {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, spawned


def count_jobs(db: Path) -> dict[str, int]:
    """Jobs in the file by state, read with plain sqlite3 (the runtime is closed)."""
    conn = sqlite3.connect(db)
    try:
        (total,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
        (pending,) = conn.execute(
            "SELECT count(*) FROM jobs WHERE state = ?", (STATE_CODES[JobState.PENDING.value],)
        ).fetchone()
    finally:
        conn.close()
    return {"total": total, "pending": pending}


# -- part 1: capacity and restart ------------------------------------------------------


def capacity(jobs: int, restart_timeout: float, quiet: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="convexpy-bench-") as tmp:
        db = Path(tmp) / "bench.db"
        if not quiet:
            print(f"part 1: scheduling {jobs:,} jobs due in 30 days into {db} ...", flush=True)
        scheduled, _ = run_child(["--child", "schedule", "--db", str(db), "--jobs", str(jobs)])
        if not quiet:
            print("  restarting on it ...", flush=True)
        child, spawned = run_child(
            ["--child", "restart", "--db", str(db), "--timeout", str(restart_timeout)]
        )
        restart = {
            "spawn_to_ready_s": child["ready"] - spawned,
            "enter_to_ready_s": child["ready"] - child["enter"],
            "spawn_to_job_s": child["job_done"] - spawned,
            "enter_to_job_s": child["job_done"] - child["enter"],
            "spawn_to_imported_s": child["imported"] - spawned,
            "job_ran": child["job_ran"],
            "peak_rss_mb": child["peak_rss_mb"],
        }
        jobs_in_file = count_jobs(db)
    return {"schedule": scheduled, "restart": restart, "jobs_in_file": jobs_in_file}


def capacity_tables(result: dict[str, Any]) -> str:
    s, r = result["schedule"], result["restart"]
    rss_ok = "ok" if s["memory_mb"] < RSS_TARGET_MB else "MISSED"
    first = table(
        (
            "jobs",
            "mutations",
            "seconds",
            "jobs/s",
            "mutation p50/p99 ms",
            "DB MB (+wal)",
            "DB MB closed",
            "peak RSS growth MB",
            "writer RSS MB",
            f"sum < {RSS_TARGET_MB:.0f} MB",
        ),
        [
            (
                f"{s['jobs']:,}",
                f"{s['mutations']:,}",
                f"{s['seconds']:.1f}",
                f"{s['jobs_per_s']:,.0f}",
                f"{s['mutation_p50_ms']:.1f} / {s['mutation_p99_ms']:.1f}",
                f"{s['db_open_mb']:,.0f}",
                f"{s['db_closed_mb']:,.0f}",
                f"{s['peak_rss_growth_mb']:,.0f}",
                f"{s['writer_peak_rss_mb']:,.0f}",
                rss_ok,
            )
        ],
    )
    job_ok = r["job_ran"] and r["spawn_to_job_s"] < RESTART_TARGET_S
    second = table(
        ("restart on that file", "from spawn s", "from __aenter__ s", f"< {RESTART_TARGET_S:g} s"),
        [
            ("runtime ready", f"{r['spawn_to_ready_s']:.3f}", f"{r['enter_to_ready_s']:.3f}", ""),
            (
                "run_after(0) job ran" + ("" if r["job_ran"] else " (NOT RUN)"),
                f"{r['spawn_to_job_s']:.3f}",
                f"{r['enter_to_job_s']:.3f}",
                "ok" if job_ok else "MISSED",
            ),
        ],
    )
    files = result["jobs_in_file"]
    notes = (
        f"(process start to imports done {r['spawn_to_imported_s']:.3f} s; restart peak RSS "
        f"{r['peak_rss_mb']:,.0f} MB; {files['total']:,} jobs in the file after restart, "
        f"{files['pending']:,} pending)"
    )
    return f"{first}\n\n{second}\n{notes}"


# -- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--part", choices=("all", "capacity", "lateness"), default="all")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="part 1 jobs (1,000,000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="part 2 offered jobs/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="part 2 measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="part 2 warm-up seconds")
    parser.add_argument(
        "--max-delay", type=float, default=500.0, help="part 2 delays are uniform 0..this ms"
    )
    parser.add_argument("--stores", default="memory,sqlite", help="part 2 stores")
    parser.add_argument("--restart-timeout", type=float, default=60.0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--child", choices=("schedule", "restart"), help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "schedule":
        print(json.dumps(child_schedule(args.db, args.jobs)))
        return 0
    if args.child == "restart":
        print(json.dumps(child_restart(args.db, args.timeout)))
        return 0

    info = machine()
    output: dict[str, Any] = {"machine": info, "settings": vars(args) | {"db": None}}
    if not args.json:
        print(describe_machine(info) + "\n")
    if args.part in ("all", "capacity"):
        output["capacity"] = capacity(args.jobs, args.restart_timeout, args.json)
        if not args.json:
            print("\n" + capacity_tables(output["capacity"]) + "\n")
    if args.part in ("all", "lateness"):
        stores = [s for s in args.stores.replace(",", " ").split() if s]
        if not args.json:
            print(
                f"part 2: lateness at {args.rate:,.0f} jobs/s offered for {args.seconds:g} s "
                f"(after {args.warmup:g} s warm-up), delays 0-{args.max_delay:g} ms, "
                f"target p99 < {LATENESS_TARGET_MS:g} ms ...",
                flush=True,
            )
        results = []
        for store in stores:
            gc.collect()  # the previous run's garbage, not during this one
            results.append(
                asyncio.run(
                    measure_lateness(
                        store,
                        rate=args.rate,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        max_delay_ms=args.max_delay,
                    )
                )
            )
        output["lateness"] = results
        if not args.json:
            print("\n" + lateness_table(results))
    if args.json:
        print(json.dumps(output, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
