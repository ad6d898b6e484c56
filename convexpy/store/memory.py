"""``MemoryStore``: the whole database in process memory. For tests and ``--memory``.

Indexes are materialized on demand. A commit only records which documents of
a table it touched; an index catches up with those documents the next time
somebody scans it. An index nobody has scanned for longer than it would take
to rebuild (more writes to its table than the table has documents) is
dropped, and rebuilt by sorting on its next scan. A table that is written
much and read by id, like ``_scheduled_functions`` under load, thus pays for
no sorted structures at all, and every scan still sees every commit.
"""

from __future__ import annotations

from itertools import islice

from sortedcontainers import SortedDict

from .base import Document, IndexDef, KeyRange, Order
from .engine import LatestVersionStore, index_key_of
from .occ import Commit

__all__ = ["MemoryStore"]

_MIN_LOG = 1024
"""A table's change log is always allowed this many entries before indexes drop."""


class _Index:
    """The entries of one index: key -> id, sorted, and id -> key."""

    __slots__ = ("definition", "entries", "keys", "seen")

    def __init__(self, definition: IndexDef) -> None:
        self.definition = definition
        self.entries: SortedDict = SortedDict()
        self.keys: dict[str, bytes] = {}
        self.seen = 0
        """How much of its table's change log is reflected."""


class _Table:
    __slots__ = ("ids", "indexes", "log")

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.log: list[str] = []
        """Ids written since the log was last cleared, in commit order."""
        self.indexes: dict[str, _Index] = {}
        """The materialized indexes, by index key."""


class MemoryStore(LatestVersionStore):
    """A non-durable store; commits apply instantly and vanish with the process."""

    _apply_inline = True

    def __init__(self) -> None:
        super().__init__()
        self._docs: dict[str, Document] = {}
        self._tables: dict[str, _Table] = {}
        self._defined: dict[str, IndexDef] = {}

    async def open(self) -> None:
        self._opened = True

    async def close(self) -> None:
        self._closed = True

    async def tables(self) -> list[str]:
        self._check_open()
        return sorted(self._tables)

    async def _base_get(self, doc_id: str) -> Document | None:
        return self._docs.get(doc_id)

    async def _base_get_many(self, doc_ids: list[str]) -> dict[str, Document | None]:
        docs = self._docs
        return {doc_id: docs.get(doc_id) for doc_id in doc_ids}

    async def _base_scan(
        self, key_range: KeyRange, order: Order, limit: int
    ) -> list[tuple[bytes, Document]]:
        index = self._materialized(key_range.index)
        if index is None or not index.entries:
            return []
        entries = index.entries
        keys = entries.irange(
            key_range.low, key_range.high, inclusive=(True, False), reverse=order == "desc"
        )
        docs = self._docs
        return [(key, docs[entries[key]]) for key in islice(keys, limit)]

    async def _base_apply(self, commits: list[Commit]) -> None:
        for commit in commits:
            self._base_apply_now(commit)

    def _base_apply_now(self, commit: Commit) -> None:
        docs = self._docs
        tables = self._tables
        table_name: str | None = None
        table: _Table
        touched: list[_Table] = []
        for write in commit.writes:
            if write.table != table_name:
                table_name = write.table
                found = tables.get(table_name)
                if found is None:
                    found = tables[table_name] = _Table()
                table = found
                touched.append(table)
            doc_id = write.id
            if write.new is None:
                docs.pop(doc_id, None)
                table.ids.discard(doc_id)
            else:
                docs[doc_id] = write.new
                table.ids.add(doc_id)
            table.log.append(doc_id)
        for table in touched:
            log = table.log
            if len(log) > _MIN_LOG and len(log) > len(table.ids):
                # Catching up would cost more than a rebuild: drop the indexes.
                table.indexes.clear()
                log.clear()

    # -- materialization ---------------------------------------------------------

    def _materialized(self, key: str) -> _Index | None:
        definition = self._defined.get(key)
        if definition is None:
            definition = self._index(key)  # by_creation_time, or KeyError
        table = self._tables.get(definition.table)
        if table is None:
            return None
        index = table.indexes.get(key)
        if index is None:
            index = table.indexes[key] = self._build(definition, table)
        elif index.seen < len(table.log):
            self._catch_up(index, table)
        return index

    def _build(self, definition: IndexDef, table: _Table) -> _Index:
        index = _Index(definition)
        docs = self._docs
        keys = index.keys
        for doc_id in table.ids:
            key = index_key_of(definition, docs[doc_id])
            if key is not None:
                keys[doc_id] = key
        index.entries = SortedDict({key: doc_id for doc_id, key in keys.items()})
        index.seen = len(table.log)
        return index

    def _catch_up(self, index: _Index, table: _Table) -> None:
        docs = self._docs
        definition = index.definition
        entries, keys = index.entries, index.keys
        for doc_id in dict.fromkeys(table.log[index.seen :]):
            doc = docs.get(doc_id)
            new = None if doc is None else index_key_of(definition, doc)
            old = keys.get(doc_id)
            if old == new:
                continue
            if old is not None:
                del entries[old]
                del keys[doc_id]
            if new is not None:
                entries[new] = doc_id
                keys[doc_id] = new
        index.seen = len(table.log)

    async def _base_sync_indexes(self, declared: list[IndexDef]) -> None:
        wanted = {index.key: index for index in declared}
        for key, definition in list(self._defined.items()):
            if wanted.get(key) != definition:
                del self._defined[key]
                table = self._tables.get(definition.table)
                if table is not None:
                    table.indexes.pop(key, None)
        # New indexes are built by their first scan.
        self._defined.update(wanted)
