"""The storage port's conformance suite, run against every store.

Everything here goes through :class:`convexpy.store.base.Store` only (plus a
few SQLite-specific tests at the end), so a new store passes by adding it to
the ``store`` fixture.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convexpy.errors import StoreClosedError, StoreLockedError
from convexpy.ids import new_id
from convexpy.store import (
    ConflictError,
    IndexDef,
    KeyRange,
    MemoryStore,
    ReadSet,
    SqliteStore,
    Store,
    Write,
)
from convexpy.store.base import BY_CREATION_TIME, Document, Order
from convexpy.store.engine import index_key_of
from convexpy.store.keys import (
    MISSING,
    encode_index_key,
    encode_prefix,
    encode_value,
    prefix_successor,
)

T0 = 1.7e12
TASKS = "tasks"
BY_OWNER = IndexDef(TASKS, "by_owner", ("owner",))
BY_OWNER_DUE = IndexDef(TASKS, "by_owner_due", ("owner", "due"))
BY_V = IndexDef(TASKS, "by_v", ("v",))


def make_store(kind: str, path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    return SqliteStore(path, synchronous="full")


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = make_store(request.param, tmp_path / "db.sqlite3")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


# -- helpers -------------------------------------------------------------------


class Txn:
    """A transaction spoken at the port: a snapshot, a read set and writes.

    ``scan`` records the whole requested range, ``get`` the id; writes keep the
    snapshot's version as ``old``, as the contract asks.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.snapshot = store.snapshot()
        self.reads = ReadSet()
        self.writes: dict[str, Write] = {}

    async def get(self, doc_id: str) -> Document | None:
        self.reads.ids.add(doc_id)
        return await self.store.get(self.snapshot, doc_id)

    async def scan(
        self, key_range: KeyRange, order: Order = "asc", limit: int = 10_000
    ) -> list[tuple[bytes, Document]]:
        self.reads.ranges.append(key_range)
        return await self.store.scan(self.snapshot, key_range, order, limit)

    async def insert(self, table: str, **fields: Any) -> Document:
        await self.store.prepare_table(table)
        doc_id = new_id(table)
        doc = {"_id": doc_id, "_creationTime": self.store.creation_time(table, T0), **fields}
        self._write(table, doc_id, None, doc)
        return doc

    async def replace(self, table: str, doc_id: str, **fields: Any) -> Document:
        old = await self._current(doc_id)
        new = {"_id": doc_id, "_creationTime": old["_creationTime"], **fields}
        self._write(table, doc_id, old, new)
        return new

    async def delete(self, table: str, doc_id: str) -> None:
        self._write(table, doc_id, await self._current(doc_id), None)

    async def _current(self, doc_id: str) -> Document:
        write = self.writes.get(doc_id)
        doc = write.new if write is not None else await self.get(doc_id)
        assert doc is not None, f"{doc_id} does not exist"
        return doc

    def _write(self, table: str, doc_id: str, old: Document | None, new: Document | None) -> None:
        previous = self.writes.get(doc_id)
        if previous is not None:
            old = previous.old
        self.reads.ids.add(doc_id)
        self.writes[doc_id] = Write(doc_id, table, old, new)

    async def commit(self) -> int:
        try:
            return await self.store.commit(self.snapshot, self.reads, list(self.writes.values()))
        finally:
            self.store.release(self.snapshot)


async def insert(store: Store, table: str, **fields: Any) -> Document:
    txn = Txn(store)
    doc = await txn.insert(table, **fields)
    await txn.commit()
    return doc


async def replace(store: Store, table: str, doc_id: str, **fields: Any) -> Document:
    txn = Txn(store)
    doc = await txn.replace(table, doc_id, **fields)
    await txn.commit()
    return doc


async def delete(store: Store, table: str, doc_id: str) -> None:
    txn = Txn(store)
    await txn.delete(table, doc_id)
    await txn.commit()


def full(index: IndexDef) -> KeyRange:
    return KeyRange(index.key, b"", None)


