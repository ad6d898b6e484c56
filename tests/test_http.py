"""The HTTP API, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

import base64
import errno
import json
import math
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from e2e_helpers import write_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from convexpy import Runtime
from convexpy.auth import TokenVerifier
from convexpy.convex_json import from_convex_json, to_clean_json, to_convex_json
from convexpy.errors import CommitFailedError, FunctionNotFoundError, StoreClosedError
from convexpy.server import create_app
from convexpy.server.http import MAX_REQUEST_BYTES

ADMIN_KEY = "test-admin-key"


@dataclass
class Recorder:
    """A Reporter that remembers what it was told."""

    refused: list[tuple[int, str]] = field(default_factory=list)
    exceptions: list[tuple[str, BaseException]] = field(default_factory=list)
    faults: list[tuple[int, str, BaseException]] = field(default_factory=list)

    def request_error(self, method: str, path: str, status: int, code: str, message: str) -> None:
        self.refused.append((status, code))

    def function_exception(self, path: str, exc: BaseException) -> None:
        self.exceptions.append((path, exc))

    def server_error(
        self, method: str, path: str, status: int, code: str, message: str, exc: BaseException
    ) -> None:
        self.faults.append((status, code, exc))


@dataclass
class Api:
    http: httpx.AsyncClient
    recorder: Recorder

    async def call(
        self,
        kind: str,
        path: str,
        args: Any = None,
        *,
        fmt: str | None = "convex_encoded_json",
        auth: str | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"path": path}
        if args is not None:
            body["args"] = args
        if fmt is not None:
            body["format"] = fmt
        headers = {} if auth is None else {"Authorization": auth}
        return await self.http.post(f"/api/{kind}", json=body, headers=headers)

    async def value(self, kind: str, path: str, args: dict[str, Any] | None = None) -> Any:
        response = await self.call(kind, path, to_convex_json(args or {}))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        return from_convex_json(body["value"])


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return write_app(tmp_path / "convex")


@pytest.fixture
async def runtime(app_dir: Path) -> AsyncIterator[Runtime]:
    async with Runtime(app_dir, store="memory", capture_logs=True) as rt:
        yield rt


def client_for(runtime: Runtime, recorder: Recorder, **options: Any) -> httpx.AsyncClient:
    app = create_app(runtime, admin_key=ADMIN_KEY, reporter=recorder, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[Api]:
    recorder = Recorder()
    async with client_for(runtime, recorder) as http:
        yield Api(http, recorder)


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# --------------------------------------------------------------------------
# Success, values and formats


async def test_status(api: Api) -> None:
    response = await api.http.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "convexpy" and body["status"] == "running"
    assert body["functions"] > 5


VALUES = [
    None,
    True,
    False,
    0,
    -5,
    2**63 - 1,
    -(2**63),
    1.5,
    0.0,
    -0.0,
    float("inf"),
    float("-inf"),
    float("nan"),
    "",
    "héllo ✓",
    b"",
    b"\x00\xff bytes",
    [1, "two", [3.0, None]],
    {"nested": {"list": [b"x", -1], "flag": True}, "empty": {}},
]


def same(a: object, b: object) -> bool:
    """Equality that tells -0.0 from 0.0, NaN equals NaN and int from float."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("kind", ["query", "mutation", "action"])
async def test_every_value_round_trips(api: Api, kind: str) -> None:
    path = {
        "query": "values:echo",
        "mutation": "values:echo_mutation",
        "action": "values:echo_action",
    }
    for value in VALUES:
        result = await api.value(kind, path[kind], {"value": value})
        assert same(result, value), (value, result)


async def test_ints_travel_as_integer_objects(api: Api) -> None:
    response = await api.call("query", "values:add", to_convex_json({"a": 2, "b": 3}))
    body = response.json()
    assert body == {"status": "success", "value": {"$integer": "BQAAAAAAAAA="}, "logLines": []}


