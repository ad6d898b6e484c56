"""The HTTP API, compatible with Convex's (docs.convex.dev/http-api), as an ASGI app.

Function calls, as the official clients send them:

* ``POST /api/query``, ``/api/mutation``, ``/api/action`` with a JSON body
  ``{"path": "messages:list", "args": {...}, "format": "json"}``. ``args`` is
  an object or a one-element array holding one (missing or ``null``: no
  arguments) and is read as Convex JSON (numbers are float64, int64 travels as
  ``{"$integer": ...}``). ``format`` chooses how values come back:
  ``"convex_encoded_json"`` (the default here; lossless: ``$integer``,
  ``$bytes``, ``$float``) or ``"json"`` (Convex's "clean" export: int64 as a
  decimal string, bytes as base64, NaN/Infinity as strings).
* ``POST /api/run/{module...}/{function}`` with ``{"args", "format"}``: the
  same, for a function of any kind named in the URL (``/api/run/nested/deep/hello``
  is ``nested/deep:hello``); ``format`` defaults to ``"json"`` there, as in Convex.

Whatever the function did comes back as HTTP 200: ``{"status": "success",
"value", "logLines"}`` or ``{"status": "error", "errorMessage", "errorData"?,
"logLines"}``, ``errorData`` only for a ``ConvexError``. Argument validation
errors are function errors too, as in Convex. A request that never reached a
function gets a 4xx with ``{"code", "message"}``: ``BadJsonBody``,
``BadConvexValue``, ``BadFormat``, ``MissingIdentifier`` (400),
``BadAdminKey``, ``InvalidAuthHeader``, ``MissingAdminKey`` and the bearer
token refusals below (401),
``FunctionNotFound``, ``TableNotFound``, ``NotFound`` (404),
``MethodNotAllowed`` (405), ``RequestTimeout`` (408: the body did not arrive
within ``body_timeout`` seconds), ``PayloadTooLarge`` (413, over
:data:`MAX_REQUEST_BYTES`), ``Overloaded`` (503: the request bodies being
received and served together would pass ``max_pending_body_bytes``).

No request gets a 500 or a traceback. Anything that escapes an endpoint is
reported with its traceback (to the ``reporter``, else the
``convexpy.server`` logger) and answered 503 with ``{code, message}``: a
store fault says what happened to the database (``DatabaseDamaged``,
``NoSpaceLeft``, ``CommitFailed``, ``StoreClosed``, ``DatabaseError``; see
:func:`~convexpy.server.faults.store_fault`), anything else is ``InternalServerError`` with the
details in the server log. A function that hits a store fault gets the same
explanation as its ``errorMessage``.

Unlike Convex, the ``Content-Type`` header is not checked (``curl -d`` works
as is); the body must be a JSON object either way.

Authorization: ``Convex <admin key>`` makes trusted calls (internal functions
too). ``Bearer <token>`` is a user whose JWT the app's ``auth_config.py``
vouches for (:class:`~convexpy.auth.TokenVerifier`: signature, issuer,
audience, times); a token it refuses gets 401 with a code saying what failed
(``InvalidAuthHeader``, ``NoAuthProvider``, ``WrongAlgorithm``,
``UnknownKey``, ``KeysUnavailable``, ``InvalidSignature``, ``WrongAudience``,
``TokenExpired``, ``TokenNotYetValid``).

Admin endpoints (``Convex <admin key>`` only), used by ``python -m convexpy``:
``GET /api/admin/functions``, ``GET /api/admin/tables`` and
``GET /api/admin/tables/{table}?limit=100&order=desc``. ``GET /`` is a small
JSON status. ``GET /dashboard`` and the admin endpoints it uses are
:mod:`~convexpy.server.dashboard`.

This module is the app: its routes and endpoints. The wire format (bodies,
formats, answers) is :mod:`~convexpy.server.wire`, who is calling
:mod:`~convexpy.server.auth`, and what store failures mean
:mod:`~convexpy.server.faults`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import TokenVerifier
from ..context import UserIdentity
from ..convex_json import to_convex_json
from ..db import DatabaseReader, SystemReader
from ..errors import ArgumentValidationError, ConvexError, FunctionNotFoundError, error_text
from ..functions import FunctionKind
from ..runtime import Runtime
from ..store.jobs import SCHEDULED_FUNCTIONS
from .auth import Caller, request_caller, require_admin
from .dashboard import Dashboard
from .faults import StoreFault, store_fault
from .sync import SyncLimits, SyncServer
from .wire import (
    BodyReader,
    RequestError,
    ascii_int,
    body_args,
    body_format,
    convex_error_body,
    export_value,
    json_response,
)

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_PENDING_BODY_BYTES",
    "MAX_REQUEST_BYTES",
    "ConvexApp",
    "Reporter",
    "create_app",
]

logger = logging.getLogger("convexpy.server")

MAX_REQUEST_BYTES = (1 << 23) + 2000
"""Largest accepted request body: Convex's ``MAX_BACKEND_PUBLIC_API_REQUEST_SIZE``
(8 MiB of arguments plus room for the envelope)."""

DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a request body may take to arrive, from the start of the request (408 after)."""

