"""The SQLite store's job table: ``_scheduled_functions`` as rows with state columns.

Jobs do not go into ``documents`` and ``index_entries`` like other tables.
Each job is one row of ``jobs`` (its function name numbered in ``job_names``),
and the table's three indexes (``by_creation_time``, ``by_state``,
``by_completed``) are SQLite indexes on its columns. A job costs a fraction
of a document's space, and its state changes are small ``UPDATE``s of three
columns instead of a document rewritten with its index entries moved.

The engine still sees jobs as documents: this module turns rows into job
documents (:func:`job_from_row`) and a commit's job writes into rows
(:class:`JobRows`), and answers scans of the job indexes, whose key ranges it
narrows to SQL on the columns and then checks key by key
(:func:`scan_jobs`): SQL orders rows exactly as their index keys sort.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from .engine import index_key_of
from .jobs import (
    BY_COMPLETED,
    BY_STATE,
    SCHEDULED_FUNCTIONS,
    STATE_CODES,
    is_job_id,
    job_document,
)
from .types import BY_CREATION_TIME, Document, IndexDef, KeyRange, Order, Write

__all__ = [
    "JOB_INDEXES",
    "JOB_SCHEMA",
    "JobMessage",
    "JobRows",
    "migrate_jobs",
    "is_job_id",
    "job_from_row",
    "scan_jobs",
]

JOB_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        name INTEGER NOT NULL,
        args BLOB NOT NULL,
        scheduled REAL NOT NULL,
        state INTEGER NOT NULL,
        completed REAL,
        error TEXT
    )""",
    "CREATE TABLE IF NOT EXISTS job_names (num INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    # The jobs that may still run, by time (Convex's pending and inProgress).
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, scheduled, created)"
    " WHERE state IN (2, 3)",
    "CREATE INDEX IF NOT EXISTS jobs_by_creation ON jobs (created)",
    "CREATE INDEX IF NOT EXISTS jobs_by_completed ON jobs (completed, created)"
    " WHERE completed IS NOT NULL",
]

COLUMNS = "j.id, j.created, n.name, j.args, j.scheduled, j.state, j.completed, j.error"
FROM = "jobs j JOIN job_names n ON n.num = j.name"

_encode = msgspec.msgpack.Encoder().encode


def job_from_row(row: Iterable[Any]) -> Document:
    """The job document of a row of :data:`COLUMNS`."""
    return job_document(*row)


JobRow = tuple[str, float, int, bytes, float, int, "float | None", "str | None"]
"""A new job's row: ``(id, created, name number, args, scheduled, state, completed, error)``."""
JobState = tuple[int, "float | None", "str | None"]
"""The columns a job's later writes change: ``(state, completed, error)``."""
JobMessage = tuple[list[JobRow], list[tuple[Any, ...]], list[str]]
"""What the writer process writes of a batch's jobs: rows to insert,
``(state, completed, error, id)`` updates, and ids to delete."""


class JobRows:
    """The job rows a batch writes: inserts, state updates and deletes, by id.

    Jobs change only their state once created (and are deleted once old), so
    a write of a job the file holds is an update of three columns.
    """

    __slots__ = ("deletes", "docs", "inserts", "updates")

    def __init__(self) -> None:
        self.inserts: dict[str, JobRow] = {}
        self.updates: dict[str, JobState] = {}
        self.deletes: set[str] = set()
        self.docs: dict[str, Document | None] = {}
        """The last version of every job written, for the store's cache."""

    def __bool__(self) -> bool:
        return bool(self.docs)

    def add(self, write: Write, stored: bool, name_number: Callable[[str], int]) -> None:
        """Add the last write of a job in a commit; ``stored``: the file held
        the job before the commit."""
        doc_id, new = write.id, write.new
        self.docs[doc_id] = new
        if new is None:
            self.inserts.pop(doc_id, None)
            self.updates.pop(doc_id, None)
            if stored:
                self.deletes.add(doc_id)
            return
        state = new["state"]
        columns = (STATE_CODES[state["kind"]], new.get("completedTime"), state.get("error"))
        if stored or doc_id in self.updates:
            self.updates[doc_id] = columns
            return
        row = self.inserts.get(doc_id)
        if row is not None:  # written by an earlier commit of the batch
            self.inserts[doc_id] = (*row[:5], *columns)
            return
        self.inserts[doc_id] = (
            doc_id,
            new["_creationTime"],
            name_number(new["name"]),
            _encode(new["args"]),
            new["scheduledTime"],
            *columns,
        )

    def merge(self, later: JobRows) -> None:
        """Fold in the rows of a later commit of the same batch."""
        for doc_id, doc in later.docs.items():
            self.docs[doc_id] = doc
        for doc_id in later.deletes:
            self.inserts.pop(doc_id, None)
            self.updates.pop(doc_id, None)
            self.deletes.add(doc_id)
        for doc_id, columns in later.updates.items():
            row = self.inserts.get(doc_id)
            if row is not None:
                self.inserts[doc_id] = (*row[:5], *columns)
            else:
                self.updates[doc_id] = columns
        for doc_id, row in later.inserts.items():
            self.deletes.discard(doc_id)
            self.inserts[doc_id] = row

    def message(self) -> JobMessage:
        """What the writer process writes (see :func:`._sqlite_writer.write_jobs`)."""
        updates = [(*columns, doc_id) for doc_id, columns in self.updates.items()]
        return list(self.inserts.values()), updates, list(self.deletes)


