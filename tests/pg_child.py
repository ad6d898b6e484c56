"""Child process of tests/test_postgres_store.py: transactions against a
PostgreSQL store shared with other processes.

Each opens its store, prints ``ready`` and waits for a line on stdin
before it starts, so that the children of a test run at the same time.

``python pg_child.py counter URL DOC_ID TIMES``: increments the ``n`` of
document ``DOC_ID`` (table ``counters``) ``TIMES`` times, each in its own
read-modify-write transaction retried on conflict; prints
``{"conflicts": N}``.

``python pg_child.py serial URL TABLE SLOTS_JSON SEED ROUNDS``: runs ``ROUNDS``
rounds of random concurrent transactions of the conformance suite's
serializability test (tests/conformance/test_serializable.py) on ``TABLE``;
prints each committed one as JSON: ``{"ts", "wrote", "spec", "reads", "inserted"}``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from conformance.test_serializable import (
    SLOTS,
    T0,
    VALUES,
    by_v,
    run_transaction,
)

from convexpy.db import TableNames
from convexpy.store import ConflictError, PostgresStore, ReadSet, Write
from convexpy.store.base import BY_CREATION_TIME, conflict_pause_s


async def ready() -> None:
    """Say so, and wait for the parent's go (a line on stdin): all children start at once."""
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)


async def counter(url: str, doc_id: str, times: int) -> None:
    store = PostgresStore(url)
    await store.open()
    conflicts = 0
    try:
        await ready()
        for _ in range(times):
            while True:
                snapshot = store.snapshot()
                try:
                    doc = await store.get(snapshot, doc_id)
                    assert doc is not None
                    new = {**doc, "n": doc["n"] + 1}
                    reads = ReadSet(ids={doc_id})
                    await store.commit(snapshot, reads, [Write(doc_id, "counters", doc, new)])
                    break
                except ConflictError:
                    conflicts += 1
                finally:
                    store.release(snapshot)
                await asyncio.sleep(conflict_pause_s(min(conflicts, 6)))
    finally:
        await store.close()
    print(json.dumps({"conflicts": conflicts}), flush=True)


def random_op(rng: random.Random) -> list[Any]:
    """One operation, as the property test's strategies make them."""
    target = ["slot", rng.randrange(SLOTS)] if rng.random() < 0.5 else ["seen", rng.randrange(4)]
    kind = rng.choice(["get", "scan", "set", "delete", "insert", "yield", "yield"])
    if kind == "get":
        return ["get", rng.randrange(SLOTS)]
    if kind == "scan":
        index = rng.choice(["by_v", "by_v", BY_CREATION_TIME])
        return [
            "scan", index, rng.randrange(VALUES), rng.randint(1, VALUES),
            rng.choice(["asc", "desc"]), rng.randint(1, 5),
        ]  # fmt: skip
    if kind == "set":
        return ["set", target, rng.randrange(VALUES)]
    if kind == "delete":
        return ["delete", target]
    if kind == "insert":
        return ["insert", rng.randrange(VALUES)]
    return ["yield"]


async def serial(url: str, table: str, slots: list[str], seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    store = PostgresStore(url)
    await store.open()
    try:
        await store.configure_indexes([by_v(table)])
        # Creation times of their own, so that no two processes hand out the
        # same (the replay orders by _creationTime alone); set before anything
        # loads the table's last one, which may be another process's.
        store.creation_time(table, T0 + (seed + 1) * 1e9)
        tables = TableNames()
        tables.add(table)
        await ready()
        for _ in range(rounds):
            specs = [
                (
                    rng.randint(0, 3),
                    rng.random() < 0.5,
                    [random_op(rng) for _ in range(rng.randint(1, 7))],
                )
                for _ in range(rng.randint(2, 6))
            ]
            outcomes = await asyncio.gather(
                *(run_transaction(store, table, tables, slots, spec) for spec in specs)
            )
            for outcome, spec in zip(outcomes, specs, strict=True):
                if outcome.committed:
                    record = {
                        "ts": outcome.ts,
                        "wrote": outcome.wrote,
                        "spec": spec,
                        "reads": outcome.reads,
                        "inserted": outcome.inserted,
                    }
                    print(json.dumps(record), flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    mode, url, *rest = sys.argv[1:]
    if mode == "counter":
        asyncio.run(counter(url, rest[0], int(rest[1])))
    else:
        table, slots, seed, rounds = rest
        asyncio.run(serial(url, table, json.loads(slots), int(seed), int(rounds)))