DEFAULT_MAX_PENDING_BODY_BYTES = 8 * MAX_REQUEST_BYTES
"""Bytes of request bodies the app holds at once, across requests (503 past it):
eight bodies of the largest size, about 64 MiB."""

DEFAULT_TABLE_LIMIT = 100
MAX_TABLE_LIMIT = 10_000


class Reporter(Protocol):
    """Where the app reports what the runtime's events do not cover (the dev log)."""

    def request_error(self, method: str, path: str, status: int, code: str, message: str) -> None:
        """A request was refused with a 4xx before reaching a function."""

    def function_exception(self, path: str, exc: BaseException) -> None:
        """A function raised something other than ``ConvexError`` (show the traceback)."""

    def server_error(
        self, method: str, path: str, status: int, code: str, message: str, exc: BaseException
    ) -> None:
        """An exception escaped an endpoint (a store fault, or a bug in the server):
        answered ``status`` with ``{code, message}``; show the traceback."""


Endpoint = Callable[[Request], Awaitable[Response]]


def _a(kind: FunctionKind | str) -> str:
    """``"a query"``, ``"a mutation"``, ``"an action"``."""
    kind = str(kind)
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


class _Api:
    def __init__(
        self,
        runtime: Runtime,
        admin_key: str | None,
        reporter: Reporter | None,
        max_request_bytes: int,
        body_timeout: float,
        max_pending_body_bytes: int,
        verifier: TokenVerifier,
    ) -> None:
        self.runtime = runtime
        self.admin_key = admin_key
        self.verifier = verifier
        self.reporter = reporter
        self.bodies = BodyReader(max_request_bytes, body_timeout, max_pending_body_bytes)
        self.reload_error: str | None = None
        """Why the last reload of the app failed (None once one succeeds); see ConvexApp."""

    @property
    def store_path(self) -> Path | None:
        path = getattr(self.runtime.store, "path", None)
        return path if isinstance(path, Path) else None

    # -- plumbing ----------------------------------------------------------------

    def guard(self, endpoint: Endpoint) -> Endpoint:
        """Turn every failure into a JSON response: a 4xx, or a 503 for faults and bugs."""

        async def guarded(request: Request) -> Response:
            try:
                return await endpoint(request)
            except RequestError as err:
                return self.refuse(request, err)
            except Exception as exc:
                return self.server_error(request, exc)
            finally:
                self.bodies.release(request)

        return guarded

    def refuse(self, request: Request, err: RequestError) -> Response:
        if self.reporter is not None:
            self.reporter.request_error(
                request.method, request.url.path, err.status, err.code, err.message
            )
        headers = {"Connection": "close"} if err.close else None
        return json_response(err.status, {"code": err.code, "message": err.message}, headers)

    def server_error(self, request: Request, exc: BaseException) -> Response:
        """An exception escaped an endpoint: report it with its traceback, answer 503."""
        fault = store_fault(exc, self.store_path)
        if fault is None:
            fault = StoreFault(
                "InternalServerError",
                f"The server failed while handling {request.method} {request.url.path} "
                f"({type(exc).__name__}); the details are in the server log",
            )
        if self.reporter is not None:
            self.reporter.server_error(
                request.method, request.url.path, 503, fault.code, fault.message, exc
            )
        else:
            logger.error(
                "%s %s: 503 %s: %s",
                request.method,
                request.url.path,
                fault.code,
                fault.message,
                exc_info=exc,
            )
        return json_response(503, {"code": fault.code, "message": fault.message})

    async def http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            err = RequestError(
                405, "MethodNotAllowed", f"{request.method} is not allowed on {request.url.path}"
            )
        elif exc.status_code == 404:
            err = RequestError(404, "NotFound", f"No such endpoint: {request.url.path}")
        else:
            err = RequestError(exc.status_code, "BadRequest", str(exc.detail))
        response = self.refuse(request, err)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def unhandled(self, request: Request, exc: Exception) -> Response:
        return self.server_error(request, exc)

    # -- functions -----------------------------------------------------------------

    async def verify(self, token: str) -> UserIdentity:
        """The identity of a bearer token, checked against the current app's auth_config.py."""
        app = self.runtime.app
        return await self.verifier.identity(token, None if app is None else app.auth_config)

    async def caller(self, request: Request) -> Caller:
        return await request_caller(request, self.admin_key, self.verify)

    def function_endpoint(self, kind: FunctionKind) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            caller = await self.caller(request)
            body = await self.bodies.read(request)
            path = body.get("path")
            if not isinstance(path, str):
                problem = "missing field `path`" if path is None else "`path` must be a string"
                raise RequestError(400, "BadJsonBody", problem)
            return await self.call(
                kind, path, body_args(body), caller, body_format(body, "encoded")
            )

        return endpoint

    async def run_endpoint(self, request: Request) -> Response:
        caller = await self.caller(request)
        parts = str(request.path_params.get("path", "")).strip("/").split("/")
        if len(parts) < 2 or not all(parts):
            raise RequestError(
                400,
                "MissingIdentifier",
                "Path or function name not provided in path, e.g. /api/run/messages/list",
            )
        body = await self.bodies.read(request)
        path = "/".join(parts[:-1]) + ":" + parts[-1]
        return await self.call(None, path, body_args(body), caller, body_format(body, "clean"))

    async def call(
        self,
        kind: FunctionKind | None,
        path: str,
        args: dict[str, Any],
        caller: Caller,
        fmt: str,
    ) -> Response:
        runtime = self.runtime
        try:
            path, fn = runtime.resolve(path, None, trusted=caller.trusted)
        except FunctionNotFoundError as exc:
            raise self.not_found(exc) from None
        if kind is not None and fn.kind is not kind:
            raise RequestError(
                404,
                "FunctionNotFound",
                f"Trying to execute {path} as {_a(kind)}, but it is defined as {_a(fn.kind)}: "
                f"POST it to /api/{fn.kind}",
            )
        logs: list[str] = []
        try:
            value = await runtime.call(
                fn.kind, path, args, identity=caller.identity, trusted=caller.trusted, logs=logs
            )
        except FunctionNotFoundError as exc:  # the app was reloaded under us
            raise self.not_found(exc) from None
        except ConvexError as exc:
            return json_response(200, convex_error_body(exc, logs, fmt))
        except (Exception, SystemExit) as exc:
            if self.reporter is not None and not isinstance(exc, ArgumentValidationError):
                self.reporter.function_exception(path, exc)
            fault = store_fault(exc, self.store_path)
            message = error_text(exc) if fault is None else fault.message
            return json_response(
                200, {"status": "error", "errorMessage": message, "logLines": logs}
            )
        try:
            exported = export_value(value, fmt)
        except (ValueError, RecursionError) as exc:
            message = f"{path} returned a value that cannot be sent: {exc}"
            return json_response(
                200, {"status": "error", "errorMessage": message, "logLines": logs}
            )
        return json_response(200, {"status": "success", "value": exported, "logLines": logs})

    def not_found(self, exc: FunctionNotFoundError) -> RequestError:
        """404 ``FunctionNotFound``, saying so when the last reload failed."""
        message = str(exc)
        if self.reload_error is not None:
            message += (
                f"; the last reload failed ({self.reload_error}), so functions from the new "
                "code are not loaded"
            )
        return RequestError(404, "FunctionNotFound", message)

    async def status(self, request: Request) -> Response:
        from .. import __version__

        app = self.runtime.app
        store = self.runtime.store.health.status()
        if store.get("fatal"):
            state = "failed"  # it cannot write, and will not recover by itself
        elif not store["writable"]:
            state = "degraded"  # writes fail for now; reads and retries go on
        else:
            state = "running"
        return json_response(
            200,
            {
                "name": "convexpy",
                "version": __version__,
                "status": state,
                "functions": 0 if app is None else len(app.registry),
                "store": store,
            },
        )

    async def functions(self, request: Request) -> Response:
        require_admin(request, self.admin_key)
        app = self.runtime.app
        items = [] if app is None else sorted(app.registry, key=lambda item: item[0])
        listed = [
            {"path": path, "kind": fn.kind.value, "visibility": fn.visibility.value}
            for path, fn in items
        ]
        return json_response(200, {"functions": listed, "reloadError": self.reload_error})

    async def table_names(self) -> list[str]:
        runtime = self.runtime
        names = set(await runtime.store.tables())
        names.add(SCHEDULED_FUNCTIONS)
        app = runtime.app
        if app is not None and app.schema is not None:
            names.update(app.schema.tables)
        return sorted(names, key=lambda name: (name.startswith("_"), name))

    async def tables(self, request: Request) -> Response:
        require_admin(request, self.admin_key)
        names = await self.table_names()
        listed = [{"name": name, "system": name.startswith("_")} for name in names]
        return json_response(200, {"tables": listed})

    async def table(self, request: Request) -> Response:
        require_admin(request, self.admin_key)
        table = str(request.path_params["table"])
        limit_text = request.query_params.get("limit", str(DEFAULT_TABLE_LIMIT))
        limit = ascii_int(limit_text)
        if limit is None or not 1 <= limit <= MAX_TABLE_LIMIT:
            raise RequestError(
                400,
                "BadQueryArgs",
                f"limit must be an integer from 1 to {MAX_TABLE_LIMIT} in ASCII digits, "
                f"got {limit_text!r}",
            )
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise RequestError(400, "BadQueryArgs", "order must be 'asc' or 'desc'")
        if table not in await self.table_names():
            raise RequestError(404, "TableNotFound", f"There is no table named {table!r}")
        txn = self.runtime.transaction(writable=False)
        try:
            reader = SystemReader(txn) if table.startswith("_") else DatabaseReader(txn)
            query = reader.query(table).order("asc" if order == "asc" else "desc")
            docs = await query.take(limit + 1)
        finally:
            txn.release()
        return json_response(
            200,
            {
                "table": table,
                "documents": [to_convex_json(doc) for doc in docs[:limit]],
                "hasMore": len(docs) > limit,
            },
        )


