"""The dev server: end to end (the real process, driven by the official client) and its pieces."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import signal
import socket
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from convex import ConvexError, ConvexInt64
from convex.http_client import ConvexExecutionError, ConvexHttpClient
from e2e_helpers import (
    SERVER_APP,
    DevServer,
    dev_server,
    run_cli,
    server_info,
    write_app,
)

from convexpy import Runtime
from convexpy.server import create_app
from convexpy.server.dev import (
    load_or_create_admin_key,
    reload_error_text,
    remove_server_info,
    state_dir_for,
    write_server_info,
)
from convexpy.server.logs import LogPrinter, format_duration, use_color
from convexpy.server.process import (
    DEFAULT_MAX_CONNECTIONS,
    UvicornServer,
    event_loop_factory,
    server_config,
)


async def call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking client call in a thread, off the event loop."""
    return await anyio.to_thread.run_sync(partial(function, *args))


async def wait_until(check: Callable[[], Any], within: float = 10) -> Any:
    """Poll the (blocking) ``check`` until it returns something truthy."""
    with anyio.fail_after(within):
        while True:
            result = await call(check)
            if result:
                return result
            await anyio.sleep(0.05)


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return write_app(tmp_path / "project" / "convex")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "project" / ".convexpy" / "data.sqlite3"


@pytest.mark.slow
async def test_official_client(app_dir: Path, db: Path) -> None:
    async with dev_server(app_dir, db) as server:
        client = ConvexHttpClient(server.url)
        assert await call(client.query, "nested/deep:hello", {"name": "py"}) == "hello py"
        doc_id = await call(client.mutation, "tasks:add", {"text": "from the client"})
        assert isinstance(doc_id, str)
        assert await call(client.query, "tasks:texts") == ["from the client"]
        assert await call(client.action, "values:echo_action", {"value": "act"}) == "act"
        total = await call(client.query, "values:add", {"a": ConvexInt64(2), "b": ConvexInt64(40)})
        assert total == ConvexInt64(42)

        # Every Convex type, through the client's own encoding.
        values: list[Any] = [
            None,
            True,
            False,
            ConvexInt64(-(2**63)),
            ConvexInt64(2**63 - 1),
            1.5,
            -0.0,
            float("inf"),
            float("-inf"),
            "text ✓",
            b"\x00\x01\xff",
            [1.0, "two", [None]],
            {"a": {"b": [b"x", ConvexInt64(7)]}},
        ]
        for value in values:
            result = await call(client.query, "values:echo", {"value": value})
            assert result == value and type(result) is type(value), (value, result)
        negative_zero = await call(client.query, "values:echo", {"value": -0.0})
        assert math.copysign(1, negative_zero) == -1
        nan = await call(client.query, "values:echo", {"value": float("nan")})
        assert math.isnan(nan)
        # Python ints are sent as float64 by this client.
        assert await call(client.query, "values:echo", {"value": 3}) == 3.0

        with pytest.raises(ConvexError) as caught:
            await call(client.query, "values:fail_with", {"data": {"code": "nope"}})
        assert caught.value.data == {"code": "nope"}
        with pytest.raises(ConvexError) as caught:
            await call(client.query, "values:fail_with", {"data": "just text"})
        assert caught.value.data == "just text"
        with pytest.raises(ConvexExecutionError, match="ValueError: boom"):
            await call(client.query, "values:boom")
        with pytest.raises(ConvexExecutionError, match="ArgumentValidationError"):
            await call(client.query, "values:add", {"a": 1})
        with pytest.raises(Exception, match="404 FunctionNotFound"):
            await call(client.query, "values:secret")

        client.set_admin_auth(server.admin_key)
        assert await call(client.query, "values:secret") == "s3cret"
        # Without auth_config.py, bearer tokens are refused (tests/test_auth_e2e.py has more).
        client.set_auth(jwt({"sub": "user-7", "iss": "https://auth.example", "name": "Ada"}))
        with pytest.raises(Exception, match="401 NoAuthProvider"):
            await call(client.query, "values:whoami")
        client.set_admin_auth("wrong")
        with pytest.raises(Exception, match="401 BadAdminKey"):
            await call(client.query, "values:secret")

        # The banner and the per-call log lines.
        await server.wait_for_output(server.url)
        assert "admin key" in await server.wait_for_output(server.admin_key)
        assert "functions" in server.output
        await server.wait_for_output("values:boom")
        await server.wait_for_output("ValueError: boom")
        await server.wait_for_output("404 FunctionNotFound")


