"""Durable building blocks on the scheduler: action retries, workpools, runtime crons.

Convex ships these as components (``@convex-dev/action-retrier``,
``@convex-dev/workpool``, ``@convex-dev/crons``); here they are part of the
runtime. Each keeps its state in system tables (``_retrier_runs``,
``_workpool_work``, ``_workpools`` and ``_workpool_loops``, ``_runtime_crons``; readable with
``ctx.db.system``) and changes it only in mutations, so it is atomic with the
calling mutation, durable, and shared correctly by processes on one store.
Every attempt is an ordinary scheduled job (see :mod:`.attempts`), so the
scheduler's guarantees hold for each: mutations exactly once, actions at most
once.
"""

from __future__ import annotations

from ..store.base import IndexDef
from .base import ComponentError, RetryPolicy
from .crons import BY_NAME as _CRONS_BY_NAME
from .crons import CRONS, RuntimeCrons
from .functions import BUILTIN_FUNCTIONS
from .retrier import RUNS, ActionRetrier
from .workpool import BY_NAME as _POOLS_BY_NAME
from .workpool import BY_POOL as _LOOPS_BY_POOL
from .workpool import BY_STATE as _WORK_BY_STATE
from .workpool import LOOPS, POOLS, WORK, Workpool

__all__ = [
    "BUILTIN_FUNCTIONS",
    "COMPONENT_INDEXES",
    "COMPONENT_TABLES",
    "ActionRetrier",
    "ComponentError",
    "RetryPolicy",
    "RuntimeCrons",
    "Workpool",
]

COMPONENT_TABLES = (RUNS, WORK, POOLS, LOOPS, CRONS)
COMPONENT_INDEXES: tuple[IndexDef, ...] = (
    _WORK_BY_STATE,
    _POOLS_BY_NAME,
    _LOOPS_BY_POOL,
    _CRONS_BY_NAME,
)
