"""Snapshot reads: isolation from later commits, and ``get``, ``get_many``
and ``scan`` (orders, limits, key ranges) against a model."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from convexpy.ids import new_id
from convexpy.store import IndexDef, KeyRange, Snapshot, Store
from convexpy.store.base import Document, Order
from convexpy.store.keys import encode_prefix, prefix_successor

from .helpers import (
    BY_OWNER,
    BY_OWNER_DUE,
    BY_V,
    TASKS,
    Txn,
    assert_keys,
    by_creation,
    eq,
    full,
    ids,
    insert,
    replace,
    scan_ids,
)


async def test_snapshot_isolation(store: Store) -> None:
    await store.configure_indexes([BY_OWNER])
    a = await insert(store, TASKS, owner="x")
    b = await insert(store, TASKS, owner="y")
    c = await insert(store, TASKS, owner="z")
    old = store.snapshot()

    txn = Txn(store)
    a2 = await txn.replace(TASKS, a["_id"], owner="w")  # moves a's by_owner key
    await txn.delete(TASKS, b["_id"])
    d = await txn.insert(TASKS, owner="x")  # takes a's old place in by_owner
    await txn.commit()
    c2 = await replace(store, TASKS, c["_id"], owner="z", more=True)  # same key, new content
    new = store.snapshot()

    async def seen(snapshot: Any, index: IndexDef, key_range: KeyRange, order: Order) -> list[str]:
        rows = await store.scan(snapshot, key_range, order, 100)
        assert_keys(index, rows, order)
        return ids([doc for _, doc in rows])

    created = by_creation(TASKS)
    missing = new_id(TASKS)
    every = [a["_id"], b["_id"], c["_id"], d["_id"], missing]
    # The old snapshot sees exactly the state when it was taken.
    assert await store.get(old, a["_id"]) == a
    assert await store.get(old, b["_id"]) == b
    assert await store.get(old, c["_id"]) == c
    assert await store.get(old, d["_id"]) is None
    assert await store.get_many(old, every) == dict(zip(every, [a, b, c, None, None], strict=True))
    assert await seen(old, created, full(created), "asc") == ids([a, b, c])
    assert await seen(old, created, full(created), "desc") == ids([c, b, a])
    assert await seen(old, BY_OWNER, full(BY_OWNER), "asc") == ids([a, b, c])
    assert await seen(old, BY_OWNER, eq(BY_OWNER, "x"), "asc") == ids([a])
    assert await seen(old, BY_OWNER, eq(BY_OWNER, "w"), "asc") == []
    assert [doc for _, doc in await store.scan(old, eq(BY_OWNER, "z"), "asc", 5)] == [c]
    # A new snapshot sees the new state.
    assert await store.get(new, a["_id"]) == a2
    assert await store.get(new, b["_id"]) is None
    assert await store.get(new, d["_id"]) == d
    assert await store.get_many(new, every) == dict(
        zip(every, [a2, None, c2, d, None], strict=True)
    )
    assert await seen(new, created, full(created), "asc") == ids([a, c, d])
    assert await seen(new, BY_OWNER, full(BY_OWNER), "desc") == ids([c, d, a])
    assert await seen(new, BY_OWNER, eq(BY_OWNER, "x"), "asc") == ids([d])
    assert [doc for _, doc in await store.scan(new, eq(BY_OWNER, "z"), "asc", 5)] == [c2]
    store.release(old)
    store.release(new)


@pytest.mark.parametrize("seed", range(3))
async def test_pinned_snapshots_match_history(store: Store, seed: int) -> None:
    """Snapshots pinned along a random history each keep reading their own state,
    through gets and scans with every order, limit and range."""
    rng = random.Random(seed)
    await store.configure_indexes([BY_V])
    model: dict[str, Document] = {}
    every_id: list[str] = []
    pinned: list[tuple[Snapshot, dict[str, Document]]] = []
    for step in range(36):
        # Up to three transactions on distinct documents, committed concurrently.
        txns = []
        busy: set[str] = set()
        for _ in range(rng.randint(1, 3)):
            txn = Txn(store)
            op = rng.random()
            free = [i for i in model if i not in busy]
            if op < 0.45 or not free:
                doc = await txn.insert(TASKS, v=rng.randint(0, 5))
                every_id.append(doc["_id"])
            else:
                target = rng.choice(free)
                busy.add(target)
                if op < 0.8:
                    await txn.replace(TASKS, target, v=rng.randint(0, 5), step=step)
                else:
                    await txn.delete(TASKS, target)
            txns.append(txn)
        await asyncio.gather(*(txn.commit() for txn in txns))
        for txn in txns:
            for write in txn.writes.values():
                if write.new is None:
                    del model[write.id]
                else:
                    model[write.id] = write.new
        if step % 5 == 0:
            pinned.append((store.snapshot(), dict(model)))
    pinned.append((store.snapshot(), dict(model)))

    created = by_creation(TASKS)
    ranges: list[tuple[IndexDef, KeyRange, Callable[[Document], bool]]] = [
        (created, full(created), lambda doc: True),
        (BY_V, full(BY_V), lambda doc: True),
        (BY_V, eq(BY_V, 2), lambda doc: doc["v"] == 2),
        (
            BY_V,
            KeyRange(BY_V.key, encode_prefix([1]), encode_prefix([4])),
            lambda doc: 1 <= doc["v"] < 4,
        ),
        (
            BY_V,
            KeyRange(BY_V.key, prefix_successor(encode_prefix([3])) or b"", None),
            lambda doc: doc["v"] > 3,
        ),
    ]
    for snapshot, state in pinned:
        for doc_id in every_id:
            assert await store.get(snapshot, doc_id) == state.get(doc_id)
        assert await store.get_many(snapshot, every_id) == {i: state.get(i) for i in every_id}
        for index, key_range, wanted in ranges:
            expected = sorted(
                (doc for doc in state.values() if wanted(doc)),
                key=lambda doc: (*(doc[f] for f in index.fields), doc["_creationTime"]),
            )
            for order in ("asc", "desc"):
                in_order = expected if order == "asc" else expected[::-1]
                for limit in (1, 2, 3, 7, 1000):
                    rows = await store.scan(snapshot, key_range, order, limit)
                    assert [doc for _, doc in rows] == in_order[:limit], (index.name, order, limit)
                    assert_keys(index, rows, order)
        store.release(snapshot)


async def test_scan_order_limits_and_ranges(store: Store) -> None:
    await store.configure_indexes([BY_OWNER_DUE])
    # Created in an order unrelated to the index order.
    specs: list[dict[str, Any]] = [
        {"owner": "bob", "due": 5},
        {"owner": "alice", "due": 3},
        {"owner": "bob", "due": 2},
        {"owner": "bob", "due": 1.5},  # a float: after every int
        {"owner": "bob"},  # missing: before null and every number
        {"owner": "bob", "due": None},
        {"owner": "carol", "due": 1},
        {"owner": "bob", "due": 9},
        {"owner": "bob", "due": 2},  # ties with the earlier due=2 by creation
        {"owner": "bob", "due": 2},
        {"owner": "bo", "due": 0},  # a prefix of "bob" as a string, not as a key
        {"owner": "bobby", "due": 0},
    ]
    docs = [await insert(store, TASKS, **spec) for spec in specs]
    by = {i: doc["_id"] for i, doc in enumerate(docs)}
    bob = [by[4], by[5], by[2], by[8], by[9], by[0], by[7], by[3]]

    async def scan(key_range: KeyRange, order: Order = "asc", limit: int = 100) -> list[str]:
        snapshot = store.snapshot()
        try:
            rows = await store.scan(snapshot, key_range, order, limit)
        finally:
            store.release(snapshot)
        assert_keys(BY_OWNER_DUE, rows, order)
        return ids([doc for _, doc in rows])

    everything = [by[1], by[10], *bob, by[11], by[6]]
    assert await scan(full(BY_OWNER_DUE)) == everything
    assert await scan(full(BY_OWNER_DUE), "desc") == everything[::-1]
    assert await scan(full(BY_OWNER_DUE), "asc", 3) == everything[:3]
    assert await scan(full(BY_OWNER_DUE), "desc", 3) == everything[::-1][:3]
    assert await scan(full(BY_OWNER_DUE), "asc", 0) == []
    assert await scan(eq(BY_OWNER_DUE, "bob")) == bob
    assert await scan(eq(BY_OWNER_DUE, "bob"), "desc", 2) == bob[::-1][:2]
    assert await scan(eq(BY_OWNER_DUE, "bob", 2)) == [by[2], by[8], by[9]]
    assert await scan(eq(BY_OWNER_DUE, "bob", 2), "desc") == [by[9], by[8], by[2]]
    assert await scan(eq(BY_OWNER_DUE, "nobody")) == []
    bob_prefix = encode_prefix(["bob"])
    # 2 <= due < 9
    key_range = KeyRange(BY_OWNER_DUE.key, encode_prefix(["bob", 2]), encode_prefix(["bob", 9]))
    assert await scan(key_range) == [by[2], by[8], by[9], by[0]]
    # due > 2 (exclusive lower bound: past every key with due == 2)
    low = prefix_successor(encode_prefix(["bob", 2]))
    assert low is not None
    key_range = KeyRange(BY_OWNER_DUE.key, low, prefix_successor(bob_prefix))
    assert await scan(key_range) == [by[0], by[7], by[3]]
    # due <= 2
    key_range = KeyRange(BY_OWNER_DUE.key, bob_prefix, prefix_successor(encode_prefix(["bob", 2])))
    assert await scan(key_range, "desc") == [by[9], by[8], by[2], by[5], by[4]]
    # by_creation_time is creation order
    assert await scan_ids(store, full(by_creation(TASKS))) == ids(docs)
    assert await scan_ids(store, full(by_creation(TASKS)), "desc", 4) == ids(docs)[::-1][:4]


async def test_nested_field_index_and_tables_are_separate(store: Store) -> None:
    by_rank = IndexDef(TASKS, "by_rank", ("meta.rank",))
    other = IndexDef("notes", "by_rank", ("meta.rank",))
    await store.configure_indexes([by_rank, other])
    high = await insert(store, TASKS, meta={"rank": 9})
    low = await insert(store, TASKS, meta={"rank": 1})
    none = await insert(store, TASKS, meta="not an object")
    note = await insert(store, "notes", meta={"rank": 5})
    assert await scan_ids(store, full(by_rank)) == ids([none, low, high])
    assert await scan_ids(store, eq(by_rank, 9)) == ids([high])
    assert await scan_ids(store, full(other)) == ids([note])
    assert await scan_ids(store, full(by_creation("notes"))) == ids([note])
    assert await scan_ids(store, full(by_creation(TASKS))) == ids([high, low, none])
