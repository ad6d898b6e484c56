"""Finding the ``ctx.*`` calls a handler made but never awaited.

``ctx.db.insert(...)`` without ``await`` makes a coroutine that never runs: the
write silently never happens, and Python only warns when the coroutine is
collected. So every ``ctx`` method that returns a coroutine records it, with
:func:`track` (or the :func:`tracked` decorator), in the :class:`CallTracker`
of the handler run it belongs to; when the handler returns, the runtime calls
:meth:`CallTracker.check`, which fails the call with
:class:`~convexpy.errors.UnawaitedCallError` naming what was never awaited,
before anything commits. The coroutines found are closed, so no
``RuntimeWarning`` follows.

A handler that makes no ``ctx`` calls pays for one emptiness test; one whose
calls were each awaited before the next, for a few more.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from .errors import UnawaitedCallError

__all__ = [
    "IN_ACTION",
    "IN_MUTATION",
    "IN_NESTED_MUTATION",
    "IN_NESTED_QUERY",
    "IN_QUERY",
    "CallTracker",
    "awaited",
    "track",
    "tracked",
]

# What a call never awaited means for the caller, by where it was made.
IN_QUERY = "the call never ran"
IN_MUTATION = "nothing was committed"
IN_ACTION = "the call never ran; the calls the action awaited did"
IN_NESTED_QUERY = IN_QUERY
IN_NESTED_MUTATION = "its writes were rolled back"

P = ParamSpec("P")
R = TypeVar("R")

_PRUNE_AT = 64


class Owner(Protocol):
    """What owns tracked calls: ``ctx``, ``ctx.db``, a query, ``ctx.scheduler``."""

    @property
    def _calls(self) -> CallTracker: ...

    @property
    def _label(self) -> str:
        """How the handler spells this object: ``ctx.db``, ``ctx.db.query("tasks")``."""
        ...


OwnerT = TypeVar("OwnerT", bound=Owner)


class CallTracker(list[tuple[Coroutine[Any, Any, Any], Owner, str]]):
    """The coroutines ``ctx`` methods created during one handler run, with the
    object and method that made each.

    One run is one query, mutation, action or scheduled job, or one nested
    ``ctx.run_query`` / ``ctx.run_mutation`` (which gets its own tracker).
    Recording a call replaces the last one recorded when that one has
    finished, so calls awaited one after another keep a single entry; calls
    made before the previous ones finished (``asyncio.gather``) pile up, and
    are pruned past ``limit``.
    """

    limit = _PRUNE_AT
    """Past this length, calls that have started are dropped (no ``__init__``:
    making a tracker costs what making a list does)."""

    def _all_finished(self) -> bool:
        # At C speed: a coroutine that ran to its end has no frame.
        return not any(map(_FRAME, map(_CORO, self)))

    def prune(self) -> None:
        """Forget the calls that have started (awaited, or running in a task)."""
        if self._all_finished():
            self.clear()
        else:
            self[:] = [entry for entry in self if _never_started(entry[0])]
        self.limit = max(_PRUNE_AT, 2 * len(self))

    def close_unawaited(self) -> list[str]:
        """Close the coroutines never started, forget every call, and return
        how the handler spelled the closed ones (``ctx.db.insert(...)``)."""
        labels: list[str] = []
        if not self._all_finished():
            for coro, owner, method in self:
                if _never_started(coro):
                    coro.close()
                    labels.append(f"{owner._label}.{method}(...)")
        self.clear()
        return labels

    def check(self, function: str, outcome: str) -> None:
        """After ``function``'s handler returned: raise
        :class:`~convexpy.errors.UnawaitedCallError` if it never awaited a
        call (``outcome`` says what that means for the caller, e.g. "nothing
        was committed"). Forgets every call either way."""
        if len(self) == 1 and self[0][0].cr_frame is None:  # type: ignore[attr-defined]
            self.clear()  # the usual case: the calls were awaited one by one
            return
        labels = self.close_unawaited()
        if labels:
            raise UnawaitedCallError(_message(function, labels, outcome), calls=labels)


_CORO = operator.itemgetter(0)
_FRAME = operator.attrgetter("cr_frame")


def _never_started(coro: Coroutine[Any, Any, Any]) -> bool:
    # inspect.getcoroutinestate(coro) == CORO_CREATED, without the call.
    return coro.cr_frame is not None and not coro.cr_running and not coro.cr_suspended  # type: ignore[attr-defined]


def _message(function: str, labels: list[str], outcome: str) -> str:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    named = [label if n == 1 else f"{label} ({n} times)" for label, n in counts.items()]
    calls = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    verb = "was" if len(labels) == 1 else "were"
    return f"{function}: {calls} {verb} called but never awaited: add `await` ({outcome})"


def track(owner: Owner, method: str, coro: Coroutine[Any, Any, R]) -> Coroutine[Any, Any, R]:
    """Record ``coro``, made by ``owner.method(...)``, in ``owner``'s tracker; return it.

    ``ctx`` methods on the hot path call this from a plain method with the
    same parameters (``return track(self, "get", self._get(doc_id))``),
    cheaper than the generic ``*args`` wrapper (:func:`tracked`) used elsewhere.
    """
    calls = owner._calls
    if calls:
        # The last call finished: forget it (cr_frame: tracked calls are native coroutines).
        if calls[-1][0].cr_frame is None:  # type: ignore[attr-defined]
            calls[-1] = (coro, owner, method)
            return coro
        if len(calls) >= calls.limit:
            calls.prune()
    calls.append((coro, owner, method))
    return coro


def tracked(
    method: Callable[Concatenate[OwnerT, P], Coroutine[Any, Any, R]], name: str | None = None
) -> Callable[Concatenate[OwnerT, P], Coroutine[Any, Any, R]]:
    """Make an ``async def`` method record each call with :func:`track`
    (``name``: the method's name in messages, for aliases). For methods off
    the hot path (see :func:`track`)."""
    label = name or method.__name__

    @functools.wraps(method)
    def call(self: OwnerT, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        return track(self, label, method(self, *args, **kwargs))

    return call


async def awaited(calls: CallTracker, call: Awaitable[R], function: str, outcome: str) -> R:
    """Await a handler's ``call``, then :meth:`~CallTracker.check` its ``calls``
    (if it raised, its error propagates and the unawaited calls are closed)."""
    try:
        result = await call
    except BaseException:
        calls.close_unawaited()
        raise
    calls.check(function, outcome)
    return result
