"""Optimistic conflict checks: a commit is refused when a commit after its
snapshot changed what it read by id or by key range, and only then."""

from __future__ import annotations

import asyncio

import pytest

from convexpy.ids import new_id
from convexpy.store import ConflictError, KeyRange, Store
from convexpy.store.keys import encode_prefix

from .helpers import (
    BY_V,
    T0,
    TASKS,
    Txn,
    delete,
    ids,
    insert,
    read_get,
    replace,
)


@pytest.mark.parametrize("change", ["replace", "delete"])
async def test_point_read_conflicts_with_later_write(store: Store, change: str) -> None:
    a = await insert(store, TASKS, n=1)
    txn = Txn(store)
    assert await txn.get(a["_id"]) == a
    await txn.insert("log", seen=1)
    if change == "replace":
        await replace(store, TASKS, a["_id"], n=2)
    else:
        await delete(store, TASKS, a["_id"])
    with pytest.raises(ConflictError) as caught:
        await txn.commit()
    assert caught.value.table == TASKS
    assert TASKS in str(caught.value)
    assert await store.tables() == [TASKS]  # the failed commit wrote nothing


async def test_read_of_missing_id_conflicts_with_its_insert(store: Store) -> None:
    doc_id = new_id(TASKS)
    txn = Txn(store)
    assert await txn.get(doc_id) is None
    await txn.insert("log", seen=None)
    other = Txn(store)
    doc = {"_id": doc_id, "_creationTime": T0, "n": 1}
    other.write(TASKS, doc_id, None, doc)
    await other.commit()
    with pytest.raises(ConflictError) as caught:
        await txn.commit()
    assert caught.value.table == TASKS


async def test_reads_before_the_snapshot_do_not_conflict(store: Store) -> None:
    a = await insert(store, TASKS, n=1)
    await replace(store, TASKS, a["_id"], n=2)
    txn = Txn(store)
    assert (await txn.get(a["_id"]) or {})["n"] == 2
    await txn.replace(TASKS, a["_id"], n=3)
    await txn.commit()
    assert (await read_get(store, a["_id"]) or {})["n"] == 3


async def test_concurrent_increments_one_wins(store: Store) -> None:
    counter = await insert(store, TASKS, n=0)

    async def increment() -> bool:
        txn = Txn(store)
        doc = await txn.get(counter["_id"])
        assert doc is not None
        await asyncio.sleep(0)  # let every other increment read it too
        await txn.replace(TASKS, counter["_id"], n=doc["n"] + 1)
        try:
            await txn.commit()
        except ConflictError:
            return False
        return True

    results = await asyncio.gather(*(increment() for _ in range(5)))
    assert results.count(True) == 1
    assert (await read_get(store, counter["_id"]) or {})["n"] == 1


RANGE_CHANGES = {
    # name: (what another transaction does to documents a(v=1) b(v=4) c(v=9), conflicts?)
    "insert_into": True,
    "insert_at_low_bound": True,
    "delete_from": True,
    "move_into": True,
    "move_out_of": True,
    "change_content_in": True,
    "insert_at_high_bound": False,
    "insert_below": False,
    "move_outside": False,
    "change_content_outside": False,
    "insert_other_table": False,
    "delete_outside": False,
}


@pytest.mark.parametrize(("change", "conflicts"), RANGE_CHANGES.items())
async def test_range_read_conflicts(store: Store, change: str, conflicts: bool) -> None:
    """A transaction scans v in [3, 7) of ``by_v``; another commit changes something."""
    await store.configure_indexes([BY_V])
    a = await insert(store, TASKS, v=1)
    b = await insert(store, TASKS, v=4, n=0)
    c = await insert(store, TASKS, v=9, n=0)
    txn = Txn(store)
    key_range = KeyRange(BY_V.key, encode_prefix([3]), encode_prefix([7]))
    assert ids([doc for _, doc in await txn.scan(key_range)]) == ids([b])
    mine = await txn.insert("log", total=4)

    match change:
        case "insert_into":
            await insert(store, TASKS, v=5)
        case "insert_at_low_bound":
            await insert(store, TASKS, v=3)
        case "delete_from":
            await delete(store, TASKS, b["_id"])
        case "move_into":
            await replace(store, TASKS, a["_id"], v=6)
        case "move_out_of":
            await replace(store, TASKS, b["_id"], v=8)
        case "change_content_in":
            await replace(store, TASKS, b["_id"], v=4, n=1)
        case "insert_at_high_bound":
            await insert(store, TASKS, v=7)
        case "insert_below":
            await insert(store, TASKS, v=2)
        case "move_outside":
            await replace(store, TASKS, c["_id"], v=10)
        case "change_content_outside":
            await replace(store, TASKS, c["_id"], v=9, n=1)
        case "insert_other_table":
            await insert(store, "other", v=5)
        case "delete_outside":
            await delete(store, TASKS, a["_id"])

    if conflicts:
        with pytest.raises(ConflictError) as caught:
            await txn.commit()
        assert caught.value.table == TASKS
        assert await read_get(store, mine["_id"]) is None
    else:
        await txn.commit()
        assert await read_get(store, mine["_id"]) == mine
