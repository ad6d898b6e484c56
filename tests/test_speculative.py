"""Speculative snapshots on SQLite, with the gap between accepted and durable
forced, and the SQLite writer process.

A speculative snapshot sees commits that were accepted but are not durable
yet; a commit made from one lands only after them, and fails if one of them
fails. The writes are held back for real: another connection holds SQLite's
write lock, so the writer process waits on it. What holds for every store is
in tests/conformance/test_speculative.py.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import convexpy
from convexpy.ids import new_id
from convexpy.store import IndexDef, KeyRange, ReadSet, SqliteStore, Write
from convexpy.store.base import ConflictError, Document, Snapshot

TASKS = "tasks"
BY_CREATION = IndexDef.by_creation_time(TASKS)
EVERYTHING = KeyRange(BY_CREATION.key, b"", None)


def doc_of(store: SqliteStore, **fields: Any) -> Document:
    return {"_id": new_id(TASKS), "_creationTime": store.creation_time(TASKS, 1.7e12), **fields}


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(path)
    await store.open()
    try:
        await store.configure_indexes([])
        await store.prepare_table(TASKS)
        yield store
    finally:
        await store.close()


@contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holds the write lock until the block ends (or it rolls back)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def commit(
    store: SqliteStore, snapshot: Snapshot, *writes: Write, reads: ReadSet | None = None
) -> asyncio.Task[int]:
    """Start a commit; its first step (validation, acceptance) runs at the next await."""
    return asyncio.create_task(store.commit(snapshot, reads or ReadSet(), list(writes)))


async def commit_now(
    store: SqliteStore, *writes: Write, on_accepted: Callable[[], None] | None = None
) -> int:
    """Commit from a plain snapshot and wait until it is durable."""
    snapshot = store.snapshot()
    try:
        return await store.commit(snapshot, ReadSet(), list(writes), on_accepted)
    finally:
        store.release(snapshot)


async def read(store: SqliteStore, doc_id: str) -> Document | None:
    """``doc_id`` as a plain snapshot taken now sees it."""
    snapshot = store.snapshot()
    try:
        return await store.get(snapshot, doc_id)
    finally:
        store.release(snapshot)


async def accepted(store: SqliteStore, *writes: Write) -> asyncio.Task[int]:
    snapshot = store.snapshot()
    task = commit(store, snapshot, *writes)
    task.add_done_callback(lambda _: store.release(snapshot))
    await asyncio.sleep(0)
    assert not task.done()  # accepted, waiting for the disk
    return task


def file_ids(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM documents")}
    finally:
        conn.close()


async def test_speculative_snapshot_sees_accepted_commits_that_plain_ones_do_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        doc = doc_of(store, n=1)
        with write_lock_held(path):
            writing = await accepted(store, Write(doc["_id"], TASKS, None, doc))
            plain, spec = store.snapshot(), store.snapshot(speculative=True)
            try:
                assert spec.ts > plain.ts
                assert await store.get(plain, doc["_id"]) is None
                assert await store.get(spec, doc["_id"]) == doc
                assert await store.get_many(spec, [doc["_id"]]) == {doc["_id"]: doc}
                assert await store.scan(plain, EVERYTHING, "asc", 10) == []
                assert [d for _, d in await store.scan(spec, EVERYTHING, "asc", 10)] == [doc]
                # A later commit over the document: the speculative snapshot
                # keeps seeing the version it saw.
                newer = {**doc, "n": 2}
                reads = ReadSet()
                reads.ids.add(doc["_id"])
                moving = commit(store, spec, Write(doc["_id"], TASKS, doc, newer), reads=reads)
                await asyncio.sleep(0)
                assert await store.get(spec, doc["_id"]) == doc
            finally:
                store.release(plain)
                store.release(spec)
            assert not writing.done() and not moving.done()
        with anyio.fail_after(10):
            await writing
            await moving
        assert await read(store, doc["_id"]) == newer


async def test_commits_that_read_a_failed_commit_fail_with_it_and_others_land(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        doomed, queued, late, plain_doc = (doc_of(store, n=i) for i in range(4))
        with write_lock_held(path) as lock:
            failing = await accepted(store, Write(doomed["_id"], TASKS, None, doomed))
            spec = store.snapshot(speculative=True)
            spec_late = store.snapshot(speculative=True)
            plain = store.snapshot()
            try:
                # Queued behind the failing batch, having seen it:
                dependent = commit(store, spec, Write(queued["_id"], TASKS, None, queued))
                # Not having seen it:
                independent = commit(store, plain, Write(plain_doc["_id"], TASKS, None, plain_doc))
                await asyncio.sleep(0)
                # The failing batch's write is refused once the lock is gone.
                lock.execute(
                    "CREATE TRIGGER refuse BEFORE INSERT ON documents"
                    f" WHEN NEW.id = '{doomed['_id']}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
                lock.execute("COMMIT")
                with anyio.fail_after(10):
                    with pytest.raises(sqlite3.IntegrityError, match="refused"):
                        await failing
                    with pytest.raises(ConflictError):
                        await dependent
                    await independent
                    # A transaction that saw it and commits only now fails too.
                    with pytest.raises(ConflictError):
                        await store.commit(
                            spec_late, ReadSet(), [Write(late["_id"], TASKS, None, late)]
                        )
            finally:
                for snapshot in (spec, spec_late, plain):
                    store.release(snapshot)
        assert await asyncio.to_thread(file_ids, path) == {plain_doc["_id"]}
        # Once no snapshot from before the failure is live, it is forgotten.
        fresh = doc_of(store)
        await commit_now(store, Write(fresh["_id"], TASKS, None, fresh))
        assert store._failed == {}


async def test_a_read_only_speculative_transaction_returns_once_what_it_saw_is_durable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        doc = doc_of(store)
        with write_lock_held(path):
            writing = await accepted(store, Write(doc["_id"], TASKS, None, doc))
            spec = store.snapshot(speculative=True)
            try:
                reading = commit(store, spec)
                await asyncio.sleep(0)
                assert not reading.done()
            finally:
                store.release(spec)
        with anyio.fail_after(10):
            await writing
            assert await reading == spec.ts


async def test_the_writer_process_exits_with_the_store_and_holds_the_lock_while_alive(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        assert store._process is not None
        child = store._process._proc
        assert child.poll() is None
    assert child.poll() is not None  # gone once the store closed
    assert await asyncio.to_thread(file_ids, path) == set()


JOBS_APP = """
from convexpy import mutation, internal_mutation, query, v