class _CatchAll:
    """ASGI middleware: whatever escapes the app is reported and answered 503, never 500."""

    def __init__(self, app: ASGIApp, api: _Api) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            response = self.api.server_error(Request(scope), exc)
            if not started:  # else the client sees the response cut short
                await response(scope, receive, send)


class ConvexApp(Starlette):
    """The ASGI app :func:`create_app` makes.

    ``reload_error`` is the dev server's hook: while it is set (why the last
    reload failed, e.g. ``"convex/tasks.py:3: SyntaxError: ..."``), a call
    to a missing function says so, and ``GET /api/admin/functions`` returns
    it as ``reloadError``.
    """

    dashboard: Dashboard | None = None
    """The dashboard's state (``GET /dashboard``; see :mod:`~convexpy.server.dashboard`)."""

    def __init__(self, api: _Api, routes: list[BaseRoute], sync: SyncServer) -> None:
        super().__init__(
            routes=routes,
            middleware=[Middleware(_CatchAll, api=api)],
            exception_handlers={HTTPException: api.http_exception, Exception: api.unhandled},
        )
        self._api = api
        self.sync = sync
        """The websocket sync protocol at ``/api/sync`` (see :mod:`~convexpy.server.sync`)."""

    async def close(self, reason: str = "The server is shutting down") -> None:
        """Close the sync protocol's sockets with ``reason``, stop its live
        queries and answer the dashboard's waiting log polls (before the
        runtime stops)."""
        if self.dashboard is not None:
            self.dashboard.close()
        await self.sync.close(reason)

    @property
    def reload_error(self) -> str | None:
        return self._api.reload_error

    @reload_error.setter
    def reload_error(self, value: str | None) -> None:
        self._api.reload_error = value


