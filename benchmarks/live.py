"""Live queries under load: from a commit to the subscribers that it changed.

The dev server (``python -m convexpy dev``, a subprocess, durable SQLite or
memory) serves ``benchmarks/apps/live_bench``: ``live:get`` reads one item by
its key through an index. This process opens ``--connections`` websocket
connections with :class:`convexpy.client.AsyncConvexClient` and subscribes
``--subscriptions`` of them, each to its own key. A driver connection then
calls ``live:touch`` ``--rate`` times a second, each call stamping
``--touch`` random items (1% of the subscriptions by default) with the wall
clock as its handler runs, just before it commits.

* **latency**: when a subscriber receives an item's new value, minus the
  stamp: the commit (with its fsync on SQLite), the invalidation, the
  re-run of the query, the websocket and the client's decoding. Wall clocks
  of one machine, so no skew.
* **re-runs**: how often ``live:get`` ran on the server (a counter in the
  app) past the first runs, against the subscriptions the touches changed:
  equal when invalidation is exact (fewer when a key is touched again before
  its re-run, which then covers both).
* **memory**: the server's resident memory after subscribing, minus before,
  per subscription.

    python benchmarks/live.py                        # 1,000 subs / 50 connections / 200 touches/s
    python benchmarks/live.py --store memory --seconds 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import describe_machine, machine, percentile, proc_status_kb, table

from convexpy.client import AsyncConvexClient

HERE = Path(__file__).resolve().parent
APP_DIR = HERE / "apps" / "live_bench"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_server(store: str, tmp: str) -> tuple[asyncio.subprocess.Process, str]:
    port = _free_port()
    command = [sys.executable, "-m", "convexpy", "dev", str(APP_DIR), "--port", str(port)]
    command += ["--memory"] if store == "memory" else ["--db", f"{tmp}/live.sqlite3"]
    command += ["--no-watch", "--quiet"]
    proc = await asyncio.create_subprocess_exec(*command, cwd=tmp, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=2) as http:
        deadline = time.monotonic() + 30
        while True:
            if proc.returncode is not None:
                raise SystemExit(f"the dev server exited with status {proc.returncode}")
            try:
                if (await http.get(url + "/")).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the dev server did not start within 30 s")
            await asyncio.sleep(0.05)


async def run(
    store: str, subscriptions: int, connections: int, rate: float, touch: int, seconds: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="convexpy-live-") as tmp:
        proc, url = await _start_server(store, tmp)
        try:
            return await _measure(
                proc, url, store, subscriptions, connections, rate, touch, seconds
            )
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


async def _measure(
    proc: asyncio.subprocess.Process,
    url: str,
    store: str,
    subscriptions: int,
    connections: int,
    rate: float,
    touch: int,
    seconds: float,
) -> dict[str, Any]:
    driver = AsyncConvexClient(url)
    clients = [AsyncConvexClient(url) for _ in range(connections)]
    async with driver:
        await driver.mutation("live:seed", {"n": subscriptions})
        for client in clients:
            client.start()
        rss_before = proc_status_kb("VmRSS", str(proc.pid))
        latencies: list[float] = []
        received = 0
        measuring = False
        ready = asyncio.Semaphore(0)

        async def watch(client: AsyncConvexClient, key: int) -> None:
            nonlocal received
            first = True
            async for item in client.subscribe("live:get", {"key": key}):
                if first:
                    first = False
                    ready.release()
                    continue
                if measuring:
                    received += 1
                    latencies.append(time.time() * 1000.0 - item["at"])

        watchers = [
            asyncio.create_task(watch(clients[key % connections], key))
            for key in range(subscriptions)
        ]
        for _ in range(subscriptions):
            await asyncio.wait_for(ready.acquire(), 60)
        rss_after = proc_status_kb("VmRSS", str(proc.pid))
        runs_before = await driver.query("live:runs")

        touched: list[int] = []
        in_flight: set[asyncio.Task[Any]] = set()
        rng = random.Random(1)
        measuring = True
        t0 = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - t0) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                keys = rng.sample(range(subscriptions), touch)
                touched.extend(keys)
                task = asyncio.create_task(driver.mutation("live:touch", {"keys": keys}))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                sent += 1
            await asyncio.sleep(max(0.0, (sent / rate) - (time.perf_counter() - t0)))
        if in_flight:
            await asyncio.wait(in_flight, timeout=30)
        # Let the last updates arrive: until nothing came for 0.5 s.
        while True:
            before = received
            await asyncio.sleep(0.5)
            if received == before:
                break
        measuring = False
        reruns = await driver.query("live:runs") - runs_before
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for client in clients:
            await client.close()
    latencies.sort()
    return {
        "store": store,
        "subscriptions": subscriptions,
        "connections": connections,
        "touches": sent,
        "touches_per_s": sent / seconds,
        "changed": len(touched),
        "received": received,
        "reruns": reruns,
        "p50_ms": percentile(latencies, 0.50) if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99) if latencies else float("nan"),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "kb_per_subscription": (rss_after - rss_before) / subscriptions,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "memory"), action="append")
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="touch mutations per second")
    parser.add_argument("--touch", type=int, default=None, help="items per touch (default: 1%%)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    touch = args.touch or max(1, args.subscriptions // 100)
    info = machine()
    results = [
        asyncio.run(
            run(store, args.subscriptions, args.connections, args.rate, touch, args.seconds)
        )
        for store in args.store or ["sqlite", "memory"]
    ]
    if args.json:
        print(json.dumps({"machine": info, "results": results}, indent=2))
        return 0
    print(describe_machine(info))
    print(
        f"{args.subscriptions:,} subscriptions over {args.connections} connections, "
        f"{args.rate:g} touches/s of {touch} items each, {args.seconds:g} s\n"
    )
    header = [
        "store",
        "touches/s",
        "changed",
        "received",
        "re-runs",
        "p50 ms",
        "p99 ms",
        "max ms",
        "KB/sub",
    ]
    rows = [
        [
            r["store"],
            f"{r['touches_per_s']:,.0f}",
            f"{r['changed']:,}",
            f"{r['received']:,}",
            f"{r['reruns']:,}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['max_ms']:.1f}",
            f"{r['kb_per_subscription']:.1f}",
        ]
        for r in results
    ]
    print(table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
