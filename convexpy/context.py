"""What handlers receive as ``ctx``, and the caller's identity.

Queries and mutations can call other queries and mutations inside their own
transaction (``ctx.run_query`` / ``ctx.run_mutation``, as in Convex): a
nested query reads what the caller has written so far; a nested mutation is
a sub-transaction (a savepoint of the caller's transaction), whose writes and
scheduled jobs the caller sees when it returns, and which are rolled back if
it raises. Actions call other functions each in a transaction of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from .db import DatabaseReader, DatabaseWriter
from .errors import ConvexpyError, FunctionNotFoundError
from .functions import ConvexFunction, FunctionKind
from .scheduler.api import MutationScheduler
from .unawaited import (
    IN_NESTED_MUTATION,
    IN_NESTED_QUERY,
    CallTracker,
    awaited,
    tracked,
)
from .values import copy_value

if TYPE_CHECKING:
    from .db import Transaction
    from .runtime import Runtime
    from .scheduler.api import Scheduler

__all__ = [
    "NO_AUTH",
    "ActionCtx",
    "Auth",
    "JobCtx",
    "MutationCtx",
    "QueryCtx",
    "UserIdentity",
    "fixed_time",
]


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """Who is calling: the claims of a verified token.

    ``token_identifier`` defaults to ``"<issuer>|<subject>"`` as in Convex.
    The other fields are Convex's ``UserIdentity`` fields in snake case, from
    the token's OpenID Connect profile claims (``picture`` -> ``picture_url``,
    ``birthdate`` -> ``birthday``, ``zoneinfo`` -> ``timezone``, ``locale`` ->
    ``language``), None when absent; ``claims`` holds the custom ones, nested
    objects flattened to dotted names (``"properties.id"``), as in Convex.
    """

    subject: str
    issuer: str
    token_identifier: str = ""
    name: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    picture_url: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    given_name: str | None = None
    family_name: str | None = None
    nickname: str | None = None
    preferred_username: str | None = None
    profile_url: str | None = None
    gender: str | None = None
    birthday: str | None = None
    timezone: str | None = None
    language: str | None = None
    phone_number: str | None = None
    phone_number_verified: bool | None = None
    address: str | None = None
    updated_at: str | None = None

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


class _TxnCtx(_Ctx):
    """What the ``ctx`` of a query and of a mutation share: ``db``, ``auth``,
    and ``run_query`` inside their transaction.

    ``runtime`` resolves and checks nested calls (without it they fail).
    Calls are recorded in ``db``'s tracker, to find those never awaited.
    """

    __slots__ = ("_runtime", "auth", "db")
    _label = "ctx"
    _runtime: Runtime | None
    auth: Auth
    db: DatabaseReader

    @property
    def _calls(self) -> CallTracker:
        return self.db._calls

    def _nested(self, function: object, kind: FunctionKind) -> tuple[Runtime, str, ConvexFunction]:
        """The runtime and the function a nested call names, of ``kind``."""
        verb = f"run_{kind}"
        runtime = self._runtime
        if runtime is None:
            raise ConvexpyError(f"ctx.{verb} needs a runtime: this ctx was made without one")
        path, fn = runtime.resolve(function)
        if fn.kind is kind:
            return runtime, path, fn
        caller = "query" if isinstance(self, QueryCtx) else "mutation"
        if fn.kind is FunctionKind.ACTION:
            hint = (
                f"a {caller} cannot run actions, as in Convex: schedule it with "
                "`await ctx.scheduler.run_after(0, ...)` from a mutation, or call it from an action"
            )
        elif caller == "query":
            hint = "a query cannot run mutations: queries only read"
        else:
            hint = f"call it with ctx.run_{fn.kind}(...)"
        article = "an" if fn.kind is FunctionKind.ACTION else "a"
        raise FunctionNotFoundError(
            f"ctx.{verb}: {path!r} is {article} {fn.kind}; {hint}", path=path
        )

    async def _run_query(self, function: object, args: dict[str, Any] | None = None) -> Any:
        """Run a query inside this transaction (Convex's ``ctx.runQuery``) and
        return its result.

        It reads the same snapshot and what this function has written so far,
        with the same identity and ``now()``. ``function`` is the decorated
        query, a ``"module:function"`` path, or ``api.x.y`` /
        ``internal.x.y``; ``args`` are validated and the result checked, as
        for any call.
        """
        runtime, path, fn = self._nested(function, FunctionKind.QUERY)
        calls = CallTracker()
        reader = DatabaseReader(self.db._txn, calls=calls)
        ctx = QueryCtx(reader, self.auth, fixed_time(self.now()), runtime)
        result = await awaited(
            calls, fn.handler(ctx, **_arguments(fn, path, args)), path, IN_NESTED_QUERY
        )
        return copy_value(runtime.check_result(path, fn, result))

    run_query = tracked(_run_query, "run_query")
    runQuery = tracked(_run_query, "runQuery")


def _arguments(fn: ConvexFunction, path: str, args: dict[str, Any] | None) -> dict[str, Any]:
    """A nested call's validated arguments, copied: the callee cannot change the caller's values."""
    validated: dict[str, Any] = copy_value(fn.args.validate({} if args is None else args, path))
    return validated


class QueryCtx(_TxnCtx):
    """``ctx`` of a query: ``db`` (read-only), ``auth``, ``now()`` and
    ``run_query`` (another query, inside this one's transaction)."""

    __slots__ = ()

    def __init__(
        self,
        db: DatabaseReader,
        auth: Auth,
        now: Callable[[], float],
        runtime: Runtime | None = None,
    ) -> None:
        super().__init__(now)
        self.db = db
        self.auth = auth
        self._runtime = runtime

    @property
    def run_mutation(self) -> NoReturn:
        raise AttributeError("a query cannot run mutations: queries only read")

    @property
    def run_action(self) -> NoReturn:
        raise AttributeError("a query cannot run actions: queries only read")


class MutationCtx(_TxnCtx):
    """``ctx`` of a mutation: ``db``, ``auth`` and ``scheduler``, all in one
    transaction, ``now()``, and ``run_query`` / ``run_mutation`` (other
    functions, inside that transaction)."""

    __slots__ = ("_nesting", "scheduler")
    db: DatabaseWriter

    def __init__(
        self,
        db: DatabaseWriter,
        auth: Auth,
        scheduler: Scheduler,
        now: Callable[[], float],
        runtime: Runtime | None = None,
    ) -> None:
        super().__init__(now)
        self.db = db
        self.auth = auth
        self.scheduler = scheduler
        self._runtime = runtime

    async def _run_mutation(self, function: object, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation inside this transaction (Convex's ``ctx.runMutation``),
        as a sub-transaction, and return its result.

        It sees what this function has written so far, with the same
        identity and ``now()``; when it returns, its writes and the jobs it
        scheduled are part of this transaction (committed with it). If it
        raises, they are rolled back and the error propagates: catch it to
        commit the rest. ``function`` and ``args`` as for ``run_query``. One
        nested mutation at a time: await each before starting the next.
        """
        runtime, path, fn = self._nested(function, FunctionKind.MUTATION)
        if getattr(self, "_nesting", False):
            raise ConvexpyError(
                f"ctx.run_mutation({path!r}): another ctx.run_mutation of this function is "
                "still running; nested mutations share its transaction, so await each one "
                "before starting the next"
            )
        scheduler = self.scheduler
        assert isinstance(scheduler, MutationScheduler)
        txn = self.db._txn
        calls = CallTracker()
        ctx = MutationCtx(
            DatabaseWriter(txn, calls=calls),
            self.auth,
            scheduler.nested(calls),
            fixed_time(self.now()),
            runtime,
        )
        call = fn.handler(ctx, **_arguments(fn, path, args))
        mark = txn.savepoint()
        self._nesting = True
        try:
            result = await awaited(calls, call, path, IN_NESTED_MUTATION)
            return copy_value(runtime.check_result(path, fn, result))
        except BaseException:
            txn.rollback_to(mark)
            raise
        finally:
            self._nesting = False

    run_mutation = tracked(_run_mutation, "run_mutation")
    runMutation = tracked(_run_mutation, "runMutation")

    @property
    def run_action(self) -> NoReturn:
        raise AttributeError(
            "a mutation cannot run actions, as in Convex: schedule it with "
            "`await ctx.scheduler.run_after(0, ...)` (it runs after this mutation commits)"
        )


class JobCtx(MutationCtx):
    """``ctx`` of a scheduled mutation (run in a batch with others): no
    identity, ``now()`` fixed at the job's start, and a scheduler made on
    first use (most jobs never schedule anything)."""

    __slots__ = ("_job", "_scheduler", "_started", "_txn")
    _runtime: Runtime

    def __init__(
        self, db: DatabaseWriter, runtime: Runtime, txn: Transaction, job_id: str, started: float
    ) -> None:
        # MutationCtx.__init__ is skipped on purpose: `scheduler` is a property here.
        self.db = db
        self.auth = NO_AUTH
        self._runtime = runtime
        self._txn = txn
        self._job = job_id
        self._started = started
        self._scheduler: MutationScheduler | None = None

    def now(self) -> float:
        return self._started

    @property
    def scheduler(self) -> Scheduler:
        scheduler = self._scheduler
        if scheduler is None:
            scheduler = self._scheduler = MutationScheduler(
                self._runtime, self._txn, current_job=self._job
            )
        return scheduler

    @scheduler.setter
    def scheduler(self, value: Scheduler) -> None:
        raise AttributeError("ctx.scheduler cannot be replaced")


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
