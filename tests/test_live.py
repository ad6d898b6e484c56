"""Live queries (convexpy/live.py): read-set invalidation, shared executions, rounds."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convexpy import Runtime
from convexpy.clock import VirtualClock
from convexpy.live import LiveQueries, LiveQuery, QueryTimeoutError, ReadSetIndex, _Ranges
from convexpy.store.base import KeyRange, ReadSet, Write
from convexpy.store.occ import Commit

APP = {
    "tasks.py": """
import asyncio

from convexpy import internal, internal_action, internal_mutation, mutation, query, v


@mutation
async def add(ctx, text: str, owner: str = "ada") -> str:
    return await ctx.db.insert("tasks", {"text": text, "owner": owner})


@mutation
async def note(ctx, text: str) -> str:
    return await ctx.db.insert("notes", {"text": text})


@mutation
async def rename(ctx, id: str, text: str) -> None:
    await ctx.db.patch(id, {"text": text})


@query
async def texts(ctx) -> list:
    return [doc["text"] for doc in await ctx.db.query("tasks").collect()]


@query
async def of_owner(ctx, owner: str) -> list:
    index = ctx.db.query("tasks").with_index("by_owner", lambda q: q.eq("owner", owner))
    rows = await index.collect()
    return [doc["text"] for doc in rows]


@query
async def one(ctx, id: str):
    doc = await ctx.db.get(id)
    return None if doc is None else doc["text"]


@query
async def broken(ctx) -> None:
    await ctx.db.query("tasks").collect()
    raise ValueError("broken on purpose")


@query
async def stuck(ctx) -> None:
    await ctx.db.query("tasks").collect()
    await asyncio.sleep(3600)


@mutation
async def add_later(ctx, text: str, delay_ms: float) -> str:
    return await ctx.scheduler.run_after(delay_ms, internal.tasks.add_now, {"text": text})


@internal_mutation
async def add_now(ctx, text: str) -> None:
    await ctx.db.insert("tasks", {"text": text, "owner": "job"})


@query
async def jobs(ctx) -> list:
    rows = await ctx.db.system.query("_scheduled_functions").collect()
    return [row["state"]["kind"] for row in rows]


RELEASE = asyncio.Event()


@mutation
async def act_later(ctx, delay_ms: float) -> str:
    return await ctx.scheduler.run_after(delay_ms, internal.tasks.held_action, {})


@internal_action
async def held_action(ctx) -> None:
    await RELEASE.wait()


@mutation
async def score(ctx, n: float) -> None:
    await ctx.db.insert("scores", {"n": n})


@query
async def scores_page(ctx, num: int) -> dict:
    page = await ctx.db.query("scores").with_index("by_n").paginate(
        {"numItems": num, "cursor": None}
    )
    return {"ns": [doc["n"] for doc in page["page"]], "isDone": page["isDone"]}
""",
    "schema.py": """
from convexpy import define_schema, define_table, v

schema = define_schema({
    "tasks": define_table({"text": v.string(), "owner": v.string()}).index("by_owner", ["owner"]),
    "notes": define_table({"text": v.string()}),
    "scores": define_table({"n": v.float64()}).index("by_n", ["n"]),
})
""",
}


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    for name, source in APP.items():
        (tmp_path / name).write_text(textwrap.dedent(source).lstrip())
    return tmp_path


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store: the SQLite one reports commits when its writer is done, the
    PostgreSQL one when the server has them."""
    if request.param == "memory":
        return "memory"
    if request.param == "postgresql":
        from pg_server import database_url

        return database_url(tmp_path / "pg")
    return f"sqlite:///{tmp_path / 'db' / 'data.sqlite3'}"


class Watcher:
    """Subscriptions on a LiveQueries, with each round's changes recorded."""

    def __init__(self, hub: LiveQueries) -> None:
        self.hub = hub
        self.changes: asyncio.Queue[set[LiveQuery]] = asyncio.Queue()
        hub.observers.append(self.changes.put_nowait)

    def watch(self, path: str, args: dict[str, object] | None = None) -> LiveQuery:
        live = self.hub.query(path, args or {}, trusted=False, identity=None)
        self.hub.retain(live)
        return live

    async def round(self) -> set[LiveQuery]:
        """The queries the next round changed."""
        async with asyncio.timeout(10):
            return await self.changes.get()

    async def until(self, live: LiveQuery, value: object) -> None:
        async with asyncio.timeout(10):
            while live.outcome is None or live.outcome.value != value:
                await self.changes.get()


