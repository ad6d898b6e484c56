"""Transactions and reads spoken at the port, for the conformance tests."""

from __future__ import annotations

from typing import Any

from convexpy.ids import new_id
from convexpy.store import IndexDef, KeyRange, ReadSet, Store, Write
from convexpy.store.base import Document, Order
from convexpy.store.keys import encode_prefix, index_key_of, prefix_successor

T0 = 1.7e12
TASKS = "tasks"
BY_OWNER = IndexDef(TASKS, "by_owner", ("owner",))
BY_OWNER_DUE = IndexDef(TASKS, "by_owner_due", ("owner", "due"))
BY_V = IndexDef(TASKS, "by_v", ("v",))


class Txn:
    """A transaction spoken at the port: a snapshot, a read set and writes.

    ``scan`` records the whole requested range, ``get`` the id; writes keep the
    snapshot's version as ``old``, as the contract asks.
    """

    def __init__(self, store: Store, *, speculative: bool = False) -> None:
        self.store = store
        self.snapshot = store.snapshot(speculative=speculative)
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
        self.write(table, doc_id, None, doc)
        return doc

    async def replace(self, table: str, doc_id: str, **fields: Any) -> Document:
        old = await self._current(doc_id)
        new = {"_id": doc_id, "_creationTime": old["_creationTime"], **fields}
        self.write(table, doc_id, old, new)
        return new

    async def delete(self, table: str, doc_id: str) -> None:
        self.write(table, doc_id, await self._current(doc_id), None)

    async def _current(self, doc_id: str) -> Document:
        write = self.writes.get(doc_id)
        doc = write.new if write is not None else await self.get(doc_id)
        assert doc is not None, f"{doc_id} does not exist"
        return doc

    def write(self, table: str, doc_id: str, old: Document | None, new: Document | None) -> None:
        """Record a write of ``doc_id`` as it is in the snapshot (``old``)."""
        previous = self.writes.get(doc_id)
        if previous is not None:
            old = previous.old
        self.reads.ids.add(doc_id)
        self.writes[doc_id] = Write(doc_id, table, old, new)

    async def commit(self, on_accepted: Any = None) -> int:
        try:
            return await self.store.commit(
                self.snapshot, self.reads, list(self.writes.values()), on_accepted
            )
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


async def scan_ids(
    store: Store, key_range: KeyRange, order: Order = "asc", limit: int = 10_000
) -> list[str]:
    return ids(await read_scan(store, key_range, order, limit))


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
