"""Attempts: running a function for a building block and getting its outcome back.

An *owner* (a retrier run, a workpool item, a runtime cron) runs its target
as an attempt: an ordinary scheduled job, created in the owner's own
transaction, that runs the target and reports how it ended to the owner's
*finisher*, a function of ``(ctx, txn, owner, result)`` run in a mutation.
The owner document carries the attempt in flight::

    {attempt: n, job: job id | None, watch: job id | None, watchMs: ms, ...}

``job`` is set exactly while an attempt is in flight; an outcome for any
other attempt number is dropped, so each attempt is finished once.

* A **mutation** attempt is a scheduled mutation (:data:`RUN_MUTATION`)
  that runs the target nested in its own transaction and calls the finisher
  in that same transaction: the target's writes, the outcome and whatever
  the finisher does (``on_complete`` included) commit together, exactly once.
* An **action** attempt is a scheduled action (:data:`RUN_ACTION`), so it
  runs at most once. It runs the target and hands the outcome to the
  :data:`RECORD` mutation, which calls the finisher. A process can die
  between the two (or the action can be cancelled, or its job deleted): its
  job then ends ``failed`` ("Transient error while executing action", once
  the scheduler finds it interrupted) and nothing was recorded. So each
  action attempt also has a *watch*: a scheduled mutation (:data:`WATCH`)
  due ``watchMs`` after the attempt starts, which RECORD cancels. A watch
  that runs finds the attempt still in flight; if its job is still pending or
  running it looks again ``watchMs`` later, otherwise it finishes the
  attempt with the job's outcome (``failed`` with its error, or
  ``canceled``). Either RECORD or the watch finishes an attempt, never both:
  both read the owner and commit only if ``job`` is still that attempt's.

The functions that do this are in :mod:`.functions`; this module holds what
they and the owners share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..scheduler.api import cancel_in, schedule_in
from ..store.jobs import SCHEDULED_FUNCTIONS, TRANSIENT_ACTION_ERROR, JobState
from .base import canceled, failed

if TYPE_CHECKING:
    from ..db import Transaction
    from ..store.base import Document

__all__ = [
    "DEFAULT_WATCH_MS",
    "RECORD",
    "RUN_ACTION",
    "RUN_MUTATION",
    "WATCH",
    "end_attempt",
    "in_flight",
    "job_outcome",
    "start_attempt",
]

RUN_ACTION = "_components/attempts:run_action"
RUN_MUTATION = "_components/attempts:run_mutation"
RECORD = "_components/attempts:record"
WATCH = "_components/attempts:watch"

DEFAULT_WATCH_MS = 10_000.0
"""How long after an action attempt starts (and then how often) its job is
looked at, should the attempt's own report never come (the process died)."""


async def start_attempt(
    txn: Transaction,
    owner: Document,
    *,
    kind: str,
    function: str,
    args: dict[str, Any],
    at: float,
) -> dict[str, Any]:
    """Schedule the next attempt of ``owner`` at ``at``; the owner fields to set."""
    await txn.prepare(SCHEDULED_FUNCTIONS)
    attempt = owner["attempt"] + 1
    ref = {"owner": owner["_id"], "attempt": attempt}
    if kind == "action":
        job = schedule_in(txn, RUN_ACTION, {**ref, "function": function, "args": args}, at)
        watch: str | None = schedule_in(txn, WATCH, ref, at + owner["watchMs"])
    else:
        job = schedule_in(txn, RUN_MUTATION, {**ref, "function": function, "args": args}, at)
        watch = None
    return {"attempt": attempt, "job": job, "watch": watch}


async def end_attempt(txn: Transaction, owner: Document, now: float) -> dict[str, Any]:
    """Stop watching ``owner``'s attempt; the owner fields to set."""
    if owner.get("watch") is not None:
        await cancel_in(txn, owner["watch"], now=now)
    return {"job": None, "watch": None}


def in_flight(owner: Document | None, attempt: int) -> bool:
    """Whether ``owner`` still waits for the outcome of attempt ``attempt``."""
    return owner is not None and owner.get("job") is not None and owner["attempt"] == attempt


def job_outcome(job: Document | None) -> dict[str, Any] | None:
    """The outcome of an attempt whose report never came, from its job (None:
    the job is still pending or running, so the report may yet come)."""
    if job is None:  # deleted by retention: it ended long ago
        return failed(TRANSIENT_ACTION_ERROR)
    state = job["state"]
    kind = state["kind"]
    if kind in (JobState.PENDING, JobState.IN_PROGRESS):
        return None
    if kind == JobState.CANCELED:
        return canceled()
    # ``failed``: the action was interrupted (or its report failed); ``success``
    # without a report: it was lost on the way. Either way, a failed attempt.
    return failed(state.get("error") or TRANSIENT_ACTION_ERROR)
