"""asyncpg against psycopg 3 (async) for what the PostgreSQL store does.

Three workloads on one connection each, best of ``--repeat`` rounds (the
drivers alternate within a round, so a slow phase of a shared machine does
not fall on one of them only):

* point read: ``SELECT doc FROM t WHERE id = $1`` (a round trip, a bytea back);
* commit of 128 rows: a transaction inserting 128 (id, key, doc) rows with
  one statement over arrays (``unnest``), then COMMIT;
* range scan: 100 rows of a key range in key order (bytea keys, bytea docs).

Runs against ``--url`` or, by default, a throwaway cluster started like the
tests' (tests/pg_server.py: fsync off, so commits measure the drivers and
the server's CPU, not the disk). Prints a table of microseconds per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

ROWS = 10_000
DOC = os.urandom(200)
SETUP = [
    "DROP TABLE IF EXISTS bench",
    "CREATE TABLE bench (id text PRIMARY KEY, key bytea NOT NULL UNIQUE, doc bytea NOT NULL)",
]


def row(n: int) -> tuple[str, bytes, bytes]:
    return (f"id{n:08}", n.to_bytes(8, "big"), DOC)


async def asyncpg_ops(url: str) -> dict[str, Callable[[int], Awaitable[None]]]:
    conn = await asyncpg.connect(url)
    counter = [ROWS]

    async def point(n: int) -> None:
        await conn.fetchval("SELECT doc FROM bench WHERE id = $1", row(n % ROWS)[0])

    async def commit(n: int) -> None:
        rows = [row(counter[0] + i) for i in range(128)]
        counter[0] += 128
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO bench SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])",
                *map(list, zip(*rows, strict=True)),
            )

    async def scan(n: int) -> None:
        await conn.fetch(
            "SELECT key, doc FROM bench WHERE key >= $1 ORDER BY key LIMIT 100",
            row(n % (ROWS - 100))[1],
        )

    return {"point read": point, "commit 128 rows": commit, "range scan 100": scan}


async def psycopg_ops(url: str) -> dict[str, Callable[[int], Awaitable[None]]]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=0)
    counter = [ROWS * 100]

    async def point(n: int) -> None:
        cur = await conn.execute(
            "SELECT doc FROM bench WHERE id = %s", (row(n % ROWS)[0],), binary=True
        )
        await cur.fetchone()

    async def commit(n: int) -> None:
        rows = [row(counter[0] + i) for i in range(128)]
        counter[0] += 128
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO bench SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bytea[])",
                [list(column) for column in zip(*rows, strict=True)],
                binary=True,
            )

    async def scan(n: int) -> None:
        cur = await conn.execute(
            "SELECT key, doc FROM bench WHERE key >= %s ORDER BY key LIMIT 100",
            (row(n % (ROWS - 100))[1],),
            binary=True,
        )
        await cur.fetchall()

    return {"point read": point, "commit 128 rows": commit, "range scan 100": scan}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a database to use (default: a throwaway cluster)")
    parser.add_argument("--ops", type=int, default=2000, help="operations per workload and round")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cluster = None
    url = args.url
    if url is None:
        import pg_server

        cluster = pg_server.cluster()
        url = cluster.database("bench")
    try:
        setup = await asyncpg.connect(url)
        for statement in SETUP:
            await setup.execute(statement)
        await setup.executemany("INSERT INTO bench VALUES ($1, $2, $3)", map(row, range(ROWS)))
        await setup.execute("ANALYZE bench")
        await setup.close()
        drivers = {
            f"asyncpg {asyncpg.__version__}": await asyncpg_ops(url),
            f"psycopg {psycopg.__version__} (async)": await psycopg_ops(url),
        }
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.repeat):
            for driver, ops in drivers.items():
                for name, op in ops.items():
                    count = args.ops if name != "commit 128 rows" else args.ops // 10
                    start = time.perf_counter()
                    for n in range(count):
                        await op(n)
                    per_op = (time.perf_counter() - start) / count * 1e6
                    key = (driver, name)
                    best[key] = min(best.get(key, float("inf")), per_op)
        names = list(next(iter(drivers.values())))
        print(f"{'us per operation (best of ' + str(args.repeat) + ')':<34}", end="")
        print("".join(f"{name:>18}" for name in names))
        for driver in drivers:
            print(f"{driver:<34}", end="")
            print("".join(f"{best[(driver, name)]:>18.0f}" for name in names))
    finally:
        if cluster is not None:
            pg_server.stop()


if __name__ == "__main__":
    asyncio.run(main())
