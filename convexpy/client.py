"""An asyncio client for Convex's websocket sync protocol (``/api/sync``).

The official ``convex`` Python package is synchronous (a Rust client behind a
lock); this one lives in your event loop::

    async with AsyncConvexClient("http://127.0.0.1:3210") as client:
        await client.mutation("messages:send", {"body": "hi"})
        print(await client.query("messages:list"))
        async for messages in client.subscribe("messages:list"):
            print(messages)  # the first result, then each change

It speaks the protocol the official clients speak (to convexpy's server or
to Convex's), over one connection:

* **Queries are subscriptions.** :meth:`AsyncConvexClient.subscribe` adds a
  query to the connection's query set; the server pushes a new result
  whenever a commit changes what the query read. Identical subscriptions
  (same function and arguments) share one query on the server. A subscriber
  that falls behind sees the newest result, not every one in between.
  :meth:`AsyncConvexClient.query` subscribes, takes the first result and
  unsubscribes.
* **Mutations are read-your-writes.** A mutation's result is returned once
  the server has also sent the query results that include its write (the
  transition whose timestamp reaches the mutation's), so a subscription read
  right after ``await client.mutation(...)`` already reflects it.
* **Reconnects by itself** after a lost connection, with jittered backoff:
  the query set and the authentication are sent again, as are mutations and
  actions not yet sent. A mutation sent but not answered is sent again too
  (the server may have run it: as with Convex's own clients, make mutations
  safe to repeat if a lost connection must never run one twice); an action
  sent but not answered fails with :class:`ConnectionLostError`, because
  running it again could repeat its side effects.

Messages are not compressed: per-message deflate costs both ends more CPU
than it saves on small JSON messages (measured with ``benchmarks/live.py``).

Errors: a function that throws :class:`~convexpy.errors.ConvexError` raises a
``ConvexError`` here with the same ``data``; other failures raise
:class:`FunctionError` with the server's message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import struct
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .convex_json import from_convex_json, to_convex_json
from .errors import ConvexError, ConvexpyError

__all__ = [
    "AsyncConvexClient",
    "ClientClosedError",
    "ConnectionLostError",
    "FunctionError",
    "Subscription",
]

logger = logging.getLogger("convexpy.client")

_U64 = struct.Struct("<Q")


class FunctionError(ConvexpyError, RuntimeError):
    """A query, mutation or action failed on the server (not with a
    :class:`~convexpy.errors.ConvexError`); the message is the server's."""


class ConnectionLostError(ConvexpyError, ConnectionError):
    """The connection dropped while an action was running: it may or may not
    have finished, so it is not sent again."""


class ClientClosedError(ConvexpyError, RuntimeError):
    """The client was closed (or its authentication was refused)."""


def _sync_url(url: str) -> str:
    """``http(s)://host[:port][/...]`` -> ``ws(s)://host[:port]/api/sync``."""
    parts = urlsplit(url)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(
            f"not a deployment URL: {url!r} (expected e.g. http://127.0.0.1:3210 or "
            "https://happy-otter-123.convex.cloud)"
        )
    return urlunsplit((schemes[parts.scheme], parts.netloc, "/api/sync", "", ""))


def _encode_ts(ts: int) -> str:
    return base64.b64encode(_U64.pack(ts)).decode("ascii")


def _decode_ts(text: object) -> int:
    if not isinstance(text, str):
        raise ValueError(f"a timestamp must be base64 text, got {text!r}")
    value: int = _U64.unpack(base64.b64decode(text, validate=True))[0]
    return value


def _failure(message: Mapping[str, Any]) -> Exception:
    """The exception a failed function's response (or QueryFailed) stands for."""
    if "errorData" in message and message["errorData"] is not None:
        return ConvexError(from_convex_json(message["errorData"]))
    text = message.get("result", message.get("errorMessage", "the function failed"))
    return FunctionError(str(text))


@dataclass
class _Query:
    """A query in the connection's query set, and who waits on its results."""

    query_id: int
    path: str
    args: object
    """The arguments in Convex JSON, as sent."""
    journal: str | None = None
    result: tuple[bool, Any] | None = None
    """The latest result: ``(True, value)`` or ``(False, exception)``."""
    version: int = 0
    """How many results have arrived (a subscriber remembers the last it saw)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set (and replaced) each time a result arrives."""
    subscribers: int = 0