def migrate_jobs(conn: sqlite3.Connection) -> None:
    """Move jobs kept as documents (schema version 1) into the jobs table
    (inside the write transaction that upgrades the file)."""
    names: dict[str, int] = dict(conn.execute("SELECT name, num FROM job_names").fetchall())
    _decode_doc = msgspec.msgpack.Decoder(dict[str, Any]).decode
    cursor = conn.execute("SELECT id, doc FROM documents WHERE tbl = ?", (SCHEDULED_FUNCTIONS,))
    while rows := cursor.fetchmany(1000):
        moved = []
        for doc_id, blob in rows:
            doc = _decode_doc(blob)
            state = doc["state"]
            number = names.setdefault(doc["name"], len(names) + 1)
            moved.append(
                (
                    doc_id,
                    doc["_creationTime"],
                    number,
                    _encode(doc["args"]),
                    doc["scheduledTime"],
                    STATE_CODES[state["kind"]],
                    doc.get("completedTime"),
                    state.get("error"),
                )
            )
        conn.executemany(
            "INSERT OR REPLACE INTO jobs"
            " (id, created, name, args, scheduled, state, completed, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            moved,
        )
    conn.executemany(
        "INSERT OR IGNORE INTO job_names (num, name) VALUES (?, ?)",
        [(number, name) for name, number in names.items()],
    )
    conn.execute(
        "DELETE FROM index_entries WHERE idx IN (SELECT num FROM indexes WHERE tbl = ?)",
        (SCHEDULED_FUNCTIONS,),
    )
    conn.execute("UPDATE indexes SET fields = NULL WHERE tbl = ?", (SCHEDULED_FUNCTIONS,))
    conn.execute("DELETE FROM documents WHERE tbl = ?", (SCHEDULED_FUNCTIONS,))


# -- scans -------------------------------------------------------------------------------

JOB_INDEXES: dict[str, IndexDef] = {
    index.key: index
    for index in (IndexDef.by_creation_time(SCHEDULED_FUNCTIONS), BY_STATE, BY_COMPLETED)
}

# Per index: the columns SQL orders its rows by (exactly as their keys sort),
# and which rows it holds.
_ORDER = {
    BY_CREATION_TIME: (("created",), ""),
    BY_STATE.name: (("state", "scheduled", "created"), "state IN (2, 3)"),
    BY_COMPLETED.name: (("completed", "created"), "completed IS NOT NULL"),
}

_unpack_q = struct.Struct(">Q").unpack
_pack_q = struct.Struct(">Q").pack
_unpack_d = struct.Struct(">d").unpack
_SIGN = 1 << 63
_MASK = (1 << 64) - 1


