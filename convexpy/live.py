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

from sortedcontainers import SortedDict

from .context import UserIdentity
from .convex_json import from_convex_json, to_convex_json
from .db import Transaction
from .errors import ConvexError, ConvexpyError, error_text
from .functions import FunctionKind
from .queries import Journal
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
    "decode_journal",
    "encode_journal",
]

logger = logging.getLogger("convexpy.live")

T = TypeVar("T", bound=Hashable)


class _Ranges(Generic[T]):
    """The key ranges of many owners over one index, to find those holding a key.

    The ranges' ends cut the key space into segments; each segment (keyed by
    its first key) holds the set of owners whose ranges cover all of it. A
    key's owners are then one bisection away, whatever the number of ranges
    (a commit is checked against a thousand subscriptions in microseconds).
    Adding or removing a range touches the segments it covers: one or two
    for the usual equality lookups, every one for a scan of a whole table.
    """

    __slots__ = ("_segments",)

    def __init__(self) -> None:
        self._segments: SortedDict[bytes, set[T]] = SortedDict({b"": set()})

    def add(self, low: bytes, high: bytes | None, owner: T) -> None:
        segments = self._segments
        self._cut(low)
        if high is not None:
            self._cut(high)
        for start in segments.irange(low, high, inclusive=(True, False)):
            segments[start].add(owner)

    def remove(self, spans: Iterable[tuple[bytes, bytes | None]], owner: T) -> None:
        """Take ``owner`` out of all its ``spans`` (every range it added)."""
        segments = self._segments
        ends: set[bytes] = set()
        for low, high in spans:
            for start in segments.irange(low, high, inclusive=(True, False)):
                segments[start].discard(owner)
            ends.add(low)
            if high is not None:
                ends.add(high)
        for end in ends:
            self._join(end)

    def owners(self, key: bytes) -> set[T]:
        segments = self._segments
        owners: set[T] = segments.peekitem(segments.bisect_right(key) - 1)[1]
        return owners

    def __bool__(self) -> bool:
        return len(self._segments) > 1 or bool(self._segments[b""])

    def _cut(self, at: bytes) -> None:
        """Start a segment at ``at`` (its owners: those of the segment it splits)."""
        segments = self._segments
        if at not in segments:
            segments[at] = set(self.owners(at))

    def _join(self, at: bytes) -> None:
        """Merge the segment starting at ``at`` into the one before, if they agree."""
        segments = self._segments
        owners = segments.get(at)
        if at and owners is not None and segments.peekitem(segments.index(at) - 1)[1] == owners:
            del segments[at]


class ReadSetIndex(Generic[T]):
    """The read sets of many owners, to find those a commit touches. Pure.

    An owner's read set is replaced whole (:meth:`record`) each time it runs.
    """

    def __init__(self) -> None:
        self._reads: dict[T, ReadSet] = {}
        self._by_id: dict[str, set[T]] = {}
        self._by_index: dict[str, _Ranges[T]] = {}
        self._tables: Counter[str] = Counter()
        """How many ranges were scanned in an index of each table."""

    def __len__(self) -> int:
        return len(self._reads)

    def record(self, owner: T, reads: ReadSet) -> None:
        self.remove(owner)
        self._reads[owner] = reads
        for doc_id in reads.ids:
            self._by_id.setdefault(doc_id, set()).add(owner)
        for key_range in reads.ranges:
            ranges = self._by_index.get(key_range.index)
            if ranges is None:
                ranges = self._by_index[key_range.index] = _Ranges()
            ranges.add(key_range.low, key_range.high, owner)
            self._tables[_table_of(key_range.index)] += 1

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
        spans: dict[str, list[tuple[bytes, bytes | None]]] = {}
        for key_range in reads.ranges:
            spans.setdefault(key_range.index, []).append((key_range.low, key_range.high))
        for index, index_spans in spans.items():
            ranges = self._by_index.get(index)
            if ranges is None:
                continue
            ranges.remove(index_spans, owner)
            if not ranges:
                del self._by_index[index]
            table = _table_of(index)
            self._tables[table] -= len(index_spans)
            if self._tables[table] <= 0:
                del self._tables[table]

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
                ranges = self._by_index.get(index)
                if ranges is None:
                    continue
                if old is not None:
                    hit |= ranges.owners(old)
                if new is not None:
                    hit |= ranges.owners(new)
        return hit


