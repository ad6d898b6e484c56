"""ctx.db through the runtime: writes, queries, indexes, pagination, schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from convexpy import ArgumentValidationError, Runtime, api
from convexpy.errors import (
    DocumentNotFoundError,
    InvalidIdError,
    InvalidValueError,
    ReadOnlyError,
    ReturnsValidationError,
    SchemaValidationError,
)
from convexpy.ids import new_id

SCHEMA_APP = Path(__file__).parent / "apps" / "schema_app"


@pytest.fixture(params=["memory", "sqlite"])
async def rt(request, tmp_path):
    store = "memory" if request.param == "memory" else f"sqlite:///{tmp_path}/db.sqlite3"
    async with Runtime(SCHEMA_APP, store=store) as runtime:
        yield runtime


async def add(rt, title, owner="ann", due=1.0, done=False):
    return await rt.mutation(
        api.tasks.add, {"title": title, "owner": owner, "due": due, "done": done}
    )


async def all_tasks(rt):
    return await rt.query(api.tasks.take, {"n": 1000})


async def test_insert_get_patch_replace_delete(rt):
    task_id = await add(rt, "write tests")
    doc = await rt.query(api.tasks.get, {"id": task_id})
    assert doc["title"] == "write tests" and doc["_id"] == task_id
    assert isinstance(doc["_creationTime"], float)

    await rt.mutation(api.tasks.patch, {"id": task_id, "fields": {"done": True}})
    doc = await rt.query(api.tasks.get, {"id": task_id})
    assert doc["done"] is True and doc["title"] == "write tests"

    await rt.mutation(
        api.tasks.replace,
        {"id": task_id, "doc": {"title": "new", "owner": "bo", "due": 2.0, "done": False}},
    )
    doc = await rt.query(api.tasks.get, {"id": task_id})
    assert doc["title"] == "new" and doc["owner"] == "bo"

    await rt.mutation(api.tasks.remove, {"id": task_id})
    assert await rt.query(api.tasks.get, {"id": task_id}) is None


async def test_creation_time_strictly_increasing(rt):
    for i in range(20):
        await add(rt, f"t{i}")
    times = [t["_creationTime"] for t in await all_tasks(rt)]
    assert times == sorted(times) and len(set(times)) == len(times)


async def test_index_range_order_and_filter(rt):
    await add(rt, "a", owner="ann", due=3.0)
    await add(rt, "b", owner="ann", due=1.0)
    await add(rt, "c", owner="bob", due=2.0)
    await add(rt, "d", owner="ann", due=2.0, done=True)

    asc = await rt.query(api.tasks.by_owner, {"owner": "ann"})
    assert [t["title"] for t in asc] == ["b", "d", "a"]
    desc = await rt.query(api.tasks.by_owner, {"owner": "ann", "order": "desc"})
    assert [t["title"] for t in desc] == ["a", "d", "b"]
    after = await rt.query(api.tasks.by_owner, {"owner": "ann", "after": 1.0})
    assert [t["title"] for t in after] == ["d", "a"]

    assert [t["title"] for t in await rt.query(api.tasks.open_tasks)] == ["a", "b", "c"]
    first = await rt.query(api.tasks.first_open, {"owner": "ann"})
    assert first["title"] == "b"
    assert await rt.query(api.tasks.first_open, {"owner": "zed"}) is None


async def test_take_first_unique_and_iteration(rt):
    for title in "abcde":
        await add(rt, title, owner=title)
    assert [t["title"] for t in await rt.query(api.tasks.take, {"n": 2})] == ["a", "b"]
    assert [t["title"] for t in await rt.query(api.tasks.take, {"n": 2, "order": "desc"})] == [
        "e",
        "d",
    ]
    assert await rt.query(api.tasks.iterate) == ["e", "d", "c", "b", "a"]
    assert (await rt.query(api.tasks.unique_owner, {"owner": "c"}))["title"] == "c"
    assert await rt.query(api.tasks.unique_owner, {"owner": "zz"}) is None
    await add(rt, "c2", owner="c")
    with pytest.raises(ValueError, match="more than one"):
        await rt.query(api.tasks.unique_owner, {"owner": "c"})


async def test_paginate_is_stable_under_inserts_and_deletes(rt):
    ids = [await add(rt, f"t{i:02}") for i in range(10)]
    page1 = await rt.query(api.tasks.page, {"numItems": 4, "cursor": None})
    assert [t["title"] for t in page1["page"]] == ["t00", "t01", "t02", "t03"]
    assert page1["isDone"] is False
    # Deleting a seen document and adding a new one does not shift the next page.
    await rt.mutation(api.tasks.remove, {"id": ids[1]})
    await add(rt, "t10")
    page2 = await rt.query(api.tasks.page, {"numItems": 4, "cursor": page1["continueCursor"]})
    assert [t["title"] for t in page2["page"]] == ["t04", "t05", "t06", "t07"]
    page3 = await rt.query(api.tasks.page, {"numItems": 4, "cursor": page2["continueCursor"]})
    assert [t["title"] for t in page3["page"]] == ["t08", "t09", "t10"]
    assert page3["isDone"] is True
    with pytest.raises(InvalidValueError, match="cursor"):
        await rt.query(api.tasks.page, {"numItems": 4, "cursor": "garbage!"})


async def test_paginate_up_to_an_end_cursor(rt):
    for i in range(6):
        await add(rt, f"t{i}")
    first = await rt.query(api.tasks.page, {"numItems": 2, "cursor": None})
    second = await rt.query(api.tasks.page, {"numItems": 2, "cursor": first["continueCursor"]})
    # The same two pages, asked for by their ends: numItems no longer matters.
    again = {"numItems": 1, "cursor": None, "endCursor": first["continueCursor"]}
    assert await rt.query(api.tasks.page, again) == first
    middle = {
        "numItems": 5,
        "cursor": first["continueCursor"],
        "endCursor": second["continueCursor"],
    }
    assert await rt.query(api.tasks.page, middle) == second
    last = await rt.query(api.tasks.page, {"numItems": 9, "cursor": second["continueCursor"]})
    assert last["isDone"] is True
    up_to_last = {
        "numItems": 1,
        "cursor": second["continueCursor"],
        "endCursor": last["continueCursor"],
    }
    assert (await rt.query(api.tasks.page, up_to_last))["isDone"] is True
    with pytest.raises(InvalidValueError, match="cursor"):
        await rt.query(api.tasks.page, {"numItems": 1, "cursor": None, "endCursor": "garbage!"})


async def test_schema_validation_rejects_bad_documents(rt):
    with pytest.raises(SchemaValidationError, match="tasks"):
        await rt.mutation(
            api.tasks.insert_raw, {"table": "tasks", "doc": {"title": 1, "owner": "a"}}
        )
    with pytest.raises(SchemaValidationError, match="not in schema"):
        await rt.mutation(api.tasks.insert_raw, {"table": "other", "doc": {"x": 1.0}})
    task_id = await add(rt, "ok")
    with pytest.raises(SchemaValidationError):
        await rt.mutation(api.tasks.patch, {"id": task_id, "fields": {"done": "yes"}})
    assert [t["title"] for t in await all_tasks(rt)] == ["ok"]
    assert (await rt.query(api.tasks.get, {"id": task_id}))["done"] is False


async def test_number_fields_store_ints_as_floats(rt):
    task_id = await rt.mutation(
        api.tasks.insert_raw,
        {"table": "tasks", "doc": {"title": "x", "owner": "o", "due": 5, "done": False}},
    )
    doc = await rt.query(api.tasks.get, {"id": task_id})
    assert doc["due"] == 5.0 and isinstance(doc["due"], float)


@pytest.mark.parametrize("field", ["$bad", "_bad", "", "x" * 1025])
async def test_invalid_field_names_change_nothing(rt, field):
    with pytest.raises(InvalidValueError):
        await rt.mutation(api.tasks.insert_with_field, {"field": field})
    assert await all_tasks(rt) == []


async def test_non_convex_and_oversized_values_change_nothing(rt):
    with pytest.raises(InvalidValueError, match="set"):
        await rt.mutation(api.tasks.insert_non_convex)
    big = {"title": "x" * (1024 * 1024 + 10), "owner": "o", "due": 1.0, "done": False}
    with pytest.raises(InvalidValueError, match="1 ?MiB|1048576|1,048,576"):
        await rt.mutation(api.tasks.insert_raw, {"table": "tasks", "doc": big})
    assert await all_tasks(rt) == []


async def test_ids_are_checked(rt):
    task_id = await add(rt, "x")
    with pytest.raises(InvalidIdError):
        await rt.query(api.tasks.get, {"id": "not-an-id"})
    corrupted = task_id[:-1] + ("a" if task_id[-1] != "a" else "b")
    with pytest.raises(InvalidIdError):
        await rt.mutation(api.tasks.remove, {"id": corrupted})
    with pytest.raises(DocumentNotFoundError):
        await rt.mutation(api.tasks.remove, {"id": new_id("tasks")})
    # A schema field v.id("tasks") refuses ids of other tables.
    with pytest.raises(SchemaValidationError, match="task"):
        await rt.mutation(
            api.tasks.insert_raw, {"table": "notes", "doc": {"body": "b", "task": new_id("notes")}}
        )
    await rt.mutation(
        api.tasks.insert_raw, {"table": "notes", "doc": {"body": "b", "task": task_id}}
    )
    assert len(await all_tasks(rt)) == 1


async def test_write_from_query_is_refused(rt):
    with pytest.raises(ReadOnlyError, match="read-only"):
        await rt.query(api.tasks.write_from_query)
    assert await all_tasks(rt) == []


async def test_returns_are_checked(rt):
    with pytest.raises(ReturnsValidationError):
        await rt.query(api.tasks.bad_return)
    with pytest.raises(InvalidValueError, match="not a Convex value"):
        await rt.query(api.tasks.non_convex_return)


async def test_argument_validation_names_path_value_and_type(rt):
    with pytest.raises(ArgumentValidationError) as info:
        await rt.mutation(api.tasks.add, {"title": 5, "owner": "o", "due": 1.0})
    err = info.value
    assert err.path.endswith("title") and err.value == 5
    assert "string" in str(err) or "str" in str(err)
    with pytest.raises(ArgumentValidationError, match="missing|required"):
        await rt.mutation(api.tasks.add, {"owner": "o", "due": 1.0})
    with pytest.raises(ArgumentValidationError, match="unexpected|extra|unknown"):
        await rt.mutation(api.tasks.add, {"title": "t", "owner": "o", "due": 1.0, "zzz": 1})
    assert await all_tasks(rt) == []
