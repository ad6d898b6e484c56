"""The dev server under real faults of its SQLite writer process: killed under
load, killed again and again, stopped; and where jobs' output goes."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import pytest
from e2e_helpers import dev_server, write_app, writer_pids

pytestmark = pytest.mark.slow


async def new_writer(db: Path, old: int | None) -> int:
    """The writer process of ``db`` once it is not ``old`` (a replacement started)."""
    with anyio.fail_after(15):
        while True:
            pids = [pid for pid in writer_pids(db) if pid != old]
            if pids:
                return pids[0]
            await anyio.sleep(0.02)


async def until(condition: Callable[[], Awaitable[bool]], within: float = 15) -> None:
    """Poll ``condition`` (the server's state: no event to wait on) until true."""
    with anyio.fail_after(within):
        while not await condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def call(client: httpx.AsyncClient, url: str, kind: str, path: str, args: dict) -> dict:
    response = await client.post(f"{url}/api/{kind}", json={"path": path, "args": args})
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


async def test_a_writer_killed_under_load_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    app = write_app(tmp_path / "convex")
    db = tmp_path / "data" / "data.sqlite3"
    async with dev_server(app, db) as server:
        acknowledged: list[str] = []
        errors: list[str] = []
        killed = anyio.Event()

        async def worker(n: int, client: httpx.AsyncClient) -> None:
            for i in range(60):
                text = f"{n}-{i}"
                body = await call(client, server.url, "mutation", "tasks:add", {"text": text})
                if body["status"] == "success":
                    acknowledged.append(text)
                else:
                    errors.append(body["errorMessage"])
                if n == 0 and i == 20:
                    os.kill(await new_writer(db, None), signal.SIGKILL)
                    killed.set()

        async with httpx.AsyncClient(timeout=30) as client, anyio.create_task_group() as tg:
            for n in range(32):
                tg.start_soon(worker, n, client)
        assert killed.is_set()
        async with httpx.AsyncClient(timeout=30) as client:
            stored = await call(client, server.url, "query", "tasks:texts", {})
            status = (await client.get(server.url + "/")).json()
        assert errors == []  # the batch in flight was written again: nobody saw the fault
        assert sorted(acknowledged) == sorted(stored["value"])
        assert len(acknowledged) == 32 * 60
        assert status["status"] == "running" and status["store"] == {"writable": True}
        assert "restarting it" in server.output


async def test_a_writer_that_keeps_dying_makes_the_server_exit_1(tmp_path: Path) -> None:
    app = write_app(tmp_path / "convex")
    db = tmp_path / "data" / "data.sqlite3"
    async with dev_server(app, db) as server:
        writer: int | None = None
        async with httpx.AsyncClient(timeout=30) as client:
            for attempt in range(4):  # max_restarts (3) in a row, then one more
                writer = await new_writer(db, writer)
                os.kill(writer, signal.SIGKILL)
                if attempt == 0:

                    async def degraded() -> bool:
                        status = (await client.get(server.url + "/")).json()
                        return bool(status["status"] == "degraded")

                    await until(degraded)

        async def exited() -> bool:
            return server.proc.poll() is not None

        await until(exited, 30)
        assert server.proc.returncode == 1
        assert "the store cannot recover" in server.output


async def test_a_stopped_writer_times_out_with_a_clear_error_and_is_replaced(
    tmp_path: Path,
) -> None:
    app = write_app(tmp_path / "convex")
    db = tmp_path / "data" / "data.sqlite3"
    async with dev_server(app, db, "--write-timeout", "1") as server:
        stopped = await new_writer(db, None)
        os.kill(stopped, signal.SIGSTOP)
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                body = await call(client, server.url, "mutation", "tasks:add", {"text": "a"})
                assert body["status"] == "error"
                assert "did not finish a write within 1 s" in body["errorMessage"]
                body = await call(client, server.url, "mutation", "tasks:add", {"text": "b"})
                assert body["status"] == "success"
                stored = await call(client, server.url, "query", "tasks:texts", {})
                assert stored["value"] == ["b"]
            assert stopped not in writer_pids(db)
        finally:
            if stopped in writer_pids(db):
                os.kill(stopped, signal.SIGKILL)


JOB_APP = {
    "jobs.py": """
from convexpy import internal_mutation, mutation


@internal_mutation
async def say(ctx, words: str) -> None:
    print("job says", words)


@mutation
async def later(ctx, words: str, delay_ms: float) -> None:
    await ctx.scheduler.run_after(delay_ms, "jobs:say", {"words": words})
"""
}


async def test_job_output_goes_under_its_line_and_after_the_banner(tmp_path: Path) -> None:
    app = write_app(tmp_path / "convex", JOB_APP)
    db = tmp_path / "data" / "data.sqlite3"
    async with dev_server(app, db) as server, httpx.AsyncClient(timeout=30) as client:
        await call(client, server.url, "mutation", "jobs:later", {"words": "now", "delay_ms": 0})
        line = await server.wait_for_output("jobs:say (mutation)")
        index = server.lines.index(line)
        assert server.lines[index + 1] == "    | job says now"
        await call(client, server.url, "mutation", "jobs:later", {"words": "late", "delay_ms": 500})
        assert await server.stop() == 0
    await anyio.sleep(0.6)  # the job falls due while the server is down
    async with dev_server(app, db) as server:
        line = await server.wait_for_output("| job says late")
        index = server.lines.index(line)
        banner_end = next(i for i, text in enumerate(server.lines) if "admin key" in text)
        assert index > banner_end
        assert "jobs:say (mutation)" in server.lines[index - 1]