def eq(index: IndexDef, *values: object) -> KeyRange:
    prefix = encode_prefix(list(values))
    return KeyRange(index.key, prefix, prefix_successor(prefix))


def by_creation(table: str) -> IndexDef:
    return IndexDef.by_creation_time(table)


async def read_scan(
    store: Store, key_range: KeyRange, order: Order = "asc", limit: int = 10_000
) -> list[Document]:
    snapshot = store.snapshot()
    try:
        rows = await store.scan(snapshot, key_range, order, limit)
    finally:
        store.release(snapshot)
    return [doc for _, doc in rows]


async def read_get(store: Store, doc_id: str) -> Document | None:
    snapshot = store.snapshot()
    try:
        return await store.get(snapshot, doc_id)
    finally:
        store.release(snapshot)


def ids(docs: list[Document]) -> list[str]:
    return [doc["_id"] for doc in docs]


def assert_keys(index: IndexDef, rows: list[tuple[bytes, Document]], order: Order) -> None:
    """Every returned key is the document's key in ``index``, and keys are in order."""
    keys = [key for key, _ in rows]
    assert keys == [index_key_of(index, doc) for _, doc in rows]
    assert keys == sorted(set(keys), reverse=order == "desc")


# -- lifecycle -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_open_close(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path / "db.sqlite3")
    with pytest.raises(StoreClosedError):
        store.snapshot()
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
        await store.commit(snapshot, ReadSet(), [Write(doc["_id"], TASKS, doc, None)])


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


# -- snapshots ---------------------------------------------------------------------


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
    # The old snapshot sees exactly the state when it was taken.
    assert await store.get(old, a["_id"]) == a
    assert await store.get(old, b["_id"]) == b
    assert await store.get(old, c["_id"]) == c
    assert await store.get(old, d["_id"]) is None
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
    pinned: list[tuple[Any, dict[str, Document]]] = []
    for step in range(36):
        # Up to three transactions on distinct documents, committed concurrently
        # (for SQLite that is one group commit).
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


# -- scans and indexes ---------------------------------------------------------------


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


async def scan_ids(
    store: Store, key_range: KeyRange, order: Order = "asc", limit: int = 10_000
) -> list[str]:
    return ids(await read_scan(store, key_range, order, limit))


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
    """Bursts of writes far longer than the table (the memory store drops an
    index nobody scans for that long and rebuilds it) alternate with short
    ones (caught up entry by entry); every scan matches a model."""
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


# -- conflicts -----------------------------------------------------------------------


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
    other._write(TASKS, doc_id, None, doc)
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
        await asyncio.sleep(0)
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


# -- creation times and tables ----------------------------------------------------------


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


# -- SQLite specifics ---------------------------------------------------------------------


def _raw_index_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT i.idx, count(*) FROM index_entries e JOIN indexes i ON i.num = e.idx"
            " GROUP BY i.idx"
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)


async def test_sqlite_reopen_keeps_documents_and_indexes(tmp_path: Path, built: list[str]) -> None:
    path = tmp_path / "db.sqlite3"
    by_title = IndexDef(TASKS, "by_title", ("title",))
    partial = IndexDef(TASKS, "partial", ("title",), where=("owner", ("b", "c")))

    store = SqliteStore(path)
    await store.open()
    try:
        await store.configure_indexes([BY_OWNER, partial])
        assert built == [BY_OWNER.key, partial.key]
        docs = [await insert(store, TASKS, owner=o, title=t) for o, t in ("b1", "a2", "c0")]
        gone = await insert(store, TASKS, owner="d", title="d")
        await delete(store, TASKS, gone["_id"])
        await insert(store, "notes", text="n")
        last = max(doc["_creationTime"] for doc in docs)
    finally:
        await store.close()

    built.clear()
    store = SqliteStore(path)
    await store.open()
    try:
        await store.configure_indexes([BY_OWNER, partial])
        assert built == []  # kept, not rebuilt
        assert await scan_ids(store, full(partial)) == ids([docs[2], docs[0]])
        for doc in docs:
            assert await read_get(store, doc["_id"]) == doc
        assert await read_get(store, gone["_id"]) is None
        assert await scan_ids(store, full(BY_OWNER)) == ids([docs[1], docs[0], docs[2]])
        assert await scan_ids(store, full(by_creation(TASKS))) == ids(docs)
        assert await store.tables() == ["notes", TASKS]
        await store.prepare_table(TASKS)
        assert store.creation_time(TASKS, 0.0) > last

        await store.configure_indexes([BY_OWNER, by_title])
        assert built == [by_title.key]  # only the new one
        assert await scan_ids(store, full(by_title)) == ids([docs[2], docs[0], docs[1]])
        await store.configure_indexes([by_title])
    finally:
        await store.close()
    counts = await asyncio.to_thread(_raw_index_counts, path)
    assert BY_OWNER.key not in counts  # dropped from disk
    assert counts[by_title.key] == 3


