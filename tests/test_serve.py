"""``python -m convexpy serve``, the production command, as a subprocess."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest
from e2e_helpers import (
    SERVER_APP,
    DevServer,
    free_port,
    server_process,
    subprocess_env,
    write_app,
)

from convexpy.client import AsyncConvexClient
from convexpy.server.serve import is_loopback

KEY = "k" * 24

DRAIN = """
import asyncio

from convexpy import internal, internal_action, internal_mutation, mutation, query


@mutation
async def start(ctx, seconds: float) -> str:
    return await ctx.scheduler.run_after(0, internal.drain.work, {"seconds": seconds})


@internal_action
async def work(ctx, seconds: float) -> None:
    await ctx.run_mutation(internal.drain.mark, {"label": "started"})
    await asyncio.sleep(seconds)
    await ctx.run_mutation(internal.drain.mark, {"label": "finished"})


@internal_mutation
async def mark(ctx, label: str) -> None:
    await ctx.db.insert("drain_marks", {"label": label})


@query
async def labels(ctx) -> list:
    return [doc["label"] for doc in await ctx.db.query("drain_marks").collect()]


@query
async def slow_marks(ctx) -> int:
    return len(await ctx.db.query("marks").collect())  # tasks:slow makes one as it starts


@query
async def job_states(ctx) -> list:
    jobs = await ctx.db.system.query("_scheduled_functions").collect()
    return [job["state"]["kind"] for job in jobs]