@pytest.mark.slow
async def test_official_client_ints_reach_int_parameters(app_dir: Path, db: Path) -> None:
    # The official client sends a Python int as a float64 (ConvexInt64 is the int64).
    async with dev_server(app_dir, db) as server:
        client = ConvexHttpClient(server.url)
        assert await call(client.query, "values:add", {"a": 2, "b": 40}) == ConvexInt64(42)
        args = {"xs": [1, 2, 3], "extra": {"k": 4}}
        assert await call(client.query, "values:total", args) == ConvexInt64(10)

        with pytest.raises(ConvexExecutionError) as caught:
            await call(client.query, "values:add", {"a": 2.5, "b": 1})
        message = str(caught.value)
        assert "at $.a: expected int64, got 2.5 (float64)" in message
        assert "an `int` parameter takes integers" in message and "ConvexInt64" in message
        with pytest.raises(ConvexExecutionError, match=r"at \$\.xs\[1\]: expected int64"):
            await call(client.query, "values:total", {"xs": [1, 1.5]})

        # v.int64() stays strict: it takes ConvexInt64 only.
        with pytest.raises(ConvexExecutionError, match=r"at \$\.a: expected int64, got 2\.0"):
            await call(client.query, "values:add_int64", {"a": 2, "b": 40})
        total = await call(
            client.query, "values:add_int64", {"a": ConvexInt64(2), "b": ConvexInt64(40)}
        )
        assert total == ConvexInt64(42)


@pytest.mark.slow
async def test_log_lines_reach_client_and_terminal(app_dir: Path, db: Path, capsys: Any) -> None:
    async with dev_server(app_dir, db) as server:
        client = ConvexHttpClient(server.url)
        client.set_debug(True)
        assert await call(client.query, "values:chatty") == "done"
        assert "hello from chatty" in capsys.readouterr().out
        line = await server.wait_for_output("values:chatty")
        assert "success" in line
        await server.wait_for_output("| hello from chatty")
        await server.wait_for_output("careful")


@pytest.mark.slow
async def test_bad_raw_requests_are_4xx_and_the_server_keeps_serving(
    app_dir: Path, db: Path
) -> None:
    async with dev_server(app_dir, db) as server, httpx.AsyncClient(base_url=server.url) as http:
        bad = [
            ("/api/query", b"{not json"),
            ("/api/query", b"[]"),
            ("/api/query", json.dumps({"args": {}}).encode()),
            ("/api/query", json.dumps({"path": "nested/deep:hello", "args": 5}).encode()),
            ("/api/query", json.dumps({"path": "nested/deep:hello", "format": "xml"}).encode()),
            ("/api/mutation", json.dumps({"path": "no:such", "args": {}}).encode()),
            ("/api/query", b"x" * (9 * 1024 * 1024)),
        ]
        for path, body in bad:
            response = await http.post(path, content=body)
            assert 400 <= response.status_code < 500, (path, body[:40], response.text)
            assert set(response.json()) == {"code", "message"}
        ok = await http.post(
            "/api/query", json={"path": "nested/deep:hello", "args": {"name": "still"}}
        )
        assert ok.status_code == 200
        assert ok.json()["value"] == "hello still"


@pytest.mark.slow
async def test_scheduled_job_runs_in_real_time(app_dir: Path, db: Path) -> None:
    async with dev_server(app_dir, db) as server:
        client = ConvexHttpClient(server.url)
        await call(client.mutation, "tasks:add_later", {"text": "later", "delay_ms": 300})
        assert await call(client.query, "tasks:texts") == []
        await wait_until(lambda: client.query("tasks:texts") == ["later"])
        line = await server.wait_for_output("tasks:add_now")
        assert "job" in line and "success" in line