async def test_json_numbers_are_float64(api: Api) -> None:
    # As in Convex, a plain JSON number is a float64, so v.int64() refuses it...
    response = await api.call("query", "values:add_int64", {"a": 2, "b": 3})
    body = response.json()
    assert response.status_code == 200 and body["status"] == "error"
    assert "ArgumentValidationError" in body["errorMessage"]
    assert "errorData" not in body
    # ... while an `int` parameter takes a whole one, as an int.
    response = await api.call("query", "values:add", {"a": 2, "b": 3})
    assert response.json()["value"] == {"$integer": "BQAAAAAAAAA="}
    response = await api.call("query", "values:add", {"a": 2.5, "b": 3})
    body = response.json()
    assert body["status"] == "error"
    assert "at $.a: expected int64, got 2.5 (float64)" in body["errorMessage"]
    assert "`ConvexInt64` in the Python client" in body["errorMessage"]


async def test_clean_json_format(api: Api) -> None:
    value = {"i": 5, "b": b"\x01\x02", "n": float("nan"), "f": 1.5, "l": [-(2**63)]}
    response = await api.call("query", "values:echo", to_convex_json({"value": value}), fmt="json")
    assert response.json()["value"] == {
        "i": "5",
        "b": "AQI=",
        "n": "NaN",
        "f": 1.5,
        "l": ["-9223372036854775808"],
    }
    assert to_clean_json(float("-inf")) == "-Infinity"


async def test_format_defaults_to_encoded(api: Api) -> None:
    response = await api.call("query", "values:add", to_convex_json({"a": 1, "b": 1}), fmt=None)
    assert response.json()["value"] == to_convex_json(2)


async def test_args_forms(api: Api) -> None:
    # A one-element list, as older clients send, and no args at all.
    response = await api.call("query", "nested/deep:hello", [{"name": "list"}])
    assert response.json()["value"] == "hello list"
    response = await api.call("query", "nested/deep:hello")
    assert response.json()["value"] == "hello world"
    response = await api.http.post("/api/query", json={"path": "nested/deep:hello", "args": None})
    assert response.json()["value"] == "hello world"
    response = await api.call("query", "nested/deep.py:hello", {"name": "py"})
    assert response.json()["value"] == "hello py"


async def test_mutation_then_query(api: Api) -> None:
    doc_id = await api.value("mutation", "tasks:add", {"text": "write tests"})
    assert isinstance(doc_id, str)
    assert await api.value("query", "tasks:texts") == ["write tests"]


async def test_run_endpoint(api: Api) -> None:
    response = await api.http.post("/api/run/nested/deep/hello", json={"args": {"name": "run"}})
    assert response.json() == {"status": "success", "value": "hello run", "logLines": []}
    # Convex's default format there is "json".
    response = await api.http.post(
        "/api/run/values/add", json={"args": to_convex_json({"a": 1, "b": 2})}
    )
    assert response.json()["value"] == "3"
    response = await api.http.post(
        "/api/run/tasks/add",
        json={"args": {"text": "via run"}, "format": "convex_encoded_json"},
    )
    assert response.json()["status"] == "success"
    assert_refused(await api.http.post("/api/run/values", json={}), 400, "MissingIdentifier")
    assert_refused(await api.http.post("/api/run/values/secret", json={}), 404, "FunctionNotFound")


# --------------------------------------------------------------------------
# Function errors: HTTP 200


async def test_convex_error_carries_data(api: Api) -> None:
    data = {"code": "nope", "count": 3, "raw": b"\x01"}
    response = await api.call("query", "values:fail_with", to_convex_json({"data": data}))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "error"
    assert from_convex_json(body["errorData"]) == data
    assert body["errorMessage"].startswith("ConvexError: ")
    assert '"code": "nope"' in body["errorMessage"]
    # A string payload, in the "json" format.
    response = await api.call("query", "values:fail_with", {"data": "plain"}, fmt="json")
    body = response.json()
    assert body["errorData"] == "plain" and body["errorMessage"] == "ConvexError: plain"
    assert api.recorder.exceptions == []


