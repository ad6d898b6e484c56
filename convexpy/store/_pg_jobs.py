"""The PostgreSQL store's job table: ``_scheduled_functions`` as one row per job.

Other documents are versioned (a row per version, see :mod:`.postgres`);
jobs need not be. A job's document changes only along the transitions of
:mod:`.jobs`: it is created (pending, or cancelled from the start), an action
is started, the job ends (success, failed or canceled), and retention deletes
it. So one row of ``convexpy_jobs`` holding the commit timestamp of each
transition (``created_ts``, ``started_ts``, ``ended_ts``, ``deleted_ts``) and
the latest fields says exactly what the job looked like at *any* snapshot
(:func:`job_at`). A job costs one ``INSERT`` and one ``UPDATE`` per
transition, where a document costs a new version, a closed one and two to
four index entries opened and closed.

The three job indexes are PostgreSQL indexes on key columns holding each
index's byte key (:data:`KEYS` says which): ``ckey`` (``by_creation_time``,
fixed), ``ekey`` (``by_completed``, set when the job ends) and ``skey``
(``by_state``: the key now, NULL once the job ended). A job's ``by_state`` key
changes when an action starts, so the row also keeps the key it had while
pending (``pkey``) and while in progress (``ikey``): a scan of ``by_state``
at an older snapshot, and the commit's check of a range read against jobs
that changed since (``convexpy_commit``), find every key a job held.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .jobs import (
    BY_COMPLETED,
    BY_STATE,
    SCHEDULED_FUNCTIONS,
    STATE_CODES,
    job_document,
)
from .keys import encode_suffix, prefix_encoder
from .types import Document, IndexDef, KeyRange, Order, Write

__all__ = ["KEYS", "JobWrites", "job_at", "job_row_of_versions", "job_rows_landed", "scan_rows"]

KEYS = {
    IndexDef.by_creation_time(SCHEDULED_FUNCTIONS).key: 0,
    BY_STATE.key: 1,
    BY_COMPLETED.key: 2,
}
"""The job indexes, numbered as ``convexpy_commit`` takes range reads of them."""

START, END, DELETE = 1, 2, 3
"""The transitions of an existing job, as ``convexpy_commit`` takes them."""

_PENDING = STATE_CODES["pending"]
_IN_PROGRESS = STATE_CODES["inProgress"]

_encode = msgspec.msgpack.Encoder().encode
_state_key = prefix_encoder(BY_STATE.fields, BY_STATE.sparse, BY_STATE.where)
_completed_key = prefix_encoder(BY_COMPLETED.fields, BY_COMPLETED.sparse, BY_COMPLETED.where)


def job_at(row: Any, ts: int, at: int = 0) -> Document | None:
    """The job of the ``_pg_schema.JOB_COLUMNS`` starting at ``row[at]`` as of commit
    ``ts`` (None: not created yet, or deleted by then)."""
    (
        doc_id,
        created,
        name,
        args,
        scheduled,
        state,
        completed,
        error,
        created_ts,
        started_ts,
        ended_ts,
        deleted_ts,
    ) = row[at : at + 12]
    if created_ts > ts or (deleted_ts is not None and deleted_ts <= ts):
        return None
    if ended_ts is None or ended_ts > ts:  # not ended yet at ts
        state, completed, error = (
            (_IN_PROGRESS if started_ts is not None and started_ts <= ts else _PENDING),
            None,
            None,
        )
    return job_document(doc_id, created, name, args, scheduled, state, completed, error)


def scan_rows(
    rows: Sequence[Any], ts: int, key_range: KeyRange, order: Order, limit: int
) -> list[tuple[bytes, Document]]:
    """A job index scan's result from the rows of ``_pg_schema.job_scan_sql``:
    ``(clock ts, floor, key, JOB_COLUMNS..., pkey, ikey)``. A row with a key held
    it at ``ts``; a row without (``by_state``: a job changed since) is placed
    by the key it held then, if it is in the range."""
    found: list[tuple[bytes, Document]] = []
    for row in rows:
        if row[3] is None:
            continue  # the clock's row alone: nothing in the range
        doc = job_at(row, ts, 3)
        if doc is None:
            continue
        key = row[2]
        if key is None:
            kind = doc["state"]["kind"]
            key = row[15] if kind == "pending" else row[16] if kind == "inProgress" else None
            if key is None or not key_range.contains(bytes(key)):
                continue
        found.append((bytes(key), doc))
    found.sort(key=lambda pair: pair[0], reverse=order == "desc")
    del found[limit:]
    return found


class JobWrites:
    """What ``convexpy_commit`` takes of a commit's job writes (one per job,
    the commit's first ``old`` and last ``new``): new rows, and the
    transitions of existing ones."""

    __slots__ = ("inserts", "updates")

    def __init__(self) -> None:
        self.inserts: list[tuple[Any, ...]] = []
        """New rows: id, creation time, name, args, scheduled time, state,
        completion time, error, creation key, state key, completed key."""
        self.updates: list[tuple[Any, ...]] = []
        """Transitions: id, which (START, END, DELETE), state, completion time,
        error, and the key the transition gives (``by_state`` for START,
        ``by_completed`` for END)."""

    def add(self, write: Write) -> None:
        old, new, doc_id = write.old, write.new, write.id
        if new is None:
            if old is not None:
                self.updates.append((doc_id, DELETE, None, None, None, None))
            return
        state = new["state"]
        kind = state["kind"]
        code = STATE_CODES[kind]
        suffix = encode_suffix(new["_creationTime"], doc_id)
        if old is None:
            completed = new.get("completedTime")
            self.inserts.append(
                (
                    doc_id,
                    new["_creationTime"],
                    new["name"],
                    _encode(new["args"]),
                    new["scheduledTime"],
                    code,
                    completed,
                    state.get("error"),
                    suffix,
                    _joined(_state_key(new), suffix),
                    _joined(_completed_key(new), suffix),
                )
            )
            return
        was = STATE_CODES[old["state"]["kind"]]
        if was == _PENDING and code == _IN_PROGRESS:
            key = _joined(_state_key(new), suffix)
            self.updates.append((doc_id, START, code, None, None, key))
        elif was in (_PENDING, _IN_PROGRESS) and code not in (_PENDING, _IN_PROGRESS):
            self.updates.append(
                (
                    doc_id,
                    END,
                    code,
                    new["completedTime"],
                    state.get("error"),
                    _joined(_completed_key(new), suffix),
                )
            )
        else:
            raise ValueError(
                f"job {doc_id}: a job changes from pending to inProgress, or from either to an"
                f" end state, not from {old['state']['kind']} to {kind}"
            )

    def ids(self) -> list[str]:
        """The ids of the jobs written."""
        return [row[0] for row in self.inserts] + [row[0] for row in self.updates]

    def args(self) -> list[list[tuple[Any, ...]]]:
        """The two arrays of rows (``convexpy_new_job``, ``convexpy_job_change``)."""
        return [self.inserts, self.updates]


def _joined(prefix: bytes | None, suffix: bytes) -> bytes | None:
    return None if prefix is None else prefix + suffix


def _key(encode: Any, doc: Document) -> bytes | None:
    return _joined(encode(doc), encode_suffix(doc["_creationTime"], doc["_id"]))


def job_rows_landed(writes: JobWrites, rows: Sequence[Any], after: int) -> set[int] | None:
    """The timestamps at which the rows ``(id, created_ts, started_ts, ended_ts,
    deleted_ts)`` show ``writes`` landed after ``after`` (one, if the commit
    landed), or None if any is missing."""
    events = {row[0]: row[1:] for row in rows}
    stamps: set[int] = set()
    wanted = [(row[0], 0) for row in writes.inserts]
    wanted += [(row[0], row[1]) for row in writes.updates]
    for doc_id, transition in wanted:
        row = events.get(doc_id)
        stamp = None if row is None else row[transition]
        if stamp is None or stamp <= after:
            return None
        stamps.add(stamp)
    return stamps


def job_row_of_versions(
    doc_id: str, versions: Sequence[tuple[int, int | None, Document]]
) -> list[Any]:
    """The ``convexpy_jobs`` row of a job kept as versioned documents (layout
    version 3): its ``(from_ts, to_ts, document)`` versions, oldest first.
    Versions already collected were older than any snapshot still readable."""
    created_ts = versions[0][0]
    started_ts = ended_ts = None
    pkey = ikey = None
    for from_ts, _, doc in versions:
        kind = doc["state"]["kind"]
        if kind == "pending":
            pkey = pkey or _key(_state_key, doc)
        elif kind == "inProgress":
            if started_ts is None:
                started_ts, ikey = from_ts, _key(_state_key, doc)
        elif ended_ts is None:
            ended_ts = from_ts
    _, deleted_ts, last = versions[-1]
    state = last["state"]
    changed_ts = max(t for t in (created_ts, started_ts, ended_ts, deleted_ts) if t is not None)
    skey = None if ended_ts is not None or deleted_ts is not None else _key(_state_key, last)
    return [
        doc_id,
        last["_creationTime"],
        last["name"],
        _encode(last["args"]),
        last["scheduledTime"],
        STATE_CODES[state["kind"]],
        last.get("completedTime"),
        state.get("error"),
        created_ts,
        started_ts,
        ended_ts,
        deleted_ts,
        changed_ts,
        encode_suffix(last["_creationTime"], doc_id),
        pkey,
        ikey,
        skey,
        _key(_completed_key, last),
    ]
