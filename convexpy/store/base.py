"""The storage port: the contract every document store implements.

A store holds documents (dicts with ``_id`` and ``_creationTime``) grouped in
tables, plus index entries over them, and runs serializable optimistic
transactions:

* :meth:`Store.snapshot` pins a consistent, committed point in time. Every read
  made with that snapshot (:meth:`Store.get`, :meth:`Store.scan`) sees exactly
  the commits up to it, however many commits land meanwhile.
* :meth:`Store.commit` validates a transaction's read set against every commit
  made after its snapshot. If any of them wrote a document the transaction
  read by id, or changed an index entry inside a key range the transaction
  scanned, the commit raises :class:`ConflictError` and nothing is written.
  Otherwise the writes are applied atomically and are durable (for durable
  stores) when the call returns.

Conflict checks happen inside the store, so a store shared by several
processes (PostgreSQL, later) can do them in the database itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol, TypeVar

from ..errors import CommitFailedError
from .health import StoreHealth
from .jobs import (
    SCHEDULED_FUNCTIONS,
    JobChanges,
    JobState,
    completed_before,
    ended,
    started,
    state_range,
)
from .keys import encode_prefix
from .occ import Commit
from .types import (
    BY_CREATION_TIME,
    BY_ID,
    ConflictError,
    Document,
    IndexDef,
    KeyRange,
    Order,
    ReadSet,
    Snapshot,
    Write,
)

__all__ = [
    "BY_CREATION_TIME",
    "BY_ID",
    "CommitListener",
    "ConflictError",
    "Document",
    "DueJob",
    "IndexDef",
    "JobListener",
    "KeyRange",
    "Order",
    "ReadSet",
    "Snapshot",
    "Store",
    "Write",
]

T = TypeVar("T")

logger = logging.getLogger("convexpy.store")


def conflict_pause_s(attempt: int) -> float:
    """Full-jitter backoff in seconds before a conflicting transaction's next
    try: up to 2 ms doubling per attempt, capped at 1 s."""
    return random.uniform(0, min(1.0, 0.002 * 2**attempt))


class DueJob(NamedTuple):
    """A pending job as :meth:`Store.due_jobs` lists it."""

    key: bytes
    """Its position in the listing: pass it as ``after`` to continue."""
    id: str
    scheduled_time: float
    name: str


class Claims(NamedTuple):
    """What :meth:`Store.claim_jobs` says of the jobs it was asked for."""

    granted: list[str]
    """The jobs this process may start now."""
    ended: Sequence[str] = ()
    """The jobs with nothing left to run: ended, or gone. The others were
    claimed by another process."""


class JobListener(Protocol):
    """What a store tells about commits that create or cancel jobs (see
    :meth:`Store.watch_jobs`)."""

    def jobs_accepted(self, changes: JobChanges) -> None: ...

    def jobs_durable(self, changes: JobChanges) -> None: ...


CommitListener = Callable[[Commit], None]
"""Told of every commit once it is durable (see :meth:`Store.watch_commits`)."""


class Store(ABC):
    """A transactional document store. See the module docstring for the contract.

    ``health`` tracks whether writes are failing (see :mod:`.health`):
    transactions report each commit's outcome to it, and a store reports
    faults it knows of itself, such as a writer it cannot restart.
    """

    def __init__(self) -> None:
        self.health = StoreHealth()
        self._job_listeners: list[JobListener] = []
        self._commit_listeners: list[CommitListener] = []

    @abstractmethod
    async def open(self) -> None:
        """Open the store (create files and tables if needed)."""

    @abstractmethod
    async def close(self) -> None:
        """Finish in-flight commits and release every resource. Idempotent."""

    @abstractmethod
    async def configure_indexes(self, indexes: Iterable[IndexDef]) -> None:
        """Declare the full set of indexes beyond ``by_creation_time``.

        New indexes are built (backfilled) from the existing documents before
        this returns; indexes no longer declared are dropped. ``by_creation_time``
        exists for every table without being declared.
        """

    @abstractmethod
    def indexes_of(self, table: str) -> Mapping[str, IndexDef]:
        """The indexes of ``table`` by name, ``by_creation_time`` included."""

    @abstractmethod
    def snapshot(self, *, speculative: bool = False) -> Snapshot:
        """Pin the latest committed state for reading.

        A ``speculative`` snapshot also sees commits that were accepted but
        are not durable yet. Only a transaction whose own commit is ordered
        after them may read one (the scheduler's mutation jobs): the store
        fails its commit if one of those it saw fails to be written, so
        nothing it did outlives what it read. A store whose commits are
        durable as soon as they are accepted (the memory store; a database
        server) has no such gap and returns a plain snapshot, except while
        a commit's ``on_accepted`` runs: the memory store applies the commit
        right after it, and a snapshot taken inside it sees the commit.
        """

    @abstractmethod
    def release(self, snapshot: Snapshot) -> None:
        """Tell the store a snapshot will not be read any more."""

    @abstractmethod
    async def get(self, snapshot: Snapshot, doc_id: str) -> Document | None:
        """The document with ``doc_id`` as of ``snapshot``, or None."""

    async def get_many(self, snapshot: Snapshot, doc_ids: list[str]) -> dict[str, Document | None]:
        """Several documents as of ``snapshot`` (stores override this to batch)."""
        return {doc_id: await self.get(snapshot, doc_id) for doc_id in doc_ids}

    @abstractmethod
    async def scan(
        self,
        snapshot: Snapshot,
        key_range: KeyRange,
        order: Order,
        limit: int,
    ) -> list[tuple[bytes, Document]]:
        """Up to ``limit`` ``(key, document)`` pairs of an index range, in key order.

        ``order="desc"`` returns the highest keys first.
        """

    @abstractmethod
    async def commit(
        self,
        snapshot: Snapshot,
        reads: ReadSet,
        writes: list[Write],
        on_accepted: Callable[[], None] | None = None,
    ) -> int:
        """Validate ``reads`` against later commits, then apply ``writes`` atomically.

        ``on_accepted`` is called once the commit is validated and ordered,
        before it is durable: from then on speculative snapshots see it (a
        store that cannot tell the two calls it when the commit is durable).

        Returns the commit's timestamp. Raises :class:`ConflictError` (and
        writes nothing) on a conflict. ``old`` of each write must be the
        document as read in ``snapshot``; every written id must be in
        ``reads.ids``. When this returns, the commit is visible to new
        snapshots and, for durable stores, on disk.
        """

    @abstractmethod
    def creation_time(self, table: str, now_ms: float) -> float:
        """A ``_creationTime`` for a new document: ``>= now_ms`` and strictly
        greater than every one handed out before for ``table``."""

    @abstractmethod
    async def prepare_table(self, table: str) -> None:
        """Load what :meth:`creation_time` needs for ``table`` (idempotent, cheap)."""

    @abstractmethod
    async def tables(self) -> list[str]:
        """Names of the tables that hold or held documents."""

    # -- commits, reported -------------------------------------------------------------

    async def commit_and_report(
        self,
        snapshot: Snapshot,
        reads: ReadSet,
        writes: list[Write],
        on_accepted: Callable[[], None] | None = None,
    ) -> int:
        """:meth:`commit`, its outcome reported to :attr:`health`; a failure
        other than a conflict raises :class:`~convexpy.errors.CommitFailedError`
        (nothing was written)."""
        health = self.health
        try:
            ts = await self.commit(snapshot, reads, writes, on_accepted)
        except ConflictError:
            raise
        except Exception as exc:
            health.write_failed(exc)
            raise CommitFailedError(f"the store failed to commit: {exc}") from exc
        if writes and health.error is not None:
            health.write_succeeded()
        return ts

    def watch_commits(self, listener: CommitListener) -> Callable[[], None]:
        """Tell ``listener`` of every commit once it is durable, in commit order,
        with its timestamp, writes and the index entries they move (the live
        queries' invalidation); returns a function that stops the reports.

        A store calls the listeners in the same step that makes the commit
        visible to new snapshots: a snapshot taken after a listener was told of
        a commit sees it, and every commit a snapshot sees was reported before
        the snapshot was taken. A store that is not built on
        :class:`~convexpy.store.engine.LatestVersionStore` makes the
        :class:`~convexpy.store.occ.Commit` itself."""
        self._commit_listeners.append(listener)

        def stop() -> None:
            if listener in self._commit_listeners:
                self._commit_listeners.remove(listener)

        return stop

    def _report_commit(self, commit: Commit) -> None:
        """Tell the commit listeners of a durable commit (a store calls this); a
        listener that fails must not fail the commit, or the others."""
        for listener in self._commit_listeners:
            try:
                listener(commit)
            except Exception:
                logger.exception("a commit listener failed")

    # -- the job queue -------------------------------------------------------------
    #
    # Jobs are documents of ``_scheduled_functions`` (see :mod:`.jobs`). A
    # transaction creates, cancels and completes them like any other
    # documents; the operations below are those the scheduler runs on their
    # own, each its own transaction. The defaults are written with the
    # primitives above; a store shared by several processes overrides them to
    # work in the database, and claims jobs before they start (PostgreSQL: a
    # claims table with leases, see ``claim_jobs``).

    def watch_jobs(self, listener: JobListener) -> None:
        """Tell ``listener`` of every commit that creates or cancels a job that
        may run: ``jobs_accepted(changes)`` once the commit is accepted and
        ``jobs_durable(changes)`` once it is durable (both at once for a store
        with no gap between the two), with the same :class:`JobChanges`."""
        self._job_listeners.append(listener)

    def _report_jobs(self, changes: JobChanges, *, durable: bool) -> None:
        """Tell the job listeners of a commit's job changes (a store calls this);
        a listener that fails must not fail the commit, or the others."""
        for listener in self._job_listeners:
            try:
                if durable:
                    listener.jobs_durable(changes)
                else:
                    listener.jobs_accepted(changes)
            except Exception:
                logger.exception("a job listener failed")

    shared = False
    """Whether other processes may run jobs from this store at the same time
    (PostgreSQL). Then the dispatcher claims due jobs before starting them
    (:meth:`claim_jobs`), renews its claims every :attr:`lease` / 3 seconds
    while they run, and checks every lease for running actions whose
    process is gone (:meth:`fail_interrupted_actions`); a store used by one
    process at a time skips all of it."""

    lease = 10.0
    """Seconds a claim lasts unless renewed (a shared store's)."""

    async def claim_jobs(self, job_ids: list[str]) -> Claims:
        """Claim due jobs for this process, for :attr:`lease` seconds: those of
        ``job_ids`` it may start (claimed by no other process, or by one whose
        claim expired: a dead process's jobs are taken over), and which of the
        rest ended already. A claim only avoids duplicate work: exactly-once
        mutations and at-most-once actions hold by transactions whatever the
        claims. A store used by one process (the default) grants them all."""
        return Claims(job_ids)

    async def renew_claims(self, job_ids: list[str]) -> None:
        """Extend this process's claims of ``job_ids`` by another :attr:`lease`
        (the dispatcher does so while they run: a running action's claim is
        its lease)."""
        return None  # a store used by one process holds no claims

    async def release_claims(self, job_ids: list[str]) -> None:
        """Drop this process's claims of ``job_ids`` (their runs ended)."""
        return None

    async def _live_claims(self, job_ids: list[str]) -> set[str]:
        """Those of ``job_ids`` whose claim has not expired (a shared store's
        running actions whose process is alive)."""
        return set()

    async def due_jobs(
        self,
        limit: int,
        *,
        before: float | None = None,
        at_or_after: float | None = None,
        after_key: bytes | None = None,
    ) -> list[DueJob]:
        """Up to ``limit`` pending jobs, earliest first: scheduled before
        ``before`` and at or after ``at_or_after`` (None: no bound), and past
        ``after_key`` (the ``key`` of the last job an earlier call returned)."""
        key_range = state_range(JobState.PENDING, before)
        low = key_range.low
        if at_or_after is not None:
            low = max(low, key_range.low + encode_prefix([float(at_or_after)]))
        if after_key is not None:
            low = max(low, after_key + b"\x00")
        snapshot = self.snapshot()
        try:
            rows = await self.scan(
                snapshot, KeyRange(key_range.index, low, key_range.high), "asc", limit
            )
        finally:
            self.release(snapshot)
        return [DueJob(key, doc["_id"], doc["scheduledTime"], doc["name"]) for key, doc in rows]

    async def start_action(self, job_id: str) -> Document | None:
        """Mark a pending job ``inProgress`` (committed before this returns, so
        its action runs at most once); the job as it was, or None if it is
        not pending any more (cancelled, or started elsewhere)."""

        async def body(snapshot: Snapshot, reads: ReadSet) -> tuple[list[Write], Document | None]:
            job = await self._read_job(snapshot, reads, job_id)
            if job is None or job["state"]["kind"] != JobState.PENDING:
                return [], None
            return [Write(job_id, SCHEDULED_FUNCTIONS, job, started(job))], job

        return await self._job_transaction(body)

    async def finish_action(
        self, job_id: str, state: JobState, now: float, error: str | None = None
    ) -> bool:
        """Record how a running action ended; False (nothing written) if its
        job is not running any more (it was cancelled meanwhile)."""

        async def body(snapshot: Snapshot, reads: ReadSet) -> tuple[list[Write], bool]:
            job = await self._read_job(snapshot, reads, job_id)
            if job is None or job["state"]["kind"] != JobState.IN_PROGRESS:
                return [], False
            return [Write(job_id, SCHEDULED_FUNCTIONS, job, ended(job, state, now, error))], True

        return await self._job_transaction(body)

    async def fail_interrupted_actions(self, now: float, error: str, limit: int = 100) -> int:
        """Mark up to ``limit`` running actions ``failed`` with ``error`` whose
        process is gone; how many it marked. A store used by one process
        marks every one (it is called at start: whoever ran them is gone); a
        :attr:`shared` store only those whose claim expired (their process
        stopped renewing it), so a live process's actions are never failed."""

        async def body(snapshot: Snapshot, reads: ReadSet) -> tuple[list[Write], int]:
            # Only the jobs read join the read set: others may come and go.
            rows = await self.scan(snapshot, state_range(JobState.IN_PROGRESS), "asc", limit)
            if self.shared:
                # Past the live ones, page by page: they may be many.
                page, rows = rows, []
                while page:
                    alive = await self._live_claims([doc["_id"] for _, doc in page])
                    rows += [(key, doc) for key, doc in page if doc["_id"] not in alive]
                    if len(rows) >= limit or len(page) < limit:
                        break
                    after = state_range(JobState.IN_PROGRESS, low=page[-1][0] + b"\x00")
                    page = await self.scan(snapshot, after, "asc", limit)
                del rows[limit:]
            writes = [
                Write(doc["_id"], SCHEDULED_FUNCTIONS, doc, ended(doc, JobState.FAILED, now, error))
                for _, doc in rows
            ]
            reads.ids.update(write.id for write in writes)
            return writes, len(writes)

        return await self._job_transaction(body)

    async def delete_finished_jobs(self, completed_by: float, limit: int) -> int:
        """Delete up to ``limit`` finished jobs completed at or before
        ``completed_by``, oldest first; how many it deleted."""

        async def body(snapshot: Snapshot, reads: ReadSet) -> tuple[list[Write], int]:
            rows = await self.scan(snapshot, completed_before(completed_by), "asc", limit)
            writes = [Write(doc["_id"], SCHEDULED_FUNCTIONS, doc, None) for _, doc in rows]
            reads.ids.update(write.id for write in writes)
            return writes, len(writes)

        return await self._job_transaction(body)

    async def oldest_finished_job(self) -> float | None:
        """When the earliest-completed finished job still kept was completed."""
        snapshot = self.snapshot()
        try:
            rows = await self.scan(snapshot, completed_before(float("inf")), "asc", 1)
        finally:
            self.release(snapshot)
        return float(rows[0][1]["completedTime"]) if rows else None

    async def _read_job(self, snapshot: Snapshot, reads: ReadSet, job_id: str) -> Document | None:
        reads.ids.add(job_id)
        return await self.get(snapshot, job_id)

    async def _job_transaction(
        self, body: Callable[[Snapshot, ReadSet], Awaitable[tuple[list[Write], T]]]
    ) -> T:
        """Run ``body`` against a snapshot and commit the writes it returns,
        again on a conflict (with a short random pause) until it commits."""
        conflicts = 0
        while True:
            snapshot = self.snapshot()
            try:
                reads = ReadSet()
                writes, result = await body(snapshot, reads)
                if writes:
                    await self.commit_and_report(snapshot, reads, writes)
                return result
            except ConflictError:
                conflicts += 1
            finally:
                self.release(snapshot)
            await asyncio.sleep(conflict_pause_s(min(conflicts, 10)))