async def test_a_subscription_reruns_on_its_writes_only(app_dir: Path, store: str) -> None:
    async with Runtime(app_dir, store=store) as rt, LiveQueries(rt) as hub:
        w = Watcher(hub)
        texts = w.watch("tasks:texts")
        assert await w.round() == {texts}
        assert texts.outcome is not None and texts.outcome.value == []
        assert hub.runs == 1
        await rt.mutation("tasks:note", {"text": "unrelated"})
        assert await w.round() == set()  # ts moved, nothing ran
        assert hub.runs == 1
        await rt.mutation("tasks:add", {"text": "a"})
        await w.until(texts, ["a"])
        assert hub.runs == 2


async def test_index_ranges_and_ids_decide(app_dir: Path, store: str) -> None:
    async with Runtime(app_dir, store=store) as rt, LiveQueries(rt) as hub:
        w = Watcher(hub)
        task = await rt.mutation("tasks:add", {"text": "x", "owner": "ada"})
        ada = w.watch("tasks:of_owner", {"owner": "ada"})
        bob = w.watch("tasks:of_owner", {"owner": "bob"})
        one = w.watch("tasks:one", {"id": task})
        assert await w.round() == {ada, bob, one}
        runs = hub.runs
        await rt.mutation("tasks:add", {"text": "y", "owner": "bob"})  # bob's range only
        assert await w.round() == {bob}
        assert hub.runs == runs + 1
        assert bob.outcome is not None and bob.outcome.value == ["y"]
        await rt.mutation("tasks:rename", {"id": task, "text": "x2"})  # ada's row, by id
        assert await w.round() == {ada, one}
        assert one.outcome is not None and one.outcome.value == "x2"
        assert hub.runs == runs + 3


async def test_identical_subscriptions_share_one_execution(app_dir: Path, store: str) -> None:
    async with Runtime(app_dir, store=store) as rt, LiveQueries(rt) as hub:
        w = Watcher(hub)
        first = w.watch("tasks:of_owner", {"owner": "ada"})
        second = w.watch("tasks:of_owner", {"owner": "ada"})
        assert first is second and first.refs == 2
        await w.round()
        assert hub.runs == 1
        hub.release(first)
        assert len(hub) == 1
        hub.release(second)
        assert len(hub) == 0


async def test_an_error_is_an_outcome_and_still_watches_its_reads(
    app_dir: Path, store: str
) -> None:
    async with Runtime(app_dir, store=store) as rt, LiveQueries(rt) as hub:
        w = Watcher(hub)
        broken = w.watch("tasks:broken")
        missing = w.watch("tasks:nope")
        assert await w.round() == {broken, missing}
        assert broken.outcome is not None and "broken on purpose" in str(broken.outcome.error)
        assert missing.outcome is not None and "tasks:nope" in str(missing.outcome.error)
        runs = hub.runs
        await rt.mutation("tasks:add", {"text": "a"})
        await w.round()
        assert hub.runs == runs + 1  # broken read tasks before it failed; the other read nothing


async def test_a_paginated_query_keeps_its_page_end_across_reruns(
    app_dir: Path, store: str
) -> None:
    async with Runtime(app_dir, store=store) as rt, LiveQueries(rt) as hub:
        for n in (10, 20, 30, 40, 50):
            await rt.mutation("tasks:score", {"n": n})
        w = Watcher(hub)
        first = w.watch("tasks:scores_page", {"num": 2})
        whole = w.watch("tasks:scores_page", {"num": 10})
        await w.until(first, {"ns": [10, 20], "isDone": False})
        await w.until(whole, {"ns": [10, 20, 30, 40, 50], "isDone": True})
        assert first.outcome is not None and first.outcome.journal is not None
        # A document inside the first page: the page grows, its end stays at 20
        # (Convex's journals: pages next to each other neither overlap nor gap).
        await rt.mutation("tasks:score", {"n": 15})
        await w.until(first, {"ns": [10, 15, 20], "isDone": False})
        # The last page reaches the end of the range, whatever lands there.
        await rt.mutation("tasks:score", {"n": 60})
        await w.until(whole, {"ns": [10, 15, 20, 30, 40, 50, 60], "isDone": True})
        assert first.outcome.value == {"ns": [10, 15, 20], "isDone": False}
        # A subscriber that resumes a journal gets that page, not a fresh one.
        resumed = hub.query(
            "tasks:scores_page",
            {"num": 2},
            trusted=False,
            identity=None,
            journal=first.outcome.journal,
        )
        hub.retain(resumed)
        await w.until(resumed, {"ns": [10, 15, 20], "isDone": False})
        with pytest.raises(ValueError, match="not a query journal"):
            hub.query("tasks:scores_page", {"num": 2}, trusted=False, identity=None, journal="{")


