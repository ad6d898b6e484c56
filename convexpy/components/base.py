"""What the durable building blocks share: reaching a ctx's transaction,
retry policies and their backoff, outcomes, and checking what callers pass.

The building blocks keep their state in system tables and change it only
inside the transaction of the mutation that calls them (or of a scheduled
mutation of their own), so every change is atomic with the caller's, durable
when the mutation returns, and serializable against other processes sharing
the store. Nothing here keeps state in memory.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..context import ActionCtx, MutationCtx, QueryCtx
from ..errors import (
    ConvexpyError,
    FunctionNotFoundError,
    InvalidValueError,
    StoreUnavailableError,
    error_text,
)
from ..functions import FunctionKind, FunctionReference
from ..ids import is_id_of
from ..store.base import ConflictError
from ..values import check_value

if TYPE_CHECKING:
    from ..db import Transaction
    from ..runtime import Runtime

__all__ = [
    "FROM_ACTION_READ",
    "FROM_ACTION_WRITE",
    "MAX_BACKOFF_MS",
    "ComponentError",
    "RetryPolicy",
    "canceled",
    "check_args",
    "check_id",
    "failed",
    "from_actions",
    "reader_of",
    "replace",
    "resolve_path",
    "run_on_complete",
    "start_time",
    "success",
    "watch_interval",
    "writer_of",
]

logger = logging.getLogger("convexpy.components")

MAX_BACKOFF_MS = 365 * 24 * 3600 * 1000.0
"""No retry waits longer than a year, however large ``base ** n`` grows."""

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (ConflictError, StoreUnavailableError)
"""Errors that are the store's, not a handler's: never recorded as an
outcome, always raised so the transaction is tried again."""


class ComponentError(ConvexpyError, ValueError):
    """A durable building block was called with something it cannot use: a bad
    policy number, an unknown reference, an id of another table or pool."""


# -- reaching the transaction a ctx runs in -------------------------------------------

FROM_ACTION_WRITE = "_components/from_action:write"
FROM_ACTION_READ = "_components/from_action:read"
"""The internal mutation and query that run a building block's method for
an action (see :func:`from_actions`)."""

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def from_actions(*, writes: bool) -> Callable[[_Method], _Method]:
    """Let a building block's method take an action's ``ctx`` too, as Convex's
    components do: called with one, it runs in a mutation (``writes``) or a
    query of its own, through ``ctx.run_mutation`` / ``ctx.run_query`` of
    :data:`FROM_ACTION_WRITE` / :data:`FROM_ACTION_READ`, which rebuild the
    block from its :meth:`config` and call the method there. So from an
    action each call commits on its own, as ``ctx.scheduler`` calls do.
    Function references among the arguments travel as their paths."""

    def decorate(method: _Method) -> _Method:
        @functools.wraps(method)
        async def wrapper(self: Any, ctx: object, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(ctx, ActionCtx):
                return await method(self, ctx, *args, **kwargs)
            call = {
                "block": type(self).__name__,
                "config": self.config(),
                "method": method.__name__,
                "args": [_portable(arg) for arg in args],
                "kwargs": {name: _portable(value) for name, value in kwargs.items()},
            }
            if writes:
                return await ctx.run_mutation(FROM_ACTION_WRITE, call)
            return await ctx.run_query(FROM_ACTION_READ, call)

        return wrapper  # type: ignore[return-value]

    return decorate


def _portable(value: object) -> object:
    if isinstance(value, FunctionReference):
        return value.path
    if isinstance(value, RetryPolicy):
        return value.to_doc()
    return value


def writer_of(ctx: object, what: str) -> tuple[Transaction, Runtime]:
    """The transaction and runtime of a mutation's ``ctx``; building blocks
    write there, so their changes commit (or not) with the caller's."""
    if not isinstance(ctx, MutationCtx):
        raise TypeError(
            f"{what} needs the ctx of a mutation or an action, got {type(ctx).__name__}"
        )
    return ctx.db._txn, _runtime_of(ctx, what)