def create_app(
    runtime: Runtime,
    *,
    admin_key: str | None = None,
    reporter: Reporter | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_pending_body_bytes: int = DEFAULT_MAX_PENDING_BODY_BYTES,
    sync_limits: SyncLimits | None = None,
    verifier: TokenVerifier | None = None,
) -> ConvexApp:
    """The HTTP API of ``runtime`` (which must be running while the app serves).

    ``admin_key`` enables ``Authorization: Convex <key>``; without it only
    public functions are reachable. ``reporter`` receives refused requests and
    tracebacks (the dev server's log). A request body must arrive within
    ``body_timeout`` seconds (else 408 ``RequestTimeout``) and be at most
    ``max_request_bytes`` (else 413); the bodies of all requests in progress
    together are held to ``max_pending_body_bytes`` (else 503 ``Overloaded``),
    so slow or many uploads cannot take the server's memory. ``sync_limits``
    bounds what a websocket client of ``/api/sync`` may do (see
    :class:`~convexpy.server.sync.SyncLimits`); call :meth:`ConvexApp.close`
    before the runtime stops. ``verifier`` checks bearer tokens, of HTTP
    requests and of the sync protocol's ``Authenticate`` messages alike
    (default: a :class:`~convexpy.auth.TokenVerifier` on the runtime's clock,
    which verifies every token against the app's ``auth_config.py``).
    """
    if not (isinstance(body_timeout, int | float) and 0 < body_timeout < math.inf):
        raise ValueError(f"body_timeout must be a positive number of seconds, got {body_timeout!r}")
    for name, value in (
        ("max_request_bytes", max_request_bytes),
        ("max_pending_body_bytes", max_pending_body_bytes),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if verifier is None:
        clock = runtime.clock
        verifier = TokenVerifier(clock=lambda: clock.now() / 1000)
    api = _Api(
        runtime,
        admin_key,
        reporter,
        max_request_bytes,
        float(body_timeout),
        max_pending_body_bytes,
        verifier,
    )
    guard = api.guard
    sync = SyncServer(runtime, admin_key, api.verify, sync_limits)
    routes: list[BaseRoute] = [
        Route("/", guard(api.status), methods=["GET"]),
        Route("/api/query", guard(api.function_endpoint(FunctionKind.QUERY)), methods=["POST"]),
        Route(
            "/api/mutation", guard(api.function_endpoint(FunctionKind.MUTATION)), methods=["POST"]
        ),
        Route("/api/action", guard(api.function_endpoint(FunctionKind.ACTION)), methods=["POST"]),
        Route("/api/run/{path:path}", guard(api.run_endpoint), methods=["POST"]),
        Route("/api/admin/functions", guard(api.functions), methods=["GET"]),
        Route("/api/admin/tables", guard(api.tables), methods=["GET"]),
        Route("/api/admin/tables/{table}", guard(api.table), methods=["GET"]),
        WebSocketRoute("/api/sync", sync.endpoint),  # the Rust (and Python) client
        WebSocketRoute("/api/{version}/sync", sync.endpoint),  # the JavaScript client
    ]
    dashboard = Dashboard(runtime, admin_key, api.bodies)
    app = ConvexApp(api, [*routes, *dashboard.routes(guard)], sync)
    app.dashboard = dashboard
    return app
