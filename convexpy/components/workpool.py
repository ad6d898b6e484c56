"""Workpools: named queues of actions and mutations, at most N running at once.

Modelled on Convex's ``@convex-dev/workpool``. Work items are documents of
``_workpool_work``::

    {pool, kind: "action" | "mutation", function, args, readyAt,
     state: "pending" | "running" | "canceled", attempt, job, watch, watchMs,
     retry: {maxAttempts, initialBackoffMs, base, jitter} | None,
     onComplete: path | None, context}

and each pool has one document in ``_workpools``: ``{name, running,
maxParallelism}``. ``running`` counts the items whose attempt is in flight;
it only changes in the transactions that start and finish attempts, which
all read and write it, so however many processes share the store they are
serialized on it and it never passes ``maxParallelism``.

* **Enqueue** inserts a ``pending`` item and schedules the pool's *pump*
  (one per pool and due time per transaction) at the item's ``readyAt``. It
  does not touch the pool document, so enqueueing never conflicts with work
  finishing.
* The **pump** (a scheduled mutation) starts pending items that are ready,
  oldest ``readyAt`` first, while there are free slots.
* **Finishing** an attempt (see :mod:`.attempts`) frees its slot, then
  either puts the item back to ``pending`` after the retry backoff (a pump
  is scheduled for then) or deletes it and runs ``on_complete`` in the same
  transaction; then it starts the next ready items.
* **Cancel**: a pending item is deleted; a running one whose attempt has not
  started is cancelled with its job. An action already running keeps its
  slot until it ends (so the pool never runs more than its parallelism);
  its item is ``canceled`` meanwhile, and its outcome is dropped. Either way
  ``on_complete`` gets ``{"kind": "canceled"}`` at once.
"""

from __future__ import annotations

import random
import weakref
from typing import TYPE_CHECKING, Any

from ..context import MutationCtx
from ..db import Transaction
from ..functions import FunctionKind
from ..queries import Query
from ..scheduler.api import cancel_in, schedule_in
from ..store.base import IndexDef
from ..store.jobs import SCHEDULED_FUNCTIONS, JobState
from ..unawaited import CallTracker
from .attempts import DEFAULT_WATCH_MS, end_attempt, start_attempt
from .base import (
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
    "BY_STATE",
    "CANCEL_REST",
    "POOLS",
    "PUMP",
    "WORK",
    "Workpool",
    "cancel_pool",
    "finish_work",
    "pump",
]

WORK = "_workpool_work"
POOLS = "_workpools"
BY_STATE = IndexDef(WORK, "by_pool_state", ("pool", "state", "readyAt"))
BY_NAME = IndexDef(POOLS, "by_name", ("name",))

PUMP = "_components/workpool:pump"
CANCEL_REST = "_components/workpool:cancel_rest"
CANCEL_BATCH = 100
"""Most items one transaction of ``cancel_all`` cancels (each may run an ``on_complete``)."""

_pumps: weakref.WeakKeyDictionary[Transaction, dict[tuple[str, float], str]] = (
    weakref.WeakKeyDictionary()
)
"""The pump job each open transaction scheduled, by (pool, time): one is
enough for all the items a transaction enqueues for the same time, as long
as it was not rolled back (to a savepoint) since."""


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
            },
        )
        await _schedule_pump(txn, self.name, self.max_parallelism, ready)
        return work_id

    @from_actions(writes=False)
    async def status(self, ctx: object, work_id: str) -> dict[str, Any]:
        """``{"state": "pending" | "running", "previousAttempts": n}`` or
        ``{"state": "finished"}`` (finished work is deleted: an id no longer
        found is finished)."""
        txn = reader_of(ctx, f"Workpool {self.name!r}: status")
        item = await self._item(txn, work_id, "status")
        if item is None or item["state"] == "canceled":
            return {"state": "finished"}
        if item["state"] == "running":
            return {"state": "running", "previousAttempts": item["attempt"] - 1}
        return {"state": "pending", "previousAttempts": item["attempt"]}

    @from_actions(writes=True)
    async def cancel(self, ctx: MutationCtx | ActionCtx, work_id: str) -> bool:
        """Cancel one item (see the module docstring); False if it had finished."""
        txn, _ = writer_of(ctx, f"Workpool {self.name!r}: cancel")
        assert isinstance(ctx, MutationCtx)  # writer_of refused the others
        item = await self._item(txn, work_id, "cancel")
        if item is None or item["state"] == "canceled":
            return False
        await _cancel(ctx, txn, item)
        return True

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


# -- the pool's side: starting, finishing and cancelling work -----------------------------


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


