"""``MemoryStore``: the whole database in process memory. For tests and ``--memory``."""

from __future__ import annotations

from itertools import islice

from sortedcontainers import SortedDict

from .base import Document, IndexDef, KeyRange, Order
from .engine import LatestVersionStore, index_key_of
from .occ import Commit

__all__ = ["MemoryStore"]


class MemoryStore(LatestVersionStore):
    """A non-durable store; commits apply instantly and vanish with the process."""

    _apply_inline = True

    def __init__(self) -> None:
        super().__init__()
        self._docs: dict[str, Document] = {}
        self._tables: dict[str, set[str]] = {}
        self._entries: dict[str, SortedDict] = {}
        self._built: dict[str, IndexDef] = {}

    async def open(self) -> None:
        self._opened = True

    async def close(self) -> None:
        self._closed = True

    async def tables(self) -> list[str]:
        return sorted(self._tables)

    async def _base_get(self, doc_id: str) -> Document | None:
        return self._docs.get(doc_id)

    async def _base_get_many(self, doc_ids: list[str]) -> dict[str, Document | None]:
        docs = self._docs
        return {doc_id: docs.get(doc_id) for doc_id in doc_ids}

    async def _base_scan(
        self, key_range: KeyRange, order: Order, limit: int
    ) -> list[tuple[bytes, Document]]:
        entries = self._entries.get(key_range.index)
        if not entries:
            return []
        keys = entries.irange(
            key_range.low, key_range.high, inclusive=(True, False), reverse=order == "desc"
        )
        docs = self._docs
        return [(key, docs[entries[key]]) for key in islice(keys, limit)]

    async def _base_apply(self, commits: list[Commit]) -> None:
        for commit in commits:
            self._base_apply_now(commit)

    def _base_apply_now(self, commit: Commit) -> None:
        for write in commit.writes:
            if write.new is None:
                self._docs.pop(write.id, None)
                self._tables.get(write.table, set()).discard(write.id)
            else:
                self._docs[write.id] = write.new
                self._tables.setdefault(write.table, set()).add(write.id)
        entries = self._entries
        for change in commit.index_changes:
            if change.old == change.new:
                continue  # content changed, the entry did not
            index = entries.get(change.index)
            if index is None:
                index = entries[change.index] = SortedDict()
            if change.old is not None:
                index.pop(change.old, None)
            if change.new is not None:
                index[change.new] = change.id

    async def _base_sync_indexes(self, declared: list[IndexDef]) -> None:
        wanted = {index.key: index for index in declared}
        for key in list(self._built):
            if wanted.get(key) != self._built[key]:
                del self._built[key]
                self._entries.pop(key, None)
        for index in declared:
            if index.key in self._built:
                continue
            self._built[index.key] = index
            entries = SortedDict()
            for doc_id in self._tables.get(index.table, ()):
                entry = index_key_of(index, self._docs[doc_id])
                if entry is not None:
                    entries[entry] = doc_id
            self._entries[index.key] = entries