@pytest.mark.slow
async def test_hot_reload(app_dir: Path, db: Path) -> None:
    async with dev_server(app_dir, db) as server:
        client = ConvexHttpClient(server.url)
        (app_dir / "extra.py").write_text(
            "from convexpy import query\n\n@query\nasync def ping(ctx) -> str:\n    return 'pong'\n"
        )

        def ping() -> Any:
            try:
                return client.query("extra:ping")
            except Exception:
                return None

        assert await wait_until(ping, within=5) == "pong"
        await server.wait_for_output("+extra:ping")
        # Data survives the reload.
        await call(client.mutation, "tasks:add", {"text": "kept"})

        # A broken edit: the previous version keeps serving, the error names file and line.
        (app_dir / "extra.py").write_text(
            "from convexpy import query\n\n@query\nasync def ping(ctx) -> str:\n"
            "    return 'new'\n\nthis is not python\n"
        )
        line = await server.wait_for_output("Reload failed", within=5)
        assert "extra.py:7" in line
        assert await call(client.query, "extra:ping") == "pong"
        assert await call(client.query, "tasks:texts") == ["kept"]
        # A function of the new code is missing, and the answer says why.
        failed = (
            "the last reload failed (convex/extra.py:7: NameError: name 'this' is not defined), "
            "so functions from the new code are not loaded"
        )
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post("/api/query", json={"path": "extra:other", "args": {}})
        assert response.status_code == 404
        message = response.json()["message"]
        assert message.endswith(failed)
        result = await call(run_cli, ["run", "extra:other"], app_dir.parent)
        assert result.returncode == 1
        assert result.stderr == f"error: there is no function 'extra:other'. T{failed[1:]}.\n"

        # Fixing it brings the new version in.
        (app_dir / "extra.py").write_text(
            "from convexpy import query\n\n@query\nasync def ping(ctx) -> str:\n"
            "    return 'fixed'\n"
        )
        assert await wait_until(lambda: ping() == "fixed", within=5)
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.post("/api/query", json={"path": "extra:other", "args": {}})
        assert "reload" not in response.json()["message"]


@pytest.mark.slow
async def test_sigterm_is_graceful_and_restart_resumes_jobs(app_dir: Path, db: Path) -> None:
    async with dev_server(app_dir, db) as server:
        client = ConvexHttpClient(server.url)
        assert server_info(db.parent) == {
            "url": server.url,
            "pid": server.proc.pid,
            "app": str(app_dir),
            "data": str(db),
            "state": str(db.parent),
        }
        await call(client.mutation, "tasks:add_later", {"text": "resumed", "delay_ms": 3000})
        async with anyio.create_task_group() as tg:
            results: list[Any] = []

            async def slow_call() -> None:
                results.append(await call(client.action, "tasks:slow", {"seconds": 0.8}))

            tg.start_soon(slow_call)
            await server.wait_for_output("tasks:mark")  # the action is running
            assert await server.stop(signal.SIGTERM) == 0
        assert results == ["slept"]  # the in-flight call finished
        assert server_info(db.parent) is None
        assert "Stopped." in server.output
        assert "tasks:add_now" not in server.output  # not due yet when we stopped

    async with dev_server(app_dir, db) as restarted:
        client = ConvexHttpClient(restarted.url)
        await wait_until(lambda: client.query("tasks:texts") == ["resumed"], within=15)
        await restarted.wait_for_output("tasks:add_now")
        # Ctrl-C reaches the whole process group, the store's writer process too.
        writers = writer_processes(db)
        assert len(writers) == 1
        assert await restarted.stop(signal.SIGINT, group=True) == 0
        assert "Traceback" not in restarted.output
        assert "Stopped." in restarted.output
        assert writer_processes(db) == []  # it closed the database and exited


# --------------------------------------------------------------------------
# Slow clients, a damaged database, a second signal


async def slow_body(port: int, head: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Announce an 8 MiB body, send ``head`` of it and then nothing: the status and
    JSON body the server answers with, once it has closed the connection."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        request = (
            b"POST /api/query HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 8388608\r\n\r\n" + head
        )
        await stream.send(request)
        received = b""
        with anyio.fail_after(30):
            while True:
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break  # closed by the server
    head_part, _, body = received.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest.mark.slow
