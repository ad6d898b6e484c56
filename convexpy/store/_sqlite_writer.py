"""The SQLite store's write batches: the statements, and the process that runs them.

A write batch is written by a child process rather than a thread of the
server. ``sqlite3`` releases the GIL while SQLite works on a statement and
must take it back after every one; beside a busy event loop, a thread waits
for it each time (up to the interpreter's switch interval), which made a
batch's wall time several times its CPU time and put that wait on the path
of every durable commit. A process has its own interpreter: it writes at the
speed of SQLite, on the other core, and the event loop only pickles rows.

This module is run as a script by path (``python -P _sqlite_writer.py``:
the script's directory is not put on ``sys.path``), so it imports nothing
from convexpy: only the standard library and msgspec (to decode documents),
and :mod:`convexpy.store.keys` loaded by path. The child starts in a few tens
of milliseconds and never imports the app. The store imports the row helpers
from here too (index builds use them on its writer thread).

The child also works out the index entries a batch moves, so that the
event loop only encodes documents: it keeps the keys of the documents it
wrote recently, reads the stored version of any other document the batch
writes, and encodes keys with :mod:`convexpy.store.keys` (loaded by path: it
imports nothing but the standard library).

The child is started with the database path, the ``synchronous`` setting,
the descriptors of its two pipes and the pid of the runtime that started it;
it asks Linux to kill it when that runtime dies (``PR_SET_PDEATHSIG``), so it
never outlives a runtime killed with SIGKILL by more than a moment.

Protocol, over two pipes (``multiprocessing.connection`` framing, pickled
messages): the child sends ``("ready", None)`` once connected, or
``("error", exc)`` and exits; then, for every batch
``(max_params, indexes, writes, tables, jobs, names)`` it receives, it writes
the batch in one transaction and sends ``None`` or the exception that rolled
it back. ``indexes`` maps tables to :data:`TableIndexes` (for tables whose
indexes are new to the child, or changed); ``writes`` holds ``(id, table,
msgpack or None, stored)`` (see :data:`Writes`); ``tables`` the tables written
for the first time; ``jobs`` the rows of the jobs table (``(inserts, updates,
deletes)``, see :func:`write_jobs`) or None; ``names`` the ``(number, name)``
pairs of ``job_names`` the store gave since a batch last landed. End of input
(the store closed, or its process died) makes it close the database and exit.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import os
import pickle
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

__all__ = [
    "BUSY_TIMEOUT_S",
    "Indexer",
    "Rows",
    "TableIndexes",
    "Writes",
    "connect",
    "delete_keys",
    "each_in",
    "insert_rows",
    "padded",
    "padded_most",
    "param_limit",
    "pragmas",
    "transaction",
    "write_batch",
    "write_jobs",
    "write_rows_in",
]

Rows = tuple[
    list[tuple[str, str, bytes]],  # documents upserted: (id, table, msgpack)
    list[str],  # documents deleted
    list[tuple[str]],  # tables first written
    dict[int, list[bytes]],  # index entries removed: index number -> keys
    list[tuple[int, bytes, str]],  # index entries added: (index number, key, id)
]
"""The rows of one write batch."""

TableIndexes = tuple[int, tuple[tuple[int, tuple[str, ...], bool, Any], ...]]
"""A table's ``by_creation_time`` index number, then ``(number, fields, sparse,
where)`` of every other index commits maintain (see ``IndexDef``)."""

Writes = list[tuple[str, str, bytes | None, bool]]
"""The last version of each document a batch writes: ``(id, table, msgpack,
stored)``, msgpack None for a delete; ``stored`` False when the file holds no
version of it yet (an insert: no need to look)."""

BUSY_TIMEOUT_S = 3600.0
"""How long a write waits for SQLite's write lock. Only the store's own
connections take it (the file is locked against other stores), and an index
build on the store's writer thread holds it for as long as the build takes."""


def pragmas(synchronous: str) -> list[str]:
    """The settings every connection of the store runs first."""
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous.upper()}",
        "PRAGMA cache_size=-65536",
        "PRAGMA temp_store=MEMORY",
    ]


