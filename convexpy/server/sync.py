"""``/api/sync``: Convex's websocket sync protocol, which the official clients speak.

One JSON message per text frame. The client sends ``Connect``,
``ModifyQuerySet`` (``Add``/``Remove`` queries, from ``baseVersion`` to
``newVersion``), ``Mutation`` and ``Action`` (``requestId``, ``udfPath``,
``args``: an array of one object), ``Authenticate`` (``tokenType``
``Admin``/``User``/``None``, ``value``, ``baseVersion``) and ``Event``. The
server answers with ``Transition`` (from ``startVersion`` to ``endVersion``,
each ``{querySet, identity, ts}``, with ``QueryUpdated`` / ``QueryFailed`` /
``QueryRemoved`` modifications), ``MutationResponse``, ``ActionResponse``,
``AuthError``, ``FatalError`` and ``Ping``. Timestamps are base64 of a
little-endian u64.

What the clients rely on, and this module keeps:

* A transition starts exactly where the previous one ended (the client
  closes the socket otherwise); ``querySet`` and ``identity`` move only when
  every query of the client's change has a result, ``ts`` never goes back.
* All results in a transition are as of its ``ts`` (see :mod:`convexpy.live`).
* A successful mutation's response carries its commit's ``ts`` and is
  followed by a transition whose ``ts`` is at least that: the client returns
  the mutation's result only then, so it sees its own write in every query.
  (A failed one is followed by a transition too, as in Convex: the Rust
  client waits for one when the failure carries ``errorData``.)
  Mutations of one connection run one at a time, in order; actions at once.
* Anything wrong with a message (bad JSON, an unknown type, a version that
  does not follow) gets ``FatalError`` with the reason and the socket is
  closed; an invalid token gets ``AuthError``. Other connections go on.

Each connection has a bounded queue of outgoing messages: a client that does
not read them is disconnected rather than holding memory or delaying
others. Queries per connection and message sizes are limited, a ``Ping``
goes out when nothing else was sent for :attr:`SyncLimits.ping_interval`
seconds, and :meth:`SyncServer.close` closes every socket with a reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.websockets import WebSocket

from ..errors import ConvexError, error_text
from ..functions import FunctionKind
from ..live import LiveQueries, LiveQuery, Outcome
from ..runtime import Runtime
from .auth import Caller, Verify, request_caller
from .wire import RequestError, body_args, convex_error_body, export_value

__all__ = ["SyncLimits", "SyncServer", "decode_ts", "encode_ts"]

logger = logging.getLogger("convexpy.server")

_U64 = struct.Struct("<Q")


def encode_ts(ts: int) -> str:
    """A timestamp as the protocol sends it: base64 of its 8 little-endian bytes."""
    return base64.b64encode(_U64.pack(ts)).decode("ascii")


def decode_ts(text: str) -> int:
    return int(_U64.unpack(base64.b64decode(text, validate=True))[0])


@dataclass(frozen=True)
class SyncLimits:
    """What one connection may do, and how often the server pings."""

    max_message_bytes: int = (1 << 23) + 2000
    """Largest accepted client message (Convex's 8 MiB of arguments plus the envelope)."""
    max_queries: int = 1024
    """Queries one connection may subscribe to at once."""
    max_pending_requests: int = 1000
    """Mutations and actions one connection may have in flight (Convex's limit)."""
    max_queued_messages: int = 1024
    """Outgoing messages queued for a client before it counts as too slow and is
    disconnected."""
    ping_interval: float = 15.0
    """Seconds of silence after which the server sends ``Ping`` (the Rust client
    gives up on a server silent for 30 s)."""
    query_timeout: float = 60.0
    """Seconds a subscribed query may run before it fails (Convex's sync worker
    gives up after 60 s too); every client waits for the slowest query of a round."""


class ProtocolError(Exception):
    """The client broke the protocol: it gets ``FatalError`` with this reason."""


class AuthFailed(Exception):
    """An ``Authenticate`` with a token that is not accepted: ``AuthError``."""


_CLOSE = object()
"""Queue sentinel: send the close frame after what is queued before it."""


def _int(message: dict[str, Any], name: str) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        kind = message.get("type")
        raise ProtocolError(
            f"{kind} message: `{name}` must be a non-negative integer, got {value!r:.60}"
        )
    return value


def _str(message: dict[str, Any], name: str, kind: str) -> str:
    value = message.get(name)
    if not isinstance(value, str):
        raise ProtocolError(f"{kind} message: `{name}` must be a string, got {value!r:.60}")
    return value


def _udf_path(message: dict[str, Any], kind: str) -> str:
    """The function path, with Convex's canonical ``module.js:function`` accepted
    (clients send it so when they resubscribe after a reconnect)."""
    path = _str(message, "udfPath", kind)
    module, sep, name = path.rpartition(":")
    if sep and module.endswith(".js"):
        return f"{module.removesuffix('.js')}:{name}"
    return path


def _args(message: dict[str, Any]) -> object:
    """A message's ``args``: an array of one object (or the object), as sent."""
    raw = message.get("args")
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    return {} if raw is None else raw


async def token_caller(
    token_type: str, value: str, admin_key: str | None, verify: Verify
) -> Caller:
    """Who an ``Authenticate`` message makes the client, through the HTTP API's rules
    (an admin key as ``Authorization: Convex``, a user token as ``Bearer``, checked
    by ``verify``: the app's :class:`~convexpy.auth.TokenVerifier`)."""
    if token_type == "None":
        return Caller(trusted=False, identity=None)
    scheme = {"Admin": "Convex", "User": "Bearer"}.get(token_type)
    if scheme is None:
        raise ProtocolError(
            f"Authenticate message: `tokenType` must be Admin, User or None, got {token_type!r:.60}"
        )
    header = f"{scheme} {value}".encode("latin-1", "replace")
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/sync",
        "headers": [(b"authorization", header)],
    }
    try:
        return await request_caller(Request(scope), admin_key, verify)
    except RequestError as err:
        raise AuthFailed(err.message) from None


