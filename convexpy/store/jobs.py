"""The ``_scheduled_functions`` table: its documents, states, indexes and transitions.

The store owns job state: this module is the one place that says what a job
document looks like in each state, and how it moves from one to the next.
Everything that writes a job (scheduling, cancelling, running, retention)
builds the new version with one of :func:`new_job`, :func:`started` and
:func:`ended`. A job document is exactly Convex's shape::

    {_id, _creationTime, name: "messages:destruct", args: [{...}],
     scheduledTime: ms, completedTime?: ms,
     state: {kind: "pending" | "inProgress" | "success" | "failed" | "canceled", error?: str}}

The transitions::

    (scheduled) -> pending -> inProgress (an action) -> success | failed | canceled
                   pending -> success | failed (a mutation, in its own transaction)
                   pending | inProgress -> canceled (ctx.scheduler.cancel)
    (scheduled by an action whose job was cancelled) -> canceled
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from ..ids import id_prefix
from .keys import MISSING, encode_prefix, prefix_successor
from .types import Document, IndexDef, KeyRange, Write

__all__ = [
    "BY_COMPLETED",
    "BY_STATE",
    "SCHEDULED_FUNCTIONS",
    "STATE_CODES",
    "STATE_NAMES",
    "SYSTEM_INDEXES",
    "TRANSIENT_ACTION_ERROR",
    "JobChanges",
    "JobState",
    "completed_before",
    "ended",
    "is_job_id",
    "job_document",
    "job_changes",
    "new_job",
    "started",
    "state_range",
]

SCHEDULED_FUNCTIONS = "_scheduled_functions"


class JobState(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "inProgress"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCESS, JobState.FAILED, JobState.CANCELED)


STATE_CODES = {"canceled": 0, "failed": 1, "inProgress": 2, "pending": 3, "success": 4}
"""The stores' numbers for the states (SQL columns), in the order of their names,
as index keys sort them."""
STATE_NAMES = sorted(STATE_CODES, key=STATE_CODES.__getitem__)

_JOB_ID_PREFIX = id_prefix(SCHEDULED_FUNCTIONS)


def is_job_id(doc_id: str) -> bool:
    """Whether ``doc_id`` is the id of a job (every id starts with its table number)."""
    return doc_id.startswith(_JOB_ID_PREFIX)


_decode_args = msgspec.msgpack.Decoder(list[dict[str, Any]]).decode


def job_document(
    doc_id: str,
    created: float,
    name: str,
    args: bytes,
    scheduled: float,
    state: int,
    completed: float | None,
    error: str | None,
) -> Document:
    """A job from the columns a store keeps of it: ``args`` in msgpack,
    ``state`` as its :data:`STATE_CODES` number."""
    kind = STATE_NAMES[state]
    doc: Document = {
        "_id": doc_id,
        "_creationTime": created,
        "name": name,
        "args": _decode_args(args),
        "scheduledTime": scheduled,
        "state": {"kind": kind} if error is None else {"kind": kind, "error": error},
    }
    if completed is not None:
        doc["completedTime"] = completed
    return doc


TRANSIENT_ACTION_ERROR = "Transient error while executing action"
"""Convex's text for an action found running after its process went away."""

_PENDING = JobState.PENDING.value
_IN_PROGRESS = JobState.IN_PROGRESS.value
_CANCELED = JobState.CANCELED.value

# Partial: only jobs that may still run. A job leaves it when it finishes,
# which costs one entry removed rather than one moved.
BY_STATE = IndexDef(
    SCHEDULED_FUNCTIONS,
    "by_state",
    ("state.kind", "scheduledTime"),
    where=("state.kind", (_PENDING, _IN_PROGRESS)),
)
# Sparse: pending jobs have no completedTime, so they cost no entry here.
BY_COMPLETED = IndexDef(SCHEDULED_FUNCTIONS, "by_completed", ("completedTime",), sparse=True)
SYSTEM_INDEXES = (BY_STATE, BY_COMPLETED)


# -- transitions ---------------------------------------------------------------------


def new_job(
    name: str, args: dict[str, Any], scheduled_time: float, *, canceled_at: float | None = None
) -> Document:
    """The fields of a new job (the store adds ``_id`` and ``_creationTime``):
    pending, or, with ``canceled_at``, cancelled from the start (scheduled by
    an action whose own job was cancelled)."""
    if canceled_at is None:
        return {
            "name": name,
            "args": [args],
            "scheduledTime": scheduled_time,
            "state": {"kind": _PENDING},
        }
    return {
        "name": name,
        "args": [args],
        "scheduledTime": scheduled_time,
        "state": {"kind": _CANCELED},
        "completedTime": canceled_at,
    }


def started(job: Document) -> Document:
    """A pending action's job once it starts running (at most once: this is
    committed before the action's handler runs)."""
    updated = dict(job)
    updated["state"] = {"kind": _IN_PROGRESS}
    return updated


def ended(job: Document, state: JobState, now: float, error: str | None = None) -> Document:
    """A job that finished in ``state`` (success, failed or canceled) at ``now``."""
    updated = dict(job)
    kind = state._value_  # not .value: an enum property, slow on the job path
    updated["state"] = {"kind": kind} if error is None else {"kind": kind, "error": error}
    updated["completedTime"] = now
    return updated


# -- what a commit did to jobs --------------------------------------------------------


@dataclass(slots=True)
class JobChanges:
    """What one commit did to jobs that may run: ``created`` lists ``(id,
    scheduledTime, name)`` of each job that became pending, ``canceled`` the
    ids of the pending or running jobs it cancelled.

    The store hands the same object to its job listeners when the commit is
    accepted and again when it is durable; a listener that deals with a job
    at acceptance removes it from ``created``.
    """

    created: list[tuple[str, float, str]] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)


def job_changes(writes: list[Write]) -> JobChanges | None:
    """The job changes among a commit's writes (None: it changed no job that may run)."""
    changes: JobChanges | None = None
    for write in writes:
        if write.table != SCHEDULED_FUNCTIONS:
            continue
        new, old = write.new, write.old
        if new is None:
            continue  # retention deleting a finished job
        kind = new["state"]["kind"]
        if kind == _PENDING:
            if old is None or old["state"]["kind"] != _PENDING:
                changes = changes or JobChanges()
                changes.created.append((write.id, new["scheduledTime"], new["name"]))
        elif kind == _CANCELED and old is not None and old["state"]["kind"] != _CANCELED:
            changes = changes or JobChanges()
            changes.canceled.append(write.id)
    return changes


# -- key ranges ----------------------------------------------------------------------


def state_range(state: JobState, before: float | None = None, low: bytes | None = None) -> KeyRange:
    """Jobs in ``state``, by scheduled time, optionally only those due before ``before``."""
    prefix = encode_prefix([state.value])
    high = prefix_successor(prefix) if before is None else prefix + encode_prefix([float(before)])
    return KeyRange(BY_STATE.key, prefix if low is None else max(prefix, low), high)


def completed_before(cutoff: float) -> KeyRange:
    """Finished jobs whose ``completedTime`` is at or before ``cutoff``."""
    low = prefix_successor(encode_prefix([MISSING]))
    assert low is not None
    return KeyRange(BY_COMPLETED.key, low, prefix_successor(encode_prefix([float(cutoff)])))
