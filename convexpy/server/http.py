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
``MethodNotAllowed`` (405), ``RequestTimeout`` (408: the body did not arrive
within ``body_timeout`` seconds), ``PayloadTooLarge`` (413, over
:data:`MAX_REQUEST_BYTES`), ``Overloaded`` (503: the request bodies being
received and served together would pass ``max_pending_body_bytes``).

No request gets a 500 or a traceback. Anything that escapes an endpoint is
reported with its traceback (to the ``reporter``, else the
``convexpy.server`` logger) and answered 503 with ``{code, message}``: a
store fault says what happened to the database (``DatabaseDamaged``,
``NoSpaceLeft``, ``CommitFailed``, ``StoreClosed``, ``DatabaseError``; see
:func:`store_fault`), anything else is ``InternalServerError`` with the
details in the server log. A function that hits a store fault gets the same
explanation as its ``errorMessage``.

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

import asyncio
import base64
import binascii
import errno
import hmac
import json
import logging
import math
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..context import UserIdentity
from ..convex_json import from_convex_json, to_clean_json, to_convex_json, to_plain_json
from ..db import DatabaseReader, SystemReader
from ..errors import (
    ArgumentValidationError,
    CommitFailedError,
    ConvexError,
    FunctionNotFoundError,
    StoreClosedError,
    StoreUnavailableError,
    error_text,
)
from ..functions import FunctionKind
from ..runtime import Runtime
from ..store.jobs import SCHEDULED_FUNCTIONS

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_PENDING_BODY_BYTES",
    "MAX_REQUEST_BYTES",
    "ConvexApp",
    "Reporter",
    "StoreFault",
    "create_app",
    "identity_from_jwt",
    "store_fault",
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

    def server_error(
        self, method: str, path: str, status: int, code: str, message: str, exc: BaseException
    ) -> None:
        """An exception escaped an endpoint (a store fault, or a bug in the server):
        answered ``status`` with ``{code, message}``; show the traceback."""


class RequestError(Exception):
    """A request refused before any function ran: HTTP ``status`` with ``{code, message}``.

    ``close`` asks the server to close the connection after the answer (the
    rest of the request body was not read).
    """

    def __init__(self, status: int, code: str, message: str, *, close: bool = False) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.close = close
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the admin (trusted) or a user with an optional identity."""

    trusted: bool
    identity: UserIdentity | None


_ANONYMOUS = Caller(trusted=False, identity=None)
_ADMIN = Caller(trusted=True, identity=None)


# --------------------------------------------------------------------------
# Request input and store faults


def ascii_int(text: str) -> int | None:
    """``text`` as a non-negative integer if it is ASCII digits only, else None.

    (``str.isdigit`` and ``int`` also take ``"²"``, ``"١٢"``, ``" 12"`` and ``"1_2"``.)
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


@dataclass(frozen=True, slots=True)
class StoreFault:
    """What a store failure means, for people: a ``code`` and a one-line ``message``."""

    code: str
    message: str


