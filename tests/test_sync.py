"""The sync protocol (convexpy/server/sync.py), spoken by a raw websocket client
against the real uvicorn server in this process."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from auth_helpers import ISSUER, Key, auth_config_source, claims, jwks, jwks_server
from e2e_helpers import SYNC_APP, write_app
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from convexpy import Runtime
from convexpy.auth import TokenVerifier
from convexpy.convex_json import to_convex_json
from convexpy.server import create_app
from convexpy.server.http import ConvexApp
from convexpy.server.process import UvicornServer, server_config
from convexpy.server.sync import SyncLimits, _Connection, decode_ts, encode_ts

ADMIN_KEY = "test-admin-key"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    root = write_app(tmp_path / "convex")
    return write_app(root, SYNC_APP)


class Server:
    def __init__(self, url: str, app: ConvexApp, server: UvicornServer) -> None:
        self.url = url
        self.app = app
        self.server = server

    @asynccontextmanager
    async def client(self, path: str = "/api/sync") -> AsyncIterator[Client]:
        async with connect(self.url + path) as ws:
            client = Client(ws)
            await client.send({"type": "Connect", "sessionId": "s", "connectionCount": 0})
            yield client


@asynccontextmanager
async def serving(
    app_dir: Path, verifier: TokenVerifier | None = None, **limits: Any
) -> AsyncIterator[Server]:
    """The dev server's uvicorn set-up, serving the app on a free port in this loop."""
    async with Runtime(app_dir, capture_logs=True) as runtime:
        app = create_app(
            runtime, admin_key=ADMIN_KEY, sync_limits=SyncLimits(**limits), verifier=verifier
        )
        server = UvicornServer(server_config(app))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(10):
                while not server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
                    await asyncio.sleep(0.01)
            yield Server(f"ws://127.0.0.1:{port}", app, server)
        finally:
            server.should_exit = True
            async with asyncio.timeout(20):
                await task
            sock.close()


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.version = {"querySet": 0, "identity": 0, "ts": encode_ts(0)}
        self.query_set = 0
        self.request_id = 0

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, skip_pings: bool = True) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await self.ws.recv())
                if not (skip_pings and message["type"] == "Ping"):
                    return message  # type: ignore[no-any-return]

    async def transition(self) -> dict[str, Any]:
        """The next message, which must be a transition starting where the last one ended."""
        message = await self.recv()
        assert message["type"] == "Transition", message
        assert message["startVersion"] == self.version
        assert decode_ts(message["endVersion"]["ts"]) >= decode_ts(self.version["ts"])
        self.version = message["endVersion"]
        return message

    async def modify(self, *modifications: dict[str, Any]) -> None:
        base, self.query_set = self.query_set, self.query_set + 1
        await self.send(
            {
                "type": "ModifyQuerySet",
                "baseVersion": base,
                "newVersion": self.query_set,
                "modifications": list(modifications),
            }
        )

    async def request(self, kind: str, path: str, args: dict[str, Any]) -> dict[str, Any]:
        request_id, self.request_id = self.request_id, self.request_id + 1
        await self.send({"type": kind, "requestId": request_id, "udfPath": path, "args": [args]})
        message = await self.recv()
        assert message["type"] == f"{kind}Response" and message["requestId"] == request_id
        return message

    async def mutate(self, path: str, args: dict[str, Any]) -> dict[str, Any]:
        """A mutation's response; a transition must follow it (failed or not)."""
        response = await self.request("Mutation", path, args)
        transition = await self.transition()
        if response["success"]:
            assert decode_ts(transition["endVersion"]["ts"]) >= decode_ts(response["ts"])
        return response

    async def closed(self) -> tuple[int, str]:
        """Wait for the server to close the socket: its code and reason."""
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(10):
                while True:
                    await self.ws.recv()
        close = info.value.rcvd
        assert close is not None
        return close.code, close.reason


def add(query_id: int, path: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "Add", "queryId": query_id, "udfPath": path, "args": [args or {}]}


def updated(transition: dict[str, Any]) -> dict[int, Any]:
    return {
        m["queryId"]: m["value"] for m in transition["modifications"] if m["type"] == "QueryUpdated"
    }