@dataclass
class _Change:
    """A query set or identity change the client made, not yet in a transition."""

    query_set: int | None = None
    identity: int | None = None
    adds: dict[int, LiveQuery] = field(default_factory=dict)
    removes: list[int] = field(default_factory=list)
    replace: dict[int, LiveQuery] | None = None
    """An identity change: every query, under the new caller."""

    def queries(self) -> list[LiveQuery]:
        return list((self.adds if self.replace is None else self.replace).values())


class _Connection:
    """One websocket session: its query set, versions, requests and outgoing queue."""

    def __init__(self, server: SyncServer, websocket: WebSocket) -> None:
        self.server = server
        self.hub = server.hub
        self.runtime = server.runtime
        self.limits = server.limits
        self.websocket = websocket
        self.outgoing: asyncio.Queue[object] = asyncio.Queue(self.limits.max_queued_messages)
        self.done = asyncio.Event()
        self.closing = False
        # What the client has, as of the last transition sent.
        self.query_set = 0
        self.identity = 0
        self.ts = 0
        self.active: dict[int, LiveQuery] = {}
        self.sent: dict[int, Outcome] = {}
        # What the client asked for since.
        self.received_query_set = 0
        self.received_identity = 0
        self.caller = Caller(trusted=False, identity=None)
        self.planned: dict[int, LiveQuery] = {}
        self.pending: deque[_Change] = deque()
        self.held: set[LiveQuery] = set()
        self.need_ts: int | None = None
        """A successful mutation's ts: a transition at least this late must follow."""
        self.mutations: asyncio.Queue[tuple[int, str, object]] = asyncio.Queue()
        self.requests = 0
        self.tasks: set[asyncio.Task[None]] = set()

    # -- outgoing ------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        try:
            self.outgoing.put_nowait(json.dumps(message, separators=(",", ":")))
        except asyncio.QueueFull:
            self.abort(
                1008,
                f"The client did not read its messages: over {self.limits.max_queued_messages} "
                "were waiting",
            )

    def close(self, code: int, reason: str, message: dict[str, Any] | None = None) -> None:
        """Send ``message`` (if any) after what is queued, then close with ``reason``."""
        if self.closing:
            return
        if message is not None:
            self.send(message)
        if self.closing:  # the queue was full
            return
        self.closing = True
        try:
            self.outgoing.put_nowait((_CLOSE, code, reason))
        except asyncio.QueueFull:
            self.closing = False
            self.abort(code, reason)

    def abort(self, code: int, reason: str) -> None:
        """Close now, dropping what is queued (the client is not reading)."""
        self.closing = True
        for task in list(self.tasks):
            task.cancel()
        self.spawn(self._close_now(code, reason))

    async def _close_now(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(2):
                await self.websocket.close(code, _short(reason))
        except Exception:  # the transport is gone or stuck: nothing more to say
            pass
        finally:
            self.done.set()

    async def _write(self) -> None:
        ping = json.dumps({"type": "Ping"})
        try:
            while True:
                try:
                    async with asyncio.timeout(self.limits.ping_interval):
                        item = await self.outgoing.get()
                except TimeoutError:
                    item = ping
                if isinstance(item, tuple):
                    _, code, reason = item
                    await self.websocket.close(code, _short(reason))
                    return
                assert isinstance(item, str)
                await self.websocket.send_text(item)
        except Exception:  # the client went away
            pass
        finally:
            self.done.set()

    # -- incoming ------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while not self.closing:
                event = await self.websocket.receive()
                if event["type"] == "websocket.disconnect":
                    break
                text = event.get("text")
                if text is None:
                    raise ProtocolError("Binary messages are not part of the protocol: send JSON")
                limit = self.limits.max_message_bytes
                # (A character is 1 to 4 bytes: encode only when it may matter.)
                if len(text) > limit or (4 * len(text) > limit and len(text.encode()) > limit):
                    raise ProtocolError(f"Message too large: over the limit of {limit} bytes")
                await self.handle(text)
        except ProtocolError as exc:
            self.close(1008, str(exc), {"type": "FatalError", "error": str(exc)})
        except AuthFailed as exc:
            self.close(
                1008,
                f"AuthError: {exc}",
                {
                    "type": "AuthError",
                    "error": str(exc),
                    "baseVersion": self.received_identity,
                    "authUpdateAttempted": True,
                },
            )
            return
        except OSError:  # the client went away
            self.done.set()
            return
        except Exception as exc:  # a bug of ours
            logger.exception("sync connection failed")
            self.close(
                1011,
                "InternalServerError",
                {
                    "type": "FatalError",
                    "error": (
                        f"The server failed handling a message ({type(exc).__name__}); "
                        "the details are in the server log"
                    ),
                },
            )
            return
        if not self.closing:
            self.done.set()

    async def handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"Could not parse the message as JSON: {exc}") from None
        except RecursionError:
            raise ProtocolError("Could not parse the message as JSON: nested too deeply") from None
        if not isinstance(message, dict):
            raise ProtocolError("A message must be a JSON object with a `type`")
        kind = message.get("type")
        if kind == "ModifyQuerySet":
            self.modify_query_set(message)
        elif kind == "Mutation" or kind == "Action":
            self.request(kind, message)
        elif kind == "Authenticate":
            await self.authenticate(message)
        elif kind == "Connect":
            _str(message, "sessionId", "Connect")
        elif kind == "Event":
            pass
        else:
            raise ProtocolError(
                f"Unknown message type {kind!r:.60}: expected Connect, ModifyQuerySet, "
                "Mutation, Action, Authenticate or Event"
            )

    def modify_query_set(self, message: dict[str, Any]) -> None:
        base, new = _int(message, "baseVersion"), _int(message, "newVersion")
        if base != self.received_query_set:
            raise ProtocolError(
                f"Base version {base} passed up doesn't match the current version "
                f"{self.received_query_set}"
            )
        if new <= base:
            raise ProtocolError(f"New version {new} must be greater than base version {base}")
        modifications = message.get("modifications")
        if not isinstance(modifications, list):
            raise ProtocolError("ModifyQuerySet message: `modifications` must be an array")
        change = _Change(query_set=new)
        planned = dict(self.planned)
        for modification in modifications:
            if not isinstance(modification, dict):
                raise ProtocolError("ModifyQuerySet message: each modification must be an object")
            query_id = _int(modification | {"type": "ModifyQuerySet"}, "queryId")
            kind = modification.get("type")
            if kind == "Add":
                if query_id in planned:
                    raise ProtocolError(f"Duplicate query ID: {query_id}")
                journal = modification.get("journal")
                try:
                    live = self.hub.query(
                        _udf_path(modification, "Add"),
                        _args(modification),
                        trusted=self.caller.trusted,
                        identity=self.caller.identity,
                        journal=journal,
                    )
                except ValueError as exc:
                    raise ProtocolError(f"Add of query {query_id}: {exc}") from None
                planned[query_id] = change.adds[query_id] = live
            elif kind == "Remove":
                if planned.pop(query_id, None) is None:
                    raise ProtocolError(f"Nonexistent query id: {query_id}")
                change.adds.pop(query_id, None)
                change.removes.append(query_id)
            else:
                raise ProtocolError(
                    f"Unknown query set modification {kind!r:.60}: expected Add or Remove"
                )
        if len(planned) > self.limits.max_queries:
            raise ProtocolError(
                f"Too many queries: one connection may subscribe to {self.limits.max_queries}"
            )
        self.received_query_set = new
        self.planned = planned
        self.pending.append(change)
        self.hold()
        self.flush()

    async def authenticate(self, message: dict[str, Any]) -> None:
        """A new identity: verified before the next message of this connection is read
        (so a provider's slow key endpoint holds up this connection only)."""
        base = _int(message, "baseVersion")
        if base != self.received_identity:
            raise ProtocolError(
                f"Authenticate base version {base} doesn't match the current identity version "
                f"{self.received_identity}"
            )
        token_type = _str(message, "tokenType", "Authenticate")
        value = "" if token_type == "None" else _str(message, "value", "Authenticate")
        self.caller = await token_caller(
            token_type, value, self.server.admin_key, self.server.verify
        )
        self.received_identity += 1
        replace = {
            query_id: self.hub.query(
                live.path,
                live.args,
                trusted=self.caller.trusted,
                identity=self.caller.identity,
                journal=live.journal,
            )
            for query_id, live in self.planned.items()
        }
        self.planned = dict(replace)
        self.pending.append(_Change(identity=self.received_identity, replace=replace))
        self.hold()
        self.flush()

    def request(self, kind: str, message: dict[str, Any]) -> None:
        request_id = _int(message, "requestId")
        path = _udf_path(message, kind)
        if self.requests >= self.limits.max_pending_requests:
            raise ProtocolError(
                f"Too many concurrent requests: up to {self.limits.max_pending_requests} "
                "mutations and actions may be pending on one connection"
            )
        self.requests += 1
        args = message.get("args")
        if kind == "Mutation":
            self.mutations.put_nowait((request_id, path, args))
        else:
            self.spawn(self._action(request_id, path, args))

    # -- requests --------------------------------------------------------------------

    async def _call(
        self, kind: FunctionKind, request_id: int, path: str, raw_args: object
    ) -> tuple[dict[str, Any], bool]:
        """Run a mutation or action for the client; its response and whether it succeeded."""
        logs: list[str] = []
        response: dict[str, Any] = {
            "type": "MutationResponse" if kind is FunctionKind.MUTATION else "ActionResponse",
            "requestId": request_id,
        }
        caller = self.caller
        try:
            args = body_args({"args": raw_args})
            value = await self.runtime.call(
                kind, path, args, identity=caller.identity, trusted=caller.trusted, logs=logs
            )
            result = export_value(value, "encoded")
        except RequestError as err:
            response.update(success=False, result=err.message, logLines=logs)
            return response, False
        except ConvexError as exc:
            body = convex_error_body(exc, logs, "encoded")
            response.update(success=False, result=body["errorMessage"], logLines=logs)
            if "errorData" in body:
                response["errorData"] = body["errorData"]
            return response, False
        except (Exception, SystemExit) as exc:
            response.update(success=False, result=error_text(exc), logLines=logs)
            return response, False
        response.update(success=True, result=result, logLines=logs)
        return response, True

    async def _run_mutations(self) -> None:
        while True:
            request_id, path, args = await self.mutations.get()
            response, ok = await self._call(FunctionKind.MUTATION, request_id, path, args)
            self.requests -= 1
            # At or after the mutation's own commit. A transition follows every
            # response, failures too: the Rust client completes a failure that
            # carries errorData only on the next transition.
            ts = self.hub.durable_ts()
            response["ts"] = self.wire_ts(ts) if ok else None
            self.need_ts = max(ts, self.need_ts or 0)
            self.send(response)
            self.flush()

    async def _action(self, request_id: int, path: str, args: object) -> None:
        response, _ = await self._call(FunctionKind.ACTION, request_id, path, args)
        self.requests -= 1
        self.send(response)

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- transitions -----------------------------------------------------------------

    def wants_flush(self, changed: set[LiveQuery]) -> bool:
        return bool(self.pending) or self.need_ts is not None or not changed.isdisjoint(self.held)

    def flush(self) -> None:
        """Send a transition to the live queries' current ``ts`` if the client's view
        changed there, or a mutation waits for it."""
        if self.closing:
            return
        modifications: dict[int, dict[str, Any]] = {}
        active = self.active
        query_set, identity = self.query_set, self.identity
        while self.pending:
            change = self.pending[0]
            if any(live.outcome is None for live in change.queries()):
                break  # not run yet: the next round will
            self.pending.popleft()
            if change.replace is not None:
                active = dict(change.replace)
                self.sent.clear()
                assert change.identity is not None
                identity = change.identity
                continue
            active = dict(active)
            for query_id in change.removes:
                active.pop(query_id, None)
                self.sent.pop(query_id, None)
                modifications[query_id] = {"type": "QueryRemoved", "queryId": query_id}
            for query_id, live in change.adds.items():
                active[query_id] = live
                self.sent.pop(query_id, None)
            assert change.query_set is not None
            query_set = change.query_set
        for query_id, live in active.items():
            outcome = live.outcome
            assert outcome is not None
            if self.sent.get(query_id) is not outcome:
                modifications[query_id] = _modification(query_id, outcome)
                self.sent[query_id] = outcome
        ts = max(self.ts, self.hub.ts)
        due = self.need_ts is not None and ts >= self.need_ts
        moved = (query_set, identity) != (self.query_set, self.identity)
        if not (modifications or moved or due):
            return
        if due:
            self.need_ts = None
        self.send(
            {
                "type": "Transition",
                "startVersion": self.version(self.query_set, self.identity, self.ts),
                "endVersion": self.version(query_set, identity, ts),
                "modifications": list(modifications.values()),
            }
        )
        self.query_set, self.identity, self.ts = query_set, identity, ts
        self.active = active
        self.hold()

    def wire_ts(self, ts: int) -> str:
        """A store timestamp as the protocol sends it (0 stays 0: the initial version)."""
        return encode_ts(ts and self.server.epoch + ts)

    def version(self, query_set: int, identity: int, ts: int) -> dict[str, Any]:
        return {"querySet": query_set, "identity": identity, "ts": self.wire_ts(ts)}

    def hold(self) -> None:
        """Hold exactly the live queries the client has or asked for."""
        wanted = set(self.active.values()) | set(self.planned.values())
        for change in self.pending:
            wanted.update(change.queries())
        for live in wanted - self.held:
            self.hub.retain(live)
        for live in self.held - wanted:
            self.hub.release(live)
        self.held = wanted

    def release_all(self) -> None:
        for live in self.held:
            self.hub.release(live)
        self.held = set()

    # -- lifecycle -----------------------------------------------------------------

    async def serve(self) -> None:
        self.spawn(self._write())
        self.spawn(self._run_mutations())
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await self.done.wait()
        finally:
            reader.cancel()
            for task in list(self.tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.closing = True
            self.release_all()


def _short(reason: str) -> str:
    """A close reason within the protocol's 123 bytes."""
    data = reason.encode()
    if len(data) <= 123:
        return reason
    return data[:120].decode(errors="ignore") + "..."


def _modification(query_id: int, outcome: Outcome) -> dict[str, Any]:
    logs = list(outcome.logs)
    if outcome.error is None:
        return {
            "type": "QueryUpdated",
            "queryId": query_id,
            "value": outcome.value,
            "logLines": logs,
            "journal": outcome.journal,
        }
    message = error_text(outcome.error)
    modification: dict[str, Any] = {
        "type": "QueryFailed",
        "queryId": query_id,
        "errorMessage": message,
        "logLines": logs,
        "journal": outcome.journal,
    }
    if isinstance(outcome.error, ConvexError):
        body = convex_error_body(outcome.error, logs, "encoded")
        modification["errorMessage"] = body["errorMessage"]
        if "errorData" in body:
            modification["errorData"] = body["errorData"]
    return modification


class SyncServer:
    """The sync protocol for one runtime: the live queries and the connections."""

    def __init__(
        self,
        runtime: Runtime,
        admin_key: str | None,
        verify: Verify,
        limits: SyncLimits | None = None,
    ) -> None:
        self.runtime = runtime
        self.admin_key = admin_key
        self.verify = verify
        """A bearer token's identity (the HTTP API's verifier, so both check alike)."""
        self.limits = limits or SyncLimits()
        self.hub = LiveQueries(runtime, query_timeout=self.limits.query_timeout)
        self.epoch = int(runtime.clock.now() * 1_000_000)
        """Added to the store's commit timestamps on the wire: nanoseconds since the
        Unix epoch when the server started, so that they keep growing across
        restarts (clients remember the largest they saw)."""
        self.hub.observers.append(self._round_done)
        self.connections: set[_Connection] = set()
        self.closed = False

    def _round_done(self, changed: set[LiveQuery]) -> None:
        for connection in list(self.connections):
            if connection.wants_flush(changed):
                connection.flush()

    async def endpoint(self, websocket: WebSocket) -> None:
        """The ``/api/sync`` websocket endpoint."""
        if self.closed:
            await websocket.close(1001, "The server is shutting down")
            return
        await websocket.accept()
        self.hub.start()
        connection = _Connection(self, websocket)
        self.connections.add(connection)
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)

    def reloaded(self) -> None:
        """The app's code changed: run every live query again."""
        self.hub.invalidate_all()

    async def close(self, reason: str = "The server is shutting down") -> None:
        """Close every connection with ``reason`` and stop the live queries."""
        self.closed = True
        connections = list(self.connections)
        for connection in connections:
            connection.close(1001, reason)
        if connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*(c.done.wait() for c in connections))
        for connection in connections:
            if not connection.done.is_set():
                connection.abort(1001, reason)
        await self.hub.close()