async def test_slow_bodies_time_out(app_dir: Path, db: Path) -> None:
    async with dev_server(app_dir, db, "--body-timeout", "0.5", "-v") as server:
        # uvicorn's "auto" choices, with uvicorn[standard] installed.
        line = await server.wait_for_output("  server ")
        assert line.endswith("on uvloop, httptools"), line
        port = int(server.url.rsplit(":", 1)[1])
        results: list[tuple[int, dict[str, Any]]] = []

        async def one(head: bytes) -> None:
            results.append(await slow_body(port, head))

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(one, b'{"path": "values:echo", "args"' if i % 2 else b"")
            # Meanwhile the server serves everyone else.
            async with httpx.AsyncClient(base_url=server.url) as http:
                body = {"path": "nested/deep:hello", "args": {}}
                response = await http.post("/api/query", json=body)
                assert response.json()["value"] == "hello world"
        assert len(results) == 300
        for status, body in results:
            assert status == 408
            assert body["code"] == "RequestTimeout"
            assert body["message"].startswith("The request body did not arrive within 0.5 s (")
        await server.wait_for_output("408 RequestTimeout")
        assert "Traceback" not in server.output


BULK_APP = {
    **SERVER_APP,
    "bulk.py": """
from convexpy import mutation, query


@mutation
async def fill(ctx, n: int) -> None:
    for i in range(n):
        await ctx.db.insert("bulk", {"i": i, "pad": "x" * 400})


@query
async def count(ctx) -> int:
    return len(await ctx.db.query("bulk").collect())
""",
}


def corrupt(db: Path) -> None:
    """Garbage over three stretches of pages in the middle of the file."""
    size = db.stat().st_size
    with open(db, "r+b") as file:
        for fraction in (0.4, 0.5, 0.6):
            file.seek(int(size * fraction) // 4096 * 4096)
            file.write(bytes(range(256)) * 64)


@pytest.mark.slow
async def test_damaged_database(tmp_path: Path) -> None:
    from convexpy.store.sqlite import SqliteStore

    app_dir = write_app(tmp_path / "project" / "convex", BULK_APP)
    db = tmp_path / "project" / ".convexpy" / "data.sqlite3"
    async with Runtime(app_dir, store=SqliteStore(db)) as rt:
        for _ in range(8):
            await rt.mutation("bulk:fill", {"n": 250})
        assert await rt.query("bulk:count") == 2000
    assert not db.with_name(db.name + "-wal").exists()  # all of it is in the file
    corrupt(db)

    async with dev_server(app_dir, db) as server, httpx.AsyncClient(base_url=server.url) as http:
        admin = {"Authorization": f"Convex {server.admin_key}"}
        damaged = f"The database file {str(db)!r} is damaged ("
        response = await http.get("/api/admin/tables/bulk?limit=10000", headers=admin)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["code"] == "DatabaseDamaged"
        assert body["message"].startswith(damaged), body
        assert "restore it from a backup while the server is stopped" in body["message"]
        # A function that reads the damaged pages: a function error saying the same.
        response = await http.post("/api/query", json={"path": "bulk:count", "args": {}})
        assert response.status_code == 200
        assert response.json()["status"] == "error"
        assert response.json()["errorMessage"].startswith(damaged)
        # The CLI passes it on; the server logged the traceback and keeps serving.
        result = await call(run_cli, ["data", "bulk", "--limit", "10000"], app_dir.parent)
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: DatabaseDamaged: {damaged}")
        await server.wait_for_output("503 DatabaseDamaged")
        await server.wait_for_output("database disk image is malformed")
        assert "Traceback (most recent call last)" in server.output
        assert (await http.get("/")).status_code == 200

    # Damage where starting reads (the header): the server does not start, and says why.
    with open(db, "r+b") as file:  # noqa: ASYNC230 - a few bytes, no server running
        file.write(b"not a database!!" * 8)
    args = [str(app_dir), "--port", "0", "--db", str(db)]
    result = await call(_run_dev, args, tmp_path)
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"Could not start: The database file {str(db)!r} is damaged (DatabaseError: file is "
        "not a database), so convexpy cannot read it: restore it from a backup while the "
        "server is stopped (or, if its data does not matter, delete it to start empty)"
    )


