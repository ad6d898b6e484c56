"""Child process of tests/test_multiproc.py: a runtime on a shared PostgreSQL store.

``python multiproc_child.py APP_DIR URL``: runs the app's scheduled jobs;
prints ``ready PID`` once started and exits at the end of stdin.
"""

from __future__ import annotations

import asyncio
import os
import sys

from convexpy import Runtime


async def main(app: str, url: str) -> None:
    async with Runtime(app, store=url):
        print(f"ready {os.getpid()}", flush=True)
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