async def test_sqlite_second_store_on_same_file_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    first = SqliteStore(path)
    await first.open()
    try:
        doc = await insert(first, TASKS, n=1)
        second = SqliteStore(path)
        with pytest.raises(StoreLockedError) as caught:
            await second.open()
        assert str(path) in str(caught.value)
        await second.close()
    finally:
        await first.close()
    third = SqliteStore(path)
    await third.open()  # the lock went with the first store
    try:
        assert await read_get(third, doc["_id"]) == doc
    finally:
        await third.close()


# -- key encoding -----------------------------------------------------------------------------

_RANK = {type(None): 1, int: 2, float: 3, bool: 4, str: 5, bytes: 6, list: 7, dict: 8}


def _rank(value: object) -> int:
    return 0 if value is MISSING else _RANK[type(value)]


def _total_order(x: float) -> int:
    """IEEE 754 totalOrder as an int (Rust's ``f64::total_cmp``, which Convex uses)."""
    bits: int = struct.unpack(">q", struct.pack(">d", x))[0]
    return bits ^ 0x7FFF_FFFF_FFFF_FFFF if bits < 0 else bits


def _sign(x: Any, y: Any) -> int:
    return (x > y) - (x < y)


def convex_cmp(a: object, b: object) -> int:
    """Convex's order of values: by type, then by value; objects compare as
    their (field, value) pairs sorted by field name, like Convex's BTreeMap."""
    if _rank(a) != _rank(b):
        return _sign(_rank(a), _rank(b))
    if isinstance(a, float) and isinstance(b, float):
        return _sign(_total_order(a), _total_order(b))
    if isinstance(a, list) and isinstance(b, list):
        return _seq_cmp(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return _seq_cmp(
            [item for pair in sorted(a.items()) for item in pair],
            [item for pair in sorted(b.items()) for item in pair],
        )
    if a is None or a is MISSING:
        return 0
    return _sign(a, b)


def _seq_cmp(a: list[Any], b: list[Any]) -> int:
    for x, y in zip(a, b, strict=False):
        if c := convex_cmp(x, y):
            return c
    return _sign(len(a), len(b))


scalars = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.booleans(),
    st.text(max_size=6),
    st.binary(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, max_size=3),
    ),
    max_leaves=8,
)
# Small pools of values make ties and shared prefixes likely.
near_values = st.one_of(
    values,
    st.sampled_from([0, 1, -1, 0.0, -0.0, 1.0, "", "a", "a\x00", "ab", b"", b"\x00", [], {}]),
)


@settings(max_examples=400)
@given(near_values, near_values)
def test_encode_value_order_matches_convex(a: object, b: object) -> None:
    expected = convex_cmp(a, b)
    assert _sign(encode_value(a), encode_value(b)) == expected
    assert (encode_value(a) == encode_value(b)) == (expected == 0)


