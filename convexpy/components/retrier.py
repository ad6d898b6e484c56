"""The action retrier: run an action until it succeeds, with exponential backoff.

Modelled on Convex's ``@convex-dev/action-retrier``. A run is a document of
``_retrier_runs``::

    {function, args, policy: {maxAttempts, initialBackoffMs, base, jitter},
     onComplete: path | None, watchMs, state: "inProgress" | "completed",
     attempt, job, watch, lastError?, result?, completedAt?}

Each attempt is an ordinary scheduled action (see :mod:`.attempts`), so it
runs at most once; a failed attempt (an exception, or an interruption that
left its job "Transient error while executing action") is followed by
another after the policy's backoff, until one succeeds or the attempts run
out. The run then completes, and its ``on_complete`` mutation runs in the
transaction that completes it: exactly once.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from ..context import MutationCtx
from ..functions import FunctionKind
from ..scheduler.api import cancel_in, schedule_in
from ..store.jobs import SCHEDULED_FUNCTIONS
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
    from ..db import Transaction
    from ..store.base import Document

__all__ = ["EXPIRE", "KEEP_COMPLETED_MS", "RUNS", "ActionRetrier", "expire_run", "finish_run"]

RUNS = "_retrier_runs"
EXPIRE = "_components/retrier:expire"
KEEP_COMPLETED_MS = 7 * 24 * 3600 * 1000.0
"""How long a completed run stays readable by default (as Convex's retrier keeps them)."""


class ActionRetrier:
    """Runs actions with retries; use one from mutations and actions (and queries, for ``status``).

    >>> retrier = ActionRetrier(initial_backoff_ms=250, base=2, max_failures=4)
    >>> run_id = await retrier.run(ctx, internal.emails.send, {"to": to},
    ...                            on_complete=internal.emails.sent)

    ``max_failures`` failures are retried (so at most ``max_failures + 1``
    attempts); the n-th retry waits ``initial_backoff_ms * base ** (n - 1)``
    ms, spread by ``jitter``: never more than ``jitter`` times that delay away
    from it (see :class:`~convexpy.components.RetryPolicy`).
    ``watch_interval_ms`` is how long after an attempt starts its job is
    looked at in case the process running it died (and then how often).
    A completed run is deleted ``keep_completed_ms`` after it completed
    (seven days by default; None keeps it until :meth:`cleanup`).
    """

    def __init__(
        self,
        *,
        initial_backoff_ms: float = 250.0,
        base: float = 2.0,
        max_failures: int = 4,
        jitter: float = 0.5,
        watch_interval_ms: float = DEFAULT_WATCH_MS,
        keep_completed_ms: float | None = KEEP_COMPLETED_MS,
    ) -> None:
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
            raise ComponentError(f"max_failures must be an integer >= 0, got {max_failures!r}")
        self.policy = RetryPolicy(max_failures + 1, initial_backoff_ms, base, jitter)
        self.watch_interval_ms = watch_interval(watch_interval_ms)
        if keep_completed_ms is not None and not (
            isinstance(keep_completed_ms, int | float)
            and not isinstance(keep_completed_ms, bool)
            and 0 <= keep_completed_ms < math.inf
        ):
            raise ComponentError(
                "keep_completed_ms must be a finite number of milliseconds >= 0, or None, "
                f"got {keep_completed_ms!r}"
            )
        self.keep_completed_ms = None if keep_completed_ms is None else float(keep_completed_ms)

    def config(self) -> dict[str, Any]:
        """What :meth:`from_config` needs to make this retrier again (a Convex value)."""
        return {
            "policy": self.policy.to_doc(),
            "watchMs": self.watch_interval_ms,
            "keepMs": self.keep_completed_ms,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ActionRetrier:
        policy = RetryPolicy.from_doc(config["policy"])
        return cls(
            initial_backoff_ms=policy.initial_backoff_ms,
            base=policy.base,
            max_failures=policy.max_attempts - 1,
            jitter=policy.jitter,
            watch_interval_ms=config["watchMs"],
            keep_completed_ms=config["keepMs"],
        )

    @from_actions(writes=True)
    async def run(
        self,
        ctx: MutationCtx | ActionCtx,
        action: object,
        args: dict[str, Any] | None = None,
        *,
        on_complete: object = None,
        run_after: float | None = None,
        run_at: float | None = None,
    ) -> str:
        """Start a run of ``action(args)`` (now, ``run_after`` ms from now, or at
        ``run_at``); its id. It exists only if the calling mutation commits.

        ``on_complete`` (a mutation) is called once, with ``{"runId",
        "result"}``, ``result`` being ``{"type": "success", "returnValue"}``,
        ``{"type": "failed", "error"}`` or ``{"type": "canceled"}``.
        """
        txn, runtime = writer_of(ctx, "ActionRetrier.run")
        path = resolve_path(runtime, action, {FunctionKind.ACTION}, "ActionRetrier.run")
        on_complete_path = None
        if on_complete is not None:
            on_complete_path = resolve_path(
                runtime, on_complete, {FunctionKind.MUTATION}, "ActionRetrier.run: on_complete"
            )
        checked = check_args(args, "ActionRetrier.run")
        at = start_time(ctx.now(), run_after, run_at, "ActionRetrier.run")
        fields = {
            "function": path,
            "args": checked,
            "policy": self.policy.to_doc(),
            "onComplete": on_complete_path,
            "watchMs": self.watch_interval_ms,
            "keepMs": self.keep_completed_ms,
            "state": "inProgress",
            "attempt": 0,
            "job": None,
            "watch": None,
        }
        run_id = await txn.insert(RUNS, fields)
        run = await txn.get(run_id)
        assert run is not None
        started = await start_attempt(txn, run, kind="action", function=path, args=checked, at=at)
        txn.put(RUNS, run, {**run, **started})
        return run_id

    @from_actions(writes=False)
    async def status(self, ctx: object, run_id: str) -> dict[str, Any]:
        """``{"type": "inProgress", "attempt": n}`` (n = 1 for the first) or
        ``{"type": "completed", "result": ...}``; an unknown run raises."""
        txn = reader_of(ctx, "ActionRetrier.status")
        run = await _run(txn, run_id, "ActionRetrier.status")
        if run["state"] == "completed":
            return {"type": "completed", "result": run["result"]}
        return {"type": "inProgress", "attempt": run["attempt"]}

    @from_actions(writes=True)
    async def cancel(self, ctx: MutationCtx | ActionCtx, run_id: str) -> bool:
        """Stop a run: no further attempt starts, an attempt running now keeps
        running but its outcome is dropped, and ``on_complete`` gets
        ``{"type": "canceled"}``. False if the run had completed already."""
        txn, _ = writer_of(ctx, "ActionRetrier.cancel")
        assert isinstance(ctx, MutationCtx)  # writer_of refused the others
        run = await _run(txn, run_id, "ActionRetrier.cancel")
        if run["state"] == "completed":
            return False
        if run["job"] is not None:
            await cancel_in(txn, run["job"], now=ctx.now())
        await finish_run(ctx, txn, run, canceled())
        return True

    @from_actions(writes=True)
    async def cleanup(self, ctx: MutationCtx | ActionCtx, run_id: str) -> bool:
        """Delete a completed run (its status is gone with it); False if it is
        still in progress or already gone. Call it once the outcome is used,
        e.g. from ``on_complete``."""
        txn, _ = writer_of(ctx, "ActionRetrier.cleanup")
        check_id(run_id, RUNS, "ActionRetrier.cleanup")
        run = await txn.get(run_id)
        if run is None or run["state"] != "completed":
            return False
        if run.get("expire") is not None:
            await cancel_in(txn, run["expire"], now=ctx.now())
        txn.put(RUNS, run, None)
        return True


async def _run(txn: Transaction, run_id: str, what: str) -> Document:
    check_id(run_id, RUNS, what)
    run = await txn.get(run_id)
    if run is None:
        raise ComponentError(f"{what}: no run {run_id!r} (it was cleaned up, or never committed)")
    return run


async def finish_run(
    ctx: MutationCtx, txn: Transaction, run: Document, result: dict[str, Any]
) -> None:
    """The finisher of a run's attempt: retry after the backoff, or complete."""
    now = ctx.now()
    fields = await end_attempt(txn, run, now)
    policy = RetryPolicy.from_doc(run["policy"])
    if result["kind"] == "failed" and run["attempt"] < policy.max_attempts:
        at = now + policy.delay_ms(run["attempt"], random.random())
        current = {**run, **fields, "lastError": result["error"]}
        started = await start_attempt(
            txn, current, kind="action", function=run["function"], args=run["args"], at=at
        )
        await replace(txn, RUNS, run["_id"], {**current, **started})
        return
    shown = {"type": result["kind"], **{k: v for k, v in result.items() if k != "kind"}}
    completed = {**run, **fields, "state": "completed", "result": shown, "completedAt": now}
    keep = run.get("keepMs")
    if keep is not None:
        await txn.prepare(SCHEDULED_FUNCTIONS)
        completed["expire"] = schedule_in(txn, EXPIRE, {"run": run["_id"]}, now + keep)
    await replace(txn, RUNS, run["_id"], completed)
    if run["onComplete"] is not None:
        await run_on_complete(ctx, run["onComplete"], {"runId": run["_id"], "result": shown})


async def expire_run(txn: Transaction, run_id: str) -> None:
    """Delete a completed run whose time to be kept is over (the expire job)."""
    run = await txn.get(run_id)
    if run is not None and run["state"] == "completed":
        txn.put(RUNS, run, None)
