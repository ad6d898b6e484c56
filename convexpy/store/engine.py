"""Shared machinery of the embedded stores (memory and SQLite).

:class:`LatestVersionStore` implements the :class:`~convexpy.store.base.Store`
contract on top of a backend that keeps only the latest version of each
document: snapshots are served by overlaying the commit log's before-images
(see :mod:`convexpy.store.occ`), conflict checks run against the log, and
commits are applied one batch at a time, each batch holding every commit
made while the previous one was applied, so that concurrent mutations share
one backend transaction (group commit).

Subclasses provide the backend: ``_base_get``, ``_base_scan``, ``_base_apply``
and friends.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import StoreClosedError
from .base import (
    ConflictError,
    Document,
    IndexDef,
    KeyRange,
    Order,
    ReadSet,
    Snapshot,
    Write,
)
from .catalog import CatalogStore, declared_by_table
from .jobs import job_changes
from .keys import encode_suffix, index_key_of, prefix_encoder
from .occ import Commit, CommitLog, IndexChange, Keyed

__all__ = [
    "KeyCache",
    "LatestVersionStore",
    "creation_index_key",
    "index_changes",
    "index_key_of",
    "overlay_scan",
    "write_failure",
]

logger = logging.getLogger("convexpy.store")

Rows = list[tuple[bytes, Document]]


def write_failure(exc: BaseException) -> Exception:
    """What the commits of a failed write batch fail with: ``exc`` itself, or,
    for an exception that is not an ``Exception`` (the process is going
    down), an error saying so."""
    if isinstance(exc, Exception):
        return exc
    return StoreClosedError(f"the store's write failed: {exc!r}")


async def overlay_scan(
    fetch: Callable[[KeyRange, Order, int], Awaitable[Rows]],
    changes: Callable[[], Mapping[str, Keyed]],
    key_range: KeyRange,
    order: Order,
    limit: int,
) -> Rows:
    """Scan an index range from ``fetch``, with some documents replaced.

    ``changes()`` maps document ids to the version to show instead of the
    fetched one, with its key in the index (a None key: not in the index, or
    the document does not exist). It is called after each fetch, so changes
    that land while a fetch is in flight are seen. Used for snapshot reads
    over the latest state (changes are before-images) and for a transaction
    reading its own writes (changes are its pending writes).
    """
    result: Rows = []
    remaining = key_range
    descending = order == "desc"
    while len(result) < limit:
        want = limit - len(result)
        rows = await fetch(remaining, order, want)
        changed = changes()
        exhausted = len(rows) < want
        if changed:
            chunk = [row for row in rows if row[1]["_id"] not in changed]
            bound = None if exhausted else rows[-1][0]
            for key, version in changed.values():
                if key is None or version is None or not remaining.contains(key):
                    continue
                if bound is not None and (key < bound if descending else key > bound):
                    continue
                chunk.append((key, version))
            chunk.sort(key=lambda row: row[0], reverse=descending)
        else:
            chunk = rows
        result.extend(chunk)
        if exhausted:
            break
        last = rows[-1][0]
        if descending:
            remaining = KeyRange(key_range.index, remaining.low, last)
        else:
            remaining = KeyRange(key_range.index, last + b"\x00", remaining.high)
    del result[limit:]
    return result


_Encoders = dict[str, list[tuple[str, Callable[[Document], bytes | None]]]]


class KeyCache:
    """The index keys of recently written document versions.

    The next write of the same document finds its old keys here instead of
    encoding them again (a scheduled job's completion reuses the keys its
    scheduling computed). Entries are checked by identity: documents are
    never mutated once written, and the cache holds them, so an identical
    object is the same version. Bounded; the oldest entries go first.
    """

    __slots__ = ("entries", "limit")

    def __init__(self, limit: int = 8192) -> None:
        # Small: each entry keeps a document alive, more work for every full
        # garbage collection; a job's completion usually follows soon anyway.
        # An entry is (document, key suffix, its key in each index...): one
        # flat tuple, the fewest objects for the garbage collector to visit.
        self.entries: dict[str, tuple[Any, ...]] = {}
        self.limit = limit

    def evict(self) -> None:
        """Drop the oldest quarter of the entries.

        In bulk: finding the oldest entry of a dict walks past the slots of
        every entry deleted since it was last resized, so dropping one per
        insert would cost more with every insert."""
        entries = self.entries
        for doc_id in list(itertools.islice(entries, len(entries) - self.limit * 3 // 4)):
            del entries[doc_id]


_NO_ENCODERS: list[tuple[str, Callable[[Document], bytes | None]]] = []


@functools.lru_cache(maxsize=4096)
def creation_index_key(table: str) -> str:
    """The key of ``table``'s ``by_creation_time`` index (cached: it is asked per write)."""
    return IndexDef.by_creation_time(table).key


