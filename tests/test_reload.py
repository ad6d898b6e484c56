"""Reloading an app: imports run off the event loop, bounded by a timeout;
a reload that fails keeps the previous version serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from convexpy import Runtime
from convexpy.loader import AppLoadError

COUNT = """
from convexpy import query

@query
async def version(ctx):
    return 1
"""

WAITS_FOR_FLAG = """
import time
from pathlib import Path

from convexpy import query

while not Path({flag!r}).exists():  # blocks this import until the test says
    time.sleep(0.01)

@query
async def version(ctx):
    return 2
"""

SLEEPS = """
import time

from convexpy import query

time.sleep(3600)

@query
async def version(ctx):
    return 3
"""


async def test_a_module_blocking_at_import_does_not_block_the_loop(
    make_app: Any, tmp_path: Path
) -> None:
    app = make_app({"counter.py": COUNT})
    flag = tmp_path / "go"
    async with Runtime(app) as rt:
        (app / "counter.py").write_text(WAITS_FOR_FLAG.format(flag=str(flag)))
        async with anyio.create_task_group() as tg:
            tg.start_soon(rt.reload)
            # The import is stuck in the module; the loop serves meanwhile.
            with anyio.fail_after(10):
                assert await rt.query("counter:version") == 1
            flag.touch()
        assert await rt.query("counter:version") == 2


async def test_an_import_that_never_ends_fails_the_reload_naming_the_line(
    make_app: Any,
) -> None:
    app = make_app({"counter.py": COUNT})
    async with Runtime(app, import_timeout=0.3) as rt:
        (app / "counter.py").write_text(SLEEPS)
        with anyio.fail_after(10), pytest.raises(AppLoadError) as caught:
            await rt.reload()
        error = caught.value
        assert "counter.py (line 6) did not finish within 0.3 s" in str(error)
        assert error.file is not None and error.file.endswith("counter.py")
        assert error.line == 6
        assert await rt.query("counter:version") == 1  # the previous version serves


async def test_an_import_that_never_ends_fails_the_start(make_app: Any) -> None:
    app = make_app({"counter.py": SLEEPS})
    with anyio.fail_after(10), pytest.raises(AppLoadError, match="did not finish within"):
        async with Runtime(app, import_timeout=0.3):
            pass


def test_import_timeout_must_be_positive(make_app: Any) -> None:
    app = make_app({"counter.py": COUNT})
    for bad in (0, -1, "10"):
        with pytest.raises(ValueError, match="import_timeout must be a positive number"):
            Runtime(app, import_timeout=bad)  # type: ignore[arg-type]


SCHEMA_V1 = """
from convexpy import define_schema, define_table, v

schema = define_schema({"messages": define_table({"body": v.string()})})
"""

SCHEMA_AUTHOR = """
from convexpy import define_schema, define_table, v

schema = define_schema({"messages": define_table({"body": v.string(), "author": v.string()})})
"""

SCHEMA_OPTIONAL_AUTHOR = """
from convexpy import define_schema, define_table, v

schema = define_schema(
    {"messages": define_table({"body": v.string(), "author": v.optional(v.string())})}
)
"""

MESSAGES = """
from convexpy import mutation, query

@mutation
async def send(ctx, body: str):
    return await ctx.db.insert("messages", {"body": body})

@query
async def count(ctx) -> int:
    return len(await ctx.db.query("messages").collect())
"""


async def test_a_schema_that_documents_violate_is_refused_on_reload(make_app: Any) -> None:
    app = make_app({"schema.py": SCHEMA_V1, "messages.py": MESSAGES})
    async with Runtime(app) as rt:
        first = await rt.mutation("messages:send", {"body": "hi"})
        (app / "schema.py").write_text(SCHEMA_AUTHOR)
        with pytest.raises(AppLoadError) as caught:
            await rt.reload()
        message = str(caught.value)
        assert f"document {first!r} in table 'messages'" in message
        assert "$.author" in message and "missing required field" in message
        assert caught.value.file is not None and caught.value.file.endswith("schema.py")
        # The previous schema is still in force: a message without an author is fine.
        await rt.mutation("messages:send", {"body": "still works"})
        (app / "schema.py").write_text(SCHEMA_OPTIONAL_AUTHOR)
        await rt.reload()  # compatible with every document: accepted
        assert await rt.query("messages:count") == 2


async def test_a_schema_changed_while_stopped_is_checked_at_start_and_only_then(
    make_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convexpy import schema_check

    checked: list[str] = []
    check_table = schema_check._check_table

    async def spy(txn: Any, schema: Any, table: str, schema_file: str) -> None:
        checked.append(table)
        await check_table(txn, schema, table, schema_file)

    monkeypatch.setattr(schema_check, "_check_table", spy)
    app = make_app({"schema.py": SCHEMA_V1, "messages.py": MESSAGES})
    store = f"sqlite:///{tmp_path}/data.sqlite3"
    async with Runtime(app, store=store) as rt:
        await rt.mutation("messages:send", {"body": "hi"})
    assert checked == ["messages"]  # first start: nothing recorded yet
    async with Runtime(app, store=store):
        pass
    assert checked == ["messages"]  # unchanged: not read again
    (app / "schema.py").write_text(SCHEMA_AUTHOR)
    with pytest.raises(AppLoadError, match="does not match the new schema"):
        async with Runtime(app, store=store):
            pass
    assert checked == ["messages", "messages"]