def test_encode_value_type_order() -> None:
    ordered = [MISSING, None, -(2**63), 2**63 - 1, float("-inf"), 0.5, float("inf")]
    ordered += [False, True, "", "z", b"", b"\xff", [], [None], {}, {"a": None}]
    keys = [encode_value(value) for value in ordered]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def _doc_cmp(a: tuple[list[object], float, str], b: tuple[list[object], float, str]) -> int:
    return _seq_cmp(list(a[0]), list(b[0])) or convex_cmp(a[1], b[1]) or _sign(a[2], b[2])


docs_fields = st.lists(st.one_of(near_values, st.just(MISSING)), min_size=2, max_size=2)


@settings(max_examples=200)
@given(docs_fields, docs_fields, st.sampled_from([1.0, 2.0]), st.sampled_from([1.0, 2.0]))
def test_index_key_order_and_prefix_ranges(
    a: list[object], b: list[object], ta: float, tb: float
) -> None:
    fields = ("f", "g")
    id_a, id_b = "a" * 32, "b" * 32

    def key(values: list[object], creation: float, doc_id: str) -> bytes:
        doc = {name: v for name, v in zip(fields, values, strict=True) if v is not MISSING}
        return encode_index_key(doc, fields, creation, doc_id)

    key_a, key_b = key(a, ta, id_a), key(b, tb, id_b)
    assert _sign(key_a, key_b) == _doc_cmp((a, ta, id_a), (b, tb, id_b))
    # A prefix range on the leading field holds exactly the equal values.
    for size in (1, 2):
        prefix = encode_prefix(a[:size])
        high = prefix_successor(prefix)
        in_range = KeyRange("t.i", prefix, high).contains(key_b)
        assert in_range == (_seq_cmp(a[:size], b[:size]) == 0)
    # Exclusive and inclusive bounds on the first field.
    bound = encode_prefix(a[:1])
    after = prefix_successor(bound)
    first = convex_cmp(b[0], a[0])
    assert (key_b < bound) == (first < 0)
    assert (after is None or key_b < after) == (first <= 0)


def test_prefix_successor() -> None:
    assert prefix_successor(b"") is None
    assert prefix_successor(b"\xff\xff") is None
    assert prefix_successor(b"ab") == b"ac"
    assert prefix_successor(b"a\xff") == b"b"


def test_cached_index_keys_match_fresh_ones_in_any_order() -> None:
    """The engine reuses a version's keys for the next write of that document;
    whatever order commits compute their changes in, the result is the same
    as computing every commit from scratch."""
    from convexpy.store.engine import _index_changes, _KeyCache
    from convexpy.store.keys import prefix_encoder

    rng = random.Random(7)
    indexes = [BY_OWNER, BY_OWNER_DUE, IndexDef(TASKS, "p", ("due",), where=("owner", ("a",)))]
    encoders = {TASKS: [(i.key, prefix_encoder(i.fields, i.sparse, i.where)) for i in indexes]}
    current: dict[str, Document] = {}
    commits: list[list[Write]] = []
    for step in range(300):
        doc_id = rng.choice([*current, new_id(TASKS)]) if current else new_id(TASKS)
        old = current.get(doc_id)
        if old is not None and rng.random() < 0.2:
            new = None
            del current[doc_id]
        else:
            created = old["_creationTime"] if old else T0 + step
            new = {"_id": doc_id, "_creationTime": created, "owner": rng.choice("ab")}
            if rng.random() < 0.7:
                new["due"] = rng.randint(0, 3)
            current[doc_id] = new
        commits.append([Write(doc_id, TASKS, old, new)])
    fresh = [_index_changes(encoders, _KeyCache(), writes) for writes in commits]
    cache = _KeyCache(limit=50)
    order = list(range(len(commits)))
    for start in range(0, len(order), 10):  # mostly in order, shuffled in blocks
        block = order[start : start + 10]
        rng.shuffle(block)
        order[start : start + 10] = block
    cached = {i: _index_changes(encoders, cache, commits[i]) for i in order}
    assert [cached[i] for i in range(len(commits))] == fresh
