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
``BadAdminKey``, ``InvalidAuthHeader``, ``MissingAdminKey`` (401),
``FunctionNotFound``, ``TableNotFound``, ``NotFound`` (404),
``MethodNotAllowed`` (405), ``PayloadTooLarge`` (413, over
:data:`MAX_REQUEST_BYTES`).

Unlike Convex, the ``Content-Type`` header is not checked (``curl -d`` works
as is); the body must be a JSON object either way.

Authorization: ``Convex <admin key>`` makes trusted calls (internal functions
too). ``Bearer <token>`` is a user: **for development only**, a JWT's ``sub``
and ``iss`` claims (and ``name``, ``email``, ``email_verified``, ``picture``;
the other claims land in ``claims``) become the caller's identity WITHOUT
checking the signature; a token that is not such a JWT gets 401.

Admin endpoints (``Convex <admin key>`` only), used by ``python -m convexpy``:
``GET /api/admin/functions``, ``GET /api/admin/tables`` and
``GET /api/admin/tables/{table}?limit=100&order=desc``. ``GET /`` is a small
JSON status.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..context import UserIdentity
from ..db import DatabaseReader, SystemReader
from ..errors import ArgumentValidationError, ConvexError, FunctionNotFoundError
from ..functions import FunctionKind
from ..runtime import Runtime
from ..scheduler.executor import error_text
from ..scheduler.jobs import SCHEDULED_FUNCTIONS
from ..values import from_convex_json, to_convex_json, to_plain_json

__all__ = ["MAX_REQUEST_BYTES", "Reporter", "create_app", "identity_from_jwt", "to_clean_json"]

logger = logging.getLogger("convexpy.server")

MAX_REQUEST_BYTES = (1 << 23) + 2000
"""Largest accepted request body: Convex's ``MAX_BACKEND_PUBLIC_API_REQUEST_SIZE``
(8 MiB of arguments plus room for the envelope)."""

DEFAULT_TABLE_LIMIT = 100
MAX_TABLE_LIMIT = 10_000

_FORMATS = {
    "convex_encoded_json": "encoded",
    "convex_json": "encoded",  # Convex's legacy alias
    "json": "clean",
    "convex_clean_json": "clean",  # Convex's legacy alias
}

# Registered JWT claims, which are not user attributes.
_JWT_REGISTERED = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})


class Reporter(Protocol):
    """Where the app reports what the runtime's events do not cover (the dev log)."""

    def request_error(self, method: str, path: str, status: int, code: str, message: str) -> None:
        """A request was refused with a 4xx before reaching a function."""

    def function_exception(self, path: str, exc: BaseException) -> None:
        """A function raised something other than ``ConvexError`` (show the traceback)."""

    def internal_error(self, method: str, path: str, exc: BaseException) -> None:
        """A bug in the server itself (answered with a 500)."""


class RequestError(Exception):
    """A request refused before any function ran: HTTP ``status`` with ``{code, message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the admin (trusted) or a user with an optional identity."""

    trusted: bool
    identity: UserIdentity | None


_ANONYMOUS = Caller(trusted=False, identity=None)
_ADMIN = Caller(trusted=True, identity=None)


# --------------------------------------------------------------------------
# Values


