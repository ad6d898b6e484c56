"""Opening and closing a store, what a durable store keeps across that,
``tables()`` and creation times."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from convexpy.errors import StoreClosedError
from convexpy.store import IndexDef, ReadSet, Store, Write

from .conftest import StoreKind
from .helpers import (
    BY_OWNER,
    TASKS,
    by_creation,
    delete,
    full,
    ids,
    insert,
    read_get,
    scan_ids,
)


async def test_open_close(store_kind: StoreKind, tmp_path: Path) -> None:
    store = store_kind.make(tmp_path)
    with pytest.raises(StoreClosedError):
        store.snapshot()
    with pytest.raises(StoreClosedError):
        await store.tables()
    await store.open()
    doc = await insert(store, TASKS, title="a")
    assert await read_get(store, doc["_id"]) == doc
    snapshot = store.snapshot()
    store.release(snapshot)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        store.snapshot()
    with pytest.raises(StoreClosedError):
        await store.get(snapshot, doc["_id"])
    with pytest.raises(StoreClosedError):
        await store.get_many(snapshot, [doc["_id"]])
    with pytest.raises(StoreClosedError):
        await store.scan(snapshot, full(by_creation(TASKS)), "asc", 10)
    with pytest.raises(StoreClosedError):
        await store.commit(snapshot, ReadSet(), [Write(doc["_id"], TASKS, doc, None)])
    with pytest.raises(StoreClosedError):
        await store.tables()


async def test_a_durable_store_keeps_documents_and_indexes_when_reopened(
    durable_kind: StoreKind, tmp_path: Path
) -> None:
    store = durable_kind.make(tmp_path)
    await store.open()
    try:
        by_title = IndexDef(TASKS, "by_title", ("title",))
        partial = IndexDef(TASKS, "partial", ("title",), where=("owner", ("b", "c")))
        await store.configure_indexes([BY_OWNER, partial])
        docs = [await insert(store, TASKS, owner=o, title=t) for o, t in ("b1", "a2", "c0")]
        gone = await insert(store, TASKS, owner="d", title="d")
        await delete(store, TASKS, gone["_id"])
        await insert(store, "notes", text="n")
        last = max(doc["_creationTime"] for doc in docs)
    finally:
        await store.close()

    again = durable_kind.make(tmp_path)
    await again.open()
    try:
        await again.configure_indexes([BY_OWNER, partial])
        assert await scan_ids(again, full(partial)) == ids([docs[2], docs[0]])
        for doc in docs:
            assert await read_get(again, doc["_id"]) == doc
        assert await read_get(again, gone["_id"]) is None
        assert await scan_ids(again, full(BY_OWNER)) == ids([docs[1], docs[0], docs[2]])
        assert await scan_ids(again, full(by_creation(TASKS))) == ids(docs)
        assert sorted(await again.tables()) == ["notes", TASKS]
        await again.prepare_table(TASKS)
        assert again.creation_time(TASKS, 0.0) > last

        await again.configure_indexes([BY_OWNER, by_title])
        assert await scan_ids(again, full(by_title)) == ids([docs[2], docs[0], docs[1]])
    finally:
        await again.close()


async def test_creation_time_strictly_increasing_per_table(store: Store) -> None:
    await store.prepare_table("a")
    await store.prepare_table("b")
    first = store.creation_time("a", 1000.0)
    assert first >= 1000.0
    times = [first] + [store.creation_time("a", now) for now in (1000.0, 1000.0, 10.0, 1000.0)]
    assert all(x < y for x, y in itertools.pairwise(times))
    assert store.creation_time("a", 5000.0) == 5000.0  # a later clock wins
    assert store.creation_time("b", 1000.0) >= 1000.0
    burst = [store.creation_time("a", 5000.0) for _ in range(1000)]
    assert all(x < y for x, y in itertools.pairwise([5000.0, *burst]))
    # Inserted documents carry them: by_creation_time is insertion order.
    docs = [await insert(store, "a", i=i) for i in range(5)]
    assert docs[0]["_creationTime"] > burst[-1]
    assert await scan_ids(store, full(by_creation("a"))) == ids(docs)


async def test_tables(store: Store) -> None:
    assert await store.tables() == []
    b = await insert(store, "beta", x=1)
    await insert(store, "alpha", x=1)
    await insert(store, "alpha", x=2)
    assert sorted(await store.tables()) == ["alpha", "beta"]
    await delete(store, "beta", b["_id"])
    assert sorted(await store.tables()) == ["alpha", "beta"]  # held documents
