"""The SQLite store's write batches: the statements, and the process that runs them.

A write batch is written by a child process rather than a thread of the
server. ``sqlite3`` releases the GIL while SQLite works on a statement and
must take it back after every one; beside a busy event loop, a thread waits
for it each time (up to the interpreter's switch interval), which made a
batch's wall time several times its CPU time and put that wait on the path
of every durable commit. A process has its own interpreter: it writes at the
speed of SQLite, on the other core, and the event loop only pickles rows.

This module is run as a script by path (``python -I -S _sqlite_writer.py``),
so it imports nothing from convexpy and nothing beyond the standard library:
the child starts in a few tens of milliseconds and never imports the app.
The store imports the row helpers from here too (index builds use them on
its writer thread).

Protocol, over two pipes (``multiprocessing.connection`` framing, pickled
messages): the child sends ``("ready", None)`` once connected, or
``("error", exc)`` and exits; then, for every batch ``(max_params, rows)`` it
receives, it writes the batch in one transaction and sends ``None`` or the
exception that rolled it back. End of input (the store closed, or its
process died) makes it close the database and exit.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import pickle
import sqlite3
import sys
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

__all__ = [
    "Rows",
    "connect",
    "delete_keys",
    "insert_rows",
    "padded",
    "padded_most",
    "param_limit",
    "transaction",
    "write_rows",
]

Rows = tuple[
    list[tuple[str, str, bytes]],  # documents upserted: (id, table, msgpack)
    list[str],  # documents deleted
    list[tuple[str]],  # tables first written
    dict[int, list[bytes]],  # index entries removed: index number -> keys
    list[tuple[int, bytes, str]],  # index entries added: (index number, key, id)
]
"""What one write batch writes (see ``SqliteStore._prepare``)."""


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A connection with the store's settings (autocommit: transactions are explicit)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={synchronous.upper()}",
            "PRAGMA cache_size=-65536",
            "PRAGMA temp_store=MEMORY",
        ):
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


def write_rows(conn: sqlite3.Connection, rows: Rows, max_params: int) -> None:
    """Write one batch in one transaction."""
    upserts, deletes, tables, entry_deletes, entry_inserts = rows
    with transaction(conn):
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


def delete_keys(
    conn: sqlite3.Connection,
    head: str,
    params: tuple[Any, ...],
    keys: list[Any],
    max_params: int,
) -> None:
    """Run ``head (?, ...)`` (``params``, then an IN list) over ``keys``."""
    most = padded_most(max_params - len(params))
    for start, length in _runs(len(keys), most):
        size = padded(length)
        run = keys[start : start + length]
        conn.execute(_in_sql(head, size), [*params, *run, *[run[-1]] * (size - length)])


# -- the child process ------------------------------------------------------------------


def _reply(outbox: Connection, message: object) -> None:
    try:
        data = pickle.dumps(message)
    except Exception:  # an exception that does not pickle: say what it was
        data = pickle.dumps(RuntimeError(repr(message)))
    outbox.send_bytes(data)


def main(argv: list[str]) -> int:
    path, synchronous, inbox_fd, outbox_fd = argv[1], argv[2], int(argv[3]), int(argv[4])
    inbox = Connection(inbox_fd, writable=False)
    outbox = Connection(outbox_fd, readable=False)
    try:
        conn = connect(path, synchronous)
    except Exception as exc:
        _reply(outbox, ("error", exc))
        return 1
    try:
        _reply(outbox, ("ready", None))
        while True:
            try:
                max_params, rows = pickle.loads(inbox.recv_bytes())
            except EOFError:  # the store closed, or its process is gone
                return 0
            try:
                write_rows(conn, rows, max_params)
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