"""


def _env(**extra: str) -> dict[str, str]:
    env = subprocess_env()
    env.pop("CONVEXPY_STORE", None)
    env.pop("CONVEXPY_ADMIN_KEY", None)
    env.update(extra)
    return env


def _serve_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convexpy", "serve", *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@asynccontextmanager
async def serve_server(
    app_dir: Path, store: str, *args: str, port: int | None = None, **env: str
) -> AsyncIterator[DevServer]:
    """``python -m convexpy serve APP --store STORE`` on a free port, once it answers."""
    port = port or free_port()
    command = [sys.executable, "-m", "convexpy", "serve", str(app_dir)]
    command += ["--store", store, "--port", str(port), *args]
    async with server_process(command, app_dir.parent, port, app_dir.parent, _env(**env)) as server:
        yield server


def _unsigned_token() -> str:
    def part(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    header = part({"alg": "RS256", "typ": "JWT", "kid": "k1"})
    return f"{header}.{part({'sub': 'user-1', 'iss': 'https://issuer.example'})}.c2ln"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return write_app(tmp_path / "convex", {**SERVER_APP, "drain.py": DRAIN})


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    assert not is_loopback("no-such-host.invalid")


@pytest.mark.slow
def test_serve_refuses_bad_options_before_starting(app: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    no_store = _serve_cli([str(app)], tmp_path)
    assert no_store.returncode == 2
    assert "serve needs a store: --store URL or CONVEXPY_STORE" in (
        no_store.stdout + no_store.stderr
    )
    public = _serve_cli([str(app), "--store", db, "--host", "0.0.0.0"], tmp_path)
    assert public.returncode == 2
    assert "refusing to listen on 0.0.0.0 without an admin key" in (public.stdout + public.stderr)
    short = _serve_cli([str(app), "--store", db], tmp_path, CONVEXPY_ADMIN_KEY="short")
    assert short.returncode == 2 and "CONVEXPY_ADMIN_KEY is too short" in (
        short.stdout + short.stderr
    )
    bad_url = _serve_cli([str(app)], tmp_path, CONVEXPY_STORE="mysql://x")
    assert bad_url.returncode == 2 and "Invalid CONVEXPY_STORE" in (bad_url.stdout + bad_url.stderr)
    insecure = _serve_cli([str(app), "--store", db, "--insecure-unverified-jwt"], tmp_path)
    assert insecure.returncode == 2 and "unrecognized arguments" in (
        insecure.stdout + insecure.stderr
    )
    assert not (tmp_path / "db.sqlite3").exists()  # nothing was opened


@pytest.mark.slow
async def test_serve_is_quiet_verifies_tokens_and_guards_admin_calls(
    app: Path, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'data' / 'db.sqlite3'}"
    (tmp_path / "data").mkdir()
    async with serve_server(app, store, CONVEXPY_ADMIN_KEY=KEY) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            added = await http.post(
                "/api/mutation", json={"path": "tasks:add", "args": {"text": "x"}}
            )
            assert added.json()["status"] == "success"
            texts = await http.post("/api/query", json={"path": "tasks:texts", "args": {}})
            assert texts.json()["value"] == ["x"]
            path = {"path": "values:secret", "args": {}}
            hidden = await http.post("/api/query", json=path)  # internal: as if missing
            assert hidden.status_code == 404 and hidden.json()["code"] == "FunctionNotFound"
            admin = {"Authorization": f"Convex {KEY}"}
            secret = await http.post("/api/query", json=path, headers=admin)
            assert secret.json()["value"] == "s3cret"
            wrong = await http.post("/api/query", json=path, headers={"Authorization": "Convex x"})
            assert wrong.status_code == 401
            # The dashboard is there, its data behind the admin key.
            assert (await http.get("/dashboard")).status_code == 200
            assert (await http.get("/api/admin/health")).status_code == 401
            assert (await http.get("/api/admin/health", headers=admin)).status_code == 200
            # No auth_config.py: a bearer token is refused, never read unverified.
            token = {"Authorization": f"Bearer {_unsigned_token()}"}
            whoami = await http.post(
                "/api/query", json={"path": "values:whoami", "args": {}}, headers=token
            )
            assert whoami.status_code == 401 and whoami.json()["code"] == "NoAuthProvider"
        assert await server.stop() == 0
    lines = server.lines
    assert any("convexpy serve:" in line and server.url in line for line in lines)
    assert lines[-1].endswith("convexpy serve: stopped")
    assert not any("tasks:add" in line for line in lines)  # quiet: no call lines
    assert not (tmp_path / ".convexpy").exists() and not (app / ".convexpy").exists()


@pytest.mark.slow
async def test_serve_log_prints_calls_and_no_key_refuses_admin(app: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    async with serve_server(app, store, "--log") as server:
        assert "no admin key: admin calls refused" in server.output
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await http.post("/api/mutation", json={"path": "tasks:add", "args": {"text": "y"}})
            admin = {"Authorization": "Convex anything-at-all-here"}
            refused = await http.post(
                "/api/query", json={"path": "values:secret", "args": {}}, headers=admin
            )
            assert refused.status_code == 401
        await server.wait_for_output("tasks:add")


async def _labels(url: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        answer = await http.post("/api/query", json={"path": "drain:labels", "args": {}})
        labels: list[str] = answer.json()["value"]
        return labels


@pytest.mark.slow
async def test_sigterm_lets_requests_and_running_jobs_finish(app: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    port = free_port()
    async with serve_server(app, store, "--grace", "30", port=port) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            live = AsyncConvexClient(server.url)
            async with live, live.subscribe("drain:labels") as labels:
                await http.post(
                    "/api/mutation", json={"path": "drain:start", "args": {"seconds": 1.5}}
                )
                with anyio.fail_after(15):
                    while "started" not in await labels.next():
                        pass  # the job is running
            answers: list[httpx.Response] = []

            async def slow_request() -> None:
                answers.append(
                    await http.post(
                        "/api/action", json={"path": "tasks:slow", "args": {"seconds": 1.0}}
                    )
                )

            live = AsyncConvexClient(server.url)
            async with live, live.subscribe("drain:slow_marks") as marks:
                assert await marks.next() == 0
                async with anyio.create_task_group() as tg:
                    tg.start_soon(slow_request)
                    with anyio.fail_after(15):
                        await marks.next()  # the request is in flight
                    server.proc.send_signal(signal.SIGTERM)
            assert answers[0].json() == {"status": "success", "value": "slept", "logLines": []}
        # One SIGTERM only: a second one would exit at once.
        assert await anyio.to_thread.run_sync(partial(server.proc.wait, 30)) == 0
        await server.wait_for_output("convexpy serve: stopped")
    # The job that was running when SIGTERM came finished within the grace.
    async with serve_server(app, store, port=port) as again:
        assert await _labels(again.url) == ["started", "finished"]
        async with httpx.AsyncClient(base_url=again.url, timeout=10) as http:
            states = await http.post("/api/query", json={"path": "drain:job_states", "args": {}})
            assert states.json()["value"] == ["success"]


@pytest.mark.slow
async def test_serve_on_postgresql(app: Path, tmp_path: Path) -> None:
    from pg_server import database_url

    url = database_url(tmp_path)
    seen = []
    for text in ("one", "two"):  # a second process start finds the first one's data
        async with serve_server(app, url, CONVEXPY_ADMIN_KEY=KEY) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                await http.post("/api/mutation", json={"path": "tasks:add", "args": {"text": text}})
                texts = await http.post("/api/query", json={"path": "tasks:texts", "args": {}})
                seen.append(texts.json()["value"])
            assert await server.stop() == 0
    assert seen == [["one"], ["one", "two"]]
