"""The HTTP API's wire format: request bodies, answer formats and refusals.

A request body is a JSON object (:class:`BodyReader`); its ``args`` are
Convex JSON (:func:`body_args`) and its ``format`` names how values come back
(:func:`body_format`): ``"encoded"`` (Convex JSON, lossless) or ``"clean"``
(:func:`~convexpy.convex_json.to_clean_json`). Answers are compact JSON
(:func:`json_response`). A request refused before any function runs raises
:class:`RequestError`, which the app answers with ``{code, message}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..convex_json import from_convex_json, to_clean_json, to_convex_json, to_plain_json
from ..errors import ConvexError, error_text

__all__ = [
    "BodyReader",
    "RequestError",
    "ascii_int",
    "body_args",
    "body_format",
    "convex_error_body",
    "export_value",
    "json_response",
]

_FORMATS = {
    "convex_encoded_json": "encoded",
    "convex_json": "encoded",  # Convex's legacy alias
    "json": "clean",
    "convex_clean_json": "clean",  # Convex's legacy alias
}


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


def ascii_int(text: str) -> int | None:
    """``text`` as a non-negative integer if it is ASCII digits only, else None.

    (``str.isdigit`` and ``int`` also take ``"²"``, ``"١٢"``, ``" 12"`` and ``"1_2"``.)
    """
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text)


# --------------------------------------------------------------------------
# Request bodies


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


_BODY_BYTES = "convexpy.body_bytes"
"""Scope key: bytes of the request's body counted against the app's budget."""


class BodyReader:
    """Reads request bodies, each within a size and a time limit, all together
    within a budget of bytes held at once.

    A body is counted against the budget as it arrives and stays counted until
    :meth:`release` (the app releases it when the request has been answered).
    """

    def __init__(
        self, max_request_bytes: int, body_timeout: float, max_pending_body_bytes: int
    ) -> None:
        self.max_request_bytes = max_request_bytes
        self.body_timeout = body_timeout
        self.max_pending_body_bytes = max_pending_body_bytes
        self.pending_body_bytes = 0
        """Bytes of request bodies held by requests in progress."""

    async def read(self, request: Request) -> dict[str, Any]:
        """The JSON object in the body, read within ``body_timeout`` seconds and
        counted against the budget of held bytes."""
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

    def release(self, request: Request) -> None:
        """Give back what ``request``'s body held (once it has been answered)."""
        self.pending_body_bytes -= request.scope.pop(_BODY_BYTES, 0)


# --------------------------------------------------------------------------
# What a body asks for


def body_format(body: dict[str, Any], default: str) -> str:
    """The answer format ``body`` asks for: ``"encoded"`` or ``"clean"`` (``default`` if
    it names none)."""
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


def body_args(body: dict[str, Any]) -> dict[str, Any]:
    """The arguments in ``body``, decoded from Convex JSON (none: ``{}``)."""
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
# Answers


def export_value(value: object, fmt: str) -> object:
    """``value`` in the answer format ``fmt`` (``"encoded"`` or ``"clean"``), checked as
    a Convex value either way."""
    if fmt == "clean":
        to_convex_json(value)  # the same checks as the lossless format
        return to_clean_json(value)
    return to_convex_json(value)


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    """``body`` as compact JSON (it must hold no NaN or infinity)."""
    content = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def convex_error_body(exc: ConvexError, logs: list[str], fmt: str) -> dict[str, Any]:
    """The answer to a call that raised ``exc``, its data exported in ``fmt``."""
    body: dict[str, Any] = {"status": "error", "errorMessage": error_text(exc)}
    try:
        body["errorData"] = export_value(exc.data, fmt)
        if not isinstance(exc.data, str):  # Convex shows the data as JSON
            plain = json.dumps(to_plain_json(exc.data), ensure_ascii=False)
            body["errorMessage"] = f"ConvexError: {plain}"
    except (ValueError, RecursionError) as problem:
        body["errorMessage"] += f" (its data is not a Convex value: {problem})"
    body["logLines"] = logs
    return body