def to_clean_json(value: object) -> object:
    """Convex's ``"json"`` export: lossy but readable.

    int64 becomes a decimal string, bytes a base64 string, NaN and infinities
    the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [to_clean_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_clean_json(item) for key, item in value.items()}
    # Not a Convex value: let the encoder name the problem.
    return to_convex_json(value)


def _export(value: object, fmt: str) -> object:
    if fmt == "clean":
        to_convex_json(value)  # the same checks as the lossless format
        return to_clean_json(value)
    return to_convex_json(value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise RequestError(
            400, "BadJsonBody", "Failed to parse the request body as JSON: the body is empty"
        )
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(
            400, "BadJsonBody", "Failed to parse the request body as JSON: nested too deeply"
        ) from None
    except ValueError as exc:
        raise RequestError(
            400, "BadJsonBody", f"Failed to parse the request body as JSON: {exc}"
        ) from None
    if not isinstance(body, dict):
        raise RequestError(
            400,
            "BadJsonBody",
            f"The request body must be a JSON object, got {_json_type(body)}",
        )
    return body


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON (send it as Convex JSON: {{'$float': ...}})")


def _format(body: dict[str, Any], default: str) -> str:
    fmt = body.get("format")
    if fmt is None:
        return default
    if not isinstance(fmt, str):
        raise RequestError(400, "BadJsonBody", f"`format` must be a string, got {_json_type(fmt)}")
    try:
        return _FORMATS[fmt]
    except KeyError:
        raise RequestError(
            400,
            "BadFormat",
            f"format param must be one of [`json`, `convex_encoded_json`]. Got {fmt}",
        ) from None


def _args(body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("args")
    if raw is None:
        return {}
    if isinstance(raw, list):
        if len(raw) != 1:
            raise RequestError(
                400,
                "BadJsonBody",
                f"`args` must be an object or an array of one object, got an array of {len(raw)}",
            )
        raw = raw[0]
    if not isinstance(raw, dict):
        raise RequestError(400, "BadJsonBody", f"`args` must be an object, got {_json_type(raw)}")
    try:
        args = from_convex_json(raw)
    except RecursionError:
        raise RequestError(400, "BadConvexValue", "`args` are nested too deeply") from None
    except ValueError as exc:
        raise RequestError(400, "BadConvexValue", f"`args`: {exc}") from None
    if not isinstance(args, dict):
        raise RequestError(
            400, "BadJsonBody", "`args` must be an object, got an encoded Convex scalar"
        )
    return args


# --------------------------------------------------------------------------
# Authorization


def identity_from_jwt(token: str) -> UserIdentity:
    """The identity a JWT's claims describe. DEVELOPMENT ONLY: the signature is not checked.

    Raises :class:`RequestError` (401 ``InvalidAuthHeader``) for anything that
    is not a JWT with string ``sub`` and ``iss`` claims.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise RequestError(
            401,
            "InvalidAuthHeader",
            "Could not parse the bearer token as a JWT (expected three base64url parts "
            "separated by '.')",
        )
    try:
        segment = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(segment.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError, RecursionError):
        raise RequestError(
            401, "InvalidAuthHeader", "Could not parse the bearer token's payload as JSON"
        ) from None
    if not isinstance(payload, dict):
        raise RequestError(401, "InvalidAuthHeader", "The JWT payload is not a JSON object")
    subject, issuer = payload.get("sub"), payload.get("iss")
    if not isinstance(subject, str) or not subject or not isinstance(issuer, str) or not issuer:
        raise RequestError(
            401, "InvalidAuthHeader", "The JWT must have string `sub` and `iss` claims"
        )

    def text(name: str) -> str | None:
        value = payload.get(name)
        return value if isinstance(value, str) else None

    verified = payload.get("email_verified")
    known = {"name", "email", "email_verified", "picture"}
    claims = {k: v for k, v in payload.items() if k not in _JWT_REGISTERED and k not in known}
    return UserIdentity(
        subject=subject,
        issuer=issuer,
        name=text("name"),
        email=text("email"),
        email_verified=verified if isinstance(verified, bool) else None,
        picture_url=text("picture"),
        claims=claims,
    )


# --------------------------------------------------------------------------
# The app