async def test_subscribe_mutate_and_remove(app_dir: Path) -> None:
    async with serving(app_dir) as server, server.client() as client:
        await client.modify(add(0, "tasks:texts"), add(1, "values:add", {"a": 1, "b": 2}))
        first = await client.transition()
        assert first["endVersion"]["querySet"] == 1
        assert updated(first) == {0: [], 1: to_convex_json(3)}
        for m in first["modifications"]:
            assert m["logLines"] == [] and m["journal"] is None

        response = await client.request("Mutation", "tasks:add", {"text": "a"})
        assert response["success"] is True and isinstance(response["result"], str)
        assert response["logLines"] == []
        # The write is in a transition that follows the response, at or after its ts.
        second = await client.transition()
        assert decode_ts(second["endVersion"]["ts"]) >= decode_ts(response["ts"])
        assert updated(second) == {0: ["a"]}  # values:add read nothing: not rerun

        await client.modify({"type": "Remove", "queryId": 1})
        third = await client.transition()
        assert third["endVersion"]["querySet"] == 2
        assert third["modifications"] == [{"type": "QueryRemoved", "queryId": 1}]


async def test_canonical_paths_from_a_reconnecting_client(app_dir: Path) -> None:
    async with serving(app_dir) as server, server.client() as client:
        await client.modify(add(0, "nested/deep.js:hello", {"name": "js"}))
        assert updated(await client.transition()) == {0: "hello js"}


async def test_the_javascript_clients_versioned_path(app_dir: Path) -> None:
    async with serving(app_dir) as server, server.client("/api/1.17.0/sync") as client:
        await client.modify(add(0, "nested/deep:hello"))
        assert updated(await client.transition()) == {0: "hello world"}


def unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


async def test_user_auth_changes_identity_and_reruns_queries(app_dir: Path) -> None:
    key = Key.rsa("sync-1")
    provider = {"type": "customJwt", "issuer": ISSUER, "jwks": jwks(key), "algorithm": "RS256"}
    (app_dir / "auth_config.py").write_text(auth_config_source([provider]))
    async with serving(app_dir) as server, server.client() as client:
        await client.modify(add(0, "values:whoami"))
        assert updated(await client.transition()) == {0: None}
        token = key.sign(claims(time.time(), sub="u1", name="Ada"))
        await client.send(
            {"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": token}
        )
        transition = await client.transition()
        assert transition["endVersion"] == {**client.version, "identity": 1}
        assert updated(transition) == {0: {"subject": "u1", "issuer": ISSUER, "name": "Ada"}}
        await client.send({"type": "Authenticate", "baseVersion": 1, "tokenType": "None"})
        assert updated(await client.transition()) == {0: None}

        await client.send(
            {"type": "Authenticate", "baseVersion": 2, "tokenType": "User", "value": "x.y"}
        )
        error = await client.recv()
        assert error["type"] == "AuthError" and "JWT" in error["error"]
        assert error["authUpdateAttempted"] is True
        await client.closed()

        # A token the app's auth_config.py does not vouch for is refused the same way.
        async with server.client() as other:
            forged = unsigned_jwt({"sub": "u1", "iss": ISSUER, "exp": time.time() + 60})
            await other.send(
                {"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": forged}
            )
            error = await other.recv()
            assert error["type"] == "AuthError" and "signed with 'none'" in error["error"]
            await other.closed()


async def test_a_hanging_key_endpoint_holds_up_only_its_own_connection(app_dir: Path) -> None:
    key = Key.rsa("sync-2")
    with jwks_server() as keys:
        provider = {
            "type": "customJwt",
            "issuer": ISSUER,
            "jwks": keys("/hang"),
            "algorithm": "RS256",
        }
        (app_dir / "auth_config.py").write_text(auth_config_source([provider]))
        verifier = TokenVerifier(fetch_timeout=2.0)
        async with (
            serving(app_dir, verifier) as server,
            server.client() as waiting,
            server.client() as other,
        ):
            token = key.sign(claims(time.time()))
            await waiting.send(
                {"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": token}
            )
            assert await asyncio.to_thread(keys.hanging.wait, 20)
            # Meanwhile another connection is served.
            await other.modify(add(0, "nested/deep:hello"))
            assert updated(await other.transition()) == {0: "hello world"}
            error = await waiting.recv()
            assert error["type"] == "AuthError"
            assert "could not be fetched" in error["error"]
            assert "did not answer within 2 s" in error["error"]
            await waiting.closed()