@dataclass
class _Request:
    """A mutation or action sent (or waiting to be sent) and not settled yet."""

    kind: str
    """``"Mutation"`` or ``"Action"``."""
    message: dict[str, Any]
    future: asyncio.Future[Any]
    sent: bool = False
    ts: int | None = None
    """A mutation's commit timestamp, once it succeeded: the result is handed
    over when a transition reaches it."""
    value: Any = None


class Subscription:
    """The results of one query, newest first-come: an async iterator.

    Use it in ``async for`` (the query is removed from the server when the
    loop ends) or as an async context manager around the loop. Iterating
    yields the first result, then each later one; a result that is a failure
    raises (:class:`~convexpy.errors.ConvexError` or :class:`FunctionError`)
    and ends the iteration.
    """

    def __init__(self, client: AsyncConvexClient, path: str, args: Mapping[str, Any] | None):
        self._client = client
        self._path = path
        self._args = args
        self._query: _Query | None = None
        self._seen = 0
        self._closed = False

    async def __aenter__(self) -> Subscription:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._results()

    async def _results(self) -> AsyncIterator[Any]:
        self._open()
        try:
            while True:
                yield await self.next()
        finally:
            self.close()

    def _open(self) -> None:
        if self._closed:
            raise ClientClosedError("this subscription was closed")
        if self._query is None:
            self._query = self._client._subscribe(self._path, self._args)

    async def next(self) -> Any:
        """The next result not seen yet (waits for it)."""
        self._open()
        query = self._query
        assert query is not None
        while query.version == self._seen or query.result is None:
            self._client._check_usable()
            await query.changed.wait()
        self._seen = query.version
        ok, value = query.result
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Stop the subscription (idempotent)."""
        if self._query is not None and not self._closed:
            self._client._unsubscribe(self._query)
        self._closed = True


class AsyncConvexClient:
    """A connection to a deployment's sync endpoint; see the module docstring.

    ``url`` is the deployment's HTTP URL (``http://127.0.0.1:3210``).
    ``admin_key`` authenticates as the admin (internal functions become
    callable); ``auth`` is a user's JWT. Both can be changed later with
    :meth:`set_admin_auth` and :meth:`set_auth`.
    """

    def __init__(
        self,
        url: str,
        *,
        admin_key: str | None = None,
        auth: str | None = None,
        max_backoff: float = 5.0,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._sync_url = _sync_url(url)
        self._auth: tuple[str, str] | None = None
        if admin_key is not None:
            self._auth = ("Admin", admin_key)
        elif auth is not None:
            self._auth = ("User", auth)
        self._max_backoff = max_backoff
        self._open_timeout = open_timeout
        self._session_id = str(uuid.uuid4())
        self._connections = 0
        self._close_reason = "InitialConnect"
        self._queries: dict[int, _Query] = {}
        self._by_key: dict[tuple[str, str], _Query] = {}
        self._requests: dict[int, _Request] = {}
        self._next_query_id = 0
        self._next_request_id = 0
        self._query_version = 0
        """The query set version of our last ModifyQuerySet."""
        self._identity_version = 0
        self._server_version = 0
        """The query set version the server's last transition ended at."""
        self._server_ts: int | None = None
        """The timestamp of the last transition received."""
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._fatal: Exception | None = None
        self.connected = asyncio.Event()
        """Set while connected (for callers that want to wait for it)."""

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> AsyncConvexClient:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting (``async with`` does this)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="convexpy-client")

    async def close(self) -> None:
        """Close the connection; whatever still waits fails with :class:`ClientClosedError`."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_everything(ClientClosedError("the client was closed"))

    # -- the public calls ----------------------------------------------------------

    async def query(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        """Run a query once: its current result."""
        async with self.subscribe(path, args) as subscription:
            return await subscription.next()

    def subscribe(self, path: str, args: Mapping[str, Any] | None = None) -> Subscription:
        """The query's results as they change (see :class:`Subscription`)."""
        return Subscription(self, path, args)

    async def mutation(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        """Run a mutation; its result, once the queries reflect its writes."""
        return await self._request("Mutation", path, args)

    async def action(self, path: str, args: Mapping[str, Any] | None = None) -> Any:
        """Run an action; its result."""
        return await self._request("Action", path, args)

    async def set_auth(self, token: str | None) -> None:
        """Call functions as the user of this JWT from now on (None: anonymous)."""
        await self._set_auth(None if token is None else ("User", token))

    async def set_admin_auth(self, admin_key: str) -> None:
        """Call functions as the admin (internal ones too) from now on."""
        await self._set_auth(("Admin", admin_key))

    # -- requests ---------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosedError("the client was closed")

    async def _request(self, kind: str, path: str, args: Mapping[str, Any] | None) -> Any:
        self._check_usable()
        self.start()
        request_id = self._next_request_id
        self._next_request_id += 1
        message = {
            "type": kind,
            "requestId": request_id,
            "udfPath": path,
            "args": [to_convex_json(dict(args or {}))],
        }
        request = _Request(kind, message, asyncio.get_running_loop().create_future())
        self._requests[request_id] = request
        await self._send_request(request)
        try:
            return await request.future
        finally:
            self._requests.pop(request_id, None)

    async def _send_request(self, request: _Request) -> None:
        if await self._send(request.message):
            request.sent = True

    async def _set_auth(self, auth: tuple[str, str] | None) -> None:
        self._check_usable()
        self._auth = auth
        if self._ws is not None:  # otherwise it goes out on connect
            await self._send(self._authenticate_message())

    def _authenticate_message(self) -> dict[str, Any]:
        base = self._identity_version
        self._identity_version += 1
        if self._auth is None:
            return {"type": "Authenticate", "tokenType": "None", "baseVersion": base}
        token_type, value = self._auth
        return {
            "type": "Authenticate",
            "tokenType": token_type,
            "value": value,
            "baseVersion": base,
        }

    # -- the query set ------------------------------------------------------------------

    def _subscribe(self, path: str, args: Mapping[str, Any] | None) -> _Query:
        self._check_usable()
        self.start()
        encoded = to_convex_json(dict(args or {}))
        key = (path, json.dumps(encoded, sort_keys=True))
        query = self._by_key.get(key)
        if query is None:
            query = _Query(self._next_query_id, path, encoded)
            self._next_query_id += 1
            self._queries[query.query_id] = query
            self._by_key[key] = query
            self._modify([self._add_message(query)])
        query.subscribers += 1
        return query

    def _unsubscribe(self, query: _Query) -> None:
        query.subscribers -= 1
        if query.subscribers > 0 or query.query_id not in self._queries:
            return
        del self._queries[query.query_id]
        self._by_key = {k: q for k, q in self._by_key.items() if q is not query}
        if not self._closed:
            self._modify([{"type": "Remove", "queryId": query.query_id}])

    @staticmethod
    def _add_message(query: _Query) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "Add",
            "queryId": query.query_id,
            "udfPath": query.path,
            "args": [query.args],
        }
        if query.journal is not None:
            message["journal"] = query.journal
        return message

    def _modify(self, modifications: list[dict[str, Any]]) -> None:
        """Send a ModifyQuerySet now if connected (else the whole set goes on connect)."""
        if self._ws is None:
            return
        base = self._query_version
        self._query_version += 1
        message = {
            "type": "ModifyQuerySet",
            "baseVersion": base,
            "newVersion": self._query_version,
            "modifications": modifications,
        }
        task = asyncio.get_running_loop().create_task(self._send(message))
        task.add_done_callback(_log_failure)

    # -- the connection -------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> bool:
        """Send if connected; False if not (what was not sent goes out on connect)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(json.dumps(message))
        except ConnectionClosed:
            return False
        return True

    async def _run(self) -> None:
        """Connect, serve the connection, and reconnect with backoff until closed."""
        failures = 0
        while not self._closed:
            try:
                async with connect(
                    self._sync_url,
                    open_timeout=self._open_timeout,
                    max_size=None,
                    compression=None,
                ) as ws:
                    failures = 0
                    await self._serve(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                self._close_reason = f"{type(exc).__name__}: {exc}"
            except InvalidURI as exc:
                self._fatal = ValueError(str(exc))
            except _ProtocolError as exc:
                self._close_reason = str(exc)
                logger.warning("convexpy client: %s; reconnecting", exc)
            finally:
                self._disconnected()
            if self._fatal is not None:
                self._fail_everything(self._fatal)
                return
            failures += 1
            delay = min(self._max_backoff, 0.05 * 2 ** min(failures, 10))
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _serve(self, ws: ClientConnection) -> None:
        self._connections += 1
        self._ws = ws
        self._query_version = 0
        self._identity_version = 0
        self._server_version = 0
        connect_message: dict[str, Any] = {
            "type": "Connect",
            "sessionId": self._session_id,
            "connectionCount": self._connections - 1,
            "lastCloseReason": self._close_reason,
            "clientTs": int(time.time() * 1000),
        }
        if self._server_ts is not None:
            connect_message["maxObservedTimestamp"] = _encode_ts(self._server_ts)
        await ws.send(json.dumps(connect_message))
        if self._auth is not None:
            await ws.send(json.dumps(self._authenticate_message()))
        if self._queries:
            self._query_version = 1
            await ws.send(
                json.dumps(
                    {
                        "type": "ModifyQuerySet",
                        "baseVersion": 0,
                        "newVersion": 1,
                        "modifications": [self._add_message(q) for q in self._queries.values()],
                    }
                )
            )
        for request in list(self._requests.values()):
            if not request.sent or (request.kind == "Mutation" and request.ts is None):
                await ws.send(json.dumps(request.message))
                request.sent = True
        self.connected.set()
        async for raw in ws:
            self._received(raw)

    def _disconnected(self) -> None:
        self._ws = None
        self.connected.clear()
        for request in list(self._requests.values()):
            if request.kind == "Action" and request.sent and not request.future.done():
                request.future.set_exception(
                    ConnectionLostError(
                        f"the connection was lost while action {request.message['udfPath']!r} "
                        "was running; it may or may not have finished"
                    )
                )

    def _fail_everything(self, error: Exception) -> None:
        for request in self._requests.values():
            if not request.future.done():
                request.future.set_exception(error)
        for query in self._queries.values():
            query.result = (False, error)
            query.version += 1
            _wake(query)

    # -- server messages ------------------------------------------------------------

    def _received(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, TypeError, KeyError) as exc:
            raise _ProtocolError(f"the server sent a malformed message: {exc}") from None
        if kind == "Transition":
            self._transition(message)
        elif kind in ("MutationResponse", "ActionResponse"):
            self._response(message)
        elif kind == "AuthError":
            self._fatal = ClientClosedError(
                f"the server refused the authentication: {message.get('error')}"
            )
            self._fail_everything(self._fatal)
            raise _ProtocolError("authentication refused")
        elif kind == "FatalError":
            raise _ProtocolError(f"the server closed the session: {message.get('error')}")
        elif kind != "Ping":
            raise _ProtocolError(f"the server sent an unknown message type {kind!r}")

    def _transition(self, message: dict[str, Any]) -> None:
        try:
            start, end = message["startVersion"], message["endVersion"]
            if start["querySet"] != self._server_version:
                raise _ProtocolError(
                    f"a transition starts at query set version {start['querySet']}, "
                    f"but this client is at {self._server_version}"
                )
            end_ts = _decode_ts(end["ts"])
            modifications = message["modifications"]
        except (KeyError, TypeError, ValueError) as exc:
            raise _ProtocolError(f"the server sent a malformed transition: {exc}") from None
        self._server_version = end["querySet"]
        self._server_ts = end_ts
        for change in modifications:
            query = self._queries.get(change.get("queryId"))
            if query is None:
                continue  # removed since
            kind = change.get("type")
            if kind == "QueryUpdated":
                query.result = (True, from_convex_json(change.get("value")))
            elif kind == "QueryFailed":
                query.result = (False, _failure(change))
            else:
                continue
            query.journal = change.get("journal")
            query.version += 1
            _wake(query)
        for request in list(self._requests.values()):
            if request.ts is not None and request.ts <= end_ts and not request.future.done():
                request.future.set_result(request.value)

    def _response(self, message: dict[str, Any]) -> None:
        request = self._requests.get(message.get("requestId"))  # type: ignore[arg-type]
        if request is None or request.future.done():
            return
        if not message.get("success"):
            request.future.set_exception(_failure(message))
            return
        value = from_convex_json(message.get("result"))
        if request.kind == "Action":
            request.future.set_result(value)
            return
        try:
            ts = _decode_ts(message.get("ts"))
        except ValueError as exc:
            raise _ProtocolError(f"the server sent a malformed mutation response: {exc}") from None
        if self._server_ts is not None and ts <= self._server_ts:
            request.future.set_result(value)
        else:
            request.ts, request.value = ts, value


class _ProtocolError(Exception):
    """The server broke the protocol: the connection is dropped and made again."""


def _wake(query: _Query) -> None:
    event = query.changed
    query.changed = asyncio.Event()
    event.set()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("convexpy client: sending failed", exc_info=task.exception())
