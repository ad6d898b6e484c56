"""Workpools: named queues of actions and mutations, at most N running at once.

Modelled on Convex's ``@convex-dev/workpool``, whose single main loop per
pool this follows. Work items are documents of ``_workpool_work``::

    {pool, kind: "action" | "mutation", function, args, readyAt,
     state: "pending" | "running" | "canceled" | "done", attempt, job, watch,
     watchMs, retry: {maxAttempts, initialBackoffMs, base, jitter} | None,
     onComplete: path | None, context, result}

Each pool has two more documents: ``{name, running, maxParallelism}`` in
``_workpools``, the *loop*'s, and ``{pool, state: "running" | "idle",
generation}`` in ``_workpool_loops``, whether the loop is going. The loop is
a chain of scheduled mutations (:data:`LOOP`, one *round* each) and the only
writer of ``running``: the items whose attempt is in flight or whose outcome
it has not accounted for yet. Rounds of one pool all read and write it, so
however many processes share the store they are serialized on it, and it
never passes ``maxParallelism``.

* **Enqueue** inserts a ``pending`` item and schedules the pool's *pump*
  (one per pool and due time per transaction) at the item's ``readyAt``;
  the pump kicks the loop. Enqueueing touches no pool document, so it never
  conflicts with work finishing.
* **Finishing** an attempt (the finisher: see :mod:`.attempts`) only
  records its outcome on the item (``state: "done"``, ``result``, and
  ``readyAt``: when) and kicks the loop. It writes nothing but its item (and
  its attempt's watch), and reads the ``_workpool_loops`` document, which
  changes only when the loop stops or starts again: finishers never conflict
  with each other, however many commit at once.
* **Kick**: if the loop is ``idle``, mark it ``running``, bump its
  ``generation`` and schedule a round now; if it is ``running``, nothing.
* A **round** (of the current generation; a round of an older one ends at
  once) accounts for up to :data:`ROUND` recorded outcomes, oldest first:
  frees their slots, and either deletes the item and runs ``on_complete``
  in its transaction, or puts it back to ``pending`` after the retry backoff
  (counted from when the outcome was recorded, and a pump scheduled for
  then). Then it starts ready pending items in the free slots, oldest
  ``readyAt`` first. A round that did something schedules the next one now.
  One that found nothing does too, :data:`LINGER` times in a row while
  attempts are in flight; then it marks the loop ``idle`` and schedules one
  last round, which stops the chain if it finds nothing either. That last
  round sees every outcome recorded before the loop went idle; a finisher
  that commits later read ``idle`` and kicked, or read ``running`` and
  conflicts with the change. Rounds find candidates without adding the
  ranges they looked in to their read set (:func:`_peek`), so outcomes
  recorded meanwhile do not make them conflict; they read each item they
  act on again by id.
* **Cancel**: a pending item is deleted; a running one whose attempt has not
  started is cancelled with its job (the loop frees its slot). An action
  already running keeps its slot until it ends (so the pool never runs more
  than its parallelism); its item is ``canceled`` meanwhile, and its outcome
  is dropped. So is an outcome waiting for its retry. Either way
  ``on_complete`` gets ``{"kind": "canceled"}`` at once.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..context import MutationCtx
from ..db import Transaction
from ..errors import SchedulerError
from ..functions import FunctionKind
from ..queries import IndexRangeBuilder
from ..scheduler.api import MAX_JOBS_PER_TRANSACTION, cancel_in, schedule_in
from ..store.base import IndexDef
from ..store.jobs import SCHEDULED_FUNCTIONS, JobState
from .attempts import DEFAULT_WATCH_MS, end_attempt, start_attempt
from .base import (
    INFRASTRUCTURE_ERRORS,
    ComponentError,
    RetryPolicy,
    canceled,
    check_args,
    check_id,
    from_actions,
    reader_of,
    replace,
    resolve_path,
    run_on_complete,
    start_time,
    watch_interval,
    writer_of,
)

if TYPE_CHECKING:
    from ..context import ActionCtx
    from ..store.base import Document

__all__ = [
    "BY_NAME",
    "BY_POOL",
    "BY_STATE",
    "CANCEL_REST",
    "LOOP",
    "LINGER",
    "LOOPS",
    "POOLS",
    "PUMP",
    "ROUND",
    "WORK",
    "Workpool",
    "cancel_pool",
    "finish_work",
    "pump",
    "run_round",
]

logger = logging.getLogger("convexpy.components")

WORK = "_workpool_work"
POOLS = "_workpools"
LOOPS = "_workpool_loops"
BY_STATE = IndexDef(WORK, "by_pool_state", ("pool", "state", "readyAt"))
BY_NAME = IndexDef(POOLS, "by_name", ("name",))
BY_POOL = IndexDef(LOOPS, "by_pool", ("pool",))

PUMP = "_components/workpool:pump"
LOOP = "_components/workpool:loop"
ROUND = 100
"""Most outcomes one round of the loop accounts for (each may run an ``on_complete``)."""
LINGER = 4
"""Rounds in a row that find nothing, with attempts in flight, before the loop
stops: outcomes of short attempts then come while it still runs, sparing
the stop and the kick that starts it again (both write its state, which
every finisher reads)."""
ROUND_RETRY_MS = 1000.0
"""How long after a round that failed (a bug) the loop tries again."""
CANCEL_REST = "_components/workpool:cancel_rest"
CANCEL_BATCH = 100
"""Most items one transaction of ``cancel_all`` cancels (each may run an ``on_complete``)."""

_pumps: weakref.WeakKeyDictionary[Transaction, dict[tuple[str, float], str]] = (
    weakref.WeakKeyDictionary()
)
"""The pump job each open transaction scheduled, by (pool, time): one is
enough for all the items a transaction enqueues for the same time, as long
as it was not rolled back (to a savepoint) since."""
_loop_ids: weakref.WeakKeyDictionary[Transaction, dict[str, str]] = weakref.WeakKeyDictionary()
"""The ``_workpool_loops`` document of each pool an open transaction looked
up (a batch of finishers looks it up once)."""


class Workpool:
    """A named pool of work: at most ``max_parallelism`` items run at once.

    >>> pool = Workpool("emails", max_parallelism=5, retry_action_by_default=True)
    >>> work_id = await pool.enqueue_action(ctx, internal.emails.send, {"to": to},
    ...                                     on_complete=internal.emails.sent,
    ...                                     context={"userId": user_id})

    Actions are retried when ``retry`` (per enqueue) or
    ``retry_action_by_default`` says so, with ``default_retry_behavior``
    (Convex's ``{"maxAttempts": 5, "initialBackoffMs": 250, "base": 2}`` by
    default, or a :class:`~convexpy.components.RetryPolicy`). Mutations run
    exactly once and are retried only when ``retry`` asks for it.
    ``on_complete`` (a mutation) gets ``{"workId", "context", "result"}``
    exactly once, ``result`` being ``{"kind": "success", "returnValue"}``,
    ``{"kind": "failed", "error"}`` or ``{"kind": "canceled"}``.
    """

    def __init__(
        self,
        name: str,
        *,
        max_parallelism: int = 10,
        retry_action_by_default: bool = False,
        default_retry_behavior: RetryPolicy | dict[str, Any] | None = None,
        watch_interval_ms: float = DEFAULT_WATCH_MS,
    ) -> None:
        if not isinstance(name, str) or not name or not all(" " <= c <= "~" for c in name):
            raise ComponentError(f"a workpool name is non-empty printable ASCII, got {name!r}")
        if (
            isinstance(max_parallelism, bool)
            or not isinstance(max_parallelism, int)
            or max_parallelism < 1
        ):
            raise ComponentError(
                f"Workpool {name!r}: max_parallelism must be an integer >= 1, "
                f"got {max_parallelism!r}"
            )
        self.name = name
        self.max_parallelism = max_parallelism
        self.retry_action_by_default = bool(retry_action_by_default)
        self.default_retry_behavior = RetryPolicy.of(
            RetryPolicy() if default_retry_behavior is None else default_retry_behavior,
            f"Workpool {name!r}: default_retry_behavior",
        )
        self.watch_interval_ms = watch_interval(watch_interval_ms)

    def config(self) -> dict[str, Any]:
        """What :meth:`from_config` needs to make this pool's handle again (a Convex value)."""
        return {
            "name": self.name,
            "maxParallelism": self.max_parallelism,
            "retryActionByDefault": self.retry_action_by_default,
            "defaultRetryBehavior": self.default_retry_behavior.to_doc(),
            "watchMs": self.watch_interval_ms,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Workpool:
        return cls(
            config["name"],
            max_parallelism=config["maxParallelism"],
            retry_action_by_default=config["retryActionByDefault"],
            default_retry_behavior=config["defaultRetryBehavior"],
            watch_interval_ms=config["watchMs"],
        )

    def __repr__(self) -> str:
        return f"<Workpool {self.name!r} max_parallelism={self.max_parallelism}>"

    @from_actions(writes=True)
    async def enqueue_action(
        self,
        ctx: MutationCtx | ActionCtx,
        action: object,
        args: dict[str, Any] | None = None,
        *,
        run_after: float | None = None,
        run_at: float | None = None,
        on_complete: object = None,
        context: Any = None,
        retry: bool | RetryPolicy | dict[str, Any] | None = None,
    ) -> str:
        """Queue ``action(args)`` (ready now, after ``run_after`` ms or at
        ``run_at``); its work id. ``retry``: True (the pool's default
        behavior), False, or a behavior; None follows ``retry_action_by_default``."""
        if retry is None:
            retry = self.retry_action_by_default
        return await self._enqueue(
            ctx, FunctionKind.ACTION, action, args, run_after, run_at, on_complete, context, retry
        )

    @from_actions(writes=True)
    async def enqueue_mutation(
        self,
        ctx: MutationCtx | ActionCtx,
        mutation: object,
        args: dict[str, Any] | None = None,
        *,
        run_after: float | None = None,
        run_at: float | None = None,
        on_complete: object = None,
        context: Any = None,
        retry: bool | RetryPolicy | dict[str, Any] | None = None,
    ) -> str:
        """Queue ``mutation(args)``; like :meth:`enqueue_action`, but not
        retried unless ``retry`` asks (a mutation that raised usually raises again)."""
        return await self._enqueue(
            ctx,
            FunctionKind.MUTATION,
            mutation,
            args,
            run_after,
            run_at,
            on_complete,
            context,
            bool(retry) if retry is None or isinstance(retry, bool) else retry,
        )

    async def _enqueue(
        self,
        ctx: MutationCtx | ActionCtx,
        kind: FunctionKind,
        function: object,
        args: dict[str, Any] | None,
        run_after: float | None,
        run_at: float | None,
        on_complete: object,
        context: Any,
        retry: bool | RetryPolicy | dict[str, Any],
    ) -> str:
        what = f"Workpool {self.name!r}: enqueue_{kind}"
        txn, runtime = writer_of(ctx, what)
        assert isinstance(ctx, MutationCtx)
        path = resolve_path(runtime, function, {kind}, what)
        on_complete_path = None
        if on_complete is not None:
            on_complete_path = resolve_path(
                runtime, on_complete, {FunctionKind.MUTATION}, f"{what}: on_complete"
            )
        checked = check_args(args, what)
        checked_context = check_args({"context": context}, f"{what}: context")["context"]
        if retry is True:
            policy: RetryPolicy | None = self.default_retry_behavior
        elif retry is False:
            policy = None
        else:
            policy = RetryPolicy.of(retry, f"{what}: retry")
        ready = start_time(ctx.now(), run_after, run_at, what)
        work_id = await txn.insert(
            WORK,
            {
                "pool": self.name,
                "kind": kind.value,
                "function": path,
                "args": checked,
                "readyAt": ready,
                "state": "pending",
                "attempt": 0,
                "job": None,
                "watch": None,
                "watchMs": self.watch_interval_ms,
                "retry": None if policy is None else policy.to_doc(),
                "onComplete": on_complete_path,
                "context": checked_context,
                "result": None,
            },
        )
        await _schedule_pump(txn, self.name, self.max_parallelism, ready)
        return work_id

    @from_actions(writes=False)
    async def status(self, ctx: object, work_id: str) -> dict[str, Any]:
        """``{"state": "pending" | "running", "previousAttempts": n}`` or
        ``{"state": "finished"}`` (finished work is deleted: an id no longer
        found is finished; so is work whose last outcome is recorded)."""
        txn = reader_of(ctx, f"Workpool {self.name!r}: status")
        item = await self._item(txn, work_id, "status")
        if item is None or item["state"] == "canceled":
            return {"state": "finished"}
        if item["state"] == "running":
            return {"state": "running", "previousAttempts": item["attempt"] - 1}
        if item["state"] == "done" and not _retried(item):
            return {"state": "finished"}
        return {"state": "pending", "previousAttempts": item["attempt"]}

    @from_actions(writes=True)
    async def cancel(self, ctx: MutationCtx | ActionCtx, work_id: str) -> bool:
        """Cancel one item (see the module docstring); False if it had finished."""
        txn, _ = writer_of(ctx, f"Workpool {self.name!r}: cancel")
        assert isinstance(ctx, MutationCtx)  # writer_of refused the others
        item = await self._item(txn, work_id, "cancel")
        return item is not None and await _cancel(ctx, txn, item)

    @from_actions(writes=True)
    async def cancel_all(self, ctx: MutationCtx | ActionCtx) -> int:
        """Cancel every pending and running item of the pool: up to
        :data:`CANCEL_BATCH` in this transaction, the rest in scheduled
        mutations right after it commits. How many this transaction cancelled."""
        txn, _ = writer_of(ctx, f"Workpool {self.name!r}: cancel_all")
        assert isinstance(ctx, MutationCtx)
        return await cancel_pool(ctx, txn, self.name)

    async def _item(self, txn: Transaction, work_id: str, verb: str) -> Document | None:
        check_id(work_id, WORK, f"Workpool {self.name!r}: {verb}")
        item = await txn.get(work_id)
        if item is not None and item["pool"] != self.name:
            raise ComponentError(
                f"Workpool {self.name!r}: {verb}: work {work_id!r} belongs to the pool "
                f"{item['pool']!r}, not this one"
            )
        return item


# -- the pool's side: the loop, kicks, finishing and cancelling work -----------------------


async def _schedule_pump(txn: Transaction, pool: str, max_parallelism: int, at: float) -> None:
    scheduled = _pumps.setdefault(txn, {})
    job = scheduled.get((pool, at))
    if job is not None:
        write = txn.writes.get(job)
        if write is not None and write.new is not None:
            return  # still part of the transaction
    await txn.prepare(SCHEDULED_FUNCTIONS)
    args = {"pool": pool, "maxParallelism": max_parallelism}
    scheduled[(pool, at)] = schedule_in(txn, PUMP, args, at)


async def _schedule_round(
    txn: Transaction, pool: str, generation: int, at: float, quiet: int = 0
) -> None:
    await txn.prepare(SCHEDULED_FUNCTIONS)
    schedule_in(txn, LOOP, {"pool": pool, "generation": generation, "quiet": quiet}, at)


_T = TypeVar("_T")


async def _peek(txn: Transaction, read: Callable[[], Awaitable[_T]]) -> _T:
    """``read()`` (index queries) in ``txn``, leaving the ranges it scanned
    out of ``txn``'s read set.

    Only for finding candidates that the caller reads again by id before
    acting on them: the ids join the read set then, so the transaction
    still commits only if what it acted on is unchanged. What it did not
    see was written after its snapshot, and whoever wrote it kicked the
    loop (see the module docstring). Without this, every outcome a
    finisher records while a round runs would make the round conflict."""
    ranges = txn.reads.ranges
    mark = len(ranges)
    try:
        return await read()
    finally:
        del ranges[mark:]


async def _scan(
    txn: Transaction, index: IndexDef, values: tuple[object, ...], limit: int, upto: object = None
) -> list[Document]:
    """The first ``limit`` documents of ``index`` whose leading fields are
    ``values`` (and the next one ``<= upto``, if given), in index order: the
    documents as stored (not copies, unlike a ``Query``'s), not to be mutated."""
    bounds = IndexRangeBuilder(index)
    for field, value in zip(index.fields, values, strict=False):
        bounds.eq(field, value)
    if upto is not None:
        bounds.lte(index.fields[len(values)], upto)
    rows = await txn.scan(index, bounds.key_range(), "asc", limit)
    return [doc for _, doc in rows]


def _in_state(
    txn: Transaction, pool: str, state: str, limit: int, *, by: float | None = None
) -> Awaitable[list[Document]]:
    """The first ``limit`` items of ``pool`` in ``state`` (and ``readyAt <= by``), oldest first."""
    return _scan(txn, BY_STATE, (pool, state), limit, by)


async def _by_name(txn: Transaction, index: IndexDef, name: str) -> Document | None:
    """The document of ``index``'s table named ``name`` (the index's one field)."""
    found = await _scan(txn, index, (name,), 1)
    # Read again by id, so that the document joins the read set even when
    # the range read is left out of it (see _peek).
    return await txn.get(found[0]["_id"]) if found else None


async def _pool(txn: Transaction, name: str, max_parallelism: int | None = None) -> Document:
    """The pool's ``_workpools`` document (made on first use), with
    ``maxParallelism`` updated to ``max_parallelism`` if given."""
    found = await _by_name(txn, BY_NAME, name)
    if found is None:
        doc_id = await txn.insert(
            POOLS, {"name": name, "running": 0, "maxParallelism": max_parallelism or 1}
        )
        found = await txn.get(doc_id)
        assert found is not None
    elif max_parallelism is not None and found["maxParallelism"] != max_parallelism:
        new = {**found, "maxParallelism": max_parallelism}
        txn.put(POOLS, found, new)
        found = new
    return found


async def _loop_state(txn: Transaction, pool: str) -> Document | None:
    """The pool's ``_workpool_loops`` document, read by id (None: never kicked)."""
    known = _loop_ids.setdefault(txn, {})
    doc_id = known.get(pool)
    doc = None if doc_id is None else await txn.get(doc_id)
    if doc is None:
        doc = await _by_name(txn, BY_POOL, pool)
        if doc is not None:
            known[pool] = doc["_id"]
    return doc


async def _kick(txn: Transaction, pool: str, now: float) -> None:
    """Make sure a round of the pool's loop runs after this transaction."""
    state = await _loop_state(txn, pool)
    if state is not None and state["state"] == "running":
        return  # a round is due; if the loop stops before it sees us, we conflict
    if state is None:
        generation = 1
        await txn.insert(LOOPS, {"pool": pool, "state": "running", "generation": generation})
    else:
        generation = state["generation"] + 1
        txn.put(LOOPS, state, {**state, "state": "running", "generation": generation})
    await _schedule_round(txn, pool, generation, now)


async def pump(txn: Transaction, name: str, max_parallelism: int, now: float) -> None:
    """The pump job: bring the pool's ``maxParallelism`` to the enqueuer's and kick the loop."""
    found = await _peek(txn, lambda: _by_name(txn, BY_NAME, name))
    if found is None or found["maxParallelism"] != max_parallelism:
        await _pool(txn, name, max_parallelism)
    await _kick(txn, name, now)


async def run_round(
    ctx: MutationCtx, txn: Transaction, name: str, generation: int, quiet: int
) -> None:
    """One round of the pool's loop (see the module docstring). If it fails
    (a bug: the store's errors are raised, to try the round again), what it
    did is rolled back and the loop tries again :data:`ROUND_RETRY_MS` later:
    the chain never ends while the loop is marked ``running``."""
    mark = txn.savepoint()
    try:
        await _round(ctx, txn, name, generation, quiet)
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception:
        txn.rollback_to(mark)
        logger.exception("a round of workpool %r failed; trying again", name)
        await _schedule_round(txn, name, generation, ctx.now() + ROUND_RETRY_MS, quiet)


async def _round(
    ctx: MutationCtx, txn: Transaction, name: str, generation: int, quiet: int
) -> None:
    now = ctx.now()
    state = await _loop_state(txn, name)
    if state is None or state["generation"] != generation:
        return  # the loop stopped, and a kick started it again since
    pool = await _pool(txn, name)
    running = pool["running"]
    outcomes = await _peek(txn, lambda: _in_state(txn, name, "done", ROUND))
    accounted = 0
    for seen in outcomes:
        item = await txn.get(seen["_id"])
        if item is None or item["state"] != "done":
            continue
        accounted += 1
        await _account(ctx, txn, pool, item, now)
    running -= accounted
    started = 0
    free = min(pool["maxParallelism"] - running, ROUND)
    full = False  # this transaction may schedule no more jobs: the next round starts the rest
    if free > 0:
        for seen in await _peek(txn, lambda: _in_state(txn, name, "pending", free, by=now)):
            item = await txn.get(seen["_id"])
            if item is None or item["state"] != "pending" or item["readyAt"] > now:
                continue
            mark = txn.savepoint()
            try:
                if txn.jobs_scheduled + 3 > MAX_JOBS_PER_TRANSACTION:  # one left for the next round
                    raise SchedulerError("no room for an attempt and its watch")
                fields = await start_attempt(
                    txn,
                    item,
                    kind=item["kind"],
                    function=item["function"],
                    args=item["args"],
                    at=now,
                )
            except SchedulerError:  # Convex's per-transaction limits (a batch shares them)
                txn.rollback_to(mark)
                full = True
                break
            txn.put(WORK, item, {**item, **fields, "state": "running"})
            started += 1
    running += started
    if running != pool["running"]:
        await replace(txn, POOLS, pool["_id"], {**pool, "running": running})
    busy = accounted > 0 or started > 0 or full or len(outcomes) == ROUND
    if not busy and state["state"] == "idle":
        return  # the last round found nothing either: the loop stops
    quiet = 0 if busy else quiet + 1
    if not busy and (running == 0 or quiet > LINGER):
        # One more round, which sees every outcome recorded before this commit.
        txn.put(LOOPS, state, {**state, "state": "idle"})
    elif state["state"] != "running":
        txn.put(LOOPS, state, {**state, "state": "running"})
    await _schedule_round(txn, name, generation, now, quiet)


def _retried(item: Document) -> bool:
    """Whether a ``done`` item's outcome is a failure to try again."""
    result, retry = item["result"], item["retry"]
    return (
        result is not None
        and result["kind"] == "failed"
        and retry is not None
        and item["attempt"] < retry["maxAttempts"]
    )


async def _account(
    ctx: MutationCtx, txn: Transaction, pool: Document, item: Document, now: float
) -> None:
    """Account for a recorded outcome (its slot is freed by the caller)."""
    if item["result"] is None:  # cancelled: on_complete ran then
        txn.put(WORK, item, None)
    elif _retried(item):
        policy = RetryPolicy.from_doc(item["retry"])
        ready = item["readyAt"] + policy.delay_ms(item["attempt"], random.random())
        txn.put(WORK, item, {**item, "state": "pending", "readyAt": ready, "result": None})
        if ready > now:
            await _schedule_pump(txn, item["pool"], pool["maxParallelism"], ready)
    else:
        txn.put(WORK, item, None)
        await _completed(ctx, item, item["result"])


async def finish_work(
    ctx: MutationCtx, txn: Transaction, item: Document, result: dict[str, Any]
) -> None:
    """The finisher of an item's attempt: record its outcome, kick the loop."""
    now = ctx.now()
    fields = await end_attempt(txn, item, now)
    outcome = None if item["state"] == "canceled" else result  # on_complete ran at the cancel
    done = {**item, **fields, "state": "done", "readyAt": now, "result": outcome}
    await replace(txn, WORK, item["_id"], done)
    await _kick(txn, item["pool"], now)


async def _completed(ctx: MutationCtx, item: Document, result: dict[str, Any]) -> None:
    if item["onComplete"] is not None:
        args = {"workId": item["_id"], "context": item["context"], "result": result}
        await run_on_complete(ctx, item["onComplete"], args)


async def _cancel(ctx: MutationCtx, txn: Transaction, item: Document) -> bool:
    """Cancel ``item`` (see the module docstring); False if it had finished."""
    now = ctx.now()
    state = item["state"]
    if state == "canceled" or (state == "done" and not _retried(item)):
        return False
    if state == "done":  # waiting for its retry: the loop only frees its slot
        txn.put(WORK, item, {**item, "result": None})
    elif state == "running":
        job = await txn.get(item["job"])
        if job is not None and job["state"]["kind"] == JobState.IN_PROGRESS:
            # A running action holds its slot until it ends (the watch or its
            # report finishes it); only its outcome is dropped.
            txn.put(WORK, item, {**item, "state": "canceled"})
        else:
            await cancel_in(txn, item["job"], now=now)
            fields = await end_attempt(txn, item, now)
            done = {**item, **fields, "state": "done", "readyAt": now, "result": None}
            txn.put(WORK, item, done)
            await _kick(txn, item["pool"], now)
    else:
        txn.put(WORK, item, None)
    await _completed(ctx, item, canceled())
    return True


async def cancel_pool(ctx: MutationCtx, txn: Transaction, name: str) -> int:
    """Cancel up to :data:`CANCEL_BATCH` items of pool ``name``; schedule the
    rest to be cancelled right after this transaction."""
    items: list[Document] = []
    for state in ("running", "pending", "done"):
        if len(items) <= CANCEL_BATCH:
            items += await _in_state(txn, name, state, CANCEL_BATCH + 1 - len(items))
    cancelled = 0
    for item in items[:CANCEL_BATCH]:
        current = await txn.get(item["_id"])
        if current is not None and await _cancel(ctx, txn, current):
            cancelled += 1
    if len(items) > CANCEL_BATCH:
        await txn.prepare(SCHEDULED_FUNCTIONS)
        schedule_in(txn, CANCEL_REST, {"pool": name}, ctx.now())
    return cancelled