async def _pool(txn: Transaction, name: str, max_parallelism: int | None = None) -> Document:
    """The pool's document (made on first use), with ``maxParallelism`` updated
    to the one the latest enqueuer's code gives."""
    found = (
        await Query(txn, POOLS, CallTracker())
        .with_index(BY_NAME.name, lambda r: r.eq("name", name))
        .first()
    )
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


async def pump(txn: Transaction, name: str, max_parallelism: int, now: float) -> None:
    """Start the pool's ready items while it has free slots (the pump job)."""
    await _start_ready(txn, await _pool(txn, name, max_parallelism), now)


async def _start_ready(txn: Transaction, pool: Document, now: float) -> None:
    """Start ready pending items in the free slots of ``pool``; writes ``pool``."""
    free = pool["maxParallelism"] - pool["running"]
    items: list[Document] = []
    if free > 0:
        items = (
            await Query(txn, WORK, CallTracker())
            .with_index(
                BY_STATE.name,
                lambda r: r.eq("pool", pool["name"]).eq("state", "pending").lte("readyAt", now),
            )
            .take(free)
        )
    for item in items:
        started = await start_attempt(
            txn, item, kind=item["kind"], function=item["function"], args=item["args"], at=now
        )
        txn.put(WORK, item, {**item, **started, "state": "running"})
    current = await txn.get(pool["_id"])
    assert current is not None
    if current != pool or items:
        txn.put(POOLS, current, {**pool, "running": pool["running"] + len(items)})


async def finish_work(
    ctx: MutationCtx, txn: Transaction, item: Document, result: dict[str, Any]
) -> None:
    """The finisher of an item's attempt (see the module docstring)."""
    now = ctx.now()
    fields = await end_attempt(txn, item, now)
    pool = await _pool(txn, item["pool"])
    pool = {**pool, "running": max(0, pool["running"] - 1)}
    retry = item["retry"]
    if item["state"] == "canceled":
        await replace(txn, WORK, item["_id"], None)  # on_complete ran at the cancel
    elif (
        result["kind"] == "failed" and retry is not None and item["attempt"] < retry["maxAttempts"]
    ):
        policy = RetryPolicy.from_doc(retry)
        ready = now + policy.delay_ms(item["attempt"], random.random())
        await replace(
            txn, WORK, item["_id"], {**item, **fields, "state": "pending", "readyAt": ready}
        )
        await _schedule_pump(txn, item["pool"], pool["maxParallelism"], ready)
    else:
        await replace(txn, WORK, item["_id"], None)
        await _completed(ctx, item, result)
    await _start_ready(txn, pool, now)


async def _completed(ctx: MutationCtx, item: Document, result: dict[str, Any]) -> None:
    if item["onComplete"] is not None:
        args = {"workId": item["_id"], "context": item["context"], "result": result}
        await run_on_complete(ctx, item["onComplete"], args)


async def _cancel(ctx: MutationCtx, txn: Transaction, item: Document) -> None:
    now = ctx.now()
    if item["state"] == "running":
        job = await txn.get(item["job"])
        if job is not None and job["state"]["kind"] == JobState.IN_PROGRESS:
            # A running action holds its slot until it ends (the watch or its
            # report finishes it); only its outcome is dropped.
            txn.put(WORK, item, {**item, "state": "canceled"})
            await _completed(ctx, item, canceled())
            return
        await cancel_in(txn, item["job"], now=now)
        await end_attempt(txn, item, now)
        pool = await _pool(txn, item["pool"])
        txn.put(WORK, item, None)
        await _completed(ctx, item, canceled())
        await _start_ready(txn, {**pool, "running": pool["running"] - 1}, now)
        return
    txn.put(WORK, item, None)
    await _completed(ctx, item, canceled())


async def cancel_pool(ctx: MutationCtx, txn: Transaction, name: str) -> int:
    """Cancel up to :data:`CANCEL_BATCH` items of pool ``name``; schedule the
    rest to be cancelled right after this transaction."""
    items = await _in_state(txn, name, "running", CANCEL_BATCH + 1)
    items += await _in_state(txn, name, "pending", CANCEL_BATCH + 1 - len(items))
    for item in items[:CANCEL_BATCH]:
        current = await txn.get(item["_id"])
        if current is not None and current["state"] != "canceled":
            await _cancel(ctx, txn, current)
    if len(items) > CANCEL_BATCH:
        await txn.prepare(SCHEDULED_FUNCTIONS)
        schedule_in(txn, CANCEL_REST, {"pool": name}, ctx.now())
    return min(len(items), CANCEL_BATCH)


async def _in_state(txn: Transaction, pool: str, state: str, limit: int) -> list[Document]:
    if limit <= 0:
        return []
    return await (
        Query(txn, WORK, CallTracker())
        .with_index(BY_STATE.name, lambda r: r.eq("pool", pool).eq("state", state))
        .take(limit)
    )
