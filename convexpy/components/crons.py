"""Cron jobs registered at runtime, from mutations and actions.

Modelled on Convex's ``@convex-dev/crons``, with the rules of convexpy's
``crons.py`` runner: one run at a time, missed runs skipped (and recorded
with their count), the last runs kept. A runtime cron is a document of
``_runtime_crons``::

    {name: str | None, spec, function, kind: "mutation" | "action", args,
     nextRun, tick: job id | None, runScheduled, attempt, job, watch,
     watchMs, lastRuns: [{scheduledTime, status, duration?, error?, skipped?}]}

Between runs a *tick* job (a scheduled mutation, :data:`TICK`) waits for
``nextRun``. The tick runs the cron's function: a mutation nested in the
tick's own transaction, which also records the run and plans the next one;
an action as an attempt (see :mod:`.attempts`), whose finisher does that
when it ends. The next run is the first fire time at or after the end of
this one, so runs never overlap and a long run or downtime skips the runs it
missed instead of bursting. Everything is in the store, so runtime crons
survive restarts and reloads untouched, and each run happens once whatever
the number of processes.

Names are shared with ``crons.py``: registering a name that ``crons.py``
uses, or that another runtime cron has, is refused; so is loading a
``crons.py`` that uses a runtime cron's name.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..cron.compile import compile_schedule
from ..cron.jobs import CronJobs
from ..cron.runner import BY_NAME as STATIC_BY_NAME
from ..cron.runner import HISTORY_LENGTH, plan_next
from ..errors import CronSpecError, error_text
from ..functions import FunctionKind
from ..queries import Query
from ..scheduler.api import cancel_in, schedule_in
from ..store.base import IndexDef
from ..store.jobs import SCHEDULED_FUNCTIONS
from ..unawaited import CallTracker
from .attempts import DEFAULT_WATCH_MS, end_attempt, start_attempt
from .base import (
    INFRASTRUCTURE_ERRORS,
    ComponentError,
    check_args,
    check_id,
    from_actions,
    reader_of,
    replace,
    resolve_path,
    watch_interval,
    writer_of,
)

if TYPE_CHECKING:
    from ..context import ActionCtx, MutationCtx
    from ..db import Transaction
    from ..runtime import Runtime
    from ..store.base import Document

__all__ = [
    "BY_NAME",
    "CRONS",
    "TICK",
    "RuntimeCrons",
    "check_static_names",
    "finish_cron_run",
    "tick",
]

logger = logging.getLogger("convexpy.cron")

CRONS = "_runtime_crons"
BY_NAME = IndexDef(CRONS, "by_name", ("name",))
TICK = "_components/crons:tick"


class RuntimeCrons:
    """Register, read and delete cron jobs from mutations and actions (reads from queries too).

    >>> crons = RuntimeCrons()
    >>> cron_id = await crons.register(ctx, "0 9 * * 1-5", internal.reports.send,
    ...                                {"to": team}, name=f"report {team}",
    ...                                timezone="Europe/Paris")
    >>> await crons.delete(ctx, name=f"report {team}")

    ``schedule`` is anything ``crons.py`` accepts, as
    :func:`~convexpy.cron.compile_schedule` reads it: a cron string, or a
    dict tagged with its kind (``{"kind": "interval", "minutes": 5}``,
    ``{"kind": "daily", "hourUTC": 8, "minuteUTC": 0}``). An interval cron
    first runs one period after it is registered (as Convex's crons
    component does); clock schedules at their next matching minute.
    """

    def __init__(self, *, watch_interval_ms: float = DEFAULT_WATCH_MS) -> None:
        self.watch_interval_ms = watch_interval(watch_interval_ms)

    def config(self) -> dict[str, Any]:
        """What :meth:`from_config` needs to make this handle again (a Convex value)."""
        return {"watchMs": self.watch_interval_ms}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RuntimeCrons:
        return cls(watch_interval_ms=config["watchMs"])

    @from_actions(writes=True)
    async def register(
        self,
        ctx: MutationCtx | ActionCtx,
        schedule: str | dict[str, Any],
        function: object,
        args: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        timezone: str | None = None,
    ) -> str:
        """Create a cron job running ``function(args)`` on ``schedule``; its id.
        Raises :class:`~convexpy.errors.CronSpecError` for a bad schedule or
        name, or a name already used here or in ``crons.py``."""
        txn, runtime = writer_of(ctx, "RuntimeCrons.register")
        if name is not None:
            _check_name(name)
        compiled = compile_schedule(schedule, job=name, timezone=timezone)
        kinds = {FunctionKind.MUTATION, FunctionKind.ACTION}
        path, fn = runtime.resolve(resolve_path(runtime, function, kinds, "RuntimeCrons.register"))
        checked = check_args(args, "RuntimeCrons.register")
        if name is not None:
            await _refuse_taken(txn, name, runtime.app.crons if runtime.app else None)
        now = ctx.now()
        period = compiled.period_ms
        first = now + period if period is not None else compiled.next_after(now - 1)
        cron_id = await txn.insert(
            CRONS,
            {
                "name": name,
                "spec": compiled.spec,
                "function": path,
                "kind": fn.kind.value,
                "args": checked,
                "nextRun": float(first),
                "tick": None,
                "runScheduled": None,
                "attempt": 0,
                "job": None,
                "watch": None,
                "watchMs": self.watch_interval_ms,
                "lastRuns": [],
            },
        )
        cron = await txn.get(cron_id)
        assert cron is not None
        txn.put(CRONS, cron, {**cron, "tick": await _schedule_tick(txn, cron_id, float(first))})
        return cron_id

    @from_actions(writes=False)
    async def get(
        self, ctx: object, *, name: str | None = None, id: str | None = None
    ) -> dict[str, Any] | None:
        """The cron job with this ``name`` or ``id`` (give one), or None."""
        txn = reader_of(ctx, "RuntimeCrons.get")
        cron = await _find(txn, name, id, "RuntimeCrons.get")
        return None if cron is None else _info(cron)

    @from_actions(writes=False)
    async def list(self, ctx: object) -> list[dict[str, Any]]:
        """Every runtime cron job, oldest first."""
        txn = reader_of(ctx, "RuntimeCrons.list")
        return [_info(cron) for cron in await Query(txn, CRONS, CallTracker()).collect()]

    @from_actions(writes=True)
    async def delete(
        self, ctx: MutationCtx | ActionCtx, *, name: str | None = None, id: str | None = None
    ) -> bool:
        """Delete a cron job by ``name`` or ``id`` (give one): no run starts
        after this mutation commits (one running now finishes, unrecorded).
        False if there was none."""
        txn, _ = writer_of(ctx, "RuntimeCrons.delete")
        cron = await _find(txn, name, id, "RuntimeCrons.delete")
        if cron is None:
            return False
        now = ctx.now()
        if cron["tick"] is not None:
            await cancel_in(txn, cron["tick"], now=now)
        await end_attempt(txn, cron, now)
        txn.put(CRONS, cron, None)
        return True


def _info(cron: Document) -> dict[str, Any]:
    return {
        "id": cron["_id"],
        "name": cron["name"],
        "schedule": cron["spec"],
        "function": cron["function"],
        "args": cron["args"],
        "nextRun": cron["nextRun"],
        "running": cron["job"] is not None,
        "lastRuns": cron["lastRuns"],
    }


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise CronSpecError(
            f"A cron identifier must be a non-empty string, got {name!r}", field="name"
        )
    if not all(" " <= c <= "~" for c in name):
        raise CronSpecError(
            f"Invalid cron identifier {name!r}: use ASCII letters that are not control characters",
            job=name,
            field="name",
        )


async def _named(txn: Transaction, name: str) -> Document | None:
    return (
        await Query(txn, CRONS, CallTracker())
        .with_index(BY_NAME.name, lambda r: r.eq("name", name))
        .first()
    )


async def _refuse_taken(txn: Transaction, name: str, static: CronJobs | None) -> None:
    if (static is not None and name in static) or await Query(
        txn, "_cron_jobs", CallTracker()
    ).with_index(STATIC_BY_NAME.name, lambda r: r.eq("name", name)).first():
        raise CronSpecError(
            f'Cron identifier registered twice: "{name}" is a cron job of crons.py',
            job=name,
            field="name",
        )
    existing = await _named(txn, name)
    if existing is not None:
        raise CronSpecError(
            f'Cron identifier registered twice: a runtime cron job "{name}" exists '
            f"({existing['_id']}); delete it first",
            job=name,
            field="name",
        )


async def _find(
    txn: Transaction, name: str | None, cron_id: str | None, what: str
) -> Document | None:
    if (name is None) == (cron_id is None):
        raise ComponentError(f"{what}: give name= or id=, exactly one")
    if cron_id is not None:
        return await txn.get(check_id(cron_id, CRONS, what))
    return await _named(txn, str(name))


async def check_static_names(runtime: Runtime, crons: CronJobs | None) -> None:
    """Refuse ``crons.py`` jobs named like a runtime cron (at start and reload)."""
    if not crons:
        return
    txn = runtime.transaction(writable=False)
    try:
        for job in crons:
            cron = await _named(txn, job.name)
            if cron is not None:
                raise CronSpecError(
                    f'Cron identifier registered twice: "{job.name}" in crons.py is also a '
                    f"runtime cron job ({cron['_id']}); delete that one or rename this one",
                    job=job.name,
                    field="name",
                )
    finally:
        txn.release()


# -- runs -------------------------------------------------------------------------------


async def _schedule_tick(txn: Transaction, cron_id: str, at: float) -> str:
    await txn.prepare(SCHEDULED_FUNCTIONS)
    return schedule_in(txn, TICK, {"cron": cron_id, "at": at}, at)


async def tick(ctx: MutationCtx, txn: Transaction, cron_id: str, at: float) -> None:
    """Start the run due at ``at`` (the tick job): a mutation runs here and now."""
    cron = await txn.get(cron_id)
    if cron is None or cron["nextRun"] != at or cron["tick"] is None:
        return  # deleted meanwhile
    cron = {**cron, "tick": None, "runScheduled": at}
    if cron["kind"] == FunctionKind.ACTION:
        started = await start_attempt(
            txn, cron, kind="action", function=cron["function"], args=cron["args"], at=ctx.now()
        )
        await replace(txn, CRONS, cron_id, {**cron, **started})
        return
    try:
        await ctx.run_mutation(cron["function"], cron["args"])
        result: dict[str, Any] = {"kind": "success"}
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as exc:
        result = {"kind": "failed", "error": error_text(exc)}
    current = await txn.get(cron_id)
    if current is not None:  # the mutation may not delete its own cron, but it can
        await finish_cron_run(ctx, txn, {**current, "tick": None, "runScheduled": at}, result)


async def finish_cron_run(
    ctx: MutationCtx, txn: Transaction, cron: Document, result: dict[str, Any]
) -> None:
    """Record a finished run and plan the next (a run's finisher)."""
    now = ctx.now()
    fields = await end_attempt(txn, cron, now)
    scheduled = cron["runScheduled"]
    run: dict[str, Any] = {
        "scheduledTime": scheduled,
        "status": "success" if result["kind"] == "success" else "failed",
        "duration": max(0.0, now - scheduled),
    }
    if result["kind"] == "failed":
        run["error"] = result["error"]
    elif result["kind"] == "canceled":
        run["error"] = "canceled"
    history = [*cron["lastRuns"], run]
    next_run, skipped = plan_next(compile_schedule(cron["spec"]), scheduled, now)
    if skipped:
        history.append({"scheduledTime": scheduled, "status": "skipped", "skipped": skipped})
        logger.warning(
            "Skipping %d run(s) of runtime cron %s because multiple scheduled runs are in the past",
            skipped,
            cron["name"] or cron["_id"],
        )
    await replace(
        txn,
        CRONS,
        cron["_id"],
        {
            **cron,
            **fields,
            "nextRun": float(next_run),
            "tick": await _schedule_tick(txn, cron["_id"], float(next_run)),
            "lastRuns": history[-HISTORY_LENGTH:],
        },
    )
