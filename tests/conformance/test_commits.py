"""Commits: what they write, their timestamps, and that a refused one writes
nothing."""

from __future__ import annotations

import pytest

from convexpy.ids import new_id
from convexpy.store import ConflictError, Store

from .helpers import (
    BY_OWNER,
    TASKS,
    Txn,
    by_creation,
    full,
    ids,
    insert,
    read_get,
    read_scan,
    replace,
)


async def test_commit_then_get(store: Store) -> None:
    assert await store.tables() == []
    txn = Txn(store)
    a = await txn.insert(TASKS, title="a", n=1)
    b = await txn.insert(TASKS, title="b", nested={"x": [1, 2.5, None, b"\x00"]})
    ts1 = await txn.commit()
    assert isinstance(ts1, int)
    assert await read_get(store, a["_id"]) == a
    assert await read_get(store, b["_id"]) == b
    assert await read_get(store, new_id(TASKS)) is None

    a2 = await replace(store, TASKS, a["_id"], title="a2")
    assert await read_get(store, a["_id"]) == a2
    assert "n" not in a2  # a replace, not a merge
    txn = Txn(store)
    await txn.delete(TASKS, b["_id"])
    ts2 = await txn.commit()
    assert ts2 > ts1
    assert await read_get(store, b["_id"]) is None
    assert ids(await read_scan(store, full(by_creation(TASKS)))) == [a["_id"]]


async def test_commit_without_writes_changes_nothing(store: Store) -> None:
    a = await insert(store, TASKS, title="a")
    txn = Txn(store)
    assert await txn.get(a["_id"]) == a
    before = store.snapshot()
    await txn.commit()
    after = store.snapshot()
    assert await store.get(after, a["_id"]) == a
    assert after.ts == before.ts  # nothing new was committed
    store.release(before)
    store.release(after)


async def test_failed_commit_writes_nothing(store: Store) -> None:
    await store.configure_indexes([BY_OWNER])
    a = await insert(store, TASKS, owner="a")
    b = await insert(store, TASKS, owner="b")
    txn = Txn(store)
    await txn.scan(full(by_creation(TASKS)))
    await txn.replace(TASKS, a["_id"], owner="z")
    await txn.delete(TASKS, b["_id"])
    new = await txn.insert(TASKS, owner="n")
    audit = await txn.insert("audit", what="all of it")
    await insert(store, TASKS, owner="c")  # lands in the scanned range
    before = [await read_scan(store, full(index)) for index in (by_creation(TASKS), BY_OWNER)]

    with pytest.raises(ConflictError):
        await txn.commit()
    assert await read_get(store, a["_id"]) == a
    assert await read_get(store, b["_id"]) == b
    assert await read_get(store, new["_id"]) is None
    assert await read_get(store, audit["_id"]) is None
    after = [await read_scan(store, full(index)) for index in (by_creation(TASKS), BY_OWNER)]
    assert after == before
    assert await read_scan(store, full(by_creation("audit"))) == []
    assert await store.tables() == [TASKS]