async def test_invalidate_all_reruns_everything(app_dir: Path, store: str) -> None:
    async with Runtime(app_dir, store=store) as rt, LiveQueries(rt) as hub:
        w = Watcher(hub)
        queries = {w.watch("tasks:texts"), w.watch("tasks:of_owner", {"owner": "ada"})}
        assert await w.round() == queries
        hub.invalidate_all()  # the app was reloaded
        assert await w.round() == set()  # same results
        assert hub.runs == 4


async def test_a_stuck_query_fails_and_the_round_goes_on(app_dir: Path, store: str) -> None:
    async with Runtime(app_dir, store=store) as rt, LiveQueries(rt, query_timeout=0.2) as hub:
        w = Watcher(hub)
        stuck, texts = w.watch("tasks:stuck"), w.watch("tasks:texts")
        assert await w.round() == {stuck, texts}
        assert isinstance(stuck.outcome and stuck.outcome.error, QueryTimeoutError)
        assert "tasks:stuck did not finish within 0.2 s" in str(stuck.outcome.error)
        assert texts.outcome is not None and texts.outcome.value == []


async def test_same_result_is_not_a_change(app_dir: Path, store: str) -> None:
    async with Runtime(app_dir, store=store) as rt, LiveQueries(rt) as hub:
        w = Watcher(hub)
        task = await rt.mutation("tasks:add", {"text": "x"})
        one = w.watch("tasks:one", {"id": task})
        await w.round()
        first = one.outcome
        await rt.mutation("tasks:rename", {"id": task, "text": "x"})
        assert await w.round() == set()
        assert one.outcome is first


async def test_scheduled_writes_reach_subscriptions(app_dir: Path, store: str) -> None:
    clock = VirtualClock()
    async with Runtime(app_dir, store=store, clock=clock) as rt, LiveQueries(rt) as hub:
        w = Watcher(hub)
        jobs = w.watch("tasks:jobs")
        texts = w.watch("tasks:texts")
        await w.until(jobs, [])
        await rt.mutation("tasks:add_later", {"text": "later", "delay_ms": 1000})
        await w.until(jobs, ["pending"])
        assert texts.outcome is not None and texts.outcome.value == []
        clock.advance(1000)
        await w.until(jobs, ["success"])
        await w.until(texts, ["later"])


async def test_an_action_job_shows_pending_in_progress_then_success(
    app_dir: Path, store: str
) -> None:
    clock = VirtualClock()
    async with Runtime(app_dir, store=store, clock=clock) as rt, LiveQueries(rt) as hub:
        w = Watcher(hub)
        jobs = w.watch("tasks:jobs")
        await w.until(jobs, [])
        await rt.mutation("tasks:act_later", {"delay_ms": 1000})
        await w.until(jobs, ["pending"])
        clock.advance(1000)
        await w.until(jobs, ["inProgress"])  # the action holds until released
        rt.app.modules["tasks"].RELEASE.set()
        await w.until(jobs, ["success"])


