"""convexpy: Convex's function runtime and durable scheduler for Python, on asyncio."""

from __future__ import annotations

from .context import ActionCtx, MutationCtx, QueryCtx, UserIdentity
from .cron import CronJobs, cron_jobs
from .errors import (
    ArgumentValidationError,
    ConvexError,
    ConvexpyError,
    CronSpecError,
    OptimisticConcurrencyError,
    UnawaitedCallError,
)
from .functions import (
    action,
    api,
    internal,
    internal_action,
    internal_mutation,
    internal_query,
    mutation,
    query,
)
from .ids import Id
from .runtime import Runtime
from .schema import define_schema, define_table
from .validators import v

__version__ = "0.1.0"

__all__ = [
    "ActionCtx",
    "ArgumentValidationError",
    "ConvexError",
    "ConvexpyError",
    "CronJobs",
    "CronSpecError",
    "Id",
    "MutationCtx",
    "OptimisticConcurrencyError",
    "QueryCtx",
    "Runtime",
    "UnawaitedCallError",
    "UserIdentity",
    "__version__",
    "action",
    "api",
    "cron_jobs",
    "define_schema",
    "define_table",
    "internal",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "query",
    "v",
]
