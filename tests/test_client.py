"""convexpy.client.AsyncConvexClient against the real dev server (a subprocess)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from e2e_helpers import (
    SERVER_APP,
    DevServer,
    dev_server,
    free_port,
    run_readme_client,
    write_app,
)

from convexpy.client import AsyncConvexClient, ConnectionLostError, FunctionError, Subscription
from convexpy.errors import ConvexError

pytestmark = pytest.mark.slow


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DevServer]:
    app = write_app(tmp_path / "convex")
    async with dev_server(app, tmp_path / "db" / "data.sqlite3", "--no-watch") as running:
        yield running


async def _next(subscription: Subscription, within: float = 10) -> object:
    with anyio.fail_after(within):
        return await subscription.next()


async def test_query_mutation_and_action(server: DevServer) -> None:
    async with AsyncConvexClient(server.url) as client:
        assert await client.query("values:add", {"a": 2, "b": 3}) == 5
        assert await client.query("nested/deep:hello") == "hello world"
        task_id = await client.mutation("tasks:add", {"text": "one"})
        assert isinstance(task_id, str)
        assert await client.action("values:echo_action", {"value": [1, "x", None]}) == [
            1,
            "x",
            None,
        ]
        # Convex values round-trip: int64, bytes, nested objects.
        value = {"n": 2**40, "b": b"\x00\xff", "f": 1.5}
        assert await client.query("values:echo", {"value": value}) == value


async def test_errors_carry_convex_error_data_or_the_message(server: DevServer) -> None:
    async with AsyncConvexClient(server.url) as client:
        with pytest.raises(ConvexError) as raised:
            await client.query("values:fail_with", {"data": {"code": 7}})
        assert raised.value.data == {"code": 7}
        with pytest.raises(FunctionError, match="boom"):
            await client.query("values:boom")
        with pytest.raises(FunctionError):
            await client.mutation("tasks:nope")
        # The connection survives failures.
        assert await client.query("values:add", {"a": 1, "b": 1}) == 2


async def test_a_subscription_sees_each_change_and_mutations_read_their_writes(
    server: DevServer,
) -> None:
    client = AsyncConvexClient(server.url)
    async with client, client.subscribe("tasks:texts") as texts:
        assert await _next(texts) == []
        await client.mutation("tasks:add", {"text": "a"})
        # The mutation returned only after the transition with its write.
        assert await _next(texts) == ["a"]
        await client.mutation("tasks:add_later", {"text": "later", "delay_ms": 0})
        assert await _next(texts) == ["a", "later"]  # written by a scheduled job


async def test_identical_subscriptions_share_one_query(server: DevServer) -> None:
    async with AsyncConvexClient(server.url) as client:
        first = client.subscribe("tasks:texts")
        second = client.subscribe("tasks:texts")
        async with first, second:
            assert await _next(first) == [] and await _next(second) == []
            assert len(client._queries) == 1
            await client.mutation("tasks:add", {"text": "x"})
            assert await _next(first) == ["x"] and await _next(second) == ["x"]
        assert client._queries == {}


async def test_admin_auth_reaches_internal_functions(server: DevServer) -> None:
    async with AsyncConvexClient(server.url) as client:
        with pytest.raises(FunctionError):
            await client.query("values:secret")
        await client.set_admin_auth(server.admin_key)
        assert await client.query("values:secret") == "s3cret"
    async with AsyncConvexClient(server.url, admin_key=server.admin_key) as client:
        assert await client.query("values:secret") == "s3cret"


async def test_it_reconnects_after_a_server_restart_and_resumes_subscriptions(
    tmp_path: Path,
) -> None:
    marks = """
from convexpy import query


@query
async def labels(ctx) -> list:
    return [doc["label"] for doc in await ctx.db.query("marks").collect()]
"""
    app = write_app(tmp_path / "convex", {**SERVER_APP, "marks.py": marks})
    db = tmp_path / "db" / "data.sqlite3"
    port = free_port()
    async with dev_server(app, db, "--no-watch", port=port) as first:
        client = AsyncConvexClient(first.url)
        async with client:
            texts = client.subscribe("tasks:texts")
            async with texts:
                assert await _next(texts) == []
                await client.mutation("tasks:add", {"text": "before"})
                assert await _next(texts) == ["before"]
                # An action in flight when the connection drops fails: it is never re-sent.
                slow = anyio.Event()
                outcome: list[BaseException] = []

                async def call_slow() -> None:
                    try:
                        await client.action("tasks:slow", {"seconds": 60})
                    except BaseException as exc:
                        outcome.append(exc)
                    slow.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call_slow)
                    async with client.subscribe("marks:labels") as labels:
                        while "slow started" not in await _next(labels):
                            pass  # the action is running
                    first.kill()
                    with anyio.fail_after(15):
                        await slow.wait()
                assert isinstance(outcome[0], ConnectionLostError)

                async with dev_server(app, db, "--no-watch", port=port):
                    with anyio.fail_after(20):
                        await client.connected.wait()
                    await client.mutation("tasks:add", {"text": "after"})
                    with anyio.fail_after(20):
                        while (value := await texts.next()) != ["before", "after"]:
                            assert value == ["before"]  # the resubscribed first result


async def test_the_readme_example_works(tmp_path: Path) -> None:
    from test_readme import blocks

    [(_, script)] = blocks("### An asyncio client: `convexpy.client`")
    lines = await run_readme_client(tmp_path, script)
    assert lines[:2] == ["1.0", "clicks: 1.0"], lines
    values = [float(line.removeprefix("clicks: ")) for line in lines[1:]]
    assert values == [1.0, 2.0, 3.0, 4.0, 5.0], lines