HANG_APP = {
    **SERVER_APP,
    "hang.py": """
import time
from pathlib import Path

from convexpy import mutation


@mutation
async def block(ctx, marker: str) -> None:
    Path(marker).write_text("blocking")
    time.sleep(600)  # blocks the event loop


@mutation
async def add(ctx, marker: str) -> str:
    Path(marker).write_text("committing")
    return await ctx.db.insert("hung", {"at": marker})
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("hang", ["event loop", "store"])
async def test_second_signal_exits_at_once(tmp_path: Path, hang: str) -> None:
    app_dir = write_app(tmp_path / "project" / "convex", HANG_APP)
    db = tmp_path / "project" / ".convexpy" / "data.sqlite3"
    marker = tmp_path / "marker"
    async with dev_server(app_dir, db) as server:
        client = ConvexHttpClient(server.url)
        assert await call(client.query, "tasks:texts") == []
        stopped = []
        if hang == "store":  # its writer process stops answering
            stopped = writer_processes(db)
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
        name = "hang:block" if hang == "event loop" else "hang:add"
        try:
            async with anyio.create_task_group() as tg:

                async def hung_call() -> None:
                    with suppress(Exception):  # the server goes away
                        await call(client.mutation, name, {"marker": str(marker)})

                tg.start_soon(hung_call)
                await wait_until(marker.exists, within=15)
                server.proc.send_signal(signal.SIGTERM)
                # Signals of one kind sent before the first is handled count as one.
                await server.wait_for_output("SIGTERM: stopping")
                assert await server.stop(signal.SIGTERM, within=15) == 128 + signal.SIGTERM
        finally:
            for pid in stopped:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        line = await server.wait_for_output("SIGTERM again: exiting now")
        assert "pending jobs resume on the next start" in line
        assert "Traceback" not in server.output
        assert server_info(db.parent) is None  # removed on the way out
    # The writer process sees the end of its input and exits.
    await wait_until(lambda: not writer_processes(db), within=15)


def writer_processes(db: Path) -> list[int]:
    """Pids of the SQLite writer processes of ``db`` (from ``/proc``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                args = file.read().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"_sqlite_writer.py") for arg in args) and str(db).encode() in args:
            pids.append(int(entry))
    return pids


@pytest.mark.slow
async def test_startup_failures(tmp_path: Path, app_dir: Path, db: Path) -> None:
    async with dev_server(app_dir, db) as server:
        # The same port again: a clear message and status 1.
        port = server.url.rsplit(":", 1)[1]
        other = write_app(tmp_path / "other" / "convex")
        result = await call(_run_dev, [str(other), "--port", port, "--memory"], tmp_path / "other")
        assert result.returncode == 1
        assert "Cannot listen" in result.stdout and "Traceback" not in result.stdout
        # The same database from another process: refused, no traceback.
        result = await call(_run_dev, [str(other), "--port", "0", "--db", str(db)], tmp_path)
        assert result.returncode == 1, result.stdout
        assert "Could not open the database" in result.stdout
        assert "Traceback" not in result.stdout

    broken = write_app(tmp_path / "broken" / "convex", {"bad.py": "x = (\n"})
    result = await call(_run_dev, [str(broken), "--port", "0", "--memory"], tmp_path)
    assert result.returncode == 1
    assert "Could not load the app" in result.stdout and "bad.py" in result.stdout
    result = await call(_run_dev, [str(tmp_path / "missing")], tmp_path)
    assert result.returncode == 1 and "does not exist" in result.stdout


def _run_dev(args: list[str], cwd: Path) -> Any:
    from e2e_helpers import run_cli

    return run_cli(["dev", *args], cwd, timeout=30)