async def test_failures_are_responses_and_query_failed(app_dir: Path) -> None:
    async with serving(app_dir) as server, server.client() as client:
        await client.modify(add(0, "values:boom"), add(1, "values:fail_with", {"data": "no"}))
        failed = {m["queryId"]: m for m in (await client.transition())["modifications"]}
        assert failed[0]["type"] == "QueryFailed" and "boom" in failed[0]["errorMessage"]
        assert "errorData" not in failed[0]
        assert failed[1]["type"] == "QueryFailed" and failed[1]["errorData"] == "no"

        refused = await client.mutate("live:refuse", {"code": 7})
        assert refused["success"] is False and refused["ts"] is None
        assert refused["errorData"] == {"code": to_convex_json(7)}
        assert refused["result"] == 'ConvexError: {"code": 7}'

        shout = await client.request("Action", "live:shout", {"text": "hi"})
        assert shout == {
            "type": "ActionResponse",
            "requestId": 1,
            "success": True,
            "result": "HI",
            "logLines": ["shouting hi"],
        }
        boom = await client.request("Action", "live:explode", {})
        assert boom["success"] is False and "kaboom" in boom["result"]
        missing = await client.mutate("tasks:nope", {})
        assert missing["success"] is False and "tasks:nope" in missing["result"]
        bad_args = await client.mutate("tasks:add", {"text": 3})
        assert bad_args["success"] is False and "text" in bad_args["result"]


async def test_admin_auth_reaches_internal_functions(app_dir: Path) -> None:
    async with serving(app_dir) as server, server.client() as client:
        await client.modify(add(0, "values:secret"))
        hidden = (await client.transition())["modifications"][0]
        assert hidden["type"] == "QueryFailed" and "Could not find" in hidden["errorMessage"]
        await client.send(
            {"type": "Authenticate", "baseVersion": 0, "tokenType": "Admin", "value": ADMIN_KEY}
        )
        admin = await client.transition()
        assert admin["endVersion"]["identity"] == 1
        assert updated(admin) == {0: "s3cret"}

        async with server.client() as other:
            await other.send(
                {"type": "Authenticate", "baseVersion": 0, "tokenType": "Admin", "value": "no"}
            )
            error = await other.recv()
            assert error["type"] == "AuthError" and "admin key" in error["error"]
            assert error["baseVersion"] == 0
            await other.closed()


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{not json", "Could not parse the message as JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"type": "Subscribe"}', "Unknown message type 'Subscribe'"),
        (
            '{"type": "ModifyQuerySet", "baseVersion": 3, "newVersion": 4, "modifications": []}',
            "Base version 3 passed up doesn't match the current version 0",
        ),
        (
            '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": '
            '[{"type": "Remove", "queryId": 9}]}',
            "Nonexistent query id: 9",
        ),
        ('{"type": "Mutation", "requestId": "x"}', "`requestId` must be a non-negative integer"),
        (
            '{"type": "Authenticate", "baseVersion": 2, "tokenType": "None"}',
            "Authenticate base version 2",
        ),
        (
            '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": '
            '[{"type": "Add", "queryId": 1, "udfPath": "tasks:texts", "args": [{}], '
            '"journal": "not a journal"}]}',
            "Add of query 1: not a query journal",
        ),
    ],
)
async def test_a_bad_message_closes_only_its_connection(
    app_dir: Path, message: str, reason: str
) -> None:
    async with serving(app_dir) as server, server.client() as good:
        await good.modify(add(0, "tasks:texts"))
        await good.transition()
        async with server.client() as bad:
            await bad.send(message)
            fatal = await bad.recv()
            assert fatal["type"] == "FatalError" and reason in fatal["error"], fatal
            code, close_reason = await bad.closed()
            assert code == 1008 and reason[:40] in close_reason
        response = await good.request("Mutation", "tasks:add", {"text": "still here"})
        assert response["success"] is True
        assert updated(await good.transition()) == {0: ["still here"]}


