"""The ``_scheduled_functions`` table: document shape, states and indexes.

A job document is exactly Convex's shape::

    {_id, _creationTime, name: "messages:destruct", args: [{...}],
     scheduledTime: ms, completedTime?: ms,
     state: {kind: "pending" | "inProgress" | "success" | "failed" | "canceled", error?: str}}
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ..store.base import IndexDef, KeyRange
from ..store.keys import MISSING, encode_prefix, prefix_successor

__all__ = [
    "BY_COMPLETED",
    "BY_STATE",
    "SCHEDULED_FUNCTIONS",
    "STATE_TEXT",
    "SYSTEM_INDEXES",
    "JobState",
    "completed_before",
    "job_document",
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


TRANSIENT_ACTION_ERROR = "Transient error while executing action"

# Partial: only jobs that may still run. A job leaves it when it finishes,
# which costs one entry removed rather than one moved.
BY_STATE = IndexDef(
    SCHEDULED_FUNCTIONS,
    "by_state",
    ("state.kind", "scheduledTime"),
    where=("state.kind", (JobState.PENDING.value, JobState.IN_PROGRESS.value)),
)
# Sparse: pending jobs have no completedTime, so they cost no entry here.
BY_COMPLETED = IndexDef(SCHEDULED_FUNCTIONS, "by_completed", ("completedTime",), sparse=True)
SYSTEM_INDEXES = (BY_STATE, BY_COMPLETED)


def job_document(
    name: str, args: dict[str, Any], scheduled_time: float, state: JobState
) -> dict[str, Any]:
    """The fields of a new job (the store adds ``_id`` and ``_creationTime``)."""
    doc: dict[str, Any] = {
        "name": name,
        "args": [args],
        "scheduledTime": scheduled_time,
        "state": {"kind": STATE_TEXT[state]},
    }
    return doc


STATE_TEXT = {state: state.value for state in JobState}
"""``state.value`` without the enum property lookup (once per job)."""


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
