"""The building blocks' own functions, registered in every app under ``_components/``.

App modules whose names start with ``_`` are never loaded, so these paths
cannot clash with an app's. They are internal: reachable from the scheduler,
not from clients. Their jobs show in ``_scheduled_functions`` like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import OptimisticConcurrencyError, StoreUnavailableError, error_text
from ..functions import ConvexFunction, internal_action, internal_mutation, internal_query
from ..scheduler.api import schedule_in
from ..store.base import conflict_pause_s
from ..store.jobs import SCHEDULED_FUNCTIONS
from ..validators import Validator, v
from .attempts import RECORD, RUN_ACTION, RUN_MUTATION, WATCH, in_flight, job_outcome
from .base import (
    FROM_ACTION_READ,
    FROM_ACTION_WRITE,
    INFRASTRUCTURE_ERRORS,
    ComponentError,
    failed,
    replace,
    success,
    writer_of,
)
from .crons import CRONS, TICK, RuntimeCrons, finish_cron_run, tick
from .retrier import EXPIRE, RUNS, ActionRetrier, expire_run, finish_run
from .workpool import (
    CANCEL_REST,
    LOOP,
    PUMP,
    WORK,
    Workpool,
    cancel_pool,
    finish_work,
    pump,
    run_round,
)

if TYPE_CHECKING:
    from ..context import ActionCtx, MutationCtx, QueryCtx
    from ..db import Transaction
    from ..store.base import Document

__all__ = ["BUILTIN_FUNCTIONS"]

Finisher = Callable[["MutationCtx", "Transaction", "Document", dict[str, Any]], Awaitable[None]]

FINISHERS: dict[str, Finisher] = {RUNS: finish_run, WORK: finish_work, CRONS: finish_cron_run}
"""Who finishes an attempt, by the table of its owner."""

REPORT_TRIES = 20
"""How often an action attempt tries to report its outcome before giving up
(its job then fails, and the watch reports a failed attempt)."""

_ATTEMPT: dict[str, Validator] = {"owner": v.string(), "attempt": v.int64()}


@internal_action(args={**_ATTEMPT, "function": v.string(), "args": v.any()})
async def run_action(
    ctx: ActionCtx, owner: str, attempt: int, function: str, args: dict[str, Any]
) -> None:
    """An action attempt: run the target, then report how it ended."""
    try:
        result = success(await ctx.run_action(function, args))
    except Exception as exc:
        result = failed(error_text(exc))
    report = {"owner": owner, "attempt": attempt, "result": result}
    for tries in range(1, REPORT_TRIES + 1):
        try:
            await ctx.run_mutation(RECORD, report)
            return
        except (OptimisticConcurrencyError, StoreUnavailableError):
            if tries == REPORT_TRIES:
                raise
            await asyncio.sleep(conflict_pause_s(tries))


@internal_mutation(args={**_ATTEMPT, "result": v.any()})
async def record(ctx: MutationCtx, owner: str, attempt: int, result: dict[str, Any]) -> None:
    """An action attempt's outcome, given to its owner's finisher (once)."""
    txn, _ = writer_of(ctx, RECORD)
    doc = await txn.get(owner)
    if doc is not None and in_flight(doc, attempt):
        await FINISHERS[_table(txn, owner)](ctx, txn, doc, result)


@internal_mutation(args={**_ATTEMPT, "function": v.string(), "args": v.any()})
async def run_mutation(
    ctx: MutationCtx, owner: str, attempt: int, function: str, args: dict[str, Any]
) -> None:
    """A mutation attempt: the target and its outcome in one transaction."""
    txn, _ = writer_of(ctx, RUN_MUTATION)
    if not in_flight(await txn.get(owner), attempt):
        return
    try:
        result = success(await ctx.run_mutation(function, args))
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as exc:
        result = failed(error_text(exc))
    doc = await txn.get(owner)
    if doc is not None and in_flight(doc, attempt):
        await FINISHERS[_table(txn, owner)](ctx, txn, doc, result)


@internal_mutation(args=_ATTEMPT)
async def watch(ctx: MutationCtx, owner: str, attempt: int) -> None:
    """Finish an action attempt whose report never came, from its job's state;
    or look again later if the job is still pending or running."""
    txn, _ = writer_of(ctx, WATCH)
    doc = await txn.get(owner)
    if doc is None or not in_flight(doc, attempt):
        return
    table = _table(txn, owner)
    outcome = job_outcome(await txn.get(doc["job"]))
    if outcome is None:
        await txn.prepare(SCHEDULED_FUNCTIONS)
        again = {"owner": owner, "attempt": attempt}
        next_watch = schedule_in(txn, WATCH, again, ctx.now() + doc["watchMs"])
        await replace(txn, table, owner, {**doc, "watch": next_watch})
        return
    # This watch is the job running now: nothing to cancel.
    await FINISHERS[table](ctx, txn, {**doc, "watch": None}, outcome)


@internal_mutation(args={"pool": v.string(), "maxParallelism": v.int64()})
async def pump_pool(ctx: MutationCtx, pool: str, maxParallelism: int) -> None:
    """Kick a pool's loop: work is ready."""
    txn, _ = writer_of(ctx, PUMP)
    await pump(txn, pool, maxParallelism, ctx.now())


