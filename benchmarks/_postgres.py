"""PostgreSQL for ``dispatch.py --postgres URL``: scratch databases, and
procrastinate measured the way ``dispatch.py`` measures convexpy.

N no-op async tasks deferred 1,000 per call (``batch_defer_async``), then
one worker with ``concurrency`` slots runs them (LISTEN/NOTIFY on, jobs kept).
The clock runs from the first defer to the N-th task body. Each run gets a
database of its own on the server of ``url``, dropped afterwards.

Needs ``pip install procrastinate`` (psycopg 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _common import cpu_meter, dispatch_result, wait_set

BATCH = 1000


@contextlib.asynccontextmanager
async def scratch_database(url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of ``url`` (its URL), dropped on exit."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ticks(pid: int | str, *, reaped: bool) -> int:
    """A process's user + system CPU clock ticks (with ``reaped``, also those
    of its children that exited and were waited for)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks + (int(fields[13]) + int(fields[14]) if reaped else 0)


async def postmaster_pid(url: str) -> int | None:
    """The pid of the server of ``url`` when it runs on this machine and its
    processes can be read (else None): the parent of a backend."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return _parent(conn.info.backend_pid)


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def server_cpu_s(postmaster: int | None) -> float | None:
    """CPU seconds a local PostgreSQL server used so far: the postmaster, its
    exited backends and its live ones (None when it cannot be read)."""
    if postmaster is None:
        return None
    try:
        total = _ticks(postmaster, reaped=True)
        with open(f"/proc/{postmaster}/task/{postmaster}/children") as file:
            children = file.read().split()
    except OSError:
        return None
    for child in children:
        with contextlib.suppress(OSError):  # it just exited
            total += _ticks(child, reaped=False)
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def server_cpu_meter(url: str | None, n: int) -> AsyncIterator[dict[str, Any]]:
    """The server's CPU us per job over the block, in the dict as
    ``server_cpu_us_per_job`` on exit (None when the server is not local;
    nothing without a ``url``)."""
    if url is None:
        yield {}
        return
    postmaster = await postmaster_pid(url)
    before = server_cpu_s(postmaster)
    found: dict[str, Any] = {}
    try:
        yield found
    finally:
        after = server_cpu_s(postmaster)
        used = None if before is None or after is None else after - before
        found["server_cpu_us_per_job"] = None if used is None else used / n * 1e6


async def procrastinate_dispatch(
    url: str, n: int, *, concurrency: int = 16, drain_s: float = 600.0
) -> dict[str, Any]:
    import procrastinate

    done = asyncio.Event()
    count = 0
    last = 0.0
    async with scratch_database(url) as db_url:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=db_url))

        @app.task(name="noop")
        async def noop(i: int) -> None:
            nonlocal count, last
            count += 1
            if count == n:
                last = time.perf_counter()
                done.set()

        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            async with server_cpu_meter(db_url, n) as server_cpu:
                with cpu_meter() as usage:
                    t0 = time.perf_counter()
                    for start in range(0, n, BATCH):
                        await noop.batch_defer_async(
                            *({"i": i} for i in range(start, min(n, start + BATCH)))
                        )
                    scheduled = time.perf_counter() - t0
                    worker = asyncio.create_task(
                        app.run_worker_async(
                            concurrency=concurrency,
                            wait=True,
                            install_signal_handlers=False,
                            delete_jobs="never",
                        )
                    )
                    try:
                        completed = await wait_set(done, drain_s)
                    finally:
                        worker.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await worker
    seconds = (last if completed else time.perf_counter()) - t0
    return {
        **dispatch_result(
            f"procrastinate ({concurrency} slots)",
            n,
            completed=completed,
            seconds=seconds,
            scheduled=scheduled,
            usage=usage,
        ),
        **server_cpu,
    }
