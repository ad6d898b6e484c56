"""``SqliteStore``: the embedded, durable default. One SQLite file in WAL mode.

Layout: ``documents`` holds the latest version of every document (msgpack),
``index_entries`` one row per (index, key) with the key bytes ordered like
Convex values (see :mod:`convexpy.store.keys`), so range reads use SQLite's
own B-tree and nothing is loaded into memory at open. Commits from concurrent
mutations are written together in one SQLite transaction by the engine's
flusher, and are on disk (``synchronous=FULL``) before any of them returns.

Only one process may open a database file at a time; a second one gets
:class:`~convexpy.errors.StoreLockedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, TypeVar

import aiosqlite
import msgspec

from ..errors import StoreLockedError
from .base import Document, IndexDef, KeyRange, Order
from .engine import LatestVersionStore, index_key_of
from .occ import Commit

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    tbl TEXT NOT NULL,
    doc BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries (
    idx TEXT NOT NULL,
    key BLOB NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (idx, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS indexes (
    idx TEXT PRIMARY KEY,
    tbl TEXT NOT NULL,
    fields TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""

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

    def __init__(self, path: str | os.PathLike[str], *, synchronous: Synchronous = "full") -> None:
        super().__init__()
        if synchronous not in ("full", "normal", "off"):
            raise ValueError(f"synchronous must be 'full', 'normal' or 'off', got {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock_file: IO[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="convexpy-sqlite-writer")
            self._writer = await self._in_writer(self._connect_writer)
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise
        self._opened = True

    def _pragmas(self) -> list[str]:
        return [
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={self._synchronous.upper()}",
            "PRAGMA cache_size=-65536",
            "PRAGMA temp_store=MEMORY",
        ]

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in self._pragmas():
            conn.execute(pragma)
        conn.executescript(_SCHEMA)
        return conn

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in self._pragmas():
            await conn.execute(pragma)
        return conn

    def _acquire_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_file = open(lock_path, "ab")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            lock_file.close()
            raise StoreLockedError(
                f"the database {str(self.path)!r} is already open in another process; "
                "stop that process or use another --db file"
            ) from exc
        self._lock_file = lock_file

    async def close(self) -> None:
        if self._closed:
            return
        await self._drain()
        self._closed = True
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
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- reads -----------------------------------------------------------------

    @property
    def _read_conn(self) -> aiosqlite.Connection:
        assert self._reader is not None
        return self._reader

    async def tables(self) -> list[str]:
        rows = await self._read_conn.execute_fetchall("SELECT name FROM tables ORDER BY name")
        return [row[0] for row in rows]

    async def _base_get(self, doc_id: str) -> Document | None:
        rows = list(
            await self._read_conn.execute_fetchall(
                "SELECT doc FROM documents WHERE id = ?", (doc_id,)
            )
        )
        return _decode(rows[0][0]) if rows else None

    async def _base_get_many(self, doc_ids: list[str]) -> dict[str, Document | None]:
        found: dict[str, Document | None] = {}
        for start in range(0, len(doc_ids), 500):
            chunk = doc_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._read_conn.execute_fetchall(
                f"SELECT id, doc FROM documents WHERE id IN ({marks})", chunk
            )
            found.update((doc_id, _decode(doc)) for doc_id, doc in rows)
        return found

    async def _base_scan(
        self, key_range: KeyRange, order: Order, limit: int
    ) -> list[tuple[bytes, Document]]:
        sql = (
            "SELECT e.key, d.doc FROM index_entries e JOIN documents d ON d.id = e.id"
            " WHERE e.idx = ? AND e.key >= ?"
        )
        params: list[object] = [key_range.index, key_range.low]
        if key_range.high is not None:
            sql += " AND e.key < ?"
            params.append(key_range.high)
        sql += " ORDER BY e.key DESC" if order == "desc" else " ORDER BY e.key"
        sql += " LIMIT ?"
        params.append(limit)
        rows = await self._read_conn.execute_fetchall(sql, params)
        return [(bytes(key), _decode(doc)) for key, doc in rows]

    # -- writes ------------------------------------------------------------------
    #
    # Writes run on one dedicated thread with a plain sqlite3 connection, so a
    # whole group commit (or an index build) is a single call into that
    # thread rather than one aiosqlite round trip per statement. The executor
    # has one worker, which also serializes them.

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _base_apply(self, commits: list[Commit]) -> None:
        # Net effect of the batch: later commits overwrite earlier ones.
        docs: dict[str, tuple[str, Document | None]] = {}
        entries: dict[tuple[str, bytes], str | None] = {}
        for commit in commits:
            for write in commit.writes:
                docs[write.id] = (write.table, write.new)
            for change in commit.index_changes:
                if change.old is not None and change.old != change.new:
                    entries[(change.index, change.old)] = None
                if change.new is not None and change.new != change.old:
                    entries[(change.index, change.new)] = change.id
        batch = _Batch(
            upserts=[(i, t, _encode(d)) for i, (t, d) in docs.items() if d is not None],
            deletes=[(i,) for i, (_, d) in docs.items() if d is None],
            tables={(t,) for t, d in docs.values() if d is not None},
            entry_deletes=[k for k, v in entries.items() if v is None],
            entry_inserts=[(idx, key, v) for (idx, key), v in entries.items() if v is not None],
        )
        await self._in_writer(self._write_batch, batch)

    def _write_batch(self, batch: _Batch) -> None:
        conn = self._writer
        assert conn is not None
        with _transaction(conn):
            if batch.upserts:
                conn.executemany(
                    "INSERT OR REPLACE INTO documents (id, tbl, doc) VALUES (?, ?, ?)",
                    batch.upserts,
                )
            if batch.deletes:
                conn.executemany("DELETE FROM documents WHERE id = ?", batch.deletes)
            if batch.tables:
                conn.executemany("INSERT OR IGNORE INTO tables (name) VALUES (?)", batch.tables)
            if batch.entry_deletes:
                conn.executemany(
                    "DELETE FROM index_entries WHERE idx = ? AND key = ?", batch.entry_deletes
                )
            if batch.entry_inserts:
                conn.executemany(
                    "INSERT OR REPLACE INTO index_entries (idx, key, id) VALUES (?, ?, ?)",
                    batch.entry_inserts,
                )

    async def _base_sync_indexes(self, declared: list[IndexDef]) -> None:
        conn = self._writer
        assert conn is not None
        rows = await self._in_writer(
            lambda: conn.execute("SELECT idx, tbl, fields FROM indexes").fetchall()
        )
        built = {idx: _index_from_row(idx, tbl, spec) for idx, tbl, spec in rows}
        wanted = {index.key: index for index in declared}
        stale = [key for key, index in built.items() if wanted.get(key) != index]
        missing = [index for key, index in wanted.items() if built.get(key) != index]
        if not stale and not missing:
            return
        await self._in_writer(self._drop_indexes, stale)
        for index in missing:
            await self._backfill(conn, index)

    def _drop_indexes(self, keys: list[str]) -> None:
        conn = self._writer
        assert conn is not None
        with _transaction(conn):
            for key in keys:
                conn.execute("DELETE FROM index_entries WHERE idx = ?", (key,))
                conn.execute("DELETE FROM indexes WHERE idx = ?", (key,))

    async def _backfill(self, conn: sqlite3.Connection, index: IndexDef) -> None:
        """Build ``index`` from the documents, in one transaction on the writer thread."""
        await self._in_writer(_build_index, conn, index)


class _Batch(NamedTuple):
    upserts: list[tuple[str, str, bytes]]
    deletes: list[tuple[str]]
    tables: set[tuple[str]]
    entry_deletes: list[tuple[str, bytes]]
    entry_inserts: list[tuple[str, bytes, str]]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _build_index(conn: sqlite3.Connection, index: IndexDef) -> None:
    creation = IndexDef.by_creation_time(index.table).key
    with _transaction(conn):
        conn.execute("DELETE FROM index_entries WHERE idx = ?", (index.key,))
        last = b""
        while True:
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
            conn.executemany(
                "INSERT OR REPLACE INTO index_entries (idx, key, id) VALUES (?, ?, ?)",
                [(index.key, key, i) for key, i in keys if key is not None],
            )
        conn.execute(
            "INSERT OR REPLACE INTO indexes (idx, tbl, fields) VALUES (?, ?, ?)",
            (index.key, index.table, _index_spec(index)),
        )


def _index_spec(index: IndexDef) -> str:
    spec: dict[str, Any] = {"fields": list(index.fields), "sparse": index.sparse}
    if index.where is not None:
        spec["where"] = [index.where[0], list(index.where[1])]
    return json.dumps(spec)


def _index_from_row(idx: str, table: str, spec: str) -> IndexDef:
    parsed = json.loads(spec)
    if isinstance(parsed, list):  # written before sparse indexes existed
        parsed = {"fields": parsed, "sparse": False}
    where = parsed.get("where")
    return IndexDef(
        table,
        idx.rpartition(".")[2],
        tuple(parsed["fields"]),
        parsed["sparse"],
        None if where is None else (where[0], tuple(where[1])),
    )