def connect(path: str | Path, synchronous: str) -> sqlite3.Connection:
    """A writing connection with the store's settings (autocommit: transactions
    are explicit); it waits up to :data:`BUSY_TIMEOUT_S` for the write lock."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
    )
    try:
        for pragma in pragmas(synchronous):
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def write_rows_in(conn: sqlite3.Connection, rows: Rows, max_params: int) -> None:
    """Write the rows of one batch (inside its transaction)."""
    upserts, deletes, tables, entry_deletes, entry_inserts = rows
    insert_rows(conn, "INSERT OR REPLACE INTO documents (id, tbl, doc)", upserts, max_params)
    delete_keys(conn, "DELETE FROM documents WHERE id IN", (), deletes, max_params)
    if tables:
        conn.executemany("INSERT OR IGNORE INTO tables (name) VALUES (?)", tables)
    for num, keys in entry_deletes.items():
        delete_keys(
            conn, "DELETE FROM index_entries WHERE idx = ? AND key IN", (num,), keys, max_params
        )
    insert_rows(
        conn, "INSERT OR REPLACE INTO index_entries (idx, key, id)", entry_inserts, max_params
    )


# Rows go to SQLite many per statement rather than one per executemany() step
# (a statement costs a round through sqlite3's C code and, on a thread, a GIL
# handoff). So a batch writes each kind of row with as few statements as
# SQLite's parameter limit allows. A run is padded (its last row repeated,
# which changes nothing: the statements upsert or delete) up to one of a few
# sizes, so that a handful of statement texts, cached by sqlite3, serve every
# batch.
MAX_PARAMS = 32_766
"""SQLite's default limit on parameters per statement since 3.32 (999 before)."""