def _leading_values(key: bytes) -> list[object]:
    """The complete float and string values at the start of ``key`` (stops
    at anything else, or at a value cut short)."""
    values: list[object] = []
    at = 0
    while at < len(key):
        tag = key[at]
        if tag == 0x04 and at + 9 <= len(key):  # float64
            bits = _unpack_q(key[at + 1 : at + 9])[0]
            bits = bits ^ _SIGN if bits & _SIGN else ~bits & _MASK
            values.append(_unpack_d(_pack_q(bits))[0])
            at += 9
        elif tag == 0x07:  # string, 0x00 0x00 at its end
            end = key.find(b"\x00\x00", at + 1)
            if end < 0:
                # The successor of a whole string (``prefix_successor``) ends
                # 0x00 0x01: it bounds the string itself.
                end = key.find(b"\x00\x01", at + 1)
                if end < 0 or end + 2 != len(key):
                    break
            if b"\x00\xff" in key[at + 1 : end]:
                break
            values.append(key[at + 1 : end].decode("utf-8", "replace"))
            at = end + 2
        else:
            break
    return values


def _column_values(index_name: str, bound: bytes) -> list[object]:
    """``bound``'s leading values as column values (state names as codes)."""
    values = _leading_values(bound)
    columns = _ORDER[index_name][0]
    out: list[object] = []
    for column, value in zip(columns, values, strict=False):
        if column == "state":
            code = STATE_CODES.get(value) if isinstance(value, str) else None
            if code is None:
                break
            out.append(code)
        elif isinstance(value, float) and value == value:  # (a bound's successor may be NaN)
            out.append(value)
        else:
            break
    return out


async def scan_jobs(
    read: Callable[[str, list[object]], Awaitable[Iterable[Any]]],
    key_range: KeyRange,
    order: Order,
    limit: int,
    page: int = 256,
) -> list[tuple[bytes, Document]]:
    """Up to ``limit`` ``(key, job)`` pairs of a job index range, in key order.

    SQL narrows the range on the index's columns (a superset, as far as the
    bounds' leading values go) and pages through rows in key order; each
    row's key is then checked against the exact bounds.
    """
    index = JOB_INDEXES[key_range.index]
    columns, holds = _ORDER[index.name]
    descending = order == "desc"
    direction = " DESC" if descending else ""
    order_by = ", ".join(f"j.{column}{direction}" for column in columns)
    lows = [] if key_range.low is None else _column_values(index.name, key_range.low)
    highs = [] if key_range.high is None else _column_values(index.name, key_range.high)
    # Columns equal at both ends become equalities, and the bounds compare
    # the columns after them: SQLite seeks an index on an equality and then a
    # row value, but not on a row value that starts with the partial index's
    # own column (state).
    fixed = 0
    while fixed < min(len(lows), len(highs)) and lows[fixed] == highs[fixed]:
        fixed += 1
    conditions = [f"j.{holds}"] if holds else []
    conditions += [f"j.{column} = ?" for column in columns[:fixed]]
    params: list[object] = list(lows[:fixed])
    for values, op in ((lows, ">="), (highs, "<=")):
        if len(values) > fixed:
            conditions.append(_row_compare(columns[fixed : len(values)], op))
            params.extend(values[fixed:])
    rest = columns[fixed:]
    high, low = key_range.high, key_range.low
    if descending:

        def beyond(key: bytes) -> bool:
            return key < low

    else:

        def beyond(key: bytes) -> bool:
            return high is not None and key >= high

    found: list[tuple[bytes, Document]] = []
    after: list[object] | None = None
    while len(found) < limit:
        where = list(conditions)
        page_params = list(params)
        if after is not None and rest:
            where.append(_row_compare(rest, "<" if descending else ">"))
            page_params.extend(after[fixed:])
        sql = f"SELECT {COLUMNS}, {', '.join('j.' + c for c in columns)} FROM {FROM}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order_by} LIMIT {page}"
        rows = list(await read(sql, page_params))
        for row in rows:
            doc = job_from_row(row[:8])
            key = index_key_of(index, doc)
            if key is None:
                continue
            if key_range.contains(key):
                found.append((key, doc))
                if len(found) == limit:
                    return found
            elif beyond(key):  # rows come in key order: the rest are beyond too
                return found
        if len(rows) < page or not rest:
            break
        after = list(rows[-1][8:])
    return found


def _row_compare(columns: tuple[str, ...], op: str) -> str:
    if len(columns) == 1:
        return f"j.{columns[0]} {op} ?"
    names = ", ".join(f"j.{column}" for column in columns)
    marks = ", ".join("?" * len(columns))
    return f"({names}) {op} ({marks})"
