"""Child process of the scheduler crash test.

``produce``: keep scheduling batches of jobs, printing each committed batch.
``drain``: schedule nothing; print "drained" once no job is pending or running.
"""

from __future__ import annotations

import asyncio
import sys

from convexpy import Runtime


async def main(app: str, db: str, mode: str, start_batch: int) -> None:
    async with Runtime(app, store=f"sqlite:///{db}", parallelism=8) as rt:
        print("ready", flush=True)
        if mode == "produce":
            batch = start_batch
            while True:
                await rt.mutation("crash:produce", {"batch": batch, "n": 12})
                print(f"batch {batch}", flush=True)
                batch += 1
                await asyncio.sleep(0.005)
        while True:
            summary = await rt.query("crash:summary")
            states = {job["state"] for job in summary["jobs"]}
            if not states & {"pending", "inProgress"}:
                print("drained", flush=True)
                return
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