async def test_other_exceptions_are_error_messages(api: Api) -> None:
    response = await api.call("query", "values:boom", {})
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "error", "errorMessage": "ValueError: boom", "logLines": []}
    [(path, exc)] = api.recorder.exceptions
    assert path == "values:boom" and isinstance(exc, ValueError)


async def test_argument_errors_are_function_errors(api: Api) -> None:
    response = await api.call("query", "values:add", to_convex_json({"a": 1}))
    body = response.json()
    assert response.status_code == 200 and body["status"] == "error"
    assert body["errorMessage"].startswith("ArgumentValidationError")
    response = await api.call("mutation", "tasks:add", {"text": "x", "extra": 1.0})
    assert response.json()["status"] == "error"
    assert api.recorder.exceptions == []  # no traceback for a caller's mistake


async def test_log_lines(api: Api) -> None:
    response = await api.call("query", "values:chatty", {})
    body = response.json()
    assert body["status"] == "success"
    assert "hello from chatty" in body["logLines"]
    assert any("careful" in line for line in body["logLines"])


# --------------------------------------------------------------------------
# Refused requests: 4xx


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "BadJsonBody"),
        (b"{not json", "BadJsonBody"),
        (b"[1, 2]", "BadJsonBody"),
        (b'{"args": {}}', "BadJsonBody"),
        (b'{"path": 5, "args": {}}', "BadJsonBody"),
        (b'{"path": "values:echo", "args": "x"}', "BadJsonBody"),
        (b'{"path": "values:echo", "args": [{}, {}]}', "BadJsonBody"),
        (b'{"path": "values:echo", "args": {"$integer": "AAAAAAAAAAA="}}', "BadJsonBody"),
        (b'{"path": "values:echo", "args": {"value": {"$integer": "xx"}}}', "BadConvexValue"),
        (b'{"path": "values:echo", "args": {"value": {"$nope": 1}}}', "BadConvexValue"),
        (b'{"path": "values:echo", "args": {"value": NaN}}', "BadJsonBody"),
        (b'{"path": "values:echo", "args": {}, "format": "xml"}', "BadFormat"),
        (b'{"path": "values:echo", "args": {}, "format": 1}', "BadJsonBody"),
        (b"[" * 100_000 + b"]" * 100_000, "BadJsonBody"),
        (b"\xff\xfe\x00garbage", "BadJsonBody"),
    ],
)
async def test_malformed_requests(api: Api, content: bytes, code: str) -> None:
    response = await api.http.post("/api/query", content=content)
    assert_refused(response, 400, code)
    assert (400, code) in api.recorder.refused


async def test_unknown_and_internal_functions(api: Api) -> None:
    body = assert_refused(await api.call("query", "values:nope", {}), 404, "FunctionNotFound")
    assert "values:nope" in body["message"]
    assert_refused(await api.call("query", "nocolon", {}), 404, "FunctionNotFound")
    # Internal functions look missing without the admin key...
    assert_refused(await api.call("query", "values:secret", {}), 404, "FunctionNotFound")
    # ...and are reachable with it.
    response = await api.call("query", "values:secret", {}, auth=f"Convex {ADMIN_KEY}")
    assert response.json()["value"] == "s3cret"


async def test_wrong_kind(api: Api) -> None:
    body = assert_refused(await api.call("mutation", "values:echo", {}), 404, "FunctionNotFound")
    assert "as a mutation, but it is defined as a query: POST it to /api/query" in body["message"]
    response = await api.call("query", "values:echo_action", {})
    body = assert_refused(response, 404, "FunctionNotFound")
    assert "as a query, but it is defined as an action: POST it to /api/action" in body["message"]
    body = assert_refused(await api.call("action", "values:echo", {}), 404, "FunctionNotFound")
    assert "as an action, but it is defined as a query" in body["message"]


