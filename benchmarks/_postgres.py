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
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _common import cpu_meter, dispatch_result

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
                    await asyncio.wait_for(done.wait(), drain_s)
                    completed = True
                except TimeoutError:
                    completed = False
                finally:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await worker
    seconds = (last if completed else time.perf_counter()) - t0
    return dispatch_result(
        f"procrastinate ({concurrency} slots)",
        n,
        completed=completed,
        seconds=seconds,
        scheduled=scheduled,
        usage=usage,
    )