def index_changes(encoders: _Encoders, cache: KeyCache, writes: list[Write]) -> list[IndexChange]:
    """The index entries ``writes`` move, for the indexes in ``encoders`` (by table).

    Every write yields its ``by_creation_time`` change and one per index in
    which it has a key before or after; a change whose key stays put still
    counts (the entry's document changed, and a scan over it read the old
    content). This runs for every write a durable store applies: it is kept flat.
    """
    changes: list[IndexChange] = []
    append = changes.append
    entries = cache.entries
    pop = entries.pop
    for write in writes:
        old_doc, new_doc, doc_id = write.old, write.new, write.id
        table_encoders = encoders.get(write.table, _NO_ENCODERS)
        creation = creation_index_key(write.table)
        old_keys: Sequence[bytes | None] | None = None
        suffix = b""
        if old_doc is not None:
            hit = pop(doc_id, None)
            if hit is not None and hit[0] is old_doc:
                suffix = hit[1]
                old_keys = hit[2:]
            else:
                suffix = encode_suffix(old_doc["_creationTime"], doc_id)
                old_keys = []
                for _, encode in table_encoders:
                    prefix = encode(old_doc)
                    old_keys.append(None if prefix is None else prefix + suffix)
        if new_doc is None:
            append((creation, doc_id, suffix, None))
            assert old_keys is not None
            for (key, _), old in zip(table_encoders, old_keys, strict=True):
                if old is not None:
                    append((key, doc_id, old, None))
            continue
        if old_doc is None:
            # _creationTime and _id never change: the suffix is the same after.
            suffix = encode_suffix(new_doc["_creationTime"], doc_id)
        new_keys: list[bytes | None] = []
        for _, encode in table_encoders:
            prefix = encode(new_doc)
            new_keys.append(None if prefix is None else prefix + suffix)
        entries[doc_id] = (new_doc, suffix, *new_keys)
        if len(entries) > cache.limit:
            cache.evict()
        append((creation, doc_id, None if old_keys is None else suffix, suffix))
        if old_keys is None:
            for (key, _), new in zip(table_encoders, new_keys, strict=True):
                if new is not None:
                    append((key, doc_id, None, new))
        else:
            for (key, _), old, new in zip(table_encoders, old_keys, new_keys, strict=True):
                if old is not None or new is not None:
                    append((key, doc_id, old, new))
    return changes