@internal_mutation(args={"pool": v.string(), "generation": v.int64(), "quiet": v.int64()})
async def loop_round(ctx: MutationCtx, pool: str, generation: int, quiet: int) -> None:
    """One round of a pool's loop: account for outcomes, start ready work."""
    txn, _ = writer_of(ctx, LOOP)
    await run_round(ctx, txn, pool, generation, quiet)


@internal_mutation(args={"pool": v.string()})
async def cancel_rest(ctx: MutationCtx, pool: str) -> None:
    """Go on cancelling a pool's work (``Workpool.cancel_all``)."""
    txn, _ = writer_of(ctx, CANCEL_REST)
    await cancel_pool(ctx, txn, pool)


@internal_mutation(args={"run": v.string()})
async def expire(ctx: MutationCtx, run: str) -> None:
    """Delete a completed retrier run once its time to be kept is over."""
    txn, _ = writer_of(ctx, EXPIRE)
    await expire_run(txn, run)


@internal_mutation(args={"cron": v.string(), "at": v.number()})
async def tick_cron(ctx: MutationCtx, cron: str, at: float) -> None:
    """Start a runtime cron's run due at ``at``."""
    txn, _ = writer_of(ctx, TICK)
    await tick(ctx, txn, cron, at)


BLOCKS: dict[str, type[ActionRetrier | Workpool | RuntimeCrons]] = {
    "ActionRetrier": ActionRetrier,
    "Workpool": Workpool,
    "RuntimeCrons": RuntimeCrons,
}
WRITES = {
    "ActionRetrier": {"run", "cancel", "cleanup"},
    "Workpool": {"enqueue_action", "enqueue_mutation", "cancel", "cancel_all"},
    "RuntimeCrons": {"register", "delete"},
}
READS = {"ActionRetrier": {"status"}, "Workpool": {"status"}, "RuntimeCrons": {"get", "list"}}
"""The methods an action may call through :data:`FROM_ACTION_WRITE` and
:data:`FROM_ACTION_READ` (see :func:`.base.from_actions`)."""

_CALL: dict[str, Validator] = {
    "block": v.string(),
    "config": v.any(),
    "method": v.string(),
    "args": v.array(v.any()),
    "kwargs": v.any(),
}


def _called_from_actions(allowed: dict[str, set[str]]) -> Callable[..., Awaitable[Any]]:
    """The handler that runs the methods in ``allowed`` for an action."""

    async def call(
        ctx: MutationCtx | QueryCtx,
        block: str,
        config: dict[str, Any],
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        if method not in allowed.get(block, ()):
            raise ComponentError(f"{block}.{method} cannot be called this way")
        handle = BLOCKS[block].from_config(config)
        return await getattr(handle, method)(ctx, *args, **kwargs)

    return call


write_for_action = internal_mutation(args=_CALL)(_called_from_actions(WRITES))
"""A building block's method called from an action, in a mutation of its own."""
read_for_action = internal_query(args=_CALL)(_called_from_actions(READS))
"""A building block's reading method called from an action, in a query of its own."""


def _table(txn: Transaction, doc_id: str) -> str:
    table = txn.table_names.of_id(doc_id)
    if table not in FINISHERS:
        raise ValueError(f"{doc_id!r} is not a retrier run, a work item or a runtime cron")
    return table


BUILTIN_FUNCTIONS: dict[str, ConvexFunction] = {
    RUN_ACTION: run_action,
    RUN_MUTATION: run_mutation,
    RECORD: record,
    WATCH: watch,
    PUMP: pump_pool,
    LOOP: loop_round,
    CANCEL_REST: cancel_rest,
    TICK: tick_cron,
    EXPIRE: expire,
    FROM_ACTION_WRITE: write_for_action,
    FROM_ACTION_READ: read_for_action,
}
