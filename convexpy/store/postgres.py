"""``PostgresStore``: one PostgreSQL database shared by any number of processes.

``store="postgresql://user:password@host:port/database"`` (see
:meth:`PostgresStore.from_url` for the options). The driver is asyncpg (see
benchmarks/README.md for why). The layout is in :mod:`._pg_schema`: it is
created on open, migrated when older, and refused when newer.

How it meets the port
---------------------
Documents and index entries are *versioned* in the database: each row is
valid from the commit that wrote it until the commit that replaced it. Jobs
(``_scheduled_functions``) are one row each that holds the timestamp of
every transition, which says what the job was at any commit (see
:mod:`._pg_jobs`). A snapshot is therefore just a commit timestamp, and
every read is one statement on any pooled connection selecting the
versions valid at it, so a snapshot holds no connection and no server
transaction (:meth:`snapshot` and :meth:`release` do no I/O), and reads
exactly the commits up to its timestamp however long after it was taken.

A commit is one call of the server-side function ``convexpy_commit`` (one
round trip, its own transaction): it locks the clock row, which serializes
commits across all processes and gives each the next timestamp; validates
the read set against the versions written after the snapshot (a document
read by id, or an index entry opened or closed inside a scanned key range,
and the same of jobs, means :class:`ConflictError`, nothing written); then
writes the new versions and NOTIFYs its timestamp. Commits are thus
serializable *in timestamp order*, the property the conformance suite
checks, and durable on return.
The timestamp :meth:`commit` returns is the clock row's counter: strictly
increasing in commit order across every process on the database, gapless
except for index configurations (which take one). A commit without writes
writes nothing and returns its snapshot's timestamp (its reads were all of
that snapshot: it is serialized right there). Configuring indexes holds
the clock row while it builds, so commits wait for a build (at most
``lock_timeout``, then they fail with
:class:`~convexpy.errors.StoreUnavailableError`).

Why not the simpler design of one ``SERIALIZABLE`` PostgreSQL transaction
per snapshot: PostgreSQL's SSI makes transactions serializable in *some*
order, not in commit order (a transaction that read ``x`` before another
changed it may still commit after it), while the port orders transactions by
their commit timestamps (a read-only transaction right after the commit its
snapshot saw); a shared timestamp row updated in every transaction would
instead make every pair of concurrent writers conflict. It would also hold a
pooled connection for each snapshot from its first read to its release,
and the port lets a snapshot be read after its own commit, or commit twice.

Snapshots, timestamps and other processes
-----------------------------------------
:meth:`snapshot` pins the last commit this process knows of: its own
commits, every timestamp its reads see, and the NOTIFY of every other
process's commit (a listening connection; it reconnects when lost). So a
snapshot sees every commit of this process made before it, and another
process's commits a moment after they land. A snapshot that missed a commit
of another process only ever reads consistently older data, and a commit
from it conflicts if that matters.

Jobs and other processes
------------------------
A commit that creates or cancels jobs NOTIFYs them too (in the same
statement, so only if it commits; see :data:`._pg_schema.JOBS_CHANNEL`):
every other process tells its job listeners, so its dispatcher runs a job
another process scheduled as soon as it is due. Due jobs are claimed before
they start (:meth:`PostgresStore.claim_jobs`, table ``convexpy_claims``) for
:attr:`PostgresStore.lease` seconds by the database's clock; the claim of a
running action is its lease, and :meth:`fail_interrupted_actions
<convexpy.store.base.Store.fail_interrupted_actions>` fails only the actions
whose lease ran out. Notifications sent while the listening connection is
lost are made up for on reconnecting: the job changes of the commits made
meanwhile are read from the store and reported.

Old versions are kept for :attr:`PostgresStore.history` seconds (300) and
then collected (every few hundred commits, by whichever process commits). A
snapshot older than that can no longer be read or committed: it raises
:class:`SnapshotTooOldError`, a :class:`ConflictError` (mutations retry it).

``creation_time`` is strictly increasing per table within a process and at
least the clock; two processes may hand out the same value for the same
table (index keys still differ: they end with the document id).

Failures and timeouts
---------------------
A connection that fails (the server restarted, the network dropped) makes
reads and commits raise :class:`~convexpy.errors.StoreUnavailableError`
naming the URL (never its password); the pool opens new connections, and a
read is tried once more on a fresh one first. A commit whose connection was
lost while the call was in flight is settled from the database: if its
versions are there it landed (and returns as usual), if not, nothing was
written (and the error says so). No statement can hang: ``statement_timeout``, ``lock_timeout`` and
``idle_in_transaction_session_timeout`` are set on every connection, each
query also has a client-side deadline (``statement_timeout`` plus 5 s) and
connecting has ``connect_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from ..errors import StoreClosedError, StoreUnavailableError, StoreVersionError
from . import _pg_schema as schema
from ._pg_jobs import KEYS as JOB_KEYS
from ._pg_jobs import JobWrites, job_at, job_row_of_versions, job_rows_landed, scan_rows
from .base import (
    Claims,
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
from .engine import KeyCache, creation_index_key, index_changes
from .jobs import (
    SCHEDULED_FUNCTIONS,
    STATE_CODES,
    SYSTEM_INDEXES,
    JobChanges,
    JobState,
    is_job_id,
    job_changes,
)
from .keys import encode_suffix, prefix_encoder
from .occ import Commit

__all__ = ["PostgresStore", "SnapshotTooOldError"]

logger = logging.getLogger("convexpy.store")

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(dict[str, Any]).decode

_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
)

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A connection of its own or one lent by the pool."""

