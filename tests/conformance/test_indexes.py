"""Index configuration as seen through the port: declared indexes are built
from existing documents, kept up to date, dropped, and rebuilt when their
definition changes."""

from __future__ import annotations

import asyncio
import random

import pytest

from convexpy.store import IndexDef, Store
from convexpy.store.base import BY_CREATION_TIME, Document

from .helpers import (
    BY_OWNER,
    BY_OWNER_DUE,
    TASKS,
    Txn,
    by_creation,
    delete,
    eq,
    full,
    ids,
    insert,
    replace,
    scan_ids,
)


async def test_configure_indexes_backfills_and_drops(store: Store) -> None:
    assert dict(store.indexes_of(TASKS)) == {BY_CREATION_TIME: by_creation(TASKS)}
    a = await insert(store, TASKS, owner="m", title="z")
    b = await insert(store, TASKS, owner="c", title="y")
    await store.configure_indexes([BY_OWNER])
    assert dict(store.indexes_of(TASKS)) == {
        BY_CREATION_TIME: by_creation(TASKS),
        "by_owner": BY_OWNER,
    }
    assert await scan_ids(store, full(BY_OWNER)) == ids([b, a])  # backfilled
    c = await insert(store, TASKS, owner="a", title="x")
    assert await scan_ids(store, full(BY_OWNER)) == ids([c, b, a])  # maintained

    await store.configure_indexes([])
    assert "by_owner" not in store.indexes_of(TASKS)
    snapshot = store.snapshot()
    with pytest.raises(KeyError):
        await store.scan(snapshot, full(BY_OWNER), "asc", 10)
    store.release(snapshot)
    # Changes while the index is gone must not leave stale entries behind.
    await replace(store, TASKS, a["_id"], owner="b", title="z")
    await delete(store, TASKS, c["_id"])
    await store.configure_indexes([BY_OWNER])
    assert await scan_ids(store, full(BY_OWNER)) == ids([a, b])

    # The same name on other fields is a different index: rebuilt.
    by_title = IndexDef(TASKS, "by_owner", ("title",))
    await store.configure_indexes([by_title])
    assert await scan_ids(store, full(by_title)) == ids([b, a])
    assert await scan_ids(store, eq(by_title, "y")) == ids([b])
    with pytest.raises(ValueError):
        await store.configure_indexes([IndexDef(TASKS, BY_CREATION_TIME, ("owner",))])


@pytest.mark.parametrize("seed", [1, 2])
async def test_indexes_match_the_documents_through_long_unscanned_stretches(
    store: Store, seed: int
) -> None:
    """Bursts of writes far longer than the table (a store may drop an index
    nobody scans for that long and rebuild it) alternate with short ones;
    every scan matches a model."""
    rng = random.Random(seed)
    await store.configure_indexes([BY_OWNER_DUE])
    model: dict[str, Document] = {}

    async def burst(commits: int) -> None:
        for _ in range(commits):
            txn = Txn(store)
            for _ in range(rng.randint(1, 6)):
                live = [i for i in model if i not in txn.writes]
                roll = rng.random()
                if live and roll < 0.3:
                    await txn.replace(
                        TASKS, rng.choice(live), owner=rng.choice("abc"), due=rng.randint(0, 5)
                    )
                elif live and roll < 0.45:
                    await txn.delete(TASKS, rng.choice(live))
                else:
                    await txn.insert(TASKS, owner=rng.choice("abc"), due=rng.randint(0, 5))
            await txn.commit()
            for doc_id, write in txn.writes.items():
                if write.new is None:
                    model.pop(doc_id, None)
                else:
                    model[doc_id] = write.new

    async def check() -> None:
        docs = list(model.values())
        by_due = sorted(docs, key=lambda d: (d["owner"], d["due"], d["_creationTime"]))
        assert await scan_ids(store, full(BY_OWNER_DUE)) == ids(by_due)
        assert await scan_ids(store, eq(BY_OWNER_DUE, "b"), "desc") == ids(
            [d for d in by_due if d["owner"] == "b"][::-1]
        )
        by_time = sorted(docs, key=lambda d: d["_creationTime"])
        assert await scan_ids(store, full(by_creation(TASKS))) == ids(by_time)

    await burst(40)
    await check()
    for commits in (600, 3, 1, 500, 7):  # long stretches exceed the table's size
        await burst(commits)
        await check()


async def test_partial_index_holds_only_matching_documents(store: Store) -> None:
    open_by_due = IndexDef(TASKS, "open_by_due", ("due",), where=("state", ("open", "held")))
    early = await insert(store, TASKS, state="done", due=1)
    await store.configure_indexes([open_by_due])  # backfill applies the filter too
    a = await insert(store, TASKS, state="open", due=3)
    b = await insert(store, TASKS, state="held", due=2)
    c = await insert(store, TASKS, due=0)  # no state: not in the index
    assert await scan_ids(store, full(open_by_due)) == ids([b, a])
    await replace(store, TASKS, a["_id"], state="done", due=3)  # leaves
    await replace(store, TASKS, early["_id"], state="open", due=1)  # joins
    assert await scan_ids(store, full(open_by_due)) == [early["_id"], b["_id"]]
    await delete(store, TASKS, b["_id"])
    assert await scan_ids(store, full(open_by_due)) == [early["_id"]]
    assert await scan_ids(store, full(by_creation(TASKS))) == [early["_id"], a["_id"], c["_id"]]
    # Another filter under the same name is another index: rebuilt.
    done_by_due = IndexDef(TASKS, "open_by_due", ("due",), where=("state", ("done",)))
    await store.configure_indexes([done_by_due])
    assert await scan_ids(store, full(done_by_due)) == [a["_id"]]


async def test_configure_indexes_while_commits_are_in_flight(store: Store) -> None:
    docs = [await insert(store, TASKS, owner="x") for _ in range(5)]
    txns = [Txn(store) for _ in range(10)]
    docs += [await txn.insert(TASKS, owner=f"o{i:02}") for i, txn in enumerate(txns)]
    await asyncio.gather(*(txn.commit() for txn in txns), store.configure_indexes([BY_OWNER]))
    expected = sorted(docs, key=lambda doc: (doc["owner"], doc["_creationTime"]))
    assert await scan_ids(store, full(BY_OWNER)) == ids(expected)


async def test_sparse_index_leaves_out_documents_missing_a_field(store: Store) -> None:
    sparse = IndexDef(TASKS, "by_owner_due", ("owner", "due"), sparse=True)
    early = await insert(store, TASKS, owner="a")
    await store.configure_indexes([sparse])  # backfill leaves it out too
    a = await insert(store, TASKS, owner="a", due=2)
    null = await insert(store, TASKS, owner="a", due=None)  # present, though null
    await insert(store, TASKS, due=1)  # no owner
    assert await scan_ids(store, full(sparse)) == ids([null, a])
    await replace(store, TASKS, early["_id"], owner="a", due=1)  # joins
    await replace(store, TASKS, a["_id"], owner="a")  # leaves
    assert await scan_ids(store, full(sparse)) == [null["_id"], early["_id"]]
    assert await scan_ids(store, eq(sparse, "a", 1)) == [early["_id"]]
    assert len(await scan_ids(store, full(by_creation(TASKS)))) == 4