def _json_response(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    content = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    return Response(content, status_code=status, media_type="application/json", headers=headers)


Endpoint = Callable[[Request], Awaitable[Response]]


class _Api:
    def __init__(
        self,
        runtime: Runtime,
        admin_key: str | None,
        reporter: Reporter | None,
        max_request_bytes: int,
    ) -> None:
        self.runtime = runtime
        self.admin_key = admin_key
        self.reporter = reporter
        self.max_request_bytes = max_request_bytes

    # -- plumbing ----------------------------------------------------------------

    def guard(self, endpoint: Endpoint) -> Endpoint:
        """Turn every failure into a JSON response: a 4xx, or a 500 for our own bugs."""

        async def guarded(request: Request) -> Response:
            try:
                return await endpoint(request)
            except RequestError as err:
                return self.refuse(request, err)
            except Exception as exc:
                return self.internal_error(request, exc)

        return guarded

    def refuse(self, request: Request, err: RequestError) -> Response:
        if self.reporter is not None:
            self.reporter.request_error(
                request.method, request.url.path, err.status, err.code, err.message
            )
        return _json_response(err.status, {"code": err.code, "message": err.message})

    def internal_error(self, request: Request, exc: BaseException) -> Response:
        if self.reporter is not None:
            self.reporter.internal_error(request.method, request.url.path, exc)
        else:
            logger.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _json_response(
            500,
            {"code": "InternalServerError", "message": f"{type(exc).__name__}: {exc}"},
        )

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
        return self.internal_error(request, exc)

    async def read_body(self, request: Request) -> dict[str, Any]:
        limit = self.max_request_bytes
        too_large = RequestError(
            413,
            "PayloadTooLarge",
            f"The request body is larger than the limit of {limit} bytes",
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
        except ClientDisconnect:
            raise RequestError(400, "ClientDisconnected", "The client went away") from None
        return _parse_body(b"".join(chunks))

    def caller(self, request: Request) -> Caller:
        header = request.headers.get("authorization")
        if header is None:
            return _ANONYMOUS
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() == "convex":
            key = self.admin_key
            if key and credential and hmac.compare_digest(credential.encode(), key.encode()):
                return _ADMIN
            raise RequestError(
                401, "BadAdminKey", "The provided admin key was invalid for this instance"
            )
        if scheme.lower() == "bearer" and credential:
            return Caller(trusted=False, identity=identity_from_jwt(credential))
        raise RequestError(
            401,
            "InvalidAuthHeader",
            "The Authorization header must be `Bearer <JWT>` or `Convex <admin key>`",
        )

    def require_admin(self, request: Request) -> None:
        if request.headers.get("authorization") is None:
            raise RequestError(
                401,
                "MissingAdminKey",
                "This endpoint needs the header `Authorization: Convex <admin key>` "
                "(the dev server prints the key and stores it in .convexpy/admin_key)",
            )
        if not self.caller(request).trusted:
            raise RequestError(
                401, "BadAdminKey", "The provided admin key was invalid for this instance"
            )

    # -- functions -----------------------------------------------------------------

    def function_endpoint(self, kind: FunctionKind) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            caller = self.caller(request)
            body = await self.read_body(request)
            path = body.get("path")
            if not isinstance(path, str):
                problem = "missing field `path`" if path is None else "`path` must be a string"
                raise RequestError(400, "BadJsonBody", problem)
            return await self.call(kind, path, _args(body), caller, _format(body, "encoded"))

        return endpoint

    async def run_endpoint(self, request: Request) -> Response:
        caller = self.caller(request)
        parts = str(request.path_params.get("path", "")).strip("/").split("/")
        if len(parts) < 2 or not all(parts):
            raise RequestError(
                400,
                "MissingIdentifier",
                "Path or function name not provided in path, e.g. /api/run/messages/list",
            )
        body = await self.read_body(request)
        path = "/".join(parts[:-1]) + ":" + parts[-1]
        return await self.call(None, path, _args(body), caller, _format(body, "clean"))

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
            raise RequestError(404, "FunctionNotFound", str(exc)) from None
        if kind is not None and fn.kind is not kind:
            raise RequestError(
                404,
                "FunctionNotFound",
                f"Trying to execute {path} as a {kind}, but it is defined as a {fn.kind}: "
                f"POST it to /api/{fn.kind}",
            )
        logs: list[str] = []
        try:
            value = await runtime.call(
                fn.kind, path, args, identity=caller.identity, trusted=caller.trusted, logs=logs
            )
        except FunctionNotFoundError as exc:  # the app was reloaded under us
            raise RequestError(404, "FunctionNotFound", str(exc)) from None
        except ConvexError as exc:
            return _json_response(200, self.convex_error(exc, logs, fmt))
        except (Exception, SystemExit) as exc:
            if self.reporter is not None and not isinstance(exc, ArgumentValidationError):
                self.reporter.function_exception(path, exc)
            return _json_response(
                200, {"status": "error", "errorMessage": error_text(exc), "logLines": logs}
            )
        try:
            exported = _export(value, fmt)
        except (ValueError, RecursionError) as exc:
            message = f"{path} returned a value that cannot be sent: {exc}"
            return _json_response(
                200, {"status": "error", "errorMessage": message, "logLines": logs}
            )
        return _json_response(200, {"status": "success", "value": exported, "logLines": logs})

    @staticmethod
    def convex_error(exc: ConvexError, logs: list[str], fmt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "error", "errorMessage": error_text(exc)}
        try:
            body["errorData"] = _export(exc.data, fmt)
            if not isinstance(exc.data, str):  # Convex shows the data as JSON
                plain = json.dumps(to_plain_json(exc.data), ensure_ascii=False)
                body["errorMessage"] = f"ConvexError: {plain}"
        except (ValueError, RecursionError) as problem:
            body["errorMessage"] += f" (its data is not a Convex value: {problem})"
        body["logLines"] = logs
        return body

    # -- status and admin ------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        from .. import __version__

        app = self.runtime.app
        return _json_response(
            200,
            {
                "name": "convexpy",
                "version": __version__,
                "status": "running",
                "functions": 0 if app is None else len(app.registry),
            },
        )

    async def functions(self, request: Request) -> Response:
        self.require_admin(request)
        app = self.runtime.app
        items = [] if app is None else sorted(app.registry, key=lambda item: item[0])
        listed = [
            {"path": path, "kind": fn.kind.value, "visibility": fn.visibility.value}
            for path, fn in items
        ]
        return _json_response(200, {"functions": listed})

    async def table_names(self) -> list[str]:
        runtime = self.runtime
        names = set(await runtime.store.tables())
        names.add(SCHEDULED_FUNCTIONS)
        app = runtime.app
        if app is not None and app.schema is not None:
            names.update(app.schema.tables)
        return sorted(names, key=lambda name: (name.startswith("_"), name))

    async def tables(self, request: Request) -> Response:
        self.require_admin(request)
        names = await self.table_names()
        listed = [{"name": name, "system": name.startswith("_")} for name in names]
        return _json_response(200, {"tables": listed})

    async def table(self, request: Request) -> Response:
        self.require_admin(request)
        table = str(request.path_params["table"])
        limit_text = request.query_params.get("limit", str(DEFAULT_TABLE_LIMIT))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_TABLE_LIMIT:
            raise RequestError(
                400, "BadQueryArgs", f"limit must be an integer from 1 to {MAX_TABLE_LIMIT}"
            )
        limit = int(limit_text)
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
        return _json_response(
            200,
            {
                "table": table,
                "documents": [to_convex_json(doc) for doc in docs[:limit]],
                "hasMore": len(docs) > limit,
            },
        )


def create_app(
    runtime: Runtime,
    *,
    admin_key: str | None = None,
    reporter: Reporter | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> Starlette:
    """The HTTP API of ``runtime`` (which must be running while the app serves).

    ``admin_key`` enables ``Authorization: Convex <key>``; without it only
    public functions are reachable. ``reporter`` receives refused requests and
    tracebacks (the dev server's log).
    """
    api = _Api(runtime, admin_key, reporter, max_request_bytes)
    guard = api.guard
    routes = [
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
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: api.http_exception, Exception: api.unhandled},
    )