class LatestVersionStore(CatalogStore):
    """A store over a latest-version backend; see the module docstring."""

    #: Apply commits inline in ``commit`` (no I/O: the memory backend).
    _apply_inline = False

    def __init__(self) -> None:
        super().__init__()
        self._log = CommitLog()
        self._applied_ts = 0
        self._next_ts = 1
        self._maintained: dict[str, dict[str, IndexDef]] = {}
        """Indexes that commits keep up to date (the declared ones, and any being built)."""
        self._indexer_for: object = None
        """The ``_maintained`` that ``_current_indexer`` was made for."""
        self._current_indexer = self._make_indexer()
        self._writing: list[Commit] | None = None
        """The batch being applied (None: the backend is idle)."""
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._batch_waiters: list[asyncio.Future[None]] = []
        """Woken when a batch is done, written or failed."""
        self._failed: dict[int, str] = {}
        """Commits that were accepted and then failed to be written: their
        timestamp and a table they wrote (speculative readers of them fail)."""
        self._applying: asyncio.Task[None] | None = None
        self._closed = False
        self._opened = False
        self.conflicts = 0
        """How many commits were refused for conflicts (observability and tests)."""

    # -- backend -------------------------------------------------------------

    @abstractmethod
    async def _base_get(self, doc_id: str) -> Document | None: ...

    @abstractmethod
    async def _base_scan(
        self, key_range: KeyRange, order: Order, limit: int
    ) -> list[tuple[bytes, Document]]: ...

    @abstractmethod
    async def _base_apply(self, commits: list[Commit]) -> None: ...

    def _base_start(self, commits: list[Commit], done: Callable[[Exception | None], None]) -> None:
        """Start applying ``commits``; call ``done`` (on the event loop, once)
        when they are durable, or with the exception that failed them.

        By default a task awaits :meth:`_base_apply`; a backend that can hand
        its I/O to a thread at once (SQLite's writer) overrides this, so that
        finishing one batch starts the next without waiting for a task's turn.
        """
        task = asyncio.create_task(self._base_apply(commits))

        def finished(task: asyncio.Task[None]) -> None:
            if task.cancelled():
                done(StoreClosedError("the store's write was cancelled"))
            else:
                exc = task.exception()
                done(None if exc is None else write_failure(exc))

        task.add_done_callback(finished)
        self._applying = task  # keep it referenced until it is done

    def _base_prepare(self, commit: Commit) -> None:
        """Work out what ``commit`` will write, ahead of its batch (optional:
        :meth:`_base_start` must cope with commits that were not prepared).

        Called while a batch is being written. A backend may also finish that
        batch here if it is done (call its ``done``): the next batch then
        starts with ``commit`` in it."""

    def _base_apply_now(self, commit: Commit) -> None:
        """Apply one commit synchronously; only for backends with ``_apply_inline``."""
        raise TypeError(f"{type(self).__name__} does not apply commits inline")

    @abstractmethod
    async def _base_sync_indexes(self, declared: list[IndexDef]) -> None:
        """Build the declared indexes that do not exist yet and drop the others
        (``by_creation_time`` indexes are never dropped)."""

    # -- indexes ---------------------------------------------------------------

    async def configure_indexes(self, indexes: Iterable[IndexDef]) -> None:
        declared = declared_by_table(indexes)
        self._check_open()
        # Commits computed against the old index set must be applied before
        # the build starts; from here on, new commits maintain the new set.
        await self._drain()
        previous = self._maintained
        self._maintained = declared
        try:
            await self._base_sync_indexes([i for t in declared.values() for i in t.values()])
        except BaseException:
            self._maintained = previous
            raise
        self._declare(declared)

    # -- snapshots and reads -----------------------------------------------------

    def snapshot(self, *, speculative: bool = False) -> Snapshot:
        self._check_open()
        durable, latest = self._applied_ts, self._next_ts - 1
        # Pinned at the durable point: every commit it may overlay stays in the log.
        self._log.pin(durable)
        if speculative and latest > durable:
            return Snapshot(latest, durable)
        return Snapshot(durable)

    def release(self, snapshot: Snapshot) -> None:
        self._log.unpin(snapshot.durable)

    async def get(self, snapshot: Snapshot, doc_id: str) -> Document | None:
        self._check_open()
        # Read the backend first, then correct with the log: any commit the
        # backend might already reflect is in the log by then.
        latest = await self._base_get(doc_id)
        changed, version = self._log.version_at(snapshot, doc_id)
        return version if changed else latest

    async def get_many(self, snapshot: Snapshot, doc_ids: list[str]) -> dict[str, Document | None]:
        self._check_open()
        latest = await self._base_get_many(doc_ids)
        result: dict[str, Document | None] = {doc_id: latest.get(doc_id) for doc_id in doc_ids}
        # As in get(): the backend first, then the log's corrections (the
        # before-image of the first commit after the snapshot that wrote it,
        # and for a speculative snapshot, the last version it sees).
        ts = snapshot.ts
        later = self._log.after(snapshot.durable)
        if later:
            wanted = set(doc_ids)
            for commit in later:  # oldest first: the first hit is the snapshot's version
                by_id = commit.by_id
                if by_id.keys().isdisjoint(wanted):
                    continue
                if commit.ts <= ts:  # seen by a speculative snapshot, not durable yet
                    for doc_id in by_id.keys() & wanted:
                        result[doc_id] = by_id[doc_id].new
                    continue
                for doc_id in by_id.keys() & wanted:
                    result[doc_id] = by_id[doc_id].old
                    wanted.discard(doc_id)
                if not wanted:
                    break
        return result

    async def _base_get_many(self, doc_ids: list[str]) -> dict[str, Document | None]:
        return {doc_id: await self._base_get(doc_id) for doc_id in doc_ids}

    async def scan(
        self, snapshot: Snapshot, key_range: KeyRange, order: Order, limit: int
    ) -> list[tuple[bytes, Document]]:
        self._check_open()
        self._index(key_range.index)  # raises for an unknown index
        return await overlay_scan(
            self._base_scan,
            lambda: self._log.versions_at(snapshot, key_range.index),
            key_range,
            order,
            limit,
        )

    # -- commits -------------------------------------------------------------------

    async def commit(
        self,
        snapshot: Snapshot,
        reads: ReadSet,
        writes: list[Write],
        on_accepted: Callable[[], None] | None = None,
    ) -> int:
        self._check_open()
        if snapshot.base is not None:
            self._check_seen_durable(snapshot)
        conflict = self._log.find_conflict(snapshot.ts, reads)
        if conflict is not None:
            self.conflicts += 1
            raise ConflictError(conflict)
        if not writes:
            if snapshot.base is not None:
                await self._wait_durable(snapshot)
            return snapshot.ts
        commit = Commit(self._next_ts, writes, self._indexer())
        commit.read_ts = snapshot.ts
        self._next_ts += 1
        self._log.append(commit)
        if on_accepted is not None:
            try:
                on_accepted()
            except Exception:  # the commit is on its way: it must not look failed
                logger.exception("a commit's on_accepted callback failed")
        if self._job_listeners:
            commit.jobs = job_changes(writes)
            if commit.jobs is not None:
                self._report_jobs(commit.jobs, durable=False)
        if self._apply_inline:
            self._base_apply_now(commit)
            self._applied_ts = commit.ts
            self._log.trim(self._applied_ts)
            if commit.jobs is not None:
                self._report_jobs(commit.jobs, durable=True)
            if self._commit_listeners:
                self._report_commit(commit)
            return commit.ts
        commit.done = asyncio.get_running_loop().create_future()
        if self._writing is None:
            self._start_batch()
        else:
            # Do the backend's share of the work now, while an earlier batch
            # writes, rather than when this commit's batch starts.
            self._base_prepare(commit)
        # A caller that gives up waiting cancels only its own future: the
        # commit is validated and on its way to disk regardless.
        await commit.done
        return commit.ts

    def _indexer(self) -> Callable[[list[Write]], list[IndexChange]]:
        """How the index changes of a commit made now are computed (when needed)."""
        if self._indexer_for is not self._maintained:
            # A new index set: new encoders, and cached keys no longer line up.
            self._current_indexer = self._make_indexer()
        return self._current_indexer

    def _make_indexer(self) -> Callable[[list[Write]], list[IndexChange]]:
        maintained = self._indexer_for = self._maintained
        encoders = {
            table: [
                (index.key, prefix_encoder(index.fields, index.sparse, index.where))
                for index in indexes.values()
            ]
            for table, indexes in maintained.items()
        }
        return functools.partial(index_changes, encoders, KeyCache())

    def _start_batch(self) -> None:
        """Hand every commit not applied yet to the backend, as one batch."""
        batch = self._log.after(self._applied_ts)
        if not batch:
            self._writing = None
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()
            return
        self._writing = batch
        try:
            self._base_start(batch, functools.partial(self._batch_done, batch))
        except Exception as exc:  # the batch fails as a whole, like a failed write
            asyncio.get_running_loop().call_soon(self._batch_done, batch, exc)

    def _batch_done(self, batch: list[Commit], exc: Exception | None) -> None:
        """``batch`` is durable (or failed with ``exc``); start the next one."""
        if exc is not None:
            # Commits that read a failed one through a speculative snapshot
            # must not outlive it: they fail with it.
            first = batch[0].ts
            dependent = [c for c in self._log.after(batch[-1].ts) if c.read_ts >= first]
            for commit in itertools.chain(batch, dependent):
                self._failed[commit.ts] = commit.writes[0].table
            self._log.remove(batch + dependent)
            for commit in batch:
                if commit.done is not None and not commit.done.done():
                    commit.done.set_exception(exc)
            for commit in dependent:
                if commit.done is not None and not commit.done.done():
                    commit.done.set_exception(ConflictError(self._failed[commit.ts]))
        else:
            self._applied_ts = batch[-1].ts
            for commit in batch:
                if commit.done is not None and not commit.done.done():
                    commit.done.set_result(None)
                if commit.jobs is not None:
                    self._report_jobs(commit.jobs, durable=True)
                if self._commit_listeners:
                    self._report_commit(commit)
            self._log.trim(self._applied_ts)
            if self._failed:
                # A failed commit matters only to snapshots taken before it.
                floor = self._log.oldest_pin(self._applied_ts)
                self._failed = {ts: t for ts, t in self._failed.items() if ts > floor}
        waiters, self._batch_waiters = self._batch_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._start_batch()

    def _check_seen_durable(self, snapshot: Snapshot) -> None:
        """Refuse a speculative snapshot's commit if a commit it saw failed."""
        assert snapshot.base is not None
        for ts, table in self._failed.items():
            if snapshot.base < ts <= snapshot.ts:
                raise ConflictError(table)

    async def _wait_durable(self, snapshot: Snapshot) -> None:
        """Wait until what a speculative snapshot saw is durable (or failed: raise)."""
        loop = asyncio.get_running_loop()
        while self._applied_ts < snapshot.ts:
            self._check_seen_durable(snapshot)
            waiter = loop.create_future()
            self._batch_waiters.append(waiter)
            await waiter
        self._check_seen_durable(snapshot)

    async def _drain(self) -> None:
        """Wait until no batch is being written."""
        if self._writing is not None:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter

    # -- lifecycle -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or not self._opened:
            raise StoreClosedError(
                "the store is closed" if self._closed else "the store is not open yet"
            )