def reader_of(ctx: object, what: str) -> Transaction:
    """The transaction of a query's or mutation's ``ctx``."""
    if not isinstance(ctx, QueryCtx | MutationCtx):
        raise TypeError(
            f"{what} needs the ctx of a query, a mutation or an action, got {type(ctx).__name__}"
        )
    return ctx.db._txn


def _runtime_of(ctx: MutationCtx, what: str) -> Runtime:
    runtime = ctx._runtime
    if runtime is None:
        raise ConvexpyError(f"{what} needs a runtime: this ctx was made without one")
    return runtime


async def replace(txn: Transaction, table: str, doc_id: str, new: dict[str, Any] | None) -> None:
    """Write ``new`` (None: delete) over the document ``doc_id`` as ``txn`` sees
    it now, whatever copy of it the caller holds."""
    current = await txn.get(doc_id)
    assert current is not None, doc_id
    txn.put(table, current, new)


# -- what callers pass ---------------------------------------------------------------


_ARTICLE = {FunctionKind.ACTION: "an action", FunctionKind.MUTATION: "a mutation"}


def resolve_path(runtime: Runtime, function: object, kinds: set[FunctionKind], role: str) -> str:
    """The path of the function ``function`` names, which must be of one of ``kinds``."""
    try:
        path, fn = runtime.resolve(function)
    except FunctionNotFoundError as exc:
        raise ComponentError(f"{role}: {exc}") from None
    if fn.kind not in kinds:
        wanted = " or ".join(sorted(_ARTICLE[kind] for kind in kinds))
        raise ComponentError(f"{role} must be {wanted}, but {path!r} is a {fn.kind}")
    return path


def check_args(args: object, role: str) -> dict[str, Any]:
    """``args`` (None: ``{}``), which must be a dict of Convex values."""
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ComponentError(f"{role}: args must be a dict, got {type(args).__name__}")
    try:
        check_value(args, "args")
    except InvalidValueError as exc:
        raise ComponentError(f"{role}: args are not Convex values: {exc}") from None
    return args


def check_id(doc_id: object, table: str, what: str) -> str:
    if not is_id_of(doc_id, table):
        raise ComponentError(f"{what}: {doc_id!r} is not an id of {table!r}")
    assert isinstance(doc_id, str)
    return doc_id


