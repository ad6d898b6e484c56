"""``SqliteStore``: the embedded, durable default. One SQLite file in WAL mode.

Layout (schema version 1, in ``PRAGMA user_version``): ``documents`` holds the
latest version of every document (msgpack); ``index_entries`` one row per
(index, key), the index named by a small integer and the key bytes ordered
like Convex values (see :mod:`convexpy.store.keys`), so range reads use
SQLite's own B-tree and nothing is loaded into memory at open; ``indexes``
numbers every index the store ever wrote entries for (numbers are never
reused) and holds the definition of the declared ones that are built;
``tables`` lists the tables that hold or held documents. A file written before
index numbers (version 0) is migrated in place when it is opened; a file from
a newer convexpy is refused.

Commits from concurrent mutations are written together in one SQLite
transaction (a batch: every commit made while the previous batch was being
written), and are on disk (``synchronous=FULL``) before any of them returns.
Batches are written by a child process (:mod:`._sqlite_writer`), not a
thread: beside a busy event loop, a thread waited for the GIL after every
statement, and that wait sat on the path of every durable commit. The event
loop only encodes each document's new version (when the commit is made,
while the previous batch is being written) and pickles the batch; the child
works out the index entries it moves, writes everything in one transaction
and replies. The reply lands the batch in the cache, reports its commits and
hands the next batch over. It is collected by the first commit made after it
came that leaves as many commits waiting as the batch written holds, or else
by a reader callback on the loop (which, while tasks keep the loop busy,
runs only once they all had their turn, the writer idle meanwhile). The
child holds the file's lock too (it inherits it), and exits when the store
closes or its process dies. Index builds, index numbering and schema changes
run on a writer thread with its own connection; it and the child take
SQLite's write lock in turn (with a long busy timeout: no other process can
hold it, the file being locked).

Recently written or read documents are also kept decoded in memory, so that
reading them back (the scheduler reads the jobs it just scheduled) costs no
SQL and no decoding. The cache is bounded whatever the size of the database:
at most :attr:`SqliteStore.cache_documents` (8,192) documents and
:attr:`SqliteStore.cache_bytes` (4 MiB) of their msgpack encoding, whichever
comes first, the oldest entries going first (8,192 scheduled jobs take about
8 MB as Python objects). It is kept small on purpose: every cached document
is a few more objects for each full pass of Python's garbage collector, and
those passes are pauses. It never runs ahead of the file: a write batch
enters it only once committed to disk, and a read only if no batch entered it
while the read was in flight.

Only one process may open a database file at a time (the lock is on the
file itself, whatever link names it: see :mod:`._sqlite_lock`); a second one
gets :class:`~convexpy.errors.StoreLockedError` naming the process that has it.

The writer process is watched. If it dies, or does not answer a batch within
``write_timeout`` seconds (it was stopped, or the disk hangs; index builds
excepted), it is killed and a new one started, and the batch it was writing
is settled from the file: it landed (it is then made durable and reported
written), or it did not (it is written again; after a timeout it fails with
a clear error instead, so that a commit never waits without bound). A writer
lost :attr:`SqliteStore.max_restarts` times in a row, or one that cannot be
started again, makes the store unrecoverable (``health.fatal``): every write
then fails with :class:`~convexpy.errors.StoreUnavailableError` saying why.
Reads that hit a damaged file raise the same error, naming the damage.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import pickle
import select
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import aiosqlite
import msgspec

from ..errors import StoreClosedError, StoreUnavailableError, StoreVersionError
from ._sqlite_jobs import COLUMNS as JOB_COLUMNS
from ._sqlite_jobs import FROM as JOBS_FROM
from ._sqlite_jobs import (
    JOB_INDEXES,
    JOB_SCHEMA,
    JobMessage,
    JobRows,
    is_job_id,
    job_from_row,
    migrate_jobs,
    scan_jobs,
)
from ._sqlite_lock import lock_database
from ._sqlite_writer import (
    TableIndexes,
    Writes,
    connect,
    each_in,
    insert_rows,
    param_limit,
    pragmas,
    transaction,
)
from .base import BY_CREATION_TIME, Document, IndexDef, KeyRange, Order, Write
from .engine import LatestVersionStore, creation_index_key, index_key_of, write_failure
from .jobs import SCHEDULED_FUNCTIONS
from .occ import Commit

__all__ = ["SqliteStore"]

logger = logging.getLogger("convexpy.store")

SCHEMA_VERSION = 2
"""The layout this module writes (``PRAGMA user_version``): 2 keeps jobs in
their own table (see :mod:`._sqlite_jobs`)."""

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS documents (
        id TEXT PRIMARY KEY,
        tbl TEXT NOT NULL,
        doc BLOB NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS index_entries (
        idx INTEGER NOT NULL,
        key BLOB NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (idx, key)
    ) WITHOUT ROWID""",
    # fields: the JSON definition of a built declared index; NULL for the
    # implicit by_creation_time indexes, and for an index that commits wrote
    # entries for but that is not (or no longer) built.
    """CREATE TABLE IF NOT EXISTS indexes (
        idx TEXT PRIMARY KEY,
        num INTEGER NOT NULL UNIQUE,
        tbl TEXT NOT NULL,
        fields TEXT
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY) WITHOUT ROWID",
]

Synchronous = Literal["full", "normal", "off"]
T = TypeVar("T")

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(dict[str, Any]).decode


class SqliteStore(LatestVersionStore):
    """A durable store in the SQLite file at ``path``.

    ``synchronous="full"`` (the default) fsyncs every group commit, so a
    commit survives power loss; ``"normal"`` survives a process crash but not
    an OS crash, and is faster.
    """

    cache_documents = 8_192
    """Most documents the cache of latest versions holds."""
    cache_bytes = 4 << 20
    """Most msgpack bytes (summed over its documents) the cache holds."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "full",
        write_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        if synchronous not in ("full", "normal", "off"):
            raise ValueError(f"synchronous must be 'full', 'normal' or 'off', got {synchronous!r}")
        if not isinstance(write_timeout, int | float) or not write_timeout > 0:
            raise ValueError(
                f"write_timeout must be a positive number of seconds, got {write_timeout!r}"
            )
        # Symlinks resolved: SQLite names the -wal file after the path it opens.
        self.path = Path(path).resolve()
        self._synchronous = synchronous
        self.write_timeout = float(write_timeout)
        """Seconds a write batch may take before the writer process is deemed
        hung: it is killed and restarted, and the batch's commits fail."""
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._writer_busy = 0
        """Calls running on the writer thread (an index build holds SQLite's
        write lock for as long as it takes: batches wait, and are not hung)."""
        self._process: _WriterProcess | None = None
        self._lock_fd: int | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._restarts = 0
        """Writer processes lost since a batch last landed."""
        self._broken: StoreUnavailableError | None = None
        """Set when the writer process cannot be restarted: every write fails with it."""
        self._held: tuple[_Message, _Done] | None = None
        """A batch submitted while a lost writer process is being replaced."""
        self._max_params = 999
        """Most parameters a statement of the writer may have (read when it connects)."""
        self._index_nums: dict[str, int] = {}
        """Index key -> its number in ``index_entries`` (numbers never change once given)."""
        self._known_tables: set[str] = set()
        """Tables already in the ``tables`` table."""
        self._job_names: dict[str, int] = {}
        """Function name -> its number in ``job_names``."""
        self._unsent_names: dict[int, str] = {}
        """Numbers given to names that no landed batch has written yet."""
        self._configs: dict[str, TableIndexes] = {}
        """The indexes of each table, as the writer process is told them."""
        self._configured_for: object = None
        """The ``_maintained`` that ``_configs`` were made for."""
        self._sent: dict[str, TableIndexes] = {}
        """What the writer process was last told of each table's indexes."""
        self._cache: dict[str, Document | None] = {}
        """Document id -> its latest version in the file (None: there is none),
        oldest entry first. Only holds what is committed to the file."""
        self._cache_sizes: dict[str, int] = {}
        """The encoded size of each document in ``_cache``, in the same order (a
        separate dict: a tuple per entry would be one more object for every
        garbage collection to visit)."""
        self._cache_size = 0
        """Sum of the encoded sizes in ``_cache``."""
        self._batches_landed = 0
        """How many write batches entered the cache: a read that saw this change
        while in flight may have read the file before the batch, and is not cached."""

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = await lock_database(self.path)
        try:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="convexpy-sqlite-writer")
            self._writer = await self._in_writer(self._connect_writer)
            self._process = await self._start_process()
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise
        self._opened = True

    async def _start_process(self) -> _WriterProcess:
        assert self._lock_fd is not None
        watch = _Watch(self._writer_lost, self.write_timeout, lambda: self._writer_busy > 0)
        return await _WriterProcess.start(self.path, self._synchronous, self._lock_fd, watch)

    def _connect_writer(self) -> sqlite3.Connection:
        # It may wait for the writer process's batch (index numbers, builds).
        conn = connect(self.path, self._synchronous)
        try:
            self._max_params = param_limit(conn)
            with transaction(conn):
                _prepare_schema(conn, self.path)
            self._index_nums = dict(conn.execute("SELECT idx, num FROM indexes").fetchall())
            self._job_names = dict(conn.execute("SELECT name, num FROM job_names").fetchall())
            self._known_tables = {name for (name,) in conn.execute("SELECT name FROM tables")}
        except BaseException:
            conn.close()
            raise
        return conn

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in pragmas(self._synchronous):
            await conn.execute(pragma)
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        await self._drain()
        self._closed = True
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        if self._process is not None:
            with contextlib.suppress(Exception):
                await self._process.close()
            self._process = None
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader.close()
        if self._writer is not None and self._executor is not None:
            with contextlib.suppress(Exception):
                await self._in_writer(self._writer.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._reader = self._writer = None
        self._executor = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._cache.clear()
        self._cache_sizes.clear()
        self._cache_size = 0

    # -- reads -----------------------------------------------------------------

    @property
    def _read_conn(self) -> aiosqlite.Connection:
        assert self._reader is not None
        return self._reader

    async def _read(self, sql: str, params: Iterable[Any] = ()) -> Iterable[sqlite3.Row]:
        """Rows of one read statement; a failure of the file (a damaged page,
        an I/O error) raises :class:`StoreUnavailableError` saying so."""
        try:
            return await self._read_conn.execute_fetchall(sql, params)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(_file_failure(self.path, exc)) from exc

    async def tables(self) -> list[str]:
        self._check_open()
        rows = await self._read("SELECT name FROM tables ORDER BY name")
        return [row[0] for row in rows]

    async def _base_get(self, doc_id: str) -> Document | None:
        cached = self._cache.get(doc_id, _MISSING)
        if cached is not _MISSING:
            return cached
        if is_job_id(doc_id):
            return (await self._base_get_many([doc_id]))[doc_id]
        landed = self._batches_landed
        rows = list(await self._read("SELECT doc FROM documents WHERE id = ?", (doc_id,)))
        doc = _decode(rows[0][0]) if rows else None
        if landed == self._batches_landed:
            self._cache_put({doc_id: (doc, len(rows[0][0]) if rows else 0)})
        return doc

    async def _base_get_many(self, doc_ids: list[str]) -> dict[str, Document | None]:
        found: dict[str, Document | None] = {}
        cache = self._cache
        missing: list[str] = []
        for doc_id in doc_ids:
            cached = cache.get(doc_id, _MISSING)
            if cached is _MISSING:
                missing.append(doc_id)
            else:
                found[doc_id] = cached
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            landed = self._batches_landed
            read: dict[str, tuple[Document | None, int]] = dict.fromkeys(chunk, (None, 0))
            if any(is_job_id(doc_id) for doc_id in chunk):
                sql = f"SELECT {JOB_COLUMNS} FROM {JOBS_FROM} WHERE j.id IN ({marks})"
                for row in await self._read(sql, chunk):
                    doc = found[row[0]] = job_from_row(row)
                    read[row[0]] = (doc, _JOB_SIZE + len(row[3]))
            rows = await self._read(f"SELECT id, doc FROM documents WHERE id IN ({marks})", chunk)
            for doc_id, blob in rows:
                doc = found[doc_id] = _decode(blob)
                read[doc_id] = (doc, len(blob))
            if landed == self._batches_landed:
                self._cache_put(read)
        return found

    def _cache_put(self, entries: dict[str, tuple[Document | None, int]]) -> None:
        """Cache versions known to be the file's: a landed batch, or what reads
        found there while no batch landed."""
        cache, sizes = self._cache, self._cache_sizes
        size = self._cache_size
        for doc_id, (doc, doc_size) in entries.items():
            size += doc_size - sizes.get(doc_id, 0)
            cache[doc_id] = doc
            sizes[doc_id] = doc_size
        self._cache_size = size
        if size > self.cache_bytes or len(cache) > self.cache_documents:
            self._cache_evict()

    def _cache_evict(self) -> None:
        """Drop the oldest entries, down to 15/16 of the bounds (so this runs rarely)."""
        cache, sizes = self._cache, self._cache_sizes
        docs_goal = self.cache_documents - self.cache_documents // 16
        bytes_goal = self.cache_bytes - self.cache_bytes // 16
        count, size = len(cache), self._cache_size
        victims: list[str] = []
        for doc_id, doc_size in sizes.items():
            if count <= docs_goal and size <= bytes_goal:
                break
            victims.append(doc_id)
            count -= 1
            size -= doc_size
        for doc_id in victims:
            del cache[doc_id]
            del sizes[doc_id]
        self._cache_size = size

    async def _base_scan(
        self, key_range: KeyRange, order: Order, limit: int
    ) -> list[tuple[bytes, Document]]:
        if key_range.index in JOB_INDEXES:
            return await scan_jobs(self._read, key_range, order, limit)
        num = self._index_nums.get(key_range.index)
        if num is None:
            return []  # nothing was ever written to this index
        sql = (
            "SELECT e.key, d.doc FROM index_entries e JOIN documents d ON d.id = e.id"
            " WHERE e.idx = ? AND e.key >= ?"
        )
        params: list[object] = [num, key_range.low]
        if key_range.high is not None:
            sql += " AND e.key < ?"
            params.append(key_range.high)
        sql += " ORDER BY e.key DESC" if order == "desc" else " ORDER BY e.key"
        sql += " LIMIT ?"
        params.append(limit)
        rows = await self._read(sql, params)
        return [(bytes(key), _decode(doc)) for key, doc in rows]

    # -- writes ------------------------------------------------------------------
    #
    # Write batches go to the writer process (see the module docstring). The
    # rest (index numbers, builds and drops, the schema) runs on one
    # dedicated thread with a plain sqlite3 connection: each is a single call
    # into that thread rather than one aiosqlite round trip per statement.

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        self._writer_busy += 1
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreUnavailableError(_file_failure(self.path, exc)) from exc
        finally:
            self._writer_busy -= 1

    async def _index_number(self, key: str) -> int:
        """The number of index ``key`` in ``index_entries``, given (durably) on first use."""
        num = self._index_nums.get(key)
        if num is None:
            num = await self._in_writer(self._give_index_number, key)
            self._index_nums[key] = num
        return num

    def _give_index_number(self, key: str) -> int:
        conn = self._writer
        assert conn is not None
        with transaction(conn):
            return _index_number_in(conn, key)

    def _base_start(self, commits: list[Commit], done: _Done) -> None:
        # The documents are encoded on the event loop (most as their commit
        # is made) and handed to the writer process, which works out the
        # index entries and writes.
        try:
            indexes = self._indexes_for(_document_tables(commits))
        except _Unnumbered:
            # First use of an index: number it first.
            super()._base_start(commits, done)
            return
        self._submit(self._prepared(commits), indexes, done)

    def _base_prepare(self, commit: Commit) -> None:
        commit.prepared = self._prepare(commit)
        writing = self._writing
        assert writing is not None
        # Take the reply of the batch being written, if it came, once as
        # many commits wait as that batch holds: batches then never shrink,
        # and grow to half of the committers, so that a transaction's fixed
        # cost (in both processes) is shared by as many commits as can share it.
        if self._process is not None and commit.ts - writing[-1].ts >= len(writing):
            self._process.collect()

    def _prepared(self, commits: list[Commit]) -> _Batch:
        """The batch of ``commits``, from what each prepared ahead."""
        parts: list[_Batch] = []
        for commit in commits:
            part = commit.prepared
            commit.prepared = None  # used once: not kept while the log holds the commit
            parts.append(self._prepare(commit) if part is None else part)  # type: ignore[arg-type]
        if len(parts) == 1:
            return parts[0]
        return _merged(parts)

    def _prepare(self, commit: Commit) -> _Batch:
        """What ``commit`` writes: each document's new version, encoded, and
        its jobs' rows."""
        writes: Writes = []
        docs: list[Document | None] = []
        jobs: JobRows | None = None  # most commits write no job
        stored: dict[str, bool] | None = None
        latest: Iterable[Write] = commit.writes
        if len(commit.by_id) != len(commit.writes):  # a document written twice: the last write
            stored = {}
            for write in commit.writes:
                stored.setdefault(write.id, write.old is not None)
            latest = commit.by_id.values()
        known, new_tables = self._known_tables, []
        for write in latest:
            was = write.old is not None if stored is None else stored[write.id]
            if write.table not in known and (write.table,) not in new_tables:
                new_tables.append((write.table,))
            if write.table == SCHEDULED_FUNCTIONS:
                if jobs is None:
                    jobs = JobRows()
                jobs.add(write, was, self._job_name_number)
                continue
            doc = write.new
            blob = None if doc is None else _encode(doc)
            writes.append((write.id, write.table, blob, was))
            docs.append(doc)
        return _Batch(writes, docs, new_tables, jobs)

    def _job_name_number(self, name: str) -> int:
        """The number of a job's function name in ``job_names`` (new ones are
        written with the next batch, and every later one until one lands)."""
        number = self._job_names.get(name)
        if number is None:
            number = self._job_names[name] = len(self._job_names) + 1
            self._unsent_names[number] = name
        return number

    def _indexes_for(self, tables: Iterable[str]) -> dict[str, TableIndexes]:
        """The indexes of ``tables`` (of documents, not jobs) that the writer
        process was not told of yet (or that changed since); raises
        :class:`_Unnumbered` if one has no number yet."""
        if self._configured_for is not self._maintained:
            self._configs = {}  # a new index set
            self._configured_for = self._maintained
        configs, sent = self._configs, self._sent
        updates: dict[str, TableIndexes] = {}
        for table in tables:
            config = configs.get(table)
            if config is None:
                config = configs[table] = self._table_indexes(table)
            if sent.get(table) is not config:
                updates[table] = config
        return updates

    def _table_indexes(self, table: str) -> TableIndexes:
        nums = self._index_nums
        creation = nums.get(creation_index_key(table))
        if creation is None:
            raise _Unnumbered
        others: list[tuple[int, tuple[str, ...], bool, Any]] = []
        for index in self._maintained.get(table, {}).values():
            num = nums.get(index.key)
            if num is None:
                raise _Unnumbered
            others.append((num, index.fields, index.sparse, index.where))
        return creation, tuple(others)

    async def _base_apply(self, commits: list[Commit]) -> None:
        tables = _document_tables(commits)
        for table in tables:
            await self._index_number(creation_index_key(table))
            for index in self._maintained.get(table, {}).values():
                await self._index_number(index.key)
        indexes = self._indexes_for(tables)
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()

        def done(exc: Exception | None) -> None:
            if exc is None:
                written.set_result(None)
            else:
                written.set_exception(exc)

        self._submit(self._prepared(commits), indexes, done)
        await written

    def _submit(
        self,
        batch: _Batch,
        indexes: dict[str, TableIndexes],
        done: _Done,
    ) -> None:
        """Write ``batch`` in the writer process; then, on the loop, land it in
        the cache and call ``done`` (whatever happens to the caller meanwhile)."""
        assert self._process is not None

        def landed(exc: Exception | None) -> None:
            if exc is None:
                self._sent.update(indexes)  # (after a failure, they are sent again)
                for number, _ in names:
                    self._unsent_names.pop(number, None)
                if self._restarts:
                    self._restarts = 0
                    self.health.write_succeeded()
                self._landed(batch)  # on disk now
            done(exc)

        names = list(self._unsent_names.items())
        message = (
            self._max_params,
            indexes,
            batch.writes,
            batch.tables,
            batch.jobs.message() if batch.jobs else None,
            names,
        )
        if self._broken is not None:
            asyncio.get_running_loop().call_soon(landed, self._broken)
        elif self._recovery is not None and not self._recovery.done():
            self._held = (message, landed)  # sent once a new writer process is up
        else:
            self._process.write(message, landed)

    def _landed(self, batch: _Batch) -> None:
        """Bring the cache up to ``batch``, which is committed to the file."""
        self._known_tables.update(table for (table,) in batch.tables)
        landed = {
            doc_id: (doc, 0 if blob is None else len(blob))
            for (doc_id, _, blob, _), doc in zip(batch.writes, batch.docs, strict=True)
        }
        if batch.jobs is not None:
            for doc_id, doc in batch.jobs.docs.items():
                landed[doc_id] = (doc, _JOB_SIZE)
        self._cache_put(landed)
        self._batches_landed += 1

    # -- a lost writer process ----------------------------------------------------

    max_restarts = 3
    """Writer processes lost in a row (no batch landing in between) before the
    store gives up and reports itself unrecoverable."""

    def _writer_lost(
        self,
        message: _Message | None,
        done: _Done | None,
        reason: str,
        timed_out: bool,
    ) -> None:
        """The writer process died or hung, with ``message`` in flight (or none)."""
        self._recovery = asyncio.create_task(
            self._recover(message, done, reason, timed_out), name="convexpy-sqlite-recovery"
        )

    def _resend(self, message: _Message, done: _Done) -> None:
        """Send a batch that was meant for a writer process now lost to its
        successor (or fail it, if there is none), with the index configuration
        of its tables (the successor was told nothing yet)."""
        if self._broken is not None:
            done(self._broken)
            return
        assert self._process is not None
        max_params, _, writes, tables, jobs, names = message
        batch_tables = {table for _, table, _, _ in writes}
        indexes = {t: self._configs[t] for t in batch_tables if t in self._configs}
        self._process.write((max_params, indexes, writes, tables, jobs, names), done)

    async def _recover(
        self,
        message: _Message | None,
        done: _Done | None,
        reason: str,
        timed_out: bool,
    ) -> None:
        """Replace a lost writer process, then settle the batch it was writing:
        it landed (then it is made durable and reported written), or it did
        not (then it is written again, or, if the writer hung, failed). A
        batch submitted meanwhile waits, then goes to the new process."""
        try:
            await self._replace_process(message, done, reason, timed_out)
        finally:
            held, self._held = self._held, None
            if held is not None:
                self._resend(*held)

    async def _replace_process(
        self,
        message: _Message | None,
        done: _Done | None,
        reason: str,
        timed_out: bool,
    ) -> None:
        lost = self._process
        assert lost is not None
        await lost.kill()
        if not timed_out:
            reason = f"{reason} ({lost.exit_text()})"
        self.health.write_failed(StoreUnavailableError(f"the SQLite writer process {reason}"))
        logger.warning("The SQLite writer process of %s %s; restarting it.", self.path, reason)
        failure: Exception | None = None
        while True:  # a start that fails counts as one more writer lost
            self._restarts += 1
            if self._restarts > self.max_restarts:
                problem = failure or f"it was lost {self._restarts - 1} times in a row"
                self._broken = StoreUnavailableError(
                    f"the SQLite writer process of {str(self.path)!r} {reason}, and could not "
                    f"be restarted ({problem}): nothing can be written until convexpy is "
                    "restarted"
                )
                self.health.set_fatal(str(self._broken))
                if done is not None:
                    done(self._broken)
                return
            try:
                self._process = await self._start_process()
                break
            except Exception as exc:
                failure = exc
                await asyncio.sleep(0.1 * 2**self._restarts)
        self._sent = {}
        if message is None or done is None:
            return
        if await self._in_writer(self._batch_landed, message):
            logger.warning("The write in flight had landed; nothing was lost.")
            done(None)
        elif timed_out:
            done(
                StoreUnavailableError(
                    f"the SQLite writer process did not finish a write within "
                    f"{self.write_timeout:g} s (a stopped process or a hung disk); it was "
                    "killed and restarted, and nothing of that write was kept"
                )
            )
        else:
            logger.warning("The write in flight had not landed; writing it again.")
            self._resend(message, done)

    def _batch_landed(self, message: _Message) -> bool:
        """Whether the file holds exactly what the batch ``message`` wrote (on
        the writer thread, once no writer process is left). A batch is one
        transaction: all of it landed or none. If it did, it is made durable here."""
        conn = self._writer
        assert conn is not None
        writes, jobs = message[2], message[4]
        stored: dict[str, bytes] = {}
        head = "SELECT id, doc FROM documents WHERE id IN"
        for found in each_in(conn, head, (), [w[0] for w in writes], self._max_params):
            stored.update(found.fetchall())
        landed = all(stored.get(doc_id) == blob for doc_id, _, blob, _ in writes)
        if landed and jobs is not None:
            landed = _job_rows_landed(conn, jobs, self._max_params)
        if landed:  # the writer may have died between writing and syncing
            for name in (self.path.name + "-wal", self.path.name):
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(self.path.with_name(name), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        return landed

    # -- index builds ------------------------------------------------------------

    async def _base_sync_indexes(self, declared: list[IndexDef]) -> None:
        rows = await self._in_writer(self._index_rows)
        # The job table's indexes are SQLite's own, on its columns.
        wanted = {index.key: index for index in declared if index.table not in _JOB_TABLE}
        built: dict[str, IndexDef] = {}
        stale: list[str] = []
        for key, table, spec, has_entries in rows:
            if key.rpartition(".")[2] == BY_CREATION_TIME:
                continue  # never dropped
            if spec is not None:
                index = built[key] = IndexDef.from_spec(key, table, spec)
                if wanted.get(key) != index:
                    stale.append(key)
            elif has_entries and key not in wanted:
                # Entries that commits wrote before the index's build committed
                # (the process stopped mid-build). A wanted one is rebuilt anyway.
                stale.append(key)
        missing = [index for key, index in wanted.items() if built.get(key) != index]
        if not stale and not missing:
            return
        await self._in_writer(self._drop_indexes, stale)
        for index in missing:
            await self._backfill(self._writer, index)

    def _index_rows(self) -> list[tuple[str, str, str | None, int]]:
        conn = self._writer
        assert conn is not None
        return conn.execute(
            "SELECT i.idx, i.tbl, i.fields,"
            " EXISTS (SELECT 1 FROM index_entries e WHERE e.idx = i.num) FROM indexes i"
        ).fetchall()

    def _drop_indexes(self, keys: list[str]) -> None:
        conn = self._writer
        assert conn is not None
        with transaction(conn):
            for key in keys:
                # The row (and its number) stays: numbers are never reused.
                conn.execute(
                    "DELETE FROM index_entries WHERE idx = (SELECT num FROM indexes WHERE idx = ?)",
                    (key,),
                )
                conn.execute("UPDATE indexes SET fields = NULL WHERE idx = ?", (key,))

    async def _backfill(self, conn: sqlite3.Connection | None, index: IndexDef) -> None:
        """Build ``index`` from the documents, in one transaction on the writer thread."""
        assert conn is not None
        num = await self._index_number(index.key)
        creation = self._index_nums.get(IndexDef.by_creation_time(index.table).key)
        await self._in_writer(_build_index, conn, index, num, creation)


_WRITER_SCRIPT = str(Path(__file__).with_name("_sqlite_writer.py"))


_Message = tuple[
    int, dict[str, TableIndexes], Writes, list[tuple[str]], JobMessage | None, list[tuple[int, str]]
]
"""A write batch as sent to the writer process (see :mod:`._sqlite_writer`)."""

_Done = Callable[[Exception | None], None]
"""Called with the outcome of a batch: None when it is on disk."""


class _Watch(NamedTuple):
    """How the store watches its writer process (see :class:`_WriterProcess`)."""

    on_lost: Callable[[_Message | None, _Done | None, str, bool], None]
    write_timeout: float
    busy: Callable[[], bool]


class _WriterProcess:
    """The child process that writes batches (see :mod:`._sqlite_writer`), one at a time.

    When the child dies, or does not answer a batch within ``write_timeout``
    seconds (while no index build holds SQLite's lock: ``busy()``), it is
    *lost*: ``on_lost(message, done, reason, timed_out)`` is called with the
    batch in flight, if any, and this object is done with.
    """

    def __init__(
        self, proc: subprocess.Popen[bytes], outbox: Connection, inbox: Connection, watch: _Watch
    ) -> None:
        self._proc = proc
        self._outbox = outbox
        """Batches to the child."""
        self._inbox = inbox
        """Replies from the child."""
        self._watch = watch
        self._in_flight: tuple[_Message, _Done] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._replies = select.poll()
        self._replies.register(inbox.fileno(), select.POLLIN)
        self._context = contextvars.copy_context()
        """Where a reply is handled, whoever collects it: a copy of the
        context of :meth:`start`, as the reader callback registered there
        gets, not the context of the task whose commit collects it (the
        listeners told of the batch must not see that task's context
        variables, nor start tasks inheriting them)."""

    @classmethod
    async def start(
        cls, path: Path, synchronous: str, lock_fd: int, watch: _Watch
    ) -> _WriterProcess:
        """Start the child on ``path`` and wait until it is connected. It
        inherits ``lock_fd`` (the store's ``flock``), so the file stays locked
        until the child is gone too; it dies with this process."""
        to_child, to_us = os.pipe(), os.pipe()
        fds = [str(to_child[0]), str(to_us[1])]
        try:
            proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; waited for below
                [
                    sys.executable,
                    "-P",
                    _WRITER_SCRIPT,
                    str(path),
                    synchronous,
                    *fds,
                    str(os.getpid()),
                ],
                pass_fds=(to_child[0], to_us[1], lock_fd),
                stdin=subprocess.DEVNULL,
            )
        except BaseException as exc:
            for fd in (*to_child, *to_us):
                os.close(fd)
            if isinstance(exc, OSError):
                raise StoreClosedError(
                    f"could not start the SQLite writer process ({sys.executable!r}): {exc}"
                ) from exc
            raise
        os.close(to_child[0])
        os.close(to_us[1])
        writer = cls(
            proc,
            Connection(to_child[1], readable=False),
            Connection(to_us[0], writable=False),
            watch,
        )
        try:
            try:
                kind, detail = pickle.loads(await asyncio.to_thread(writer._inbox.recv_bytes))
            except EOFError:
                raise StoreClosedError(
                    f"the SQLite writer process for {str(path)!r} exited as it started"
                    f" (exit code {proc.wait()})"
                ) from None
            if kind == "error":
                raise detail
        except BaseException:
            await writer.close()
            raise
        writer._loop = asyncio.get_running_loop()
        writer._loop.add_reader(writer._inbox.fileno(), writer._on_reply)
        return writer

    def write(self, message: _Message, done: _Done) -> None:
        """Send one batch; ``done`` is called on the loop with the outcome
        (unless the process is lost first: then ``on_lost`` gets it)."""
        assert self._in_flight is None and self._loop is not None, "one batch at a time"
        self._in_flight = (message, done)
        self._timer = self._loop.call_later(self._watch.write_timeout, self._check_hung)
        try:
            self._outbox.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except OSError:
            self._lose("exited unexpectedly")  # its end of the pipe is closed

    def _check_hung(self) -> None:
        assert self._loop is not None
        self._timer = None
        if self._in_flight is None or self._lost:
            return
        if self._watch.busy():  # an index build holds the lock: the batch waits for it
            self._timer = self._loop.call_later(self._watch.write_timeout, self._check_hung)
            return
        self._lose(
            f"did not finish a write within {self._watch.write_timeout:g} s (a stopped process or"
            " a hung disk)",
            timed_out=True,
        )

    def collect(self) -> None:
        """Handle the child's reply now if it has come (rather than when the
        loop next polls, which may be after every ready task had its turn)."""
        if self._in_flight is None or not self._replies.poll(0):
            return
        try:
            self._context.run(self._on_reply)
        except Exception as exc:  # as the loop would report it from its callback
            assert self._loop is not None
            self._loop.call_exception_handler(
                {"message": "the SQLite writer's reply failed", "exception": exc}
            )

    def _on_reply(self) -> None:
        if not self._replies.poll(0):
            return  # collect() took it after the loop saw it
        try:
            reply = pickle.loads(self._inbox.recv_bytes())
        except (EOFError, OSError):
            self._lose("exited unexpectedly")
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight[1](None if reply is None else write_failure(reply))

    def _lose(self, reason: str, *, timed_out: bool = False) -> None:
        if self._lost:
            return
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None:
            self._loop.remove_reader(self._inbox.fileno())
        in_flight, self._in_flight = self._in_flight, None
        message, done = in_flight if in_flight is not None else (None, None)
        self._watch.on_lost(message, done, reason, timed_out)

    def exit_text(self) -> str:
        code = self._proc.returncode
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by signal {-code}"
        return f"exit code {code}"

    async def kill(self) -> None:
        """Make sure the child is gone (killed if need be) and reaped."""
        if self._proc.poll() is None:
            self._proc.kill()
        await asyncio.to_thread(self._proc.wait)
        self._outbox.close()
        self._inbox.close()

    async def close(self) -> None:
        """Let the child finish, close the database and exit."""
        if self._lost:
            await self.kill()
            return
        if self._loop is not None:
            self._loop.remove_reader(self._inbox.fileno())
        if self._timer is not None:
            self._timer.cancel()
        self._outbox.close()  # end of input: the child exits
        try:
            await asyncio.to_thread(self._proc.wait, 60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            await asyncio.to_thread(self._proc.wait)
        finally:
            self._inbox.close()


_JOB_TABLE = frozenset({SCHEDULED_FUNCTIONS})
"""Kept in the jobs table, not in documents and index entries."""
_JOB_SIZE = 160
"""About what a cached job takes, for the cache's bound on bytes."""

_MISSING: Document = {}
"""Not in the cache, by identity (None there means the document does not exist)."""


class _Batch(NamedTuple):
    writes: Writes
    """The last version of each document, encoded (see :data:`._sqlite_writer.Writes`)."""
    docs: list[Document | None]
    """The same versions, decoded (for the cache)."""
    tables: list[tuple[str]]
    """Tables written for the first time."""
    jobs: JobRows | None
    """The rows of the jobs written (jobs are not documents in the file), if any."""


def _document_tables(commits: list[Commit]) -> set[str]:
    """The tables of documents (not jobs) that ``commits`` write."""
    return {
        write.table
        for commit in commits
        for write in commit.writes
        if write.table != SCHEDULED_FUNCTIONS
    }


def _merged(parts: list[_Batch]) -> _Batch:
    """The batches of consecutive commits as one: the last version of each
    document, stored if it was before the first of them wrote it."""
    writes = [write for part in parts for write in part.writes]
    tables = list({table for part in parts for table in part.tables})
    jobs = parts[0].jobs
    for part in parts[1:]:
        if part.jobs is None:
            continue
        if jobs is None:
            jobs = part.jobs
        else:
            jobs.merge(part.jobs)
    if len({write[0] for write in writes}) == len(writes):  # the usual case: disjoint
        return _Batch(writes, [doc for part in parts for doc in part.docs], tables, jobs)
    latest: dict[str, tuple[tuple[str, str, bytes | None, bool], Document | None]] = {}
    for part in parts:
        for write, doc in zip(part.writes, part.docs, strict=True):
            earlier = latest.get(write[0])
            if earlier is not None and earlier[0][3] != write[3]:
                write = (*write[:3], earlier[0][3])
            latest[write[0]] = (write, doc)
    return _Batch([w for w, _ in latest.values()], [d for _, d in latest.values()], tables, jobs)


def _job_rows_landed(conn: sqlite3.Connection, jobs: JobMessage, max_params: int) -> bool:
    """Whether the file holds the job rows a batch wrote (see :meth:`SqliteStore._batch_landed`)."""
    inserts, updates, deletes = jobs
    wanted: dict[str, tuple[Any, ...] | None] = {row[0]: tuple(row[5:]) for row in inserts}
    wanted.update((update[3], tuple(update[:3])) for update in updates)
    wanted.update(dict.fromkeys(deletes))
    found: dict[str, tuple[Any, ...]] = {}
    head = "SELECT id, state, completed, error FROM jobs WHERE id IN"
    for cursor in each_in(conn, head, (), list(wanted), max_params):
        found.update((row[0], tuple(row[1:])) for row in cursor.fetchall())
    return all(found.get(job_id) == columns for job_id, columns in wanted.items())


class _Unnumbered(Exception):
    """A write batch touches an index that has no number yet."""


def _build_index(conn: sqlite3.Connection, index: IndexDef, num: int, creation: int | None) -> None:
    """Fill index number ``num`` from the documents of ``index.table`` (found through
    its by_creation_time index, number ``creation``) and record its definition."""
    with transaction(conn):
        conn.execute("DELETE FROM index_entries WHERE idx = ?", (num,))
        last = b""
        while creation is not None:
            # Keyset pagination: never hold a cursor open over the table we write.
            chunk = conn.execute(
                "SELECT e.key, d.id, d.doc FROM index_entries e"
                " JOIN documents d ON d.id = e.id"
                " WHERE e.idx = ? AND e.key > ? ORDER BY e.key LIMIT 1000",
                (creation, last),
            ).fetchall()
            if not chunk:
                break
            last = bytes(chunk[-1][0])
            keys = [(index_key_of(index, _decode(doc)), i) for _, i, doc in chunk]
            insert_rows(
                conn,
                "INSERT OR REPLACE INTO index_entries (idx, key, id)",
                [(num, key, i) for key, i in keys if key is not None],
                param_limit(conn),
            )
        conn.execute(
            "UPDATE indexes SET tbl = ?, fields = ? WHERE idx = ?",
            (index.table, index.spec(), index.key),
        )


# -- schema ------------------------------------------------------------------------------


def _file_failure(path: Path, exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text or "corrupt" in text
    ):
        return (
            f"the database file {str(path)!r} is damaged ({text}): restore it from a backup; "
            "`sqlite3 FILE .recover` may save what is left"
        )
    return f"the database file {str(path)!r} failed: {text}"


def _prepare_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create, migrate or check the layout of the file (inside a write transaction)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the database {str(path)!r} was written by a newer convexpy (schema version "
            f"{version}; this one reads up to {SCHEMA_VERSION}): upgrade convexpy to open it, "
            "or use another --db file"
        )
    if version == 0:
        old_layout = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'index_entries'"
        ).fetchone()
        if old_layout is not None:
            _migrate_from_v0(conn)
        else:
            for statement in _SCHEMA:
                conn.execute(statement)
    # From version 1: jobs move out of documents into their own table.
    for statement in JOB_SCHEMA:
        conn.execute(statement)
    migrate_jobs(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate_from_v0(conn: sqlite3.Connection) -> None:
    """Version 0 named the index of every entry in full: number them instead."""
    names: list[str] = []
    (name,) = conn.execute("SELECT min(idx) FROM index_entries").fetchone()
    while name is not None:  # the distinct index names, one B-tree seek each
        names.append(name)
        (name,) = conn.execute(
            "SELECT min(idx) FROM index_entries WHERE idx > ?", (name,)
        ).fetchone()
    declared = {
        name: (table, spec)
        for name, table, spec in conn.execute("SELECT idx, tbl, fields FROM indexes")
    }
    conn.execute("ALTER TABLE index_entries RENAME TO index_entries_v0")
    conn.execute("ALTER TABLE indexes RENAME TO indexes_v0")
    for statement in _SCHEMA:
        conn.execute(statement)
    for num, name in enumerate(sorted({*names, *declared}), start=1):
        table, spec = declared.get(name, (name.rpartition(".")[0], None))
        conn.execute(
            "INSERT INTO indexes (idx, num, tbl, fields) VALUES (?, ?, ?, ?)",
            (name, num, table, spec),
        )
        conn.execute(
            "INSERT INTO index_entries (idx, key, id)"
            " SELECT ?, key, id FROM index_entries_v0 WHERE idx = ? ORDER BY key",
            (num, name),
        )
    conn.execute("DROP TABLE index_entries_v0")
    conn.execute("DROP TABLE indexes_v0")


def _index_number_in(conn: sqlite3.Connection, key: str) -> int:
    """The number of index ``key``, given now if it has none (inside a write transaction)."""
    row = conn.execute("SELECT num FROM indexes WHERE idx = ?", (key,)).fetchone()
    if row is not None:
        return int(row[0])
    (num,) = conn.execute("SELECT coalesce(max(num), 0) + 1 FROM indexes").fetchone()
    conn.execute(
        "INSERT INTO indexes (idx, num, tbl, fields) VALUES (?, ?, ?, NULL)",
        (key, num, key.rpartition(".")[0]),
    )
    return int(num)
