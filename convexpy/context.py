"""What handlers receive as ``ctx``, and the caller's identity."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .db import DatabaseReader, DatabaseWriter
from .unawaited import tracked

if TYPE_CHECKING:
    from .scheduler.api import Scheduler

__all__ = [
    "NO_AUTH",
    "ActionCtx",
    "Auth",
    "MutationCtx",
    "QueryCtx",
    "UserIdentity",
    "fixed_time",
]


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """Who is calling: the claims of a verified token.

    ``token_identifier`` defaults to ``"<issuer>|<subject>"`` as in Convex;
    other standard claims are optional and ``claims`` holds custom ones.
    """

    subject: str
    issuer: str
    token_identifier: str = ""
    name: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    picture_url: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not isinstance(self.issuer, str):
            raise TypeError("UserIdentity needs string subject and issuer")
        if not self.token_identifier:
            object.__setattr__(self, "token_identifier", f"{self.issuer}|{self.subject}")


class Auth:
    """``ctx.auth``: the identity of the caller, if any."""

    __slots__ = ("_identity",)

    def __init__(self, identity: UserIdentity | None) -> None:
        self._identity = identity

    def get_user_identity(self) -> UserIdentity | None:
        """The caller's identity, or None (always None in scheduled functions and crons)."""
        return self._identity


def fixed_time(now: float) -> Callable[[], float]:
    """A ``now()`` for a query or mutation: the time it started, throughout."""
    return lambda: now


class _Ctx:
    __slots__ = ("_now",)

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        """The current time in epoch milliseconds, from the runtime's clock.

        Like ``Date.now()`` in Convex, it is fixed for the whole run of a query
        or mutation (so retries and virtual time stay deterministic); in an
        action it moves. Use it instead of ``time.time()``, which ignores the
        test harness's virtual clock.
        """
        return self._now()


NO_AUTH = Auth(None)
"""The ``ctx.auth`` of calls without an identity (scheduled jobs, crons)."""


class QueryCtx(_Ctx):
    """``ctx`` of a query: ``db`` (read-only), ``auth`` and ``now()``."""

    __slots__ = ("auth", "db")

    def __init__(self, db: DatabaseReader, auth: Auth, now: Callable[[], float]) -> None:
        super().__init__(now)
        self.db = db
        self.auth = auth


class MutationCtx(_Ctx):
    """``ctx`` of a mutation: ``db``, ``auth`` and ``scheduler``, all in one
    transaction, and ``now()``."""

    __slots__ = ("auth", "db", "scheduler")

    def __init__(
        self, db: DatabaseWriter, auth: Auth, scheduler: Scheduler, now: Callable[[], float]
    ) -> None:
        super().__init__(now)
        self.db = db
        self.auth = auth
        self.scheduler = scheduler


Runner = Callable[[object, "dict[str, Any] | None"], Coroutine[Any, Any, Any]]


class ActionCtx(_Ctx):
    """``ctx`` of an action: no ``db``; ``run_query`` / ``run_mutation`` /
    ``run_action`` call other functions (each in its own transaction) with the
    same identity, and ``scheduler`` commits each call on its own."""

    __slots__ = ("_calls", "_run_action", "_run_mutation", "_run_query", "auth", "scheduler")
    _label = "ctx"

    def __init__(
        self,
        auth: Auth,
        scheduler: Scheduler,
        run_query: Runner,
        run_mutation: Runner,
        run_action: Runner,
        now: Callable[[], float],
    ) -> None:
        super().__init__(now)
        self.auth = auth
        self.scheduler = scheduler
        self._run_query = run_query
        self._run_mutation = run_mutation
        self._run_action = run_action
        self._calls = scheduler._calls
        """Shared with the scheduler: one record of this action's calls."""

    async def _query(self, function: object, args: dict[str, Any] | None = None) -> Any:
        """Run a query in a transaction of its own, with this action's identity."""
        return await self._run_query(function, args)

    async def _mutation(self, function: object, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation in a transaction of its own (committed when this
        returns), with this action's identity."""
        return await self._run_mutation(function, args)

    async def _action(self, function: object, args: dict[str, Any] | None = None) -> Any:
        """Run an action, with this action's identity."""
        return await self._run_action(function, args)

    run_query = tracked(_query, "run_query")
    run_mutation = tracked(_mutation, "run_mutation")
    run_action = tracked(_action, "run_action")

    # Convex spellings, for code ported from TypeScript.
    runQuery = tracked(_query, "runQuery")
    runMutation = tracked(_mutation, "runMutation")
    runAction = tracked(_action, "runAction")

    @property
    def db(self) -> Any:
        raise AttributeError(
            "actions have no ctx.db: read with await ctx.run_query(...) and write with "
            "await ctx.run_mutation(...)"
        )