async def test_runtime_names_kinds_with_their_articles(runtime: Runtime) -> None:
    with pytest.raises(FunctionNotFoundError) as caught:
        await runtime.query("values:echo_action", {"value": 1.0})
    assert str(caught.value) == (
        "'values:echo_action' is an action, not a query: call it with action()"
    )
    with pytest.raises(FunctionNotFoundError, match="is a query, not an action"):
        await runtime.action("values:echo", {"value": 1.0})


async def test_dotted_path_gets_a_suggestion(api: Api) -> None:
    body = assert_refused(await api.call("query", "values.echo", {}), 404, "FunctionNotFound")
    assert "did you mean values:echo?" in body["message"]
    body = assert_refused(await api.call("query", "nested.deep.hello", {}), 404, "FunctionNotFound")
    assert "did you mean nested/deep:hello?" in body["message"]


async def test_missing_function_mentions_a_failed_reload(runtime: Runtime) -> None:
    app = create_app(runtime, admin_key=ADMIN_KEY)
    assert app.reload_error is None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        admin = {"Authorization": f"Convex {ADMIN_KEY}"}
        body = {"path": "tasks:new", "args": {}}
        response = await http.post("/api/query", json=body)
        assert "reload" not in assert_refused(response, 404, "FunctionNotFound")["message"]
        assert (await http.get("/api/admin/functions", headers=admin)).json()["reloadError"] is None

        app.reload_error = "convex/tasks.py:3: SyntaxError: invalid syntax (tasks.py, line 3)"
        message = assert_refused(await http.post("/api/query", json=body), 404, "FunctionNotFound")[
            "message"
        ]
        assert message == (
            "Could not find public function for 'tasks:new'; the last reload failed "
            "(convex/tasks.py:3: SyntaxError: invalid syntax (tasks.py, line 3)), so functions "
            "from the new code are not loaded"
        )
        listed = (await http.get("/api/admin/functions", headers=admin)).json()
        assert listed["reloadError"] == app.reload_error
        # Functions that exist still answer.
        response = await http.post("/api/query", json={"path": "tasks:texts", "args": {}})
        assert response.json()["status"] == "success"


async def test_authorization(api: Api) -> None:
    response = await api.call("query", "values:echo", {"value": 1.0}, auth="Convex wrong")
    assert_refused(response, 401, "BadAdminKey")
    for header in ("Basic abc", "Bearer", "Bearer not-a-jwt", "Bearer a.b.c", ""):
        response = await api.call("query", "values:whoami", {}, auth=header)
        assert_refused(response, 401, "InvalidAuthHeader")
    no_issuer = jwt({"sub": "user1"})
    assert_refused(
        await api.call("query", "values:whoami", {}, auth=f"Bearer {no_issuer}"),
        401,
        "InvalidAuthHeader",
    )
    token = jwt({"sub": "user1", "iss": "https://issuer.example", "name": "Ada", "exp": 1})
    # Without auth_config.py, no token is trusted (tests/test_auth.py has the rest).
    response = await api.call("query", "values:whoami", {}, auth=f"Bearer {token}")
    assert "auth_config.py" in assert_refused(response, 401, "NoAuthProvider")["message"]
    assert await api.value("query", "values:whoami") is None


async def test_insecure_verifier_reads_tokens_unverified(runtime: Runtime) -> None:
    verifier = TokenVerifier(insecure_unverified=True)
    async with client_for(runtime, Recorder(), verifier=verifier) as http:
        api = Api(http, Recorder())
        token = jwt({"sub": "user1", "iss": "https://issuer.example", "name": "Ada", "exp": 1})
        response = await api.call("query", "values:whoami", {}, auth=f"Bearer {token}")
        assert response.json()["value"] == {
            "subject": "user1",
            "issuer": "https://issuer.example",
            "name": "Ada",
        }
        # A user token does not reach internal functions.
        response = await api.call("query", "values:secret", {}, auth=f"Bearer {token}")
        assert_refused(response, 404, "FunctionNotFound")