def encode_journal(journal: Journal) -> str | None:
    """A run's journal as the sync protocol carries it (None: nothing to keep)."""
    if not journal.used or journal.end_cursor is None:
        return None
    return json.dumps({"endCursor": journal.end_cursor}, separators=(",", ":"))


def decode_journal(text: str | None) -> str | None:
    """The page end a journal keeps; ``ValueError`` if ``text`` is not a journal."""
    if text is None:
        return None
    try:
        data = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("endCursor"), str):
        raise ValueError(f"not a query journal: {text!r:.80}")
    end: str = data["endCursor"]
    return end


def _table_of(index: str) -> str:
    return index.rpartition(".")[0]


@dataclasses.dataclass(frozen=True, slots=True)
class QueryKey:
    """What makes two subscriptions the same execution: the function, its
    arguments (canonical JSON), the caller and the journal it resumes."""

    path: str
    args: str
    trusted: bool
    identity: str | None
    journal: str | None = None

    @staticmethod
    def of(
        path: str,
        args: object,
        *,
        trusted: bool,
        identity: UserIdentity | None,
        journal: str | None = None,
    ) -> QueryKey:
        """The key of ``path`` called with ``args`` (Convex JSON, as sent) by a caller."""
        who = None
        if identity is not None:
            who = json.dumps(dataclasses.asdict(identity), sort_keys=True, default=repr)
        canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), default=repr)
        return QueryKey(path, canonical, trusted, who, journal)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Outcome:
    """How one run of a live query ended: ``value`` (Convex JSON) or ``error``,
    and what the handler logged. Compared by :meth:`same_as`; otherwise by
    identity (a new object means a new result)."""

    value: object = None
    error: BaseException | None = None
    logs: tuple[str, ...] = ()
    journal: str | None = None
    """What its next runs keep (see :func:`encode_journal`), None if nothing."""

    def same_as(self, other: Outcome | None) -> bool:
        if other is None or self.logs != other.logs or self.journal != other.journal:
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

    __slots__ = ("args", "identity", "journal", "key", "outcome", "path", "refs", "trusted")

    def __init__(
        self,
        key: QueryKey,
        path: str,
        args: object,
        trusted: bool,
        identity: UserIdentity | None,
        journal: str | None = None,
    ) -> None:
        self.key = key
        self.journal = journal
        """The journal the subscriber sent (a page end to keep), if any."""
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
        self,
        path: str,
        args: object,
        *,
        trusted: bool,
        identity: UserIdentity | None,
        journal: str | None = None,
    ) -> LiveQuery:
        """The live query of ``path`` with ``args`` for this caller (resuming
        ``journal``, from :func:`encode_journal`), made (and scheduled to run)
        if there is none; hold it with :meth:`retain`. Raises ``ValueError``
        for a journal that is not one."""
        decode_journal(journal)
        key = QueryKey.of(path, args, trusted=trusted, identity=identity, journal=journal)
        live = self._queries.get(key)
        if live is None:
            live = self._queries[key] = LiveQuery(key, path, args, trusted, identity, journal)
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
        # The first run decides (the subscriber's journal, if it sent one); later runs keep it.
        kept = live.outcome.journal if live.outcome is not None else live.journal
        journal = txn.journal = Journal(decode_journal(kept))
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
            outcome = Outcome(
                value=to_convex_json(value), logs=tuple(logs), journal=encode_journal(journal)
            )
        except Exception as exc:
            outcome = Outcome(error=exc, logs=tuple(logs), journal=kept)
        finally:
            txn.release()
        return outcome, txn.reads
