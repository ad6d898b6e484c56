"""Live queries: query results kept current as commits land.

:class:`LiveQueries` runs each subscribed query (one per path, arguments and
caller, however many clients watch it) in a read-only transaction and keeps
its read set: the ids it read and the index key ranges it scanned. The store
reports every durable commit (:meth:`~convexpy.store.base.Store.watch_commits`);
:class:`ReadSetIndex` finds the queries whose read set a commit's writes touch
(a written id they read, or an index entry moved into or out of a range they
scanned), and exactly those run again. An unrelated commit runs nothing.

Work happens in *rounds*, one at a time, in commit order. A round takes the
commits reported since the last one, marks the queries they touch (and the
new ones) stale, and runs all of them in transactions opened in one step, so
on one snapshot, at timestamp ``ts``. When they are done it publishes, again
in one step, their outcomes and ``ts``: every published outcome is then the
query's result as of ``ts`` (a query not rerun was touched by no commit up to
``ts``). Commits that land during a round wait for the next one. Observers
(the sync protocol's connections) are told after each round which queries
changed; :attr:`LiveQueries.ts` never goes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from .context import UserIdentity
from .convex_json import from_convex_json, to_convex_json
from .db import Transaction
from .errors import ConvexError, ConvexpyError, error_text
from .functions import FunctionKind
from .runtime import Runtime
from .store.base import ReadSet
from .store.occ import Commit

__all__ = [
    "LiveQueries",
    "LiveQuery",
    "Outcome",
    "QueryKey",
    "QueryTimeoutError",
    "ReadSetIndex",
]

logger = logging.getLogger("convexpy.live")

T = TypeVar("T", bound=Hashable)


class ReadSetIndex(Generic[T]):
    """The read sets of many owners, to find those a commit touches. Pure.

    An owner's read set is replaced whole (:meth:`record`) each time it runs.
    """

    def __init__(self) -> None:
        self._reads: dict[T, ReadSet] = {}
        self._by_id: dict[str, set[T]] = {}
        self._by_index: dict[str, dict[T, list[tuple[bytes, bytes | None]]]] = {}
        self._tables: Counter[str] = Counter()
        """How many owners scanned an index of each table."""

    def __len__(self) -> int:
        return len(self._reads)

    def record(self, owner: T, reads: ReadSet) -> None:
        self.remove(owner)
        self._reads[owner] = reads
        for doc_id in reads.ids:
            self._by_id.setdefault(doc_id, set()).add(owner)
        for key_range in reads.ranges:
            owners = self._by_index.setdefault(key_range.index, {})
            ranges = owners.get(owner)
            if ranges is None:
                ranges = owners[owner] = []
                self._tables[_table_of(key_range.index)] += 1
            ranges.append((key_range.low, key_range.high))

    def remove(self, owner: T) -> None:
        reads = self._reads.pop(owner, None)
        if reads is None:
            return
        for doc_id in reads.ids:
            owners = self._by_id.get(doc_id)
            if owners is not None:
                owners.discard(owner)
                if not owners:
                    del self._by_id[doc_id]
        for index in {key_range.index for key_range in reads.ranges}:
            by_owner = self._by_index.get(index)
            if by_owner is not None and by_owner.pop(owner, None) is not None:
                table = _table_of(index)
                self._tables[table] -= 1
                if self._tables[table] <= 0:
                    del self._tables[table]
                if not by_owner:
                    del self._by_index[index]

    def touched(self, commits: Iterable[Commit]) -> set[T]:
        """The owners whose read set a write of ``commits`` touches."""
        hit: set[T] = set()
        by_id = self._by_id
        for commit in commits:
            for doc_id in commit.by_id.keys() & by_id.keys():
                hit |= by_id[doc_id]
            if self._tables.keys().isdisjoint(commit.tables):
                continue  # no scanned index of a written table: no key to encode
            for index, _, old, new in commit.index_changes:
                owners = self._by_index.get(index)
                if not owners:
                    continue
                for owner, ranges in owners.items():
                    if owner not in hit and _any_in(ranges, old, new):
                        hit.add(owner)
        return hit


def _table_of(index: str) -> str:
    return index.rpartition(".")[0]


def _any_in(ranges: list[tuple[bytes, bytes | None]], *keys: bytes | None) -> bool:
    for low, high in ranges:
        for key in keys:
            if key is not None and key >= low and (high is None or key < high):
                return True
    return False


@dataclasses.dataclass(frozen=True, slots=True)
class QueryKey:
    """What makes two subscriptions the same execution: the function, its
    arguments (canonical JSON) and the caller."""

    path: str
    args: str
    trusted: bool
    identity: str | None

    @staticmethod
    def of(path: str, args: object, *, trusted: bool, identity: UserIdentity | None) -> QueryKey:
        """The key of ``path`` called with ``args`` (Convex JSON, as sent) by a caller."""
        who = None
        if identity is not None:
            who = json.dumps(dataclasses.asdict(identity), sort_keys=True, default=repr)
        canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), default=repr)
        return QueryKey(path, canonical, trusted, who)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Outcome:
    """How one run of a live query ended: ``value`` (Convex JSON) or ``error``,
    and what the handler logged. Compared by :meth:`same_as`; otherwise by
    identity (a new object means a new result)."""

    value: object = None
    error: BaseException | None = None
    logs: tuple[str, ...] = ()

    def same_as(self, other: Outcome | None) -> bool:
        if other is None or self.logs != other.logs:
            return False
        if self.error is None or other.error is None:
            return self.error is None and other.error is None and self.value == other.value
        return _error_digest(self.error) == _error_digest(other.error)


def _error_digest(exc: BaseException) -> tuple[str, object]:
    data: object = None
    if isinstance(exc, ConvexError):
        try:
            data = to_convex_json(exc.data)
        except (ValueError, RecursionError):
            data = repr(exc.data)
    return error_text(exc), data


class QueryTimeoutError(ConvexpyError, TimeoutError):
    """A live query ran longer than :attr:`LiveQueries.query_timeout`."""


class LiveQuery:
    """One subscribed query: its caller, last outcome and how many hold it."""

    __slots__ = ("args", "identity", "key", "outcome", "path", "refs", "trusted")

    def __init__(
        self, key: QueryKey, path: str, args: object, trusted: bool, identity: UserIdentity | None
    ) -> None:
        self.key = key
        self.path = path
        self.args = args
        """The arguments as sent (Convex JSON, decoded when the query runs)."""
        self.trusted = trusted
        self.identity = identity
        self.outcome: Outcome | None = None
        """The result as of :attr:`LiveQueries.ts` (None until its first round)."""
        self.refs = 0

    def __repr__(self) -> str:
        return f"<LiveQuery {self.path} {self.key.args}>"


class LiveQueries:
    """The live queries of a running :class:`~convexpy.Runtime` (see the module docstring).

    Use it as an async context manager (or :meth:`start` / :meth:`close`).
    ``observers`` are called after each round with the set of queries whose
    outcome changed (possibly empty: ``ts`` moved).
    """

    def __init__(self, runtime: Runtime, *, query_timeout: float = 60.0) -> None:
        if not query_timeout > 0:
            raise ValueError(f"query_timeout must be a positive number, got {query_timeout!r}")
        self.runtime = runtime
        self.query_timeout = query_timeout
        """Seconds a query may run in a round before it fails (a round waits for all)."""
        self.ts = 0
        """Every published outcome is the query's result as of this commit timestamp."""
        self.runs = 0
        """Query executions so far (observability and tests)."""
        self.rounds = 0
        self.observers: list[Callable[[set[LiveQuery]], None]] = []
        self._queries: dict[QueryKey, LiveQuery] = {}
        self._index: ReadSetIndex[LiveQuery] = ReadSetIndex()
        self._commits: list[Commit] = []
        self._stale: set[LiveQuery] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unwatch: Callable[[], None] | None = None

    async def __aenter__(self) -> LiveQueries:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is not None:
            return
        store = self.runtime.store
        snapshot = store.snapshot()
        self.ts = snapshot.ts
        store.release(snapshot)
        self._unwatch = store.watch_commits(self._committed)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="live-queries")

    async def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def __len__(self) -> int:
        return len(self._queries)

    # -- subscriptions -------------------------------------------------------

    def query(
        self, path: str, args: object, *, trusted: bool, identity: UserIdentity | None
    ) -> LiveQuery:
        """The live query of ``path`` with ``args`` for this caller, made (and
        scheduled to run) if there is none; hold it with :meth:`retain`."""
        key = QueryKey.of(path, args, trusted=trusted, identity=identity)
        live = self._queries.get(key)
        if live is None:
            live = self._queries[key] = LiveQuery(key, path, args, trusted, identity)
            self._mark_stale(live)
        return live

    def retain(self, live: LiveQuery) -> None:
        live.refs += 1

    def release(self, live: LiveQuery) -> None:
        """Drop one hold; the last one forgets the query."""
        live.refs -= 1
        if live.refs <= 0:
            self._forget(live)

    def _forget(self, live: LiveQuery) -> None:
        if self._queries.get(live.key) is live:
            del self._queries[live.key]
            self._index.remove(live)
            self._stale.discard(live)

    def invalidate_all(self) -> None:
        """Run every query again (the app's code changed)."""
        for live in self._queries.values():
            self._mark_stale(live)

    def _mark_stale(self, live: LiveQuery) -> None:
        self._stale.add(live)
        self._wake.set()

    def _committed(self, commit: Commit) -> None:
        self._commits.append(commit)
        self._wake.set()

    def durable_ts(self) -> int:
        """The store's latest durable commit: what a new snapshot sees."""
        store = self.runtime.store
        snapshot = store.snapshot()
        store.release(snapshot)
        return snapshot.ts

    # -- rounds ----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._round()
            except Exception:  # the store failed, or a bug of ours: try again on the next commit
                logger.exception("a live query round failed")

    async def _round(self) -> None:
        commits, self._commits = self._commits, []
        stale = self._stale
        self._stale = set()
        if commits and len(self._index):
            stale |= self._index.touched(commits)
        for live in [live for live in stale if live.refs <= 0]:
            # Made by :meth:`query` but never retained (its caller failed).
            self._forget(live)
            stale.discard(live)
        runtime = self.runtime
        txns: dict[LiveQuery, Transaction] = {}
        try:
            # Opened in one step, the transactions share one snapshot.
            for live in stale:
                txns[live] = runtime.transaction(writable=False)
            ts = next(iter(txns.values())).snapshot.ts if txns else self.durable_ts()
        except BaseException:
            for txn in txns.values():
                txn.release()
            self._stale |= stale  # run them in the next round
            raise
        ran = await asyncio.gather(*(self._execute(live, txn) for live, txn in txns.items()))
        changed: set[LiveQuery] = set()
        for live, (outcome, reads) in zip(txns, ran, strict=True):
            if self._queries.get(live.key) is not live:
                continue  # released meanwhile
            self._index.record(live, reads)
            if not outcome.same_as(live.outcome):
                live.outcome = outcome
                changed.add(live)
        self.ts = max(self.ts, ts)
        self.rounds += 1
        for observer in list(self.observers):
            try:
                observer(changed)
            except Exception:
                logger.exception("a live query observer failed")

    async def _execute(self, live: LiveQuery, txn: Transaction) -> tuple[Outcome, ReadSet]:
        logs: list[str] = []
        self.runs += 1
        try:
            args = from_convex_json(live.args)
            if not isinstance(args, dict):
                raise ValueError("the arguments must be an object")
            try:
                async with asyncio.timeout(self.query_timeout):
                    value = await self.runtime.call(
                        FunctionKind.QUERY,
                        live.path,
                        args,
                        identity=live.identity,
                        trusted=live.trusted,
                        logs=logs,
                        txn=txn,
                    )
            except TimeoutError:
                raise QueryTimeoutError(
                    f"{live.path} did not finish within {self.query_timeout:g} s"
                ) from None
            outcome = Outcome(value=to_convex_json(value), logs=tuple(logs))
        except Exception as exc:
            outcome = Outcome(error=exc, logs=tuple(logs))
        finally:
            txn.release()
        return outcome, txn.reads