async def test_body_limit(runtime: Runtime) -> None:
    assert MAX_REQUEST_BYTES == 8 * 1024 * 1024 + 2000
    recorder = Recorder()
    async with client_for(runtime, recorder, max_request_bytes=1000) as http:
        response = await http.post(
            "/api/query", json={"path": "values:echo", "args": {"value": "x" * 2000}}
        )
        assert_refused(response, 413, "PayloadTooLarge")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: streamed
            for _ in range(10):
                yield b" " * 200

        response = await http.post("/api/query", content=chunks())
        assert_refused(response, 413, "PayloadTooLarge")
        response = await http.post(
            "/api/query", json={"path": "values:echo", "args": {"value": "small"}}
        )
        assert response.json()["value"] == "small"


async def raw_request(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    parts: list[bytes],
    *,
    then: anyio.Event | None = None,
    rest: bytes = b"",
    waiting: anyio.Event | None = None,
) -> tuple[int, dict[bytes, bytes], Any]:
    """One request straight through the ASGI interface: the body arrives in ``parts``;
    then, if ``then`` is given, nothing more until it is set (then ``rest``, the end).
    ``waiting`` is set when the app has read ``parts`` and waits for more."""
    queue = [{"type": "http.request", "body": part, "more_body": True} for part in parts]

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if waiting is not None:
            waiting.set()
        if then is not None:
            await then.wait()
        return {"type": "http.request", "body": rest, "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(body)


@pytest.mark.parametrize("length", ["\u00b2", "\u0661\u0662", "1 2", "1_2", "-1", "0x10", ""])
async def test_content_length_takes_ascii_digits_only(runtime: Runtime, length: str) -> None:
    recorder = Recorder()
    app = create_app(runtime, reporter=recorder)
    headers = [(b"content-length", length.encode())]
    status, response_headers, body = await raw_request(app, "POST", "/api/query", headers, [])
    assert status == 400, body
    assert body["code"] == "BadRequest"
    assert body["message"] == (
        "The Content-Length header must be a number of bytes, "
        f"got {length.encode().decode('latin-1')!r}"  # headers are read as latin-1
    )
    assert response_headers[b"connection"] == b"close"
    assert recorder.faults == []


async def test_body_timeout(runtime: Runtime) -> None:
    recorder = Recorder()
    app = create_app(runtime, reporter=recorder, body_timeout=0.2)
    headers = [(b"content-length", b"8388608")]
    never = anyio.Event()
    with anyio.fail_after(10):
        status, response_headers, body = await raw_request(
            app, "POST", "/api/query", headers, [b'{"path": "values:echo"'], then=never
        )
    assert status == 408
    assert body == {
        "code": "RequestTimeout",
        "message": "The request body did not arrive within 0.2 s (22 of 8388608 bytes received)",
    }
    assert response_headers[b"connection"] == b"close"
    assert recorder.refused == [(408, "RequestTimeout")]
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="body_timeout must be a positive number"):
            create_app(runtime, body_timeout=bad)
    with pytest.raises(ValueError, match="max_pending_body_bytes must be a positive integer"):
        create_app(runtime, max_pending_body_bytes=0)