_SQLITE_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_DAMAGED_TEXT = ("malformed", "not a database", "database corrupt")
_FULL_TEXT = ("database or disk is full", "no space left on device")
_NEARLY_FULL_BYTES = 1 << 20
"""An I/O error on a file system with less free space than this is read as a full disk
(SQLite says "disk I/O error" when it cannot grow its shared-memory file)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _summary(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _nearly_full(path: Path | None) -> bool:
    directory = None if path is None else path.parent
    while directory is not None and not directory.exists() and directory != directory.parent:
        directory = directory.parent
    if directory is None:
        return False
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < _NEARLY_FULL_BYTES


def no_space(exc: BaseException, path: Path | None = None) -> BaseException | None:
    """The error in ``exc``'s chain that says the disk is full, if one does.

    ``path`` is the file being written when the driver's error is only an I/O
    error (then a file system with almost no free space counts as full).
    """
    for err in _chain(exc):
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return err
        text = str(err).lower()
        if _sqlite_code(err) == sqlite3.SQLITE_FULL or any(t in text for t in _FULL_TEXT):
            return err
    for err in _chain(exc):
        io_error = isinstance(err, OSError) and err.errno == errno.EIO
        sqlite_io = isinstance(err, sqlite3.Error) and (
            _sqlite_code(err) == sqlite3.SQLITE_IOERR or "disk i/o error" in str(err).lower()
        )
        if (io_error or sqlite_io) and _nearly_full(path):
            return err
    return None


def store_fault(exc: BaseException, path: Path | None = None) -> StoreFault | None:
    """What ``exc`` means if it is a store fault (None if it is not one).

    ``path`` is the database file, named in the message. Looks through the
    exception's causes: the store wraps the driver's error.
    """
    where = "the database" if path is None else f"the database file {str(path)!r}"
    subject = where[0].upper() + where[1:]
    full = no_space(exc, path)
    if full is not None:
        return StoreFault(
            "NoSpaceLeft",
            f"No space left on device for {where} ({_summary(full)}): free some space; "
            "nothing was written",
        )
    for err in _chain(exc):
        damaged = _sqlite_code(err) in _SQLITE_DAMAGED
        if damaged or (
            isinstance(err, sqlite3.DatabaseError)
            and any(t in str(err).lower() for t in _DAMAGED_TEXT)
        ):
            return StoreFault(
                "DatabaseDamaged",
                f"{subject} is damaged ({_summary(err)}), so convexpy cannot read it: "
                "restore it from a backup while the server is stopped (or, if its data does "
                "not matter, delete it to start empty)",
            )
    if isinstance(exc, StoreClosedError):
        return StoreFault("StoreClosed", f"The store is closed: {exc}")
    if isinstance(exc, CommitFailedError):
        cause = exc.__cause__
        reason = _summary(cause) if cause is not None else str(exc)
        return StoreFault("CommitFailed", f"{subject} could not commit: {reason}")
    if isinstance(exc, StoreUnavailableError):
        return StoreFault("StoreUnavailable", f"{subject} is unavailable: {exc}")
    for err in _chain(exc):
        if isinstance(err, sqlite3.Error):
            return StoreFault("DatabaseError", f"{subject} failed: {_summary(err)}")
    return None


# --------------------------------------------------------------------------
# Values


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


def _a(kind: FunctionKind | str) -> str:
    """``"a query"``, ``"a mutation"``, ``"an action"``."""
    kind = str(kind)
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


_BODY_BYTES = "convexpy.body_bytes"
"""Scope key: bytes of the request's body counted against the app's budget."""


class _Api:
    def __init__(
        self,
        runtime: Runtime,
        admin_key: str | None,
        reporter: Reporter | None,
        max_request_bytes: int,
        body_timeout: float,
        max_pending_body_bytes: int,
    ) -> None:
        self.runtime = runtime
        self.admin_key = admin_key
        self.reporter = reporter
        self.max_request_bytes = max_request_bytes
        self.body_timeout = body_timeout
        self.max_pending_body_bytes = max_pending_body_bytes
        self.pending_body_bytes = 0
        """Bytes of request bodies held by requests in progress."""
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
                self.pending_body_bytes -= request.scope.pop(_BODY_BYTES, 0)

        return guarded

    def refuse(self, request: Request, err: RequestError) -> Response:
        if self.reporter is not None:
            self.reporter.request_error(
                request.method, request.url.path, err.status, err.code, err.message
            )
        headers = {"Connection": "close"} if err.close else None
        return _json_response(err.status, {"code": err.code, "message": err.message}, headers)

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
        return _json_response(503, {"code": fault.code, "message": fault.message})

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

    async def read_body(self, request: Request) -> dict[str, Any]:
        """The JSON object in the body, read within ``body_timeout`` seconds and
        counted against the app's budget of pending body bytes."""
        limit = self.max_request_bytes
        too_large = RequestError(
            413,
            "PayloadTooLarge",
            f"The request body is larger than the limit of {limit} bytes",
        )  # (the server reads and drops the rest, so that the client sees the answer)
        header = request.headers.get("content-length")
        declared = None if header is None else ascii_int(header.strip())
        if header is not None and declared is None:
            raise RequestError(
                400,
                "BadRequest",
                f"The Content-Length header must be a number of bytes, got {header!r}",
                close=True,
            )
        if declared is not None and declared > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise too_large
                    self.hold(request, len(chunk))
                    chunks.append(chunk)
        except TimeoutError:
            expected = "" if declared is None else f" of {declared}"
            raise RequestError(
                408,
                "RequestTimeout",
                f"The request body did not arrive within {self.body_timeout:g} s "
                f"({size}{expected} bytes received)",
                close=True,
            ) from None
        except ClientDisconnect:
            raise RequestError(400, "ClientDisconnected", "The client went away") from None
        return _parse_body(b"".join(chunks))

    def hold(self, request: Request, size: int) -> None:
        """Count ``size`` more bytes of ``request``'s body (released when it is answered)."""
        budget = self.max_pending_body_bytes
        if self.pending_body_bytes + size > budget:
            raise RequestError(
                503,
                "Overloaded",
                f"The server is already holding {self.pending_body_bytes} bytes of request "
                f"bodies (its limit is {budget}); try again when fewer requests are in flight",
                close=True,
            )
        self.pending_body_bytes += size
        request.scope[_BODY_BYTES] = request.scope.get(_BODY_BYTES, 0) + size

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
            return _json_response(200, self.convex_error(exc, logs, fmt))
        except (Exception, SystemExit) as exc:
            if self.reporter is not None and not isinstance(exc, ArgumentValidationError):
                self.reporter.function_exception(path, exc)
            fault = store_fault(exc, self.store_path)
            message = error_text(exc) if fault is None else fault.message
            return _json_response(
                200, {"status": "error", "errorMessage": message, "logLines": logs}
            )
        try:
            exported = _export(value, fmt)
        except (ValueError, RecursionError) as exc:
            message = f"{path} returned a value that cannot be sent: {exc}"
            return _json_response(
                200, {"status": "error", "errorMessage": message, "logLines": logs}
            )
        return _json_response(200, {"status": "success", "value": exported, "logLines": logs})

    def not_found(self, exc: FunctionNotFoundError) -> RequestError:
        """404 ``FunctionNotFound``, saying so when the last reload failed."""
        message = str(exc)
        if self.reload_error is not None:
            message += (
                f"; the last reload failed ({self.reload_error}), so functions from the new "
                "code are not loaded"
            )
        return RequestError(404, "FunctionNotFound", message)

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
        store = self.runtime.store.health.status()
        if store.get("fatal"):
            state = "failed"  # it cannot write, and will not recover by itself
        elif not store["writable"]:
            state = "degraded"  # writes fail for now; reads and retries go on
        else:
            state = "running"
        return _json_response(
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
        self.require_admin(request)
        app = self.runtime.app
        items = [] if app is None else sorted(app.registry, key=lambda item: item[0])
        listed = [
            {"path": path, "kind": fn.kind.value, "visibility": fn.visibility.value}
            for path, fn in items
        ]
        return _json_response(200, {"functions": listed, "reloadError": self.reload_error})

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
        return _json_response(
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

    def __init__(self, api: _Api, routes: list[Route]) -> None:
        super().__init__(
            routes=routes,
            middleware=[Middleware(_CatchAll, api=api)],
            exception_handlers={HTTPException: api.http_exception, Exception: api.unhandled},
        )
        self._api = api

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
) -> ConvexApp:
    """The HTTP API of ``runtime`` (which must be running while the app serves).

    ``admin_key`` enables ``Authorization: Convex <key>``; without it only
    public functions are reachable. ``reporter`` receives refused requests and
    tracebacks (the dev server's log). A request body must arrive within
    ``body_timeout`` seconds (else 408 ``RequestTimeout``) and be at most
    ``max_request_bytes`` (else 413); the bodies of all requests in progress
    together are held to ``max_pending_body_bytes`` (else 503 ``Overloaded``),
    so slow or many uploads cannot take the server's memory.
    """
    if not (isinstance(body_timeout, int | float) and 0 < body_timeout < math.inf):
        raise ValueError(f"body_timeout must be a positive number of seconds, got {body_timeout!r}")
    for name, value in (
        ("max_request_bytes", max_request_bytes),
        ("max_pending_body_bytes", max_pending_body_bytes),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    api = _Api(
        runtime, admin_key, reporter, max_request_bytes, float(body_timeout), max_pending_body_bytes
    )
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
    return ConvexApp(api, routes)