async def test_commits_of_another_process_reach_subscriptions(
    app_dir: Path, tmp_path: Path
) -> None:
    """Two PostgreSQL stores on one database are two processes to the server."""
    from pg_server import database_url

    url = database_url(tmp_path / "shared")
    async with Runtime(app_dir, store=url) as here, LiveQueries(here) as hub:
        w = Watcher(hub)
        texts = w.watch("tasks:texts")
        ada = w.watch("tasks:of_owner", {"owner": "ada"})
        await w.until(texts, [])
        async with Runtime(app_dir, store=url, crons=False) as there:
            await there.mutation("tasks:add", {"text": "from there", "owner": "bob"})
            await w.until(texts, ["from there"])
            assert ada.outcome is not None and ada.outcome.value == []  # not its range
            runs = hub.runs
            await there.mutation("tasks:note", {"text": "unrelated"})
            await there.mutation("tasks:add", {"text": "for ada", "owner": "ada"})
            await w.until(ada, ["for ada"])
            await w.until(texts, ["from there", "for ada"])
            assert hub.runs == runs + 2  # the note re-ran nothing


async def test_ts_follows_commits_and_never_goes_back(app_dir: Path, store: str) -> None:
    async with Runtime(app_dir, store=store) as rt, LiveQueries(rt) as hub:
        w = Watcher(hub)
        w.watch("tasks:texts")
        await w.round()
        seen = [hub.ts]
        for i in range(3):
            await rt.mutation("tasks:add", {"text": str(i)})
            durable = hub.durable_ts()
            async with asyncio.timeout(10):
                while hub.ts < durable:
                    await w.changes.get()
            seen.append(hub.ts)
        assert seen == sorted(seen) and len(set(seen)) == 4


Change = tuple[str, str, bytes | None, bytes | None]


def _commit(ts: int, writes: list[Write], changes: list[Change]) -> Commit:
    return Commit(ts, writes, lambda _: changes)


def test_read_set_index_matches_ids_and_ranges() -> None:
    index: ReadSetIndex[str] = ReadSetIndex()
    index.record("by-id", ReadSet(ids={"d1"}))
    index.record("range", ReadSet(ranges=[KeyRange("t.by_x", b"b", b"d")]))
    index.record("open", ReadSet(ranges=[KeyRange("t.by_x", b"x", None)]))
    write = Write("d9", "t", None, {"_id": "d9"})
    assert index.touched([_commit(1, [write], [("t.by_x", "d9", None, b"c")])]) == {"range"}
    assert index.touched([_commit(2, [write], [("t.by_x", "d9", b"a", b"z")])]) == {"open"}
    assert index.touched([_commit(3, [write], [("t.by_x", "d9", b"d", None)])]) == set()
    moved = Write("d1", "t", {"_id": "d1"}, None)
    assert index.touched([_commit(4, [moved], [("t.by_x", "d1", b"c", None)])]) == {
        "by-id",
        "range",
    }
    index.remove("range")
    assert index.touched([_commit(5, [write], [("t.by_x", "d9", None, b"c")])]) == set()
    assert len(index) == 2


def test_read_set_index_skips_key_work_for_unscanned_tables() -> None:
    index: ReadSetIndex[str] = ReadSetIndex()
    index.record("q", ReadSet(ranges=[KeyRange("t.by_x", b"", None)]))

    def explode(_: object) -> list[Change]:
        raise AssertionError("index changes of a table nobody scanned were computed")

    other = Commit(1, [Write("o1", "other", None, {"_id": "o1"})], explode)
    assert index.touched([other]) == set()


_range = st.tuples(st.binary(max_size=3), st.one_of(st.none(), st.binary(max_size=3)))


@given(
    st.lists(st.tuples(st.integers(0, 5), _range, st.booleans()), max_size=40),
    st.lists(st.binary(max_size=4), max_size=20),
)
def test_ranges_find_exactly_the_owners_whose_ranges_hold_a_key(
    steps: list[tuple[int, tuple[bytes, bytes | None], bool]], keys: list[bytes]
) -> None:
    ranges: _Ranges[int] = _Ranges()
    held: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for owner, (low, high), add in steps:
        if high is not None and high <= low:
            continue  # an empty range: scans never make one
        if add:
            ranges.add(low, high, owner)
            held.setdefault(owner, []).append((low, high))
        elif owner in held:  # an owner's ranges go all together, as ReadSetIndex does
            ranges.remove(held.pop(owner), owner)
        for key in keys:
            expected = {
                o
                for o, spans in held.items()
                if any(lo <= key and (hi is None or key < hi) for lo, hi in spans)
            }
            assert ranges.owners(key) == expected
    for owner in list(held):
        ranges.remove(held.pop(owner), owner)
    assert not ranges  # back to one empty segment: churn leaves nothing behind