async def test_pending_bodies_have_a_budget(runtime: Runtime) -> None:
    recorder = Recorder()
    app = create_app(runtime, reporter=recorder, max_request_bytes=800, max_pending_body_bytes=1000)
    head = b'{"path": "values:echo", "args": {"value": "'
    value = "x" * 500
    tail = b'"}}'
    first_part = head + value.encode()
    results: list[tuple[int, Any]] = []
    release, waiting = anyio.Event(), anyio.Event()

    async def slow_upload() -> None:
        status, _, body = await raw_request(
            app, "POST", "/api/query", [], [first_part], then=release, rest=tail, waiting=waiting
        )
        results.append((status, body))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_upload)
            await waiting.wait()
            # The first upload holds 543 bytes; 546 more would pass the budget of 1000.
            status, headers, body = await raw_request(
                app, "POST", "/api/query", [], [first_part + tail]
            )
            assert status == 503, body
            assert body["code"] == "Overloaded"
            assert (
                "already holding 543 bytes of request bodies (its limit is 1000)"
                in (body["message"])
            )
            assert headers[b"connection"] == b"close"
            release.set()
    assert results == [(200, {"status": "success", "value": value, "logLines": []})]
    # Answered requests give their bytes back.
    status, _, body = await raw_request(app, "POST", "/api/query", [], [first_part + tail])
    assert (status, body["value"]) == (200, value)


async def test_routes_and_methods(api: Api) -> None:
    assert_refused(await api.http.get("/nowhere"), 404, "NotFound")
    response = await api.http.get("/api/query")
    assert_refused(response, 405, "MethodNotAllowed")
    assert "POST" in response.headers["allow"]


# --------------------------------------------------------------------------
# Admin endpoints


async def test_admin_endpoints_need_the_key(api: Api) -> None:
    assert_refused(await api.http.get("/api/admin/functions"), 401, "MissingAdminKey")
    response = await api.http.get("/api/admin/tables", headers={"Authorization": "Convex no"})
    assert_refused(response, 401, "BadAdminKey")
    token = jwt({"sub": "u", "iss": "i"})
    response = await api.http.get("/api/admin/tables", headers={"Authorization": f"Bearer {token}"})
    assert_refused(response, 401, "BadAdminKey")


async def test_admin_functions_and_tables(api: Api) -> None:
    admin = {"Authorization": f"Convex {ADMIN_KEY}"}
    functions = (await api.http.get("/api/admin/functions", headers=admin)).json()["functions"]
    by_path = {f["path"]: f for f in functions}
    assert by_path["values:secret"] == {
        "path": "values:secret",
        "kind": "query",
        "visibility": "internal",
    }
    assert by_path["tasks:add"]["kind"] == "mutation"
    assert by_path["nested/deep:hello"]["visibility"] == "public"

    for text in ("a", "b", "c"):
        await api.value("mutation", "tasks:add", {"text": text})
    await api.value("mutation", "tasks:add_later", {"text": "later", "delay_ms": 60_000.0})
    tables = (await api.http.get("/api/admin/tables", headers=admin)).json()["tables"]
    assert {"name": "tasks", "system": False} in tables
    assert {"name": "_scheduled_functions", "system": True} in tables
    assert tables[0]["system"] is False  # user tables first

    response = await api.http.get("/api/admin/tables/tasks?limit=2", headers=admin)
    body = response.json()
    docs = [from_convex_json(doc) for doc in body["documents"]]
    assert [doc["text"] for doc in docs] == ["c", "b"] and body["hasMore"] is True
    response = await api.http.get("/api/admin/tables/tasks?order=asc", headers=admin)
    body = response.json()
    assert [from_convex_json(d)["text"] for d in body["documents"]] == ["a", "b", "c"]
    assert body["hasMore"] is False
    response = await api.http.get("/api/admin/tables/_scheduled_functions", headers=admin)
    [job] = [from_convex_json(d) for d in response.json()["documents"]]
    assert job["name"] == "tasks:add_now" and job["state"] == {"kind": "pending"}

    assert_refused(
        await api.http.get("/api/admin/tables/nope", headers=admin), 404, "TableNotFound"
    )
    for query in ("limit=0", "limit=x", "limit=100000", "order=up"):
        response = await api.http.get(f"/api/admin/tables/tasks?{query}", headers=admin)
        assert_refused(response, 400, "BadQueryArgs")