@pytest.mark.slow
async def test_memory_mode_keeps_nothing(app_dir: Path) -> None:
    async with dev_server(app_dir, None, "--no-crons", "-q") as server:
        client = ConvexHttpClient(server.url)
        await call(client.mutation, "tasks:add", {"text": "ephemeral"})
        assert await call(client.query, "tasks:texts") == ["ephemeral"]
        # -q: successful calls are not printed, errors are.
        with pytest.raises(ConvexExecutionError):
            await call(client.query, "values:boom")
        await server.wait_for_output("ValueError: boom")
        assert "tasks:add" not in server.output
        assert isinstance(server, DevServer)
    assert not (app_dir.parent / ".convexpy" / "data.sqlite3").exists()


# --------------------------------------------------------------------------
# Pieces, in-process


def printer(verbosity: int = 0, color: bool = False) -> tuple[LogPrinter, io.StringIO]:
    stream = io.StringIO()
    # 2026-01-01T00:00:00.250Z, rendered in local time: only the milliseconds are checked.
    return LogPrinter(
        stream, verbosity=verbosity, color=color, now_ms=lambda: 1767225600250.0
    ), stream


CALL_OK = {
    "type": "call",
    "kind": "mutation",
    "path": "messages:send",
    "duration_ms": 4.25,
    "outcome": "success",
    "logs": ["sending hi", "[INFO] done"],
}
CALL_ERROR = {
    "type": "call",
    "kind": "query",
    "path": "messages:boom",
    "duration_ms": 0.3,
    "outcome": "error",
    "error": "ValueError: boom",
    "logs": [],
}
JOB_OK = {
    "type": "job",
    "job": "abc123",
    "path": "messages:destruct",
    "kind": "mutation",
    "outcome": "success",
    "duration_ms": 1500.0,
}
CRON_FAILED = {  # a cron run is a job that says which cron job it runs
    "type": "job",
    "job": "def456",
    "cron": "check queue",
    "path": "queue:process",
    "kind": "mutation",
    "outcome": "failed",
    "duration_ms": 12.0,
    "error": "RuntimeError: down",
}
CRON_RECORDED = {  # the runner recorded the run in _cron_jobs, skipping two
    "type": "cron",
    "name": "check queue",
    "outcome": "skipped",
    "scheduledTime": 1.7e12,
    "skipped": 2,
}


def test_log_lines_are_aligned_and_plain() -> None:
    log, stream = printer()
    for event in (CALL_OK, CALL_ERROR, JOB_OK, CRON_FAILED, CRON_RECORDED):
        log.on_event(event)
    lines = stream.getvalue().splitlines()
    assert "\x1b[" not in stream.getvalue()
    assert lines[0].endswith("  mutation  messages:send" + " " * 24 + "4.25 ms  success")
    assert lines[0][8:13] == ".250 "
    assert lines[1:3] == ["    | sending hi", "    | [INFO] done"]
    assert "query     messages:boom" in lines[3] and lines[3].endswith("error")
    assert lines[4] == "    ! ValueError: boom"
    assert "job       messages:destruct (mutation)" in lines[5] and "1.50 s" in lines[5]
    assert "abc123" not in lines[5]  # job ids only with -v
    assert 'cron      "check queue" queue:process ' in lines[6]
    assert lines[6].endswith("failed")
    assert lines[7] == "    ! RuntimeError: down"
    assert len(lines) == 8  # one line per cron run: its recording adds none
    # The path column lines up.
    assert len({line.index(" ms") for line in lines if " ms " in line}) == 1


def test_quiet_and_verbose() -> None:
    log, stream = printer(verbosity=-1)
    for event in (CALL_OK, CALL_ERROR, JOB_OK, CRON_FAILED):
        log.on_event(event)
    log.info("banner")
    out = stream.getvalue()
    assert "messages:send" not in out and "messages:destruct" not in out and "banner" not in out
    assert "messages:boom" in out and "check queue" in out

    log, stream = printer(verbosity=1)
    log.on_event(JOB_OK)
    log.on_event(CRON_RECORDED)
    log.on_event({"type": "something-new"})
    out = stream.getvalue()
    assert "job abc123" in out and "skipped=2" in out and "something-new" in out


