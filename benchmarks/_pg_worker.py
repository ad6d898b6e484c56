"""A second convexpy process for ``dispatch.py --postgres URL --processes 2``.

``python _pg_worker.py DATABASE_URL``: opens the benchmark app on that
database, prints ``ready``, then on ``go FIRST COUNT`` schedules its share of
the jobs the way the first process does (``schedule_jobs``). Every 20 ms in
which its count of finished jobs changed it prints ``finished COUNT LAST_AT``,
``LAST_AT`` being ``time.perf_counter()`` at its last finished job: on Linux
that is ``CLOCK_MONOTONIC``, one clock for every process of the machine, so
the first process can compare it with its own. Exits at the end of stdin.
"""

from __future__ import annotations

import asyncio
import sys

from _common import APP_DIR, JobCounter, schedule_jobs

import convexpy


async def report(counter: JobCounter) -> None:
    told = -1
    while True:
        if counter.finished != told:
            told = counter.finished
            print(f"finished {told} {counter.last_at!r}", flush=True)
        await asyncio.sleep(0.02)


async def main(url: str) -> None:
    async with convexpy.Runtime(APP_DIR, store=url, crons=False, parallelism=16) as rt:
        counter = JobCounter()
        rt.listeners.append(counter)
        reporter = asyncio.create_task(report(counter))
        print("ready", flush=True)
        commands = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(commands), sys.stdin.buffer
        )
        while line := await commands.readline():
            _go, first, count = line.split()
            await schedule_jobs(rt, int(count), 0.0, int(first))
        reporter.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