@internal_mutation(args={"n": v.number()})
async def work(ctx, n):
    await ctx.db.insert("done", {"n": n})

@mutation(args={})
async def kick(ctx):
    for n in range(3):
        await ctx.scheduler.run_after(0, "jobs:work", {"n": n})

@query(args={})
async def done(ctx):
    return sorted([d["n"] for d in await ctx.db.query("done").collect()])
"""


async def test_due_mutations_run_before_their_scheduling_commit_is_durable_and_land_after(
    tmp_path: Path, make_app: Any
) -> None:
    app = make_app({"jobs.py": JOBS_APP})
    path = tmp_path / "db.sqlite3"
    async with convexpy.Runtime(app, store=f"sqlite:///{path}", crons=False) as rt:
        finished: list[str] = []
        all_finished = asyncio.Event()

        def listen(event: dict[str, Any]) -> None:
            if event.get("type") == "job":
                finished.append(event["outcome"])
                if len(finished) == 3:
                    all_finished.set()

        rt.listeners.append(listen)
        store_commit = rt.store.commit
        jobs_accepted = asyncio.Event()

        async def spy(snapshot: Snapshot, reads: ReadSet, writes: list[Write], *rest: Any) -> int:
            if any(write.table == "done" for write in writes):
                assert snapshot.base is not None  # read what the kick wrote, not durable yet
                jobs_accepted.set()
            return await store_commit(snapshot, reads, writes, *rest)

        rt.store.commit = spy  # type: ignore[method-assign]
        with write_lock_held(path):
            kicking = asyncio.create_task(rt.mutation("jobs:kick", {}))
            with anyio.fail_after(10):
                await jobs_accepted.wait()  # while the kick waits for the disk
            assert not kicking.done()
            assert finished == []  # nothing is reported before it is durable
            assert await rt.query("jobs:done", {}) == []
        with anyio.fail_after(10):
            await kicking
            await all_finished.wait()
        assert finished == ["success"] * 3
        assert await rt.query("jobs:done", {}) == [0, 1, 2]


async def test_speculative_reads_match_a_model_while_batches_wait_and_after_they_land(
    tmp_path: Path,
) -> None:
    """Random inserts, updates and deletes, some accepted while the disk is held:
    every snapshot, speculative or not, reads exactly the state as of its
    timestamp, before and after what it saw lands."""
    rng = random.Random(11)
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        states: dict[int, dict[str, Document]] = {0: {}}  # commit ts -> documents
        live: dict[str, Document] = {}
        pending: list[asyncio.Task[int]] = []
        held: list[tuple[Snapshot, dict[str, Document]]] = []

        async def check(snapshot: Snapshot, expected: dict[str, Document]) -> None:
            ids = [*expected, new_id(TASKS)]
            assert await store.get_many(snapshot, ids) == {i: expected.get(i) for i in ids}
            some = rng.choice(ids)
            assert await store.get(snapshot, some) == expected.get(some)
            rows = await store.scan(snapshot, EVERYTHING, "asc", 1000)
            assert [d for _, d in rows] == sorted(
                expected.values(), key=lambda d: (d["_creationTime"], d["_id"])
            )

        for _round in range(6):
            with write_lock_held(path):
                for _ in range(rng.randrange(1, 6)):
                    writes: list[Write] = []
                    for _ in range(rng.randrange(1, 4)):
                        action = rng.random()
                        if action < 0.5 or not live:
                            doc = doc_of(store, n=rng.randrange(100))
                            writes.append(Write(doc["_id"], TASKS, None, doc))
                            live[doc["_id"]] = doc
                        else:
                            doc_id = rng.choice(list(live))
                            if any(w.id == doc_id for w in writes):
                                continue
                            old = live[doc_id]
                            new = None if action < 0.7 else {**old, "n": rng.randrange(100)}
                            writes.append(Write(doc_id, TASKS, old, new))
                            if new is None:
                                del live[doc_id]
                            else:
                                live[doc_id] = new
                    snapshot = store.snapshot(speculative=True)
                    pending.append(commit(store, snapshot, *writes))
                    pending[-1].add_done_callback(lambda _, s=snapshot: store.release(s))
                    await asyncio.sleep(0)  # accepted
                    states[snapshot.ts + 1] = dict(live)
                    spec = store.snapshot(speculative=True)
                    assert spec.ts == snapshot.ts + 1
                    held.append((spec, states[spec.ts]))
                plain = store.snapshot()
                held.append((plain, states[plain.ts]))
                for snapshot, expected in held:  # while nothing of this round is on disk
                    await check(snapshot, expected)
            with anyio.fail_after(10):
                await asyncio.gather(*pending)
            for snapshot, expected in held:  # after it landed
                await check(snapshot, expected)
            for snapshot, _ in held[:-2]:
                store.release(snapshot)
            del held[:-2]
        for snapshot, _ in held:
            store.release(snapshot)