def test_colors() -> None:
    log, stream = printer(color=True)
    log.on_event(CALL_ERROR)
    assert "\x1b[31merror\x1b[0m" in stream.getvalue()

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_color(Tty(), {}) is True
    assert use_color(Tty(), {"NO_COLOR": "1"}) is False
    assert use_color(io.StringIO(), {}) is False
    assert use_color(io.StringIO(), {"FORCE_COLOR": "1"}) is True
    assert [format_duration(ms) for ms in (0.123, 42.4, 2500, 90_000)] == [
        "0.12 ms",
        "42 ms",
        "2.50 s",
        "1.5 min",
    ]


def test_tracebacks_and_request_errors() -> None:
    log, stream = printer()
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        log.function_exception("m:f", exc)
    log.request_error("POST", "/api/query", 404, "FunctionNotFound", "Could not find m:g")
    out = stream.getvalue()
    assert "    ! Traceback (most recent call last):" in out
    assert "test_tracebacks_and_request_errors" in out and "ValueError: bad input" in out
    assert "POST /api/query" in out and "404 FunctionNotFound" in out
    assert "    ! Could not find m:g" in out


def test_state_files(tmp_path: Path) -> None:
    app = tmp_path / "convex"
    assert state_dir_for(app) == tmp_path / ".convexpy"
    assert state_dir_for(app, tmp_path / "elsewhere" / "x.db") == tmp_path / "elsewhere"
    state = tmp_path / ".convexpy"
    key = load_or_create_admin_key(state)
    assert len(key) > 32 and load_or_create_admin_key(state) == key
    assert os.stat(state / "admin_key").st_mode & 0o777 == 0o600
    write_server_info(state, "http://127.0.0.1:1", 111)
    remove_server_info(state, 222)  # another server's file stays
    assert server_info(state) == {"url": "http://127.0.0.1:1", "pid": 111}
    remove_server_info(state, 111)
    assert server_info(state) is None


async def test_uvicorn_runs_on_uvloop_and_httptools(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "convex")
    async with Runtime(app_dir, store="memory") as runtime:
        config = server_config(create_app(runtime))
    assert (config.loop, config.http) == ("auto", "auto")
    assert config.limit_concurrency == DEFAULT_MAX_CONNECTIONS
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    factory = event_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


async def test_connections_past_the_limit_get_503(tmp_path: Path) -> None:
    app_dir = write_app(tmp_path / "convex")
    async with Runtime(app_dir, store="memory") as runtime:
        config = server_config(create_app(runtime, body_timeout=60), max_connections=3)
        server = UvicornServer(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        stalled = b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(server.serve, sockets=[sock]))
            await wait_until(lambda: server.started, within=15)
            streams = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(2)]
            for stream in streams:
                await stream.send(stalled)
            await wait_until(lambda: len(server.server_state.connections) == 2, within=15)
            # The third connection is one too many: answered at once, and closed.
            async with await anyio.connect_tcp("127.0.0.1", port) as third:
                await third.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                received = b""
                with anyio.fail_after(15):
                    with suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                        while True:
                            received += await third.receive()
            assert received.startswith(b"HTTP/1.1 503 ")
            for stream in streams:
                await stream.aclose()
            server.should_exit = True
        sock.close()


def test_reload_error_text(tmp_path: Path) -> None:
    from convexpy.loader import AppLoadError

    app_dir = tmp_path / "convex"
    runtime = Runtime(app_dir, store="memory")
    error = AppLoadError("failed", file=str(app_dir / "tasks.py"), line=3)
    error.__cause__ = SyntaxError("invalid syntax\n  here")
    text = reload_error_text(runtime, error)
    assert text == "convex/tasks.py:3: SyntaxError: invalid syntax here"
    assert reload_error_text(runtime, ValueError("bad cron")) == "ValueError: bad cron"


def test_printing_now_takes_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with open(path, "w") as stream:
        log = LogPrinter(stream, color=False)
        log.info("first")
        log.now("straight to the file")
    assert path.read_text() == "first\nstraight to the file\n"
    log, stream = printer()
    log.now("to a stream without a file descriptor")
    assert stream.getvalue() == "to a stream without a file descriptor\n"