async def test_limits(app_dir: Path) -> None:
    async with serving(app_dir, max_queries=2, max_message_bytes=1000) as server:
        async with server.client() as client:
            await client.modify(add(0, "tasks:texts"), add(1, "tasks:texts"), add(2, "tasks:texts"))
            fatal = await client.recv()
            assert fatal["type"] == "FatalError" and "Too many queries" in fatal["error"]
            await client.closed()
        async with server.client() as client:
            await client.request("Mutation", "tasks:add", {"text": "x" * 10})
            await client.transition()  # an empty one: the client has no queries
            await client.send({"type": "Mutation", "requestId": 1, "args": ["x" * 2000]})
            fatal = await client.recv()
            assert fatal == {
                "type": "FatalError",
                "error": "Message too large: over the limit of 1000 bytes",
            }
        async with server.client() as client:  # 700 characters, 1400 bytes
            event = {"type": "Event", "eventType": "x", "event": "é" * 700}
            await client.send(json.dumps(event, ensure_ascii=False))
            fatal = await client.recv()
            assert "Message too large" in fatal["error"]


async def test_a_refused_query_set_change_holds_nothing(app_dir: Path) -> None:
    async with serving(app_dir) as server, server.client() as client:
        await client.modify(add(0, "tasks:texts"), add(0, "values:nothing"))
        fatal = await client.recv()
        assert fatal["type"] == "FatalError" and "Duplicate query ID: 0" in fatal["error"]
        await client.closed()
        hub = server.app.sync.hub
        async with asyncio.timeout(10):
            while len(hub):  # noqa: ASYNC110 (the next round drops what nobody holds)
                await asyncio.sleep(0.01)


async def test_pings_keep_a_quiet_connection_alive(app_dir: Path) -> None:
    async with serving(app_dir, ping_interval=0.05) as server, server.client() as client:
        assert await client.recv(skip_pings=False) == {"type": "Ping"}


async def test_identical_queries_of_two_clients_run_once(app_dir: Path) -> None:
    async with serving(app_dir) as server:
        async with server.client() as one, server.client() as two:
            await one.modify(add(0, "tasks:texts"))
            await one.transition()
            await two.modify(add(5, "tasks:texts"))
            assert updated(await two.transition()) == {5: []}
            hub = server.app.sync.hub
            assert hub.runs == 1 and len(hub) == 1
            await one.request("Mutation", "tasks:add", {"text": "shared"})
            assert updated(await one.transition()) == {0: ["shared"]}
            assert updated(await two.transition()) == {5: ["shared"]}
            assert hub.runs == 2
        async with asyncio.timeout(10):
            while len(hub):  # noqa: ASYNC110 (both gone: nothing is held)
                await asyncio.sleep(0.01)


async def test_shutdown_closes_sockets_with_a_reason(app_dir: Path) -> None:
    async with serving(app_dir) as server, server.client() as client:
        await client.modify(add(0, "tasks:texts"))
        await client.transition()
        server.server.should_exit = True
        assert await client.closed() == (1001, "The server is shutting down")


class _StuckSocket:
    """A websocket whose client never reads: sending blocks forever."""

    def __init__(self) -> None:
        self.closed: tuple[int, str | None] | None = None

    async def send_text(self, text: str) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason)


async def test_a_client_that_does_not_read_is_disconnected(app_dir: Path) -> None:
    async with serving(app_dir, max_queued_messages=3) as server:
        stuck = _StuckSocket()
        connection = _Connection(server.app.sync, stuck)  # type: ignore[arg-type]
        connection.spawn(connection._write())
        for _ in range(10):
            connection.send({"type": "Ping"})
        async with asyncio.timeout(10):
            await connection.done.wait()
        assert stuck.closed is not None and stuck.closed[0] == 1008
        assert "did not read its messages" in str(stuck.closed[1])