def watch_interval(value: object) -> float:
    """A ``watch_interval_ms`` argument, checked (see :mod:`.attempts`)."""
    if not _finite(value, "watch_interval_ms") > 0:
        raise ComponentError(f"watch_interval_ms must be > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def start_time(now: float, run_after: object, run_at: object, role: str) -> float:
    """When a run or work item starts: now, ``run_after`` ms from now, or at ``run_at``."""
    if run_after is not None and run_at is not None:
        raise ComponentError(f"{role}: give run_after or run_at, not both")
    if run_after is not None:
        delay = _finite(run_after, f"{role}: run_after")
        if delay < 0:
            raise ComponentError(f"{role}: run_after must be >= 0 ms, got {run_after!r}")
        return now + delay
    if run_at is not None:
        return _finite(run_at, f"{role}: run_at")
    return now


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ComponentError(f"{what} must be a finite number of milliseconds, got {value!r}")
    return float(value)


# -- retry policies --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and after how long, a failed action is tried again.

    ``max_attempts`` counts every attempt, the first included. The n-th retry
    (n = 1, 2, ...) waits ``initial_backoff_ms * base ** (n - 1)`` times a
    random factor in ``[1 - jitter, 1 + jitter)``: so with ``jitter`` j the
    wait is never further than ``j`` times the nominal delay from it (the
    default 0.5 is Convex's ``delay * (0.5 + random())``; 0 makes it exact).
    Delays are capped at :data:`MAX_BACKOFF_MS`.
    """

    max_attempts: int = 5
    initial_backoff_ms: float = 250.0
    base: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ComponentError(f"max_attempts must be an integer >= 1, got {attempts!r}")
        initial = _finite(self.initial_backoff_ms, "initial_backoff_ms")
        if initial < 0:
            raise ComponentError(
                f"initial_backoff_ms must be >= 0, got {self.initial_backoff_ms!r}"
            )
        base = _finite(self.base, "base")
        if base < 1:
            raise ComponentError(f"base must be >= 1 (delays never shrink), got {self.base!r}")
        jitter = _finite(self.jitter, "jitter")
        if not 0 <= jitter <= 1:
            raise ComponentError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    def nominal_delay_ms(self, retry: int) -> float:
        """The delay before retry number ``retry`` (1 = the first retry), without jitter."""
        try:
            delay = self.initial_backoff_ms * self.base ** (retry - 1)
        except OverflowError:
            return MAX_BACKOFF_MS
        return min(float(delay), MAX_BACKOFF_MS)

    def delay_ms(self, retry: int, random: float) -> float:
        """The delay before retry number ``retry``, with ``random`` in ``[0, 1)``
        spreading it (see the class docstring)."""
        return self.nominal_delay_ms(retry) * (1.0 + self.jitter * (2.0 * random - 1.0))

    def to_doc(self) -> dict[str, Any]:
        """Convex's ``retryBehavior`` shape, plus the jitter."""
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoffMs": float(self.initial_backoff_ms),
            "base": float(self.base),
            "jitter": float(self.jitter),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RetryPolicy:
        return cls(doc["maxAttempts"], doc["initialBackoffMs"], doc["base"], doc["jitter"])

    @classmethod
    def of(cls, value: object, role: str) -> RetryPolicy:
        """A policy from a :class:`RetryPolicy` or Convex's ``{"maxAttempts",
        "initialBackoffMs", "base"}`` (and optionally ``"jitter"``)."""
        if isinstance(value, RetryPolicy):
            return value
        if not isinstance(value, dict):
            raise ComponentError(
                f"{role}: a retry behavior is a RetryPolicy or a dict with maxAttempts, "
                f"initialBackoffMs and base, got {type(value).__name__}"
            )
        fields = {"maxAttempts", "initialBackoffMs", "base", "jitter"}
        unknown = set(value) - fields
        missing = fields - {"jitter"} - set(value)
        if unknown or missing:
            raise ComponentError(
                f"{role}: a retry behavior has maxAttempts, initialBackoffMs, base and "
                f"optionally jitter; unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        try:
            return cls(
                value["maxAttempts"],
                value["initialBackoffMs"],
                value["base"],
                value.get("jitter", 0.5),
            )
        except ComponentError as exc:  # named as the caller spelled them
            text = str(exc).replace("max_attempts", "maxAttempts")
            raise ComponentError(
                f"{role}: {text.replace('initial_backoff_ms', 'initialBackoffMs')}"
            ) from None


# -- outcomes ----------------------------------------------------------------------------
#
# An attempt ends in one of Convex's workpool results; the retrier shows the
# same with "type" for "kind", as Convex's retrier does.


def success(value: Any) -> dict[str, Any]:
    return {"kind": "success", "returnValue": value}


def failed(error: str) -> dict[str, Any]:
    return {"kind": "failed", "error": error}


def canceled() -> dict[str, Any]:
    return {"kind": "canceled"}


async def run_on_complete(ctx: MutationCtx, path: str, args: dict[str, Any]) -> None:
    """Run an ``on_complete`` mutation inside ``ctx``'s transaction, so that it
    commits with the completion it reports, exactly once. If it raises, its
    writes are rolled back and the error is logged: the completion stands."""
    try:
        await ctx.run_mutation(path, args)
    except INFRASTRUCTURE_ERRORS:
        raise
    except Exception as exc:
        logger.error(
            "on_complete %s failed (its writes were rolled back): %s", path, error_text(exc)
        )