@pytest.mark.parametrize(
    "limit", ["%C2%B2", "%D9%A1%D9%A2", "1_0", "%2B5", "%205", "-1", "1e3", "0", "10001"]
)
async def test_table_limit_takes_ascii_digits_only(api: Api, limit: str) -> None:
    await api.value("mutation", "tasks:add", {"text": "a"})
    admin = {"Authorization": f"Convex {ADMIN_KEY}"}
    response = await api.http.get(f"/api/admin/tables/tasks?limit={limit}", headers=admin)
    body = assert_refused(response, 400, "BadQueryArgs")
    assert body["message"].startswith("limit must be an integer from 1 to 10000 in ASCII digits")
    assert api.recorder.faults == []


# --------------------------------------------------------------------------
# Faults: a 503 naming the cause, never a 500


def caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


STORE_FAULTS = [
    (
        sqlite3.DatabaseError("database disk image is malformed"),
        "DatabaseDamaged",
        "The database is damaged (DatabaseError: database disk image is malformed), so "
        "convexpy cannot read it: restore it from a backup while the server is stopped",
    ),
    (
        caused(CommitFailedError("the write failed"), OSError(errno.ENOSPC, "No space left")),
        "NoSpaceLeft",
        "No space left on device for the database (OSError: [Errno 28] No space left)",
    ),
    (
        caused(
            CommitFailedError("the write failed"),
            sqlite3.OperationalError("database or disk is full"),
        ),
        "NoSpaceLeft",
        "No space left on device for the database (OperationalError: database or disk is full)",
    ),
    (
        caused(CommitFailedError("x"), sqlite3.OperationalError("database is locked")),
        "CommitFailed",
        "The database could not commit: OperationalError: database is locked",
    ),
    (
        StoreClosedError("the SQLite writer process exited"),
        "StoreClosed",
        "The store is closed: the SQLite writer process exited",
    ),
    (
        sqlite3.OperationalError("no such table: documents"),
        "DatabaseError",
        "The database failed: OperationalError: no such table: documents",
    ),
]


@pytest.mark.parametrize(("exc", "code", "message"), STORE_FAULTS)
async def test_store_faults_are_503_naming_the_cause(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, exc: Exception, code: str, message: str
) -> None:
    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise exc

    recorder = Recorder()
    monkeypatch.setattr(runtime.store, "tables", failing)
    monkeypatch.setattr(runtime.store, "scan", failing)
    async with client_for(runtime, recorder) as http:
        admin = {"Authorization": f"Convex {ADMIN_KEY}"}
        response = await http.get("/api/admin/tables", headers=admin)
        body = assert_refused(response, 503, code)
        assert body["message"].startswith(message), body
        assert recorder.faults == [(503, code, exc)]
        # A function that hits it: a function error with the same explanation.
        response = await http.post("/api/query", json={"path": "tasks:texts", "args": {}})
        assert response.status_code == 200
        assert response.json()["status"] == "error"
        assert response.json()["errorMessage"].startswith(message)