Encoders = dict[str, list[tuple[str, Callable[[Document], bytes | None]]]]


class SnapshotTooOldError(ConflictError):
    """A snapshot older than the store's history was read or committed from."""

    def __init__(self, table: str, history: float) -> None:
        super().__init__(table)
        self.args = (
            f"the snapshot is older than the store keeps history for ({history:g} s): "
            "start the transaction again",
        )


@dataclass(frozen=True)
class Timeouts:
    """Limits set on every connection, in seconds (0: none, PostgreSQL's meaning)."""

    statement: float = 30.0
    """``statement_timeout``: the longest one statement may run."""
    lock: float = 10.0
    """``lock_timeout``: the longest a statement waits for a lock (a commit, for the clock row)."""
    idle_in_transaction: float = 60.0
    """``idle_in_transaction_session_timeout``: an open transaction left idle is ended."""
    connect: float = 10.0
    """The longest opening a connection may take (never 0)."""

    def __post_init__(self) -> None:
        for name in ("statement", "lock", "idle_in_transaction", "connect"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ValueError(f"the {name} timeout must be a number of seconds, got {value!r}")
        if self.connect == 0:
            raise ValueError("the connect timeout must be more than 0 seconds")

    def settings(self) -> dict[str, str]:
        def ms(seconds: float) -> str:
            return str(math.ceil(seconds * 1000))

        return {
            "statement_timeout": ms(self.statement),
            "lock_timeout": ms(self.lock),
            "idle_in_transaction_session_timeout": ms(self.idle_in_transaction),
        }

    @property
    def query(self) -> float | None:
        """The client-side deadline of one query (None: the server has none either)."""
        return self.statement + 5.0 if self.statement else None


_URL_OPTIONS = {
    "statement_timeout": "statement",
    "lock_timeout": "lock",
    "idle_in_transaction_timeout": "idle_in_transaction",
    "connect_timeout": "connect",
}


def safe_url(url: str) -> str:
    """``url`` without its password (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


class PostgresStore(CatalogStore):
    """A store in the PostgreSQL database at ``url``; see the module docstring.

    ``pool_size`` connections at most are open at once (reads and commits
    hold one for a single statement each); ``history`` is how long, in
    seconds, versions that were replaced stay readable by older snapshots;
    ``lease``, in seconds, how long a claim of a job lasts unless renewed (a
    process that dies loses its jobs to the others that much later).
    """

    shared = True

    collect_every = 500
    """Commits of this process between two collections of old versions."""

    def __init__(
        self,
        url: str,
        *,
        timeouts: Timeouts | None = None,
        pool_size: int = 10,
        history: float = 300.0,
        lease: float = 10.0,
    ) -> None:
        super().__init__()
        scheme = urlsplit(url).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(
                f"a PostgreSQL store URL starts with postgresql://, got {safe_url(url)!r}"
            )
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}")
        if not history > 0:
            raise ValueError(f"history must be a positive number of seconds, got {history!r}")
        if not isinstance(lease, int | float) or not 0 < lease < math.inf:
            raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
        self.lease = float(lease)
        self.owner = uuid.uuid4().hex
        """This store's token: its claims' owner, and how it knows its own NOTIFYs."""
        self._fetching: set[asyncio.Task[None]] = set()
        self._own_commits: dict[int, None] = {}
        """This store's latest 4,096 commits, oldest first (their NOTIFYs are
        not reported again): a dict, for its order and its O(1) lookups."""
        self.url = url
        self.timeouts = timeouts or Timeouts()
        self.pool_size = pool_size
        self.history = float(history)
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = False
        self._ts = 0
        """The last commit this process knows of: what a new snapshot pins."""
        self._encoders: Encoders = {}
        """The built indexes, as the database lists them (what commits maintain),
        and the job table's (what reports of commits move)."""
        self._indexes_ts = -1
        """The ``indexes`` timestamp the encoders were loaded at."""
        self._known_tables: set[str] = set()
        self._samples: deque[tuple[float, int]] = deque()
        """(monotonic time, a timestamp known then): where the collection horizon is found."""
        self._commits = 0
        self.conflicts = 0
        """How many commits were refused for conflicts (observability and tests)."""

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """A store for ``postgresql://[user[:password]@]host[:port]/database[?options]``
        (``postgres://`` too). Options, joined by ``&``: ``statement_timeout``,
        ``lock_timeout``, ``idle_in_transaction_timeout`` and ``connect_timeout``
        (seconds; see :class:`Timeouts`), ``pool_size``, ``history`` and ``lease`` (seconds);
        any other (``sslmode``, ``host`` for a Unix socket directory...) goes
        to the driver as libpq would take it."""
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"invalid PostgreSQL store URL {safe_url(url)!r}: {exc}") from None
        if not parts.path.strip("/"):
            raise ValueError(
                f"the PostgreSQL store URL {safe_url(url)!r} names no database: "
                "use postgresql://user@host:port/database"
            )
        timeouts: dict[str, float] = {}
        kwargs: dict[str, Any] = {}
        rest: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in _URL_OPTIONS or name in ("history", "lease"):
                number = _number(value)
                positive = name in ("history", "lease")
                if number is None or number < 0 or (positive and number == 0):
                    raise ValueError(
                        f"{name} must be a {'positive' if positive else 'non-negative'}"
                        f" number of seconds in {safe_url(url)!r}, got {value!r}"
                    )
                if positive:
                    kwargs[name] = number
                else:
                    timeouts[_URL_OPTIONS[name]] = number
            elif name == "pool_size":
                if not value.isdigit() or int(value) < 1:
                    raise ValueError(
                        f"pool_size must be a positive integer in {safe_url(url)!r}, got {value!r}"
                    )
                kwargs["pool_size"] = int(value)
            else:
                rest.append((name, value))
        dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        try:
            limits = Timeouts(**timeouts)
        except ValueError as exc:
            raise ValueError(f"{exc} in {safe_url(url)!r}") from None
        return cls(dsn, timeouts=limits, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._opened or self._closed:
            raise StoreClosedError("a store opens once")
        timeouts = self.timeouts
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                timeout=timeouts.connect,
                command_timeout=timeouts.query,
                server_settings=self._server_settings(),
                reset=_keep_connection,
            )
        except Exception as exc:
            raise StoreUnavailableError(
                f"cannot open the PostgreSQL store {safe_url(self.url)}: {_describe(exc)}"
            ) from exc
        try:
            async with self._connection() as conn:
                await _prepare_schema(conn, safe_url(self.url))
                await self._load_indexes(conn)
                self._known_tables = {
                    row[0] for row in await conn.fetch("SELECT name FROM convexpy_tables")
                }
                self._learn(await conn.fetchval("SELECT ts FROM convexpy_clock"))
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        listening = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(listening), name="convexpy-pg-listener")
        # Jobs other processes schedule from now on are heard of (those
        # before are in the store, for the dispatcher's first load).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listening.wait(), timeouts.connect)
        self._opened = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = list(self._fetching)
        if self._listener is not None:
            tasks.append(self._listener)
            self._listener = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeouts.connect)
            except (Exception, asyncio.CancelledError):
                pool.terminate()
                raise

    def _server_settings(self) -> dict[str, str]:
        # Every statement of the store has an index to follow; the planner,
        # misled by small or never-analyzed tables (as a fresh database's
        # are), otherwise scans whole tables per commit.
        return {
            **self.timeouts.settings(),
            "application_name": "convexpy",
            "jit": "off",
            "enable_seqscan": "off",
        }

    def _check_open(self) -> asyncpg.Pool:
        if self._closed or not self._opened or self._pool is None:
            raise StoreClosedError(
                "the store is closed" if self._closed else "the store is not open yet"
            )
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self, table: str = "") -> AsyncIterator[Connection]:
        """A pooled connection; a failure of the server or of the connection
        raises :class:`StoreUnavailableError` naming the store, a
        serialization failure :class:`ConflictError` (on ``table``)."""
        pool = self._pool
        if pool is None:
            raise StoreClosedError("the store is closed")
        try:
            async with pool.acquire(
                timeout=self.timeouts.connect + (self.timeouts.query or 0)
            ) as conn:
                yield conn
        except (ConflictError, StoreVersionError):
            raise
        except asyncpg.exceptions.TransactionRollbackError as exc:
            # 40001, 40P01: the server's own serialization or deadlock check
            # (none expected: commits take one lock, reads are single statements).
            raise ConflictError(table) from exc
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailableError(
                f"the PostgreSQL store {safe_url(self.url)} is unreachable: {_describe(exc)}"
            ) from exc
        except asyncpg.PostgresError as exc:
            raise StoreUnavailableError(
                f"the PostgreSQL store {safe_url(self.url)} failed: {_describe(exc)}"
            ) from exc

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of one read statement, tried once more on a fresh connection if
        the first one was lost (after a server restart, every pooled one is)."""
        for attempt in (1, 2):
            try:
                async with self._connection() as conn:
                    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                    return rows
            except StoreUnavailableError as exc:
                if attempt == 2 or not isinstance(exc.__cause__, _CONNECTION_ERRORS):
                    raise
                if self._pool is not None:
                    await self._pool.expire_connections()
        raise AssertionError("unreachable")

    async def _listen(self, listening: asyncio.Event) -> None:
        """Keep a connection LISTENing to commits, so that snapshots pin the
        latest commit of every process; reconnect when it is lost (and report
        the job changes of the commits made meanwhile)."""
        delay = 0.1
        heard: int | None = None
        """The last commit known when the connection was lost."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.url,
                    timeout=self.timeouts.connect,
                    command_timeout=self.timeouts.query,
                    server_settings=self._server_settings(),
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(schema.CHANNEL, self._notified)
                await conn.add_listener(schema.JOBS_CHANNEL, self._jobs_notified)
                now = await conn.fetchval("SELECT ts FROM convexpy_clock")
                self._learn(now)
                listening.set()
                delay = 0.1
                if heard is not None and now > heard and self._job_listeners:
                    self._report_fetched(heard, now)
                await lost.wait()
                heard = self._ts
                logger.warning(
                    "The PostgreSQL store's listening connection was lost; reconnecting."
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("cannot listen to the PostgreSQL store's commits: %s", exc)
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            ts = int(payload)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return
        self._learn(ts)
        if self._commit_listeners and ts not in self._own_commits:
            task = asyncio.create_task(self._report_other_commit(ts))
            self._fetching.add(task)
            task.add_done_callback(self._fetching.discard)

    async def _report_other_commit(self, ts: int) -> None:
        """Another process's commit ``ts``, read back from the versions it
        closed and wrote, told to the commit listeners (live queries)."""
        try:
            # New versions through each table's creation-time index: its
            # entries of the versions written at ts are found by (idx, from_ts).
            rows = await self._fetch(
                "SELECT id, tbl, doc, false FROM convexpy_documents WHERE to_ts = $1"
                " UNION ALL"
                " SELECT d.id, d.tbl, d.doc, true FROM convexpy_index_entries e"
                " JOIN convexpy_documents d ON d.id = e.id AND d.from_ts = e.from_ts"
                " WHERE e.idx IN (SELECT t.name || $2 FROM convexpy_tables t)"
                " AND e.from_ts = $1",
                ts,
                _CREATION_SUFFIX,
            )
            job_rows = await self._fetch(schema.JOBS_CHANGED_SINCE, ts)
        except StoreUnavailableError as exc:
            logger.warning("cannot read another process's commit %d: %s", ts, exc)
            return
        if ts in self._own_commits:
            return  # this store's own (reported when made)
        versions: dict[str, list[Any]] = {}
        for doc_id, table, blob, is_new in rows:
            version = versions.setdefault(doc_id, [table, None, None])
            version[2 if is_new else 1] = _decode(blob)
        writes = [Write(i, table, old, new) for i, (table, old, new) in versions.items()]
        for row in job_rows:
            if ts in row[8:12]:  # one of its transitions is this commit's
                old, new = job_at(row, ts - 1), job_at(row, ts)
                writes.append(Write(row[0], SCHEDULED_FUNCTIONS, old, new))
        if not writes:
            return
        indexer = functools.partial(index_changes, self._encoders, KeyCache())
        self._report_commit(Commit(ts, writes, indexer))

    def _jobs_notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        """Another process committed job changes: tell the job listeners."""
        if not isinstance(payload, str):
            return
        ts_text, _, rest = payload.partition(" ")
        owner, _, body = rest.partition(" ")
        try:
            ts = int(ts_text)
        except ValueError:
            return
        self._learn(ts)
        if owner == self.owner or not self._job_listeners:
            return  # this store's own commit was reported when it was made
        if body == "*":
            self._report_fetched(ts - 1, ts)
            return
        try:
            created, canceled = json.loads(body)
            changes = JobChanges(
                [(str(i), float(t), str(n)) for i, t, n in created], [str(i) for i in canceled]
            )
        except (ValueError, TypeError):
            logger.warning("ignored a malformed job notification: %.80s", payload)
            return
        self._report_jobs(changes, durable=True)

    def _report_fetched(self, after: int, until: int) -> None:
        task = asyncio.create_task(self._fetch_job_changes(after, until))
        self._fetching.add(task)
        task.add_done_callback(self._fetching.discard)

    async def _fetch_job_changes(self, after: int, until: int) -> None:
        """The job changes of the commits after ``after`` up to ``until`` (too
        many for a NOTIFY, or made while the listener was disconnected), read
        from the versions they wrote, reported to the job listeners."""
        try:
            rows = await self._fetch(schema.JOB_CHANGES, after, until)
        except StoreUnavailableError as exc:
            # The dispatcher's next window load finds them.
            logger.warning("cannot read the jobs another process scheduled: %s", exc)
            return
        changes = JobChanges()
        canceled = STATE_CODES[JobState.CANCELED]
        for job_id, scheduled, name, created_ts, ended_ts, state in rows:
            if after < created_ts <= until and created_ts != ended_ts:
                changes.created.append((job_id, scheduled, name))
            if ended_ts is not None and after < ended_ts <= until and state == canceled:
                changes.canceled.append(job_id)
        self._report_jobs(changes, durable=True)

    def _jobs_payload(self, changes: JobChanges) -> str:
        """What follows the timestamp in a commit's job NOTIFY (see
        :data:`._pg_schema.JOBS_CHANNEL`)."""
        body = json.dumps([changes.created, changes.canceled], separators=(",", ":"))
        if len(body.encode()) + len(self.owner) + 24 > schema.MAX_PAYLOAD:
            body = "*"
        return f"{self.owner} {body}"

    # -- claims (see Store.claim_jobs) ----------------------------------------------------

    async def claim_jobs(self, job_ids: list[str]) -> Claims:
        if not job_ids:
            return Claims([])
        rows = await self._fetch(schema.CLAIM, job_ids, self.owner, self.lease)
        return Claims([row[0] for row in rows if row[1]], [row[0] for row in rows if not row[1]])

    async def renew_claims(self, job_ids: list[str]) -> None:
        await self._fetch(schema.RENEW, job_ids, self.owner, self.lease)

    async def release_claims(self, job_ids: list[str]) -> None:
        if job_ids:
            await self._fetch(schema.RELEASE, job_ids, self.owner)

    async def _live_claims(self, job_ids: list[str]) -> set[str]:
        rows = await self._fetch(schema.LIVE_CLAIMS, job_ids)
        return {row[0] for row in rows}

    def _learn(self, ts: int) -> None:
        if ts > self._ts:
            self._ts = ts

    # -- indexes -------------------------------------------------------------------------

    async def configure_indexes(self, indexes: Iterable[IndexDef]) -> None:
        declared = declared_by_table(indexes)
        self._check_open()
        # The job table's indexes are the job rows' own (see _pg_jobs).
        wanted = {
            i.key: i
            for t in declared.values()
            for i in t.values()
            if i.table != SCHEDULED_FUNCTIONS
        }
        async with self._connection() as conn, conn.transaction():
            ts = await conn.fetchval("SELECT ts FROM convexpy_clock WHERE id FOR UPDATE")
            built = {
                row[0]: IndexDef.from_spec(row[0], row[1], row[2])
                for row in await conn.fetch("SELECT idx, tbl, spec FROM convexpy_indexes")
            }
            stale = [key for key, index in built.items() if wanted.get(key) != index]
            missing = [index for key, index in wanted.items() if built.get(key) != index]
            if stale or missing:
                ts += 1
                if stale:
                    await conn.execute(
                        "DELETE FROM convexpy_index_entries WHERE idx = ANY($1)", stale
                    )
                    await conn.execute("DELETE FROM convexpy_indexes WHERE idx = ANY($1)", stale)
                for index in missing:
                    await _build_index(conn, index)
                await conn.execute("UPDATE convexpy_clock SET ts = $1, indexes = $1 WHERE id", ts)
                await conn.execute("SELECT pg_notify($1, $2)", schema.CHANNEL, str(ts))
            await self._load_indexes(conn)
        self._learn(ts)
        self._declare(declared)

    async def _load_indexes(self, conn: Connection) -> None:
        """Load the built indexes (what commits maintain) from the database."""
        rows = await conn.fetch(
            "SELECT c.indexes, i.idx, i.tbl, i.spec FROM convexpy_clock c"
            " LEFT JOIN convexpy_indexes i ON true WHERE c.id"
        )
        self._indexes_ts = rows[0][0]
        # The job table's indexes are its own columns (commits write no
        # entries for them), but reports of commits move their keys too.
        encoders: Encoders = {
            SCHEDULED_FUNCTIONS: [
                (index.key, prefix_encoder(index.fields, index.sparse, index.where))
                for index in SYSTEM_INDEXES
            ]
        }
        for _, key, table, spec in rows:
            if key is None:
                continue
            index = IndexDef.from_spec(key, table, spec)
            encoders.setdefault(table, []).append(
                (key, prefix_encoder(index.fields, index.sparse, index.where))
            )
        self._encoders = encoders

    # -- snapshots and reads -------------------------------------------------------------

    def snapshot(self, *, speculative: bool = False) -> Snapshot:
        # Commits are durable when accepted: a speculative snapshot is a plain one.
        self._check_open()
        return Snapshot(self._ts)

    def release(self, snapshot: Snapshot) -> None:
        pass  # a snapshot holds nothing

    def _seen(self, row: asyncpg.Record, snapshot: Snapshot, table: str) -> None:
        """Learn the clock a read saw; refuse a snapshot older than the history kept."""
        self._learn(row[0])
        if snapshot.ts < row[1]:
            raise SnapshotTooOldError(table, self.history)

    async def get(self, snapshot: Snapshot, doc_id: str) -> Document | None:
        self._check_open()
        if is_job_id(doc_id):
            return (await self._get_jobs(snapshot, [doc_id]))[doc_id]
        (row,) = await self._fetch(schema.GET, doc_id, snapshot.ts)
        self._seen(row, snapshot, "")
        return None if row[2] is None else _decode(row[2])

    async def get_many(self, snapshot: Snapshot, doc_ids: list[str]) -> dict[str, Document | None]:
        self._check_open()
        job_ids = [doc_id for doc_id in doc_ids if is_job_id(doc_id)]
        if job_ids:
            jobs = await self._get_jobs(snapshot, job_ids)
            if len(job_ids) == len(doc_ids):
                return jobs
            doc_ids = [doc_id for doc_id in doc_ids if not is_job_id(doc_id)]
        rows = await self._fetch(schema.GET_MANY, doc_ids, snapshot.ts)
        self._seen(rows[0], snapshot, "")
        found: dict[str, Document | None] = dict.fromkeys(doc_ids)
        for row in rows:
            if row[2] is not None:
                found[row[2]] = _decode(row[3])
        if job_ids:
            found.update(jobs)
        return found

    async def _get_jobs(self, snapshot: Snapshot, job_ids: list[str]) -> dict[str, Document | None]:
        rows = await self._fetch(schema.GET_JOBS, job_ids)
        self._seen(rows[0], snapshot, SCHEDULED_FUNCTIONS)
        found: dict[str, Document | None] = dict.fromkeys(job_ids)
        for row in rows:
            if row[2] is not None:
                found[row[2]] = job_at(row, snapshot.ts, 2)
        return found

    async def scan(
        self, snapshot: Snapshot, key_range: KeyRange, order: Order, limit: int
    ) -> list[tuple[bytes, Document]]:
        self._check_open()
        index = self._index(key_range.index)
        if limit <= 0:
            return []
        job_index = JOB_KEYS.get(key_range.index)
        if job_index is not None:
            args: list[Any] = [snapshot.ts, key_range.low, limit]
            if key_range.high is not None:
                args.append(key_range.high)
            sql = _job_scan_sql(job_index, order == "desc", key_range.high is not None)
            rows = await self._fetch(sql, *args)
            self._seen(rows[0], snapshot, index.table)
            return scan_rows(rows, snapshot.ts, key_range, order, limit)
        args = [key_range.index, snapshot.ts, key_range.low, limit]
        if key_range.high is not None:
            args.append(key_range.high)
        sql = _scan_sql(order == "desc", key_range.high is not None)
        rows = await self._fetch(sql, *args)
        self._seen(rows[0], snapshot, index.table)
        found = [(bytes(row[2]), _decode(row[3])) for row in rows if row[2] is not None]
        found.sort(key=lambda pair: pair[0], reverse=order == "desc")
        return found

    # -- commits -------------------------------------------------------------------------

    async def commit(
        self,
        snapshot: Snapshot,
        reads: ReadSet,
        writes: list[Write],
        on_accepted: Callable[[], None] | None = None,
    ) -> int:
        self._check_open()
        if not writes:
            # Its reads were all of the snapshot: it is serialized right there.
            return snapshot.ts
        latest: dict[str, Write] = {}
        for write in writes:
            earlier = latest.get(write.id)
            latest[write.id] = (
                write if earlier is None else Write(write.id, write.table, earlier.old, write.new)
            )
        # Always: the other processes' dispatchers hear of them by NOTIFY.
        jobs = job_changes(writes)
        commit_sql, extra = (
            (_COMMIT, ()) if jobs is None else (_COMMIT_JOBS, (self._jobs_payload(jobs),))
        )
        new_tables = sorted({w.table for w in latest.values()} - self._known_tables)
        read_args, job_read_args = _read_args(reads)
        job_writes = JobWrites()
        for write in latest.values():
            if write.table == SCHEDULED_FUNCTIONS:
                job_writes.add(write)
        while True:
            args = self._write_args(latest)
            try:
                async with self._connection(next(iter(latest.values())).table) as conn:
                    row = await conn.fetchrow(
                        commit_sql,
                        snapshot.ts,
                        self._indexes_ts,
                        *read_args,
                        *args,
                        new_tables,
                        *job_read_args,
                        *job_writes.args(),
                        *extra,
                    )
                    assert row is not None
                    ts, conflict = row[0], row[1]
            except StoreUnavailableError as exc:
                if not isinstance(exc.__cause__, _CONNECTION_ERRORS):
                    raise
                if self._pool is not None:  # the others may be as dead: new ones next
                    await self._pool.expire_connections()
                landed = await self._landed(snapshot, latest, args[3], job_writes, exc)
                if landed is None:
                    raise StoreUnavailableError(f"{exc}; nothing was written") from exc.__cause__
                logger.warning("A commit's connection was lost; the commit had landed.")
                ts, conflict = landed, None
            self._learn(ts)
            if conflict is None:
                break
            if conflict == "#indexes":  # another process changed the built indexes
                async with self._connection() as conn:
                    await self._load_indexes(conn)
                continue
            self.conflicts += 1
            table = next(iter(latest.values())).table
            if conflict == "#old":
                raise SnapshotTooOldError(table, self.history)
            kind, _, name = conflict.partition(":")
            raise ConflictError(name.rpartition(".")[0] if kind == "idx" else name)
        self._known_tables.update(new_tables)
        if on_accepted is not None:
            try:
                on_accepted()
            except Exception:  # the commit is done: it must not look failed
                logger.exception("a commit's on_accepted callback failed")
        if jobs is not None and self._job_listeners:
            self._report_jobs(jobs, durable=False)
            self._report_jobs(jobs, durable=True)
        own = self._own_commits
        own[int(ts)] = None
        if len(own) > 4096:
            del own[next(iter(own))]
        if self._commit_listeners:
            # Index changes worked out only if a listener asks (live queries do).
            indexer = functools.partial(index_changes, self._encoders, KeyCache())
            self._report_commit(Commit(int(ts), list(latest.values()), indexer))
        await self._after_commit(ts)
        return int(ts)

    async def _landed(
        self,
        snapshot: Snapshot,
        latest: dict[str, Write],
        blobs: list[bytes],
        jobs: JobWrites,
        lost: StoreUnavailableError,
    ) -> int | None:
        """Whether a commit whose connection was lost mid-call landed: its
        timestamp, or None. A commit is one transaction, so its versions are
        all there (each written document's new version, each deletion's
        closing, each job's row or transition, all at one timestamp after
        the snapshot) or none is."""
        written = [
            w
            for w in latest.values()
            if (w.old is not None or w.new is not None) and w.table != SCHEDULED_FUNCTIONS
        ]
        job_ids = jobs.ids()
        try:
            rows = (
                await self._fetch(
                    "SELECT id, from_ts, to_ts, doc FROM convexpy_documents"
                    " WHERE id = ANY($1) AND (from_ts > $2 OR to_ts > $2)",
                    [w.id for w in written],
                    snapshot.ts,
                )
                if written
                else []
            )
            job_rows = (
                await self._fetch(
                    "SELECT id, created_ts, started_ts, ended_ts, deleted_ts FROM convexpy_jobs"
                    " WHERE id = ANY($1)",
                    job_ids,
                )
                if job_ids
                else []
            )
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(
                f"{lost}; whether the commit was written is unknown (checking failed: {exc})"
            ) from lost.__cause__
        blob_of = dict(zip((w.id for w in written if w.new is not None), blobs, strict=True))
        job_stamps = job_rows_landed(jobs, job_rows, snapshot.ts)
        if job_stamps is None:
            return None
        stamps: set[int] = set(job_stamps)
        for write in written:
            if write.new is not None:
                found = [
                    r[1] for r in rows if r[0] == write.id and bytes(r[3]) == blob_of[write.id]
                ]
            else:
                found = [r[2] for r in rows if r[0] == write.id and r[2] is not None]
            if not found:
                return None
            stamps.add(min(found))
        if len(stamps) != 1:
            return None
        return stamps.pop()

    def _write_args(self, latest: dict[str, Write]) -> list[list[Any]]:
        """The arrays ``convexpy_commit`` takes for the documents of ``latest``
        (one write per document; jobs aside): ids written, the new versions,
        and their index entries."""
        n_ids: list[str] = []
        n_tbls: list[str] = []
        n_docs: list[bytes] = []
        e_idx: list[str] = []
        e_keys: list[bytes] = []
        e_ids: list[str] = []
        encoders = self._encoders
        written: list[str] = []
        for doc_id, write in latest.items():
            if write.table == SCHEDULED_FUNCTIONS:
                continue  # a job: a row of convexpy_jobs (see JobWrites)
            written.append(doc_id)
            doc = write.new
            if doc is None:
                continue
            n_ids.append(doc_id)
            n_tbls.append(write.table)
            n_docs.append(_encode(doc))
            suffix = encode_suffix(doc["_creationTime"], doc_id)
            e_idx.append(creation_index_key(write.table))
            e_keys.append(suffix)
            e_ids.append(doc_id)
            for key, encode in encoders.get(write.table, ()):
                prefix = encode(doc)
                if prefix is not None:
                    e_idx.append(key)
                    e_keys.append(prefix + suffix)
                    e_ids.append(doc_id)
        return [written, n_ids, n_tbls, n_docs, e_idx, e_keys, e_ids]

    async def _after_commit(self, ts: int) -> None:
        """Every :attr:`collect_every` commits, forget the versions no snapshot
        younger than :attr:`history` can read."""
        now = time.monotonic()
        samples = self._samples
        if not samples or now - samples[-1][0] >= 1.0:
            samples.append((now, ts))
        self._commits += 1
        if self._commits % self.collect_every:
            return
        horizon = None
        while samples and now - samples[0][0] >= self.history:
            horizon = samples.popleft()[1]
        if horizon is None:
            return
        try:
            async with self._connection() as conn:
                await conn.execute("SELECT convexpy_collect($1)", horizon)
        except StoreUnavailableError as exc:  # the commit stands; the next one tries again
            logger.warning("collecting old versions failed: %s", exc)

    # -- tables ------------------------------------------------------------------------

    async def tables(self) -> list[str]:
        self._check_open()
        rows = await self._fetch("SELECT name FROM convexpy_tables ORDER BY name")
        return [row[0] for row in rows]


_CREATION_SUFFIX = creation_index_key("t")[1:]
"""What a table's name is followed by in its creation-time index's key."""

_PARAMS = ", ".join(f"${n}" for n in range(1, 21))
_COMMIT = f"SELECT * FROM convexpy_commit({_PARAMS})"
_COMMIT_JOBS = schema.COMMIT_JOBS.format(channel=schema.JOBS_CHANNEL, params=_PARAMS)


@functools.lru_cache(maxsize=4)
def _scan_sql(descending: bool, bounded: bool) -> str:
    return schema.scan_sql(descending, bounded)


@functools.lru_cache(maxsize=12)
def _job_scan_sql(kind: int, descending: bool, bounded: bool) -> str:
    return schema.job_scan_sql(kind, descending, bounded)


def _read_args(reads: ReadSet) -> tuple[list[list[Any]], list[list[Any]]]:
    """The read set as ``convexpy_commit`` takes it: documents (ids, index
    ranges), and jobs (ids, index ranges by ``_pg_jobs.KEYS`` number)."""
    ids: list[str] = []
    job_ids: list[str] = []
    for doc_id in reads.ids:
        (job_ids if is_job_id(doc_id) else ids).append(doc_id)
    ranges = [r for r in reads.ranges if r.index not in JOB_KEYS]
    job_ranges = [r for r in reads.ranges if r.index in JOB_KEYS]
    return (
        [ids, [r.index for r in ranges], [r.low for r in ranges], [r.high for r in ranges]],
        [
            job_ids,
            [JOB_KEYS[r.index] for r in job_ranges],
            [r.low for r in job_ranges],
            [r.high for r in job_ranges],
        ],
    )


async def _keep_connection(conn: Connection) -> None:
    """The pool's reset on release: nothing (the store leaves no session state)."""


async def _prepare_schema(conn: Connection, where: str) -> None:
    """Create the layout, or check its version (one process at a time)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", schema.LOCK_KEY)
        exists = await conn.fetchval("SELECT to_regclass('convexpy_schema') IS NOT NULL")
        if not exists:
            for statement in schema.CREATE:
                await conn.execute(statement)
            return
        version = await conn.fetchval("SELECT version FROM convexpy_schema")
        if version > schema.SCHEMA_VERSION:
            raise StoreVersionError(
                f"the PostgreSQL database {where} was written by a newer convexpy (schema "
                f"version {version}; this one reads up to {schema.SCHEMA_VERSION}): upgrade "
                "convexpy to open it, or use another database"
            )
        if version < 2:
            for statement in schema.CLAIMS:
                await conn.execute(statement)
        if version < 4:
            await _move_jobs(conn)
        if version < schema.SCHEMA_VERSION:
            await conn.execute("UPDATE convexpy_schema SET version = $1", schema.SCHEMA_VERSION)


async def _move_jobs(conn: Connection) -> None:
    """Version 3 to 4: jobs leave the versioned documents for ``convexpy_jobs``
    (one row each, from every version of theirs still kept), with a new
    ``convexpy_commit`` (inside the transaction that holds the layout's lock;
    the clock row is held too, so no commit lands meanwhile)."""
    await conn.execute("SELECT ts FROM convexpy_clock WHERE id FOR UPDATE")
    for statement in (
        *schema.JOBS,
        schema.OLD_COMMIT_FUNCTION,
        schema.COMMIT_FUNCTION,
        schema.COLLECT_FUNCTION,
    ):
        await conn.execute(statement)
    versions: list[tuple[int, int | None, Document]] = []
    current: str | None = None
    rows: list[list[Any]] = []

    async def flush() -> None:
        if rows:
            await conn.executemany(_INSERT_MOVED_JOB, rows)
            rows.clear()

    cursor = conn.cursor(
        "SELECT id, from_ts, to_ts, doc FROM convexpy_documents WHERE tbl = $1"
        " ORDER BY id, from_ts",
        SCHEDULED_FUNCTIONS,
    )
    async for doc_id, from_ts, to_ts, blob in cursor:
        if doc_id != current:
            if current is not None:
                rows.append(job_row_of_versions(current, versions))
            current, versions = doc_id, []
        versions.append((from_ts, to_ts, _decode(blob)))
        if len(rows) >= 1000:
            await flush()
    if current is not None:
        rows.append(job_row_of_versions(current, versions))
    await flush()
    prefix = SCHEDULED_FUNCTIONS + ".%"
    await conn.execute("DELETE FROM convexpy_index_entries WHERE idx LIKE $1", prefix)
    await conn.execute("DELETE FROM convexpy_documents WHERE tbl = $1", SCHEDULED_FUNCTIONS)
    # The built indexes changed: every process reloads them.
    await conn.execute("DELETE FROM convexpy_indexes WHERE tbl = $1", SCHEDULED_FUNCTIONS)
    await conn.execute("UPDATE convexpy_clock SET ts = ts + 1, indexes = ts + 1 WHERE id")


_INSERT_MOVED_JOB = """INSERT INTO convexpy_jobs (id, created, name, args, scheduled, state,
    completed, error, created_ts, started_ts, ended_ts, deleted_ts, changed_ts,
    ckey, pkey, ikey, skey, ekey)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"""


async def _build_index(conn: Connection, index: IndexDef) -> None:
    """Fill ``index`` from the current documents of its table and record it
    (inside the transaction that holds the clock row)."""
    encode = prefix_encoder(index.fields, index.sparse, index.where)
    cursor = conn.cursor(
        "SELECT id, from_ts, doc FROM convexpy_documents WHERE tbl = $1 AND to_ts IS NULL",
        index.table,
    )
    batch: list[tuple[bytes, int, str]] = []

    async def flush() -> None:
        if batch:
            keys, stamps, ids = zip(*batch, strict=True)
            await conn.execute(
                "INSERT INTO convexpy_index_entries (idx, key, from_ts, id) SELECT $1, k, f, i"
                " FROM unnest($2::bytea[], $3::bigint[], $4::text[]) AS u(k, f, i)",
                index.key,
                list(keys),
                list(stamps),
                list(ids),
            )
            batch.clear()

    async for doc_id, from_ts, blob in cursor:
        doc = _decode(blob)
        prefix = encode(doc)
        if prefix is not None:
            batch.append((prefix + encode_suffix(doc["_creationTime"], doc_id), from_ts, doc_id))
            if len(batch) >= 1000:
                await flush()
    await flush()
    await conn.execute(
        "INSERT INTO convexpy_indexes (idx, tbl, spec) VALUES ($1, $2, $3)",
        index.key,
        index.table,
        index.spec(),
    )


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