def param_limit(conn: sqlite3.Connection) -> int:
    return min(MAX_PARAMS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def padded(count: int) -> int:
    """The statement size for a run of ``count`` rows: 1-8 as is, then the
    next of 2**k * (1, 1.25, 1.5, 1.75), so that padding adds under a quarter."""
    if count <= 8:
        return count
    step = 1 << (count.bit_length() - 3)
    return -(-count // step) * step


@functools.cache
def padded_most(limit: int) -> int:
    """The longest run whose padded size stays within ``limit`` (itself a size)."""
    if limit <= 8:
        return limit
    step = 1 << (limit.bit_length() - 3)
    return limit // step * step


def _runs(count: int, most: int) -> Iterator[tuple[int, int]]:
    """``(start, length)`` of consecutive runs of at most ``most`` rows covering ``count``."""
    for start in range(0, count, most):
        yield start, min(most, count - start)


@functools.lru_cache(maxsize=256)
def _values_sql(head: str, width: int, rows: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return f"{head} VALUES {','.join([row] * rows)}"


@functools.lru_cache(maxsize=256)
def _in_sql(head: str, count: int) -> str:
    return f"{head} ({','.join('?' * count)})"


def insert_rows(
    conn: sqlite3.Connection, head: str, rows: list[tuple[Any, ...]], max_params: int
) -> None:
    """Run ``head VALUES (...), ...`` over ``rows`` (tuples of one width, each
    an upsert, so that repeating one changes nothing)."""
    if not rows:
        return
    width = len(rows[0])
    chain = itertools.chain.from_iterable
    most = padded_most(max_params // width)
    for start, length in _runs(len(rows), most):
        params = list(chain(rows[start : start + length]))
        size = padded(length)
        params += rows[start + length - 1] * (size - length)
        conn.execute(_values_sql(head, width, size), params)


def each_in(
    conn: sqlite3.Connection,
    head: str,
    params: tuple[Any, ...],
    keys: list[Any],
    max_params: int,
) -> Iterator[sqlite3.Cursor]:
    """Run ``head (?, ...)`` (``params``, then an IN list) over ``keys``, in
    padded runs (a repeated key changes nothing); each run's cursor."""
    most = padded_most(max_params - len(params))
    for start, length in _runs(len(keys), most):
        size = padded(length)
        run = keys[start : start + length]
        yield conn.execute(_in_sql(head, size), [*params, *run, *[run[-1]] * (size - length)])


def delete_keys(
    conn: sqlite3.Connection,
    head: str,
    params: tuple[Any, ...],
    keys: list[Any],
    max_params: int,
) -> None:
    """Run the delete ``head (?, ...)`` (``params``, then an IN list) over ``keys``."""
    for _ in each_in(conn, head, params, keys, max_params):
        pass


# -- the child process ------------------------------------------------------------------


def _load_keys() -> Any:
    """:mod:`convexpy.store.keys` without importing convexpy (it is standard library only)."""
    spec = importlib.util.spec_from_file_location(
        "convexpy_store_keys", Path(__file__).with_name("keys.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_Keys = tuple["bytes | None", ...]
"""A document's keys, one per index of its table (``by_creation_time`` first)."""


class Indexer:
    """The index entries the writes of a batch move, from the keys of each
    document's stored version (cached for those written recently) and of its
    new one."""

    cache_limit = 65_536

    def __init__(self, decode: Callable[[bytes], Any]) -> None:
        self._keys = _load_keys()
        self._decode = decode
        self._tables: dict[str, tuple[tuple[int, ...], list[Callable[[Any], bytes | None]]]] = {}
        self._cache: dict[str, _Keys] = {}
        """Document id -> the keys of its stored version (oldest entry first)."""

    def configure(self, indexes: dict[str, TableIndexes]) -> None:
        prefix_encoder = self._keys.prefix_encoder
        for table, (creation, others) in indexes.items():
            nums = (creation, *(num for num, _, _, _ in others))
            encoders = [
                prefix_encoder(fields, sparse, where) for _, fields, sparse, where in others
            ]
            self._tables[table] = (nums, encoders)
        self._cache.clear()  # cached keys no longer line up with the indexes

    def _keys_of(
        self, table: str, doc: dict[str, Any], doc_id: str, suffix: bytes | None = None
    ) -> _Keys:
        """The keys of ``doc``; ``suffix`` (``_creationTime`` and ``_id``, the
        same in every version of a document) if already known."""
        encoders = self._tables[table][1]
        if suffix is None:
            suffix = self._keys.encode_suffix(doc["_creationTime"], doc_id)
        keys: list[bytes | None] = [suffix]
        for encode in encoders:
            prefix = encode(doc)
            keys.append(None if prefix is None else prefix + suffix)
        return tuple(keys)

    def rows(
        self, conn: sqlite3.Connection, writes: Writes, tables: list[tuple[str]], max_params: int
    ) -> tuple[Rows, dict[str, _Keys]]:
        """The rows of a batch (inside its transaction), and the keys to cache once committed."""
        cache, decode = self._cache, self._decode
        stored: dict[str, _Keys] = {}
        missing = {
            doc_id: table for doc_id, table, _, known in writes if known and doc_id not in cache
        }
        head = "SELECT id, doc FROM documents WHERE id IN"
        for found in each_in(conn, head, (), list(missing), max_params):
            for doc_id, blob in found.fetchall():
                stored[doc_id] = self._keys_of(missing[doc_id], decode(blob), doc_id)
        upserts: list[tuple[str, str, bytes]] = []
        deletes: list[str] = []
        entry_deletes: dict[int, list[bytes]] = {}
        entry_inserts: list[tuple[int, bytes, str]] = []
        written: dict[str, _Keys] = {}
        pop = cache.pop
        for doc_id, table, blob, _ in writes:
            old = pop(doc_id, None) or stored.get(doc_id)
            if blob is None:
                deletes.append(doc_id)
                new = None
            else:
                upserts.append((doc_id, table, blob))
                suffix = None if old is None else old[0]  # by_creation_time's key
                new = written[doc_id] = self._keys_of(table, decode(blob), doc_id, suffix)
            nums = self._tables[table][0]
            if old is None:
                if new is not None:  # else: made and deleted within the batch
                    for num, key in zip(nums, new, strict=True):
                        if key is not None:
                            entry_inserts.append((num, key, doc_id))
                continue
            for num, before, after in zip(nums, old, new or (None,) * len(nums), strict=True):
                if before == after:
                    continue  # the entry stays (only its document changed)
                if before is not None:
                    keys = entry_deletes.get(num)
                    if keys is None:
                        entry_deletes[num] = [before]
                    else:
                        keys.append(before)
                if after is not None:
                    entry_inserts.append((num, after, doc_id))
        return (upserts, deletes, tables, entry_deletes, entry_inserts), written

    def landed(self, written: dict[str, _Keys]) -> None:
        """The batch committed: its documents' keys are the stored ones now."""
        cache = self._cache
        cache.update(written)
        if len(cache) > self.cache_limit:
            # The oldest quarter at once: dropping one per write would walk
            # past every deleted slot at the front of the dict each time.
            for doc_id in list(itertools.islice(cache, len(cache) - self.cache_limit * 3 // 4)):
                del cache[doc_id]


def write_batch(
    conn: sqlite3.Connection,
    indexer: Indexer,
    writes: Writes,
    tables: list[tuple[str]],
    max_params: int,
    jobs: JobRows | None = None,
    names: list[tuple[int, str]] | None = None,
) -> None:
    """Write one batch of documents, the index entries they move, and its job
    rows, in one transaction."""
    with transaction(conn):
        rows, written = indexer.rows(conn, writes, tables, max_params)
        write_rows_in(conn, rows, max_params)
        if names:
            conn.executemany("INSERT OR IGNORE INTO job_names (num, name) VALUES (?, ?)", names)
        if jobs is not None:
            write_jobs(conn, jobs, max_params)
    indexer.landed(written)


JobRows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[str]]
"""A batch's job rows: ``(id, created, name number, args, scheduled, state,
completed, error)`` to insert, ``(state, completed, error, id)`` to update,
and ids to delete."""


def write_jobs(conn: sqlite3.Connection, jobs: JobRows, max_params: int) -> None:
    """Write a batch's job rows (inside its transaction). Jobs change only
    their state once made: an update sets three columns. The job indexes are
    SQLite's own, kept up to date by SQLite."""
    inserts, updates, deletes = jobs
    insert_rows(
        conn,
        "INSERT OR REPLACE INTO jobs (id, created, name, args, scheduled, state, completed, error)",
        inserts,
        max_params,
    )
    if updates:
        conn.executemany(
            "UPDATE jobs SET state = ?, completed = ?, error = ? WHERE id = ?", updates
        )
    delete_keys(conn, "DELETE FROM jobs WHERE id IN", (), deletes, max_params)


def _reply(outbox: Connection, message: object) -> None:
    try:
        data = pickle.dumps(message)
    except Exception:  # an exception that does not pickle: say what it was
        data = pickle.dumps(RuntimeError(repr(message)))
    outbox.send_bytes(data)


def _die_with(parent_pid: int) -> None:
    """Be killed when the runtime that started us dies (Linux), so that no
    orphan keeps the database locked after a SIGKILL of the runtime. Killing
    this process mid-batch is safe: SQLite rolls the transaction back, and
    the runtime never acknowledged it."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before we asked
        os._exit(1)


def main(argv: list[str]) -> int:
    # Ctrl-C in a terminal, or a service manager stopping the process group,
    # signals this process too: it leaves when the store is done with it (end
    # of input), so that the runtime's shutdown can still write its last batch.
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    path, synchronous, inbox_fd, outbox_fd = argv[1], argv[2], int(argv[3]), int(argv[4])
    _die_with(int(argv[5]))
    inbox = Connection(inbox_fd, writable=False)
    outbox = Connection(outbox_fd, readable=False)
    try:
        import msgspec

        indexer = Indexer(msgspec.msgpack.Decoder(dict[str, Any]).decode)
        conn = connect(path, synchronous)
    except Exception as exc:
        _reply(outbox, ("error", exc))
        return 1
    try:
        _reply(outbox, ("ready", None))
        while True:
            try:
                max_params, indexes, writes, tables, jobs, names = pickle.loads(inbox.recv_bytes())
            except EOFError:  # the store closed, or its process is gone
                return 0
            try:
                if indexes:
                    indexer.configure(indexes)
                write_batch(conn, indexer, writes, tables, max_params, jobs, names)
            except Exception as exc:
                _reply(outbox, exc)
            else:
                _reply(outbox, None)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # nobody is listening any more
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