async def test_unexpected_errors_are_503_and_logged(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bug = RuntimeError("a bug")

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise bug

    monkeypatch.setattr(runtime.store, "tables", failing)
    recorder = Recorder()
    admin = {"Authorization": f"Convex {ADMIN_KEY}"}
    async with client_for(runtime, recorder) as http:
        body = assert_refused(
            await http.get("/api/admin/tables", headers=admin), 503, "InternalServerError"
        )
    assert body["message"] == (
        "The server failed while handling GET /api/admin/tables (RuntimeError); "
        "the details are in the server log"
    )
    assert recorder.faults == [(503, "InternalServerError", bug)]

    # Without a reporter, the traceback goes to the convexpy.server logger.
    app = create_app(runtime, admin_key=ADMIN_KEY)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/api/admin/tables", headers=admin)
    assert_refused(response, 503, "InternalServerError")
    [record] = [r for r in caplog.records if r.name == "convexpy.server"]
    assert record.exc_info is not None and record.exc_info[1] is bug


async def test_errors_outside_the_endpoints_are_503_too(runtime: Runtime) -> None:
    async def raw(request: Any) -> Any:  # a route without the endpoints' guard
        raise KeyError("escaped")

    recorder = Recorder()
    app = create_app(runtime, reporter=recorder)
    app.router.routes.append(Route("/raw", raw))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        body = assert_refused(await http.get("/raw"), 503, "InternalServerError")
        assert "(KeyError)" in body["message"]
        assert (await http.get("/")).status_code == 200
    [(status, code, exc)] = recorder.faults
    assert (status, code) == (503, "InternalServerError") and isinstance(exc, KeyError)


# --------------------------------------------------------------------------
# Whatever comes in, never a 500


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as portal:
        yield portal


@pytest.fixture(scope="module")
def served(
    portal: BlockingPortal, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.AsyncClient]:
    app_dir = write_app(tmp_path_factory.mktemp("fuzz") / "convex")
    runtime = Runtime(app_dir, store="memory", capture_logs=True)
    with portal.wrap_async_context_manager(runtime):
        app = create_app(runtime, admin_key=ADMIN_KEY)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        with portal.wrap_async_context_manager(client):
            yield client


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
special_keys = st.sampled_from(["$integer", "$bytes", "$float", "$x", "_id", "a", "value", ""])
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(special_keys | st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=12,
)
FUNCTION_PATHS = [
    "values:echo",
    "values:echo_mutation",
    "values:echo_action",
    "values:add",
    "values:fail_with",
    "values:boom",
    "values:secret",
    "values:whoami",
    "tasks:add",
    "tasks:texts",
    "nested/deep:hello",
    "values",
    ":",
]
structured_bodies = st.fixed_dictionaries(
    {},
    optional={
        "path": st.sampled_from(FUNCTION_PATHS) | st.text(max_size=12) | json_scalars,
        "args": json_values,
        "format": st.sampled_from(["json", "convex_encoded_json", "bogus"]) | json_scalars,
    },
).map(lambda body: json.dumps(body).encode())
bodies = (
    structured_bodies
    | json_values.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=64)
)
url_paths = st.sampled_from(
    [
        "/",
        "/api/query",
        "/api/mutation",
        "/api/action",
        "/api/run/values/echo",
        "/api/run/x",
        "/api/run/",
        "/api/admin/functions",
        "/api/admin/tables",
        "/api/admin/tables/tasks",
        "/api/admin/tables/_scheduled_functions",
    ]
) | st.text(alphabet="abc/:._-%?=&", max_size=24).map(lambda s: "/api/" + s)
authorizations = st.sampled_from(
    [
        None,
        f"Convex {ADMIN_KEY}",
        "Convex nope",
        "Bearer x",
        "Bearer " + jwt({"sub": "u", "iss": "i"}),
        "Bearer " + jwt({"sub": 1}),
        "Basic abc",
        "",
    ]
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=url_paths,
    body=bodies,
    auth=authorizations,
)
def test_never_a_500(
    portal: BlockingPortal,
    served: httpx.AsyncClient,
    method: str,
    path: str,
    body: bytes,
    auth: str | None,
) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    try:
        request = served.build_request(method, path, content=body, headers=headers)
    except (httpx.InvalidURL, UnicodeError):
        return
    response = portal.call(served.send, request)
    assert response.status_code < 500, response.text
    payload = response.json()
    if response.status_code == 200:
        assert isinstance(payload, dict)
        if path.startswith(("/api/query", "/api/mutation", "/api/action", "/api/run")):
            assert payload["status"] in ("success", "error")
            assert isinstance(payload["logLines"], list)
    else:
        assert isinstance(payload["code"], str) and isinstance(payload["message"], str)
    # The server keeps answering.
    assert portal.call(served.get, "/").status_code == 200
