"""What the scheduler and the cron runner need from the runtime that hosts them.

They never see the runtime itself: it hands them a :class:`Host`, which a
test can fake. The store is theirs to use directly (its job queue, its job
events); everything about the app (functions, contexts, handlers) and its
transactions comes through the host.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..clock import Clock
    from ..context import MutationCtx
    from ..db import Transaction
    from ..functions import ConvexFunction
    from ..store.base import Store

__all__ = ["Host"]


class Host(Protocol):
    """The runtime, as the scheduler and the cron runner see it."""

    @property
    def clock(self) -> Clock:
        """The one clock everything reads (virtual under the test harness)."""

    @property
    def store(self) -> Store: ...

    @property
    def capture_logs(self) -> bool:
        """Whether handlers' prints and log records are collected into events."""

    @property
    def listening(self) -> bool:
        """Whether anyone listens to events (if not, none need be made)."""

    def emit(self, *events: dict[str, Any]) -> None:
        """Tell listeners (the dev server's log) about jobs or cron runs, in order."""

    def resolve(self, function: object) -> tuple[str, ConvexFunction]:
        """The path and function a reference names (internal ones included);
        raises :class:`~convexpy.errors.FunctionNotFoundError`."""

    @property
    def job_functions(self) -> Mapping[str, tuple[str, ConvexFunction] | None]:
        """What each job's ``name`` names in the app loaded now (None: there
        is none any more), by ``[name]``: a dict lookup once a name was seen.
        A reload brings a new mapping, so read it again after an ``await``."""

    def transaction(self, *, writable: bool, speculative: bool = False) -> Transaction: ...

    async def system_mutation(
        self,
        body: Callable[[Transaction], Awaitable[Any]],
        *,
        wait: Callable[[float], Awaitable[None]] | None = None,
    ) -> Any:
        """Run ``body(txn)`` and commit, again on conflicts; with ``wait``,
        store failures are retried too, ``wait(ms)`` between tries."""

    def job_context(self, txn: Transaction, job_id: str, started: float) -> MutationCtx:
        """The ``ctx`` of scheduled mutation ``job_id`` running in ``txn``."""

    async def run_action_job(
        self, path: str, fn: ConvexFunction, args: dict[str, Any], job_id: str
    ) -> Any:
        """Run a scheduled action: its arguments validated, its result checked."""

    def check_result(self, path: str, fn: ConvexFunction, result: Any) -> Any:
        """A handler's result, checked (``returns=`` or Convex values)."""
