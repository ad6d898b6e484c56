"""Child process of the building blocks' crash tests (tests/apps/durable).

``marker``: start one retrier run of ``work:marker`` (which blocks while the
file CONVEXPY_DURABLE_BLOCK exists), print its id, and wait to be killed.
``produce``: keep starting retrier runs of ``work:shaky``, printing each
committed batch. ``drain``: start nothing; print "drained" once every run
has completed.
"""

from __future__ import annotations

import asyncio
import sys

from convexpy import Runtime


async def main(app: str, db: str, mode: str, start_batch: int) -> None:
    async with Runtime(app, store=f"sqlite:///{db}", parallelism=8) as rt:
        print("ready", flush=True)
        if mode == "marker":
            print("run", await rt.mutation("work:start_marker", {"key": "m"}), flush=True)
            await asyncio.Event().wait()
        if mode == "produce":
            batch = start_batch
            while True:
                await rt.mutation("work:start_shaky", {"batch": batch, "n": 6})
                print(f"batch {batch}", flush=True)
                batch += 1
                await asyncio.sleep(0.005)
        while True:
            runs = await rt.query("work:runs")
            if all(run["state"] == "completed" for run in runs):
                print("drained", flush=True)
                return
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
