"""The official ``convex`` ``ConvexClient`` (websocket) against the real dev server.

The client runs in a process of its own (``sync_client_child.py``): its Rust
side holds the GIL while it waits. Every wait has a deadline here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from e2e_helpers import (
    SERVER_APP,
    SYNC_APP,
    DevServer,
    dev_server,
    free_port,
    run_readme_client,
    subprocess_env,
    write_app,
)

pytestmark = pytest.mark.slow

CHILD = Path(__file__).resolve().parent / "sync_client_child.py"


class ClientError(Exception):
    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer["message"])
        self.kind: str = answer["error"]
        self.data: Any = answer.get("data")


class OfficialClient:
    """A ``ConvexClient`` in a child process, one command at a time."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    async def do(self, op: str, within: float = 30, **fields: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        with anyio.fail_after(within):
            line = await anyio.to_thread.run_sync(self.proc.stdout.readline, abandon_on_cancel=True)
        if not line:
            raise AssertionError(f"the client process exited ({self.proc.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise ClientError(answer)
        return answer["ok"]

    async def call(self, op: str, path: str, args: dict[str, Any] | None = None) -> Any:
        return await self.do(op, path=path, args=args)

    async def subscribe(self, path: str, args: dict[str, Any] | None = None) -> int:
        return int(await self.do("subscribe", path=path, args=args))

    async def next(self, sub: int) -> Any:
        return await self.do("next", sub=sub)

    async def until(self, sub: int, expected: Any, most: int = 50) -> list[Any]:
        """Read ``sub`` until it yields ``expected``; the distinct values seen on the
        way, in order. (The client's stream yields after every transition, changed
        or not.)"""
        seen: list[Any] = []
        for _ in range(most):
            value = await self.next(sub)
            if not seen or seen[-1] != value:
                seen.append(value)
            if value == expected:
                return seen
        raise AssertionError(f"never saw {expected!r} in {most} values: {seen!r}")


@asynccontextmanager
async def official_client(url: str) -> AsyncIterator[OfficialClient]:
    start = partial(
        subprocess.Popen,
        [sys.executable, str(CHILD), url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    proc: subprocess.Popen[str] = await anyio.to_thread.run_sync(start)
    try:
        yield OfficialClient(proc)
    finally:
        proc.kill()
        await anyio.to_thread.run_sync(proc.wait, 10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return write_app(write_app(tmp_path / "convex"), SYNC_APP)


def int64(n: int) -> dict[str, int]:
    return {"$int": n}


async def test_query_mutation_action_and_errors(app_dir: Path) -> None:
    async with dev_server(app_dir, None) as server, official_client(server.url) as client:
        assert await client.call("query", "values:add", {"a": 1, "b": 2}) == int64(3)
        task_id = await client.call("mutation", "tasks:add", {"text": "a"})
        assert isinstance(task_id, str) and task_id
        assert await client.call("query", "tasks:texts") == ["a"]
        assert await client.call("action", "live:shout", {"text": "hi"}) == "HI"
        echoed = await client.call("action", "values:echo_action", {"value": [1.5, "x", None]})
        assert echoed == [1.5, "x", None]

        with pytest.raises(ClientError) as failed:
            await client.call("query", "values:fail_with", {"data": {"why": "no"}})
        assert failed.value.kind == "ConvexError" and failed.value.data == {"why": "no"}
        with pytest.raises(ClientError) as refused:
            await client.call("mutation", "live:refuse", {"code": 7})
        assert refused.value.kind == "ConvexError" and refused.value.data == {"code": int64(7)}
        with pytest.raises(ClientError, match="kaboom") as exploded:
            await client.call("action", "live:explode")
        assert exploded.value.kind != "ConvexError"
        assert await client.call("query", "tasks:texts") == ["a"]  # refuse rolled back

        with pytest.raises(ClientError, match="Could not find public function"):
            await client.call("query", "values:secret")
        await client.do("admin", key=server.admin_key)
        assert await client.call("query", "values:secret") == "s3cret"


def texts_runs(server: DevServer) -> list[str]:
    """What each run of ``live:texts`` logged, in order."""
    return [found[0] for line in server.lines if (found := re.findall(r"texts read \d+$", line))]


async def test_subscribe_sees_each_change_and_nothing_else_reruns(app_dir: Path) -> None:
    async with dev_server(app_dir, None) as server, official_client(server.url) as client:
        texts = await client.subscribe("live:texts")
        assert await client.next(texts) == []
        # The mutation returns once a transition at or after its commit arrived, so
        # the round that saw the unrelated commit is over before the next one.
        await client.call("mutation", "live:note", {"text": "unrelated"})
        await client.call("mutation", "tasks:add", {"text": "a"})
        assert await client.until(texts, ["a"]) in ([[], ["a"]], [["a"]])
        await server.wait_for_output("texts read 1")
        assert texts_runs(server) == ["texts read 0", "texts read 1"]

        jobs = await client.subscribe("live:jobs")
        assert await client.next(jobs) == []
        await client.call("mutation", "tasks:add_later", {"text": "later", "delay_ms": 1500})
        # Each state of the job, in order: the scheduled mutation's write is seen too.
        seen = await client.until(jobs, ["success"])
        assert seen in ([[], ["pending"], ["success"]], [["pending"], ["success"]])
        await client.until(texts, ["a", "later"])
        await server.wait_for_output("texts read 2")
        assert texts_runs(server) == ["texts read 0", "texts read 1", "texts read 2"]


async def test_a_subscription_resumes_after_a_server_restart(app_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "state" / "data.sqlite3"
    port = free_port()
    async with dev_server(app_dir, db, port=port) as server, official_client(server.url) as client:
        texts = await client.subscribe("tasks:texts")
        assert await client.next(texts) == []
        await client.call("mutation", "tasks:add", {"text": "before"})
        assert await client.next(texts) == ["before"]
        assert await server.stop() == 0
        async with dev_server(app_dir, db, port=port) as again:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(
                    again.url + "/api/mutation",
                    json={"path": "tasks:add", "args": {"text": "after"}},
                )
                assert response.json()["status"] == "success"
            # The client reconnects on its own and subscribes again.
            seen = await client.until(texts, ["before", "after"])
            assert seen in ([["before"], ["before", "after"]], [["before", "after"]])


async def test_the_readme_example_works(tmp_path: Path) -> None:
    from test_readme import blocks

    (_, script) = blocks("## Live queries")[1]
    lines = await run_readme_client(tmp_path, script)
    assert lines[:3] == ["1.0", "2.0", "clicks: 2.0"], lines
    values = [float(line.removeprefix("clicks: ")) for line in lines[2:]]
    assert values == sorted(values) and values[-1] >= 5


async def test_set_auth_tokens_are_verified_as_over_http(tmp_path: Path) -> None:
    from auth_helpers import Key, auth_config_source, claims, jwks, jwks_server

    key = Key.rsa("sync-1")
    now = time.time()  # the dev server checks `exp` against the real clock
    with jwks_server() as keys:
        keys.documents["/jwks.json"] = jwks(key)
        config = auth_config_source(
            [
                {
                    "type": "customJwt",
                    "issuer": "https://auth.test.example",
                    "jwks": keys("/jwks.json"),
                    "algorithm": "RS256",
                    "applicationID": "convexpy-tests",
                }
            ]
        )
        app_dir = write_app(tmp_path / "convex", {**SERVER_APP, "auth_config.py": config})
        async with dev_server(app_dir, None) as server, official_client(server.url) as client:
            assert await client.call("query", "values:whoami") is None
            await client.do("auth", token=key.sign(claims(now, sub="ws-user", name="Ada")))
            who = await client.call("query", "values:whoami")
            assert who == {
                "subject": "ws-user",
                "issuer": "https://auth.test.example",
                "name": "Ada",
            }
            # (A forged token gets an AuthError: test_sync checks it on the raw
            # protocol; this client then keeps reconnecting with it, unanswered.)
