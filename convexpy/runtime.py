"""``Runtime``: an app, a store, a clock and the scheduler, as one async context manager.

Everything else (the dev server, ``ConvexTest``) is built on this. Calls made
through a runtime are trusted server-side calls: they may reach internal
functions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any

from .clock import Clock, SystemClock
from .components import COMPONENT_INDEXES, COMPONENT_TABLES
from .components.crons import check_static_names
from .context import ActionCtx, Auth, JobCtx, MutationCtx, QueryCtx, UserIdentity, fixed_time
from .cron.runner import CRON_INDEXES, CRON_JOBS, CronRunner
from .db import DatabaseReader, DatabaseWriter, TableNames, Transaction
from .errors import (
    ConvexpyError,
    FunctionNotFoundError,
    InvalidValueError,
    OptimisticConcurrencyError,
    StoreUnavailableError,
    error_text,
)
from .functions import ConvexFunction, FunctionKind
from .loader import LoadedApp, import_app, unload_app
from .logcapture import capture
from .scheduler.api import ActionScheduler, MutationScheduler
from .scheduler.dispatcher import Dispatcher
from .schema_check import SCHEMAS, check_documents, record_schema
from .store import Store, store_from_url
from .store.base import ConflictError, conflict_pause_s
from .store.health import failure_delay_ms
from .store.jobs import SCHEDULED_FUNCTIONS, SYSTEM_INDEXES
from .unawaited import IN_ACTION, IN_MUTATION, IN_QUERY, CallTracker, awaited
from .values import check_value, copy_value

__all__ = ["Runtime"]

logger = logging.getLogger("convexpy")

_KIND_METHOD = {
    FunctionKind.QUERY: "query",
    FunctionKind.MUTATION: "mutation",
    FunctionKind.ACTION: "action",
}


class Runtime:
    """Run an app directory against a store.

    >>> async with Runtime("convex", store="sqlite:///data.db") as rt:
    ...     await rt.mutation("messages:send", {"body": "hi"})

    ``store`` is ``"memory"`` (the default; nothing survives the process),
    ``"sqlite:///path.db"``, or a :class:`~convexpy.store.Store`. ``clock``
    defaults to the system clock. ``parallelism`` bounds concurrently running
    scheduled jobs; ``crons=False`` loads ``crons.py`` but never runs it.
    Client-called mutations that keep conflicting are retried
    ``mutation_retries`` times before ``OptimisticConcurrencyError``.
    ``capture_logs=True`` (the dev server) collects what handlers print or
    log into each call's event instead of letting it reach the terminal.
    On exit, running scheduled jobs get ``shutdown_grace`` seconds (real
    time) to finish before they are cancelled. The app is imported on a
    thread of its own (at start and on :meth:`reload`): a module still
    importing after ``import_timeout`` seconds fails the load, naming it.
    """

    def __init__(
        self,
        app_dir: str | Path = "convex",
        *,
        store: str | Store = "memory",
        clock: Clock | None = None,
        parallelism: int = 16,
        crons: bool = True,
        mutation_retries: int = 16,
        retention_ms: float = 7 * 24 * 3600 * 1000,
        capture_logs: bool = False,
        shutdown_grace: float = 5.0,
        import_timeout: float = 30.0,
    ) -> None:
        if not isinstance(parallelism, int) or parallelism < 1:
            raise ValueError(f"parallelism must be a positive integer, got {parallelism!r}")
        if not isinstance(mutation_retries, int) or mutation_retries < 0:
            raise ValueError(f"mutation_retries must be >= 0, got {mutation_retries!r}")
        if not isinstance(import_timeout, int | float) or not import_timeout > 0:
            raise ValueError(f"import_timeout must be a positive number, got {import_timeout!r}")
        self.app_dir = Path(app_dir)
        self.store: Store = store_from_url(store)
        self.clock: Clock = clock or SystemClock()
        self.parallelism = parallelism
        self.crons_enabled = crons
        self.mutation_retries = mutation_retries
        self.retention_ms = retention_ms
        self.capture_logs = capture_logs
        self.shutdown_grace = shutdown_grace
        self.import_timeout = float(import_timeout)
        self.tables = TableNames()
        self.app: LoadedApp | None = None
        self.dispatcher = Dispatcher(self, parallelism=parallelism, retention_ms=retention_ms)
        self.crons = CronRunner(self)
        self._job_functions = _JobFunctions(None)
        self._job_db: DatabaseWriter | None = None
        """The ``ctx.db`` of the batch of scheduled mutations running last."""
        self.dispatcher.on_jobs_done = self.crons.jobs_finished
        self.dispatcher.cron_of = self.crons.cron_of
        self._stack: AsyncExitStack | None = None
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            self.app = await import_app(self.app_dir, give_up_after=self.import_timeout)
            stack.callback(self._unload)
            await self.store.open()
            stack.push_async_callback(self.store.close)
            await self._check_schema(self.app)
            await self._configure_store(self.app)
            await check_static_names(self, self.app.crons)
            await self.dispatcher.start()
            stack.push_async_callback(lambda: self.dispatcher.stop(self.shutdown_grace))
            if self.crons_enabled:
                await self.crons.start(self.app.crons)
                stack.push_async_callback(self.crons.stop)
            else:
                self.crons.validate(self.app.crons)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def reload(self) -> LoadedApp:
        """Re-import the app directory and switch to it.

        Data, pending jobs and cron state are kept. If the new code fails to
        load, :class:`~convexpy.loader.AppLoadError` is raised (with ``file``
        and ``line``) and the previous version keeps serving.
        """
        old = self._loaded
        new = await import_app(self.app_dir, give_up_after=self.import_timeout)
        try:
            await self._check_schema(new)
            self.app = new  # cron validation resolves functions in the new app
            self.crons.validate(new.crons)
            await self._configure_store(new)
            await check_static_names(self, new.crons)
        except BaseException:
            self.app = old
            unload_app(new)
            raise
        unload_app(old)
        if self.crons_enabled:
            await self.crons.sync(new.crons)
        return new

    def _unload(self) -> None:
        if self.app is not None:
            unload_app(self.app)

    async def _check_schema(self, app: LoadedApp) -> None:
        """Refuse a schema that stored documents violate (see :mod:`.schema_check`)."""
        await check_documents(self, app.schema, str(app.root / "schema.py"))

    async def _configure_store(self, app: LoadedApp) -> None:
        indexes = [*SYSTEM_INDEXES, *CRON_INDEXES, *COMPONENT_INDEXES]
        if app.schema is not None:
            indexes.extend(app.schema.index_defs())
            for table in app.schema.tables:
                self.tables.add(table)
        await self.store.configure_indexes(indexes)
        await record_schema(self, app.schema)
        self.tables.add(SCHEDULED_FUNCTIONS)
        self.tables.add(CRON_JOBS)
        self.tables.add(SCHEMAS)
        for table in COMPONENT_TABLES:
            self.tables.add(table)
        for table in await self.store.tables():
            self.tables.add(table)

    @property
    def _loaded(self) -> LoadedApp:
        if self.app is None:
            raise ConvexpyError(_NOT_RUNNING)
        return self.app

    @property
    def quiet(self) -> bool:
        """Nothing can happen until the clock moves (used by the test harness)."""
        return self.dispatcher.quiet and self.crons.quiet

    def emit(self, *events: dict[str, Any]) -> None:
        """Tell listeners (the dev server's log) about calls or job transitions, in order."""
        listeners = self.listeners
        for event in events:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:  # a broken listener must not break the runtime
                    logger.exception("runtime event listener failed")

    # -- public calls ------------------------------------------------------------

    async def query(
        self,
        function: object,
        args: dict[str, Any] | None = None,
        *,
        identity: UserIdentity | None = None,
    ) -> Any:
        """Run a query (public or internal) and return its result."""
        return await self.call(FunctionKind.QUERY, function, args, identity=identity)

    async def mutation(
        self,
        function: object,
        args: dict[str, Any] | None = None,
        *,
        identity: UserIdentity | None = None,
    ) -> Any:
        """Run a mutation; its writes are committed (and durable) when this returns."""
        return await self.call(FunctionKind.MUTATION, function, args, identity=identity)

    async def action(
        self,
        function: object,
        args: dict[str, Any] | None = None,
        *,
        identity: UserIdentity | None = None,
    ) -> Any:
        """Run an action."""
        return await self.call(FunctionKind.ACTION, function, args, identity=identity)

    def resolve(
        self, function: object, kind: FunctionKind | None = None, *, trusted: bool = True
    ) -> tuple[str, ConvexFunction]:
        """The path and function a reference names, checking its kind."""
        path, fn = self._loaded.registry.resolve(function, trusted=trusted)
        if kind is not None and fn.kind is not kind:
            raise FunctionNotFoundError(
                f"{path!r} is {'an' if fn.kind == 'action' else 'a'} {fn.kind}, "
                f"not {'an' if kind == 'action' else 'a'} {kind}: "
                f"call it with {_KIND_METHOD[fn.kind]}()",
                path=path,
            )
        return path, fn

    def call(
        self,
        kind: FunctionKind,
        function: object,
        args: dict[str, Any] | None,
        *,
        identity: UserIdentity | None = None,
        trusted: bool = True,
        logs: list[str] | None = None,
        txn: Transaction | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Run any function by kind (await it); ``trusted=False`` reaches
        public functions only. A function that cannot be called (unknown, of
        another kind, a bad ``identity``) raises here, before anything runs.

        With ``capture_logs``, what the handler printed or logged is appended
        to ``logs`` (when given) and sent to listeners with the call's event.
        A query runs in ``txn`` when given (a read-only transaction; the live
        queries read its read set afterwards), else in one of its own.
        """
        path, fn = self.resolve(function, kind, trusted=trusted)
        if identity is not None and not isinstance(identity, UserIdentity):
            raise TypeError(f"identity must be a UserIdentity, got {type(identity).__name__}")
        # Not a coroutine itself: the handler's coroutine is handed back, so a
        # call nobody listens to costs no frames of ours while it runs.
        if kind is FunctionKind.MUTATION:
            run = self.run_mutation(path, fn, args, identity)
        elif kind is FunctionKind.QUERY:
            run = self.run_query(path, fn, args, identity, txn)
        else:
            run = self.run_action(path, fn, args, identity)
        if not (self.listeners or self.capture_logs):
            return run
        return self._observed(run, kind, path, logs)

    async def _observed(
        self,
        run: Coroutine[Any, Any, Any],
        kind: FunctionKind,
        path: str,
        logs: list[str] | None,
    ) -> Any:
        """Await ``run``, capturing its logs, and tell listeners how it went."""
        started = time.perf_counter()
        event: dict[str, Any] = {"type": "call", "kind": kind.value, "path": path}
        try:
            with capture() if self.capture_logs else nullcontext() as lines:
                try:
                    result = await run
                    event["outcome"] = "success"
                    return result
                except Exception as exc:
                    event["outcome"] = "error"
                    event["error"] = error_text(exc)
                    raise
                finally:
                    event["duration_ms"] = (time.perf_counter() - started) * 1000.0
                    event["logs"] = [] if lines is None else lines.finish()
                    if logs is not None:
                        logs.extend(event["logs"])
        finally:
            # Outside the capture: a listener's own prints reach the terminal.
            self.emit(event)

    # -- execution -----------------------------------------------------------------

    def transaction(self, *, writable: bool, speculative: bool = False) -> Transaction:
        return Transaction(
            self.store,
            now=self.clock.now,
            tables=self.tables,
            schema=self._loaded.schema,
            writable=writable,
            speculative=speculative,
        )

    def check_result(self, path: str, fn: ConvexFunction, result: Any) -> Any:
        if fn.returns is not None:
            return fn.returns.validate(result, path)
        if result is None:  # most handlers return nothing: nothing to walk
            return None
        try:
            check_value(result)
        except InvalidValueError as exc:
            raise InvalidValueError(
                f"{path} returned a value that is not a Convex value: {exc}", exc.path
            ) from None
        return result

    async def run_query(
        self,
        path: str,
        fn: ConvexFunction,
        args: dict[str, Any] | None,
        identity: UserIdentity | None,
        txn: Transaction | None = None,
    ) -> Any:
        validated = fn.args.validate({} if args is None else args, path)
        if txn is None:
            txn = self.transaction(writable=False)
        try:
            ctx = QueryCtx(DatabaseReader(txn), Auth(identity), fixed_time(self.clock.now()), self)
            result = await fn.handler(ctx, **validated)
            if txn.calls:
                txn.calls.check(path, IN_QUERY)
            return self.check_result(path, fn, result)
        finally:
            txn.release()

    async def run_mutation(
        self,
        path: str,
        fn: ConvexFunction,
        args: dict[str, Any] | None,
        identity: UserIdentity | None,
    ) -> Any:
        """Run a mutation: the handler, then the commit, in one transaction;
        tried again (from the start, on a fresh snapshot) when the commit
        conflicts, up to :attr:`mutation_retries` times."""
        validated = fn.args.validate({} if args is None else args, path)
        attempt = 0
        while True:
            txn = self.transaction(writable=True)
            try:
                ctx = MutationCtx(
                    DatabaseWriter(txn),
                    Auth(identity),
                    MutationScheduler(self, txn),
                    fixed_time(self.clock.now()),
                    self,
                )
                result = await fn.handler(ctx, **copy_value(validated))
                if txn.calls:
                    txn.calls.check(path, IN_MUTATION)
                result = self.check_result(path, fn, result)
                await txn.commit()
                return result
            except ConflictError as exc:
                attempt += 1
                if attempt > self.mutation_retries:
                    raise OptimisticConcurrencyError(
                        f'Documents read from or written to the table "{exc.table}" changed '
                        "while this mutation was being run and on every subsequent retry "
                        f"({self.mutation_retries} retries). Another call is changing the "
                        "same documents: narrow the reads (use an index) or spread the writes.",
                        table=exc.table,
                    ) from None
            finally:
                txn.release()
            await asyncio.sleep(conflict_pause_s(attempt))

    async def run_action(
        self,
        path: str,
        fn: ConvexFunction,
        args: dict[str, Any] | None,
        identity: UserIdentity | None,
        *,
        job_id: str | None = None,
    ) -> Any:
        validated = fn.args.validate({} if args is None else args, path)
        calls = CallTracker()
        ctx = self.action_ctx(identity, job_id, calls)
        result = await awaited(calls, fn.handler(ctx, **validated), path, IN_ACTION)
        return self.check_result(path, fn, result)

    def action_ctx(
        self, identity: UserIdentity | None, job_id: str | None, calls: CallTracker
    ) -> ActionCtx:
        async def run(kind: FunctionKind, function: object, args: dict[str, Any] | None) -> Any:
            return await self.call(kind, function, args, identity=identity)

        return ActionCtx(
            Auth(identity),
            ActionScheduler(self, calls, parent_job=job_id),
            lambda f, a: run(FunctionKind.QUERY, f, a),
            lambda f, a: run(FunctionKind.MUTATION, f, a),
            lambda f, a: run(FunctionKind.ACTION, f, a),
            self.clock.now,
        )

    async def system_mutation(
        self,
        body: Callable[[Transaction], Awaitable[Any]],
        *,
        wait: Callable[[float], Awaitable[None]] | None = None,
    ) -> Any:
        """Run ``body(txn)`` in a transaction, retrying conflicts until it commits.

        Background work passes ``wait``: then failures of the store (a full
        disk, a dead writer) are retried too, forever, calling ``wait(ms)``
        between tries (see :func:`~convexpy.store.health.failure_delay_ms`).
        Without it they raise :class:`~convexpy.errors.StoreUnavailableError`.
        """
        conflicts = failures = 0
        while True:
            txn = self.transaction(writable=True)
            try:
                result = await body(txn)
                await txn.commit()
                return result
            except ConflictError:
                conflicts += 1
                await asyncio.sleep(conflict_pause_s(min(conflicts, 10)))
            except StoreUnavailableError:
                if wait is None:
                    raise
                failures += 1
                await wait(failure_delay_ms(failures))
            finally:
                txn.release()

    # -- the scheduler's host (see scheduler/host.py) ------------------------------------

    @property
    def listening(self) -> bool:
        """Whether anyone listens to events."""
        return bool(self.listeners)

    @property
    def job_functions(self) -> Mapping[str, tuple[str, ConvexFunction] | None]:
        """What each job name names in the app loaded now (see ``Host``)."""
        if self._job_functions.app is not self.app:
            self._job_functions = _JobFunctions(self.app)
        return self._job_functions

    def job_context(self, txn: Transaction, job_id: str, started: float) -> MutationCtx:
        """The ``ctx`` of a scheduled mutation running in ``txn``. The jobs of
        a batch share ``txn``, and so one ``ctx.db`` (it keeps no state of its own)."""
        db = self._job_db
        if db is None or db._txn is not txn:
            db = self._job_db = DatabaseWriter(txn)
        return JobCtx(db, self, txn, job_id, started)

    async def run_action_job(
        self, path: str, fn: ConvexFunction, args: dict[str, Any], job_id: str
    ) -> Any:
        """Run a scheduled action (no identity: Convex does not pass it on)."""
        return await self.run_action(path, fn, args, None, job_id=job_id)


_NOT_RUNNING = "the runtime is not running: use `async with Runtime(...)`"


class _JobFunctions(dict[str, "tuple[str, ConvexFunction] | None"]):
    """What each job name names in one loaded app (None: nothing, any more),
    resolved on first use (the runtime's ``job_functions``)."""

    def __init__(self, app: LoadedApp | None) -> None:
        super().__init__()
        self.app = app

    def __missing__(self, name: str) -> tuple[str, ConvexFunction] | None:
        if self.app is None:
            raise ConvexpyError(_NOT_RUNNING)
        found: tuple[str, ConvexFunction] | None
        try:
            found = self.app.registry.resolve(name, trusted=True)
        except FunctionNotFoundError:
            found = None
        self[name] = found
        return found
