"""Speculative snapshots and ``on_accepted``, as the port documents them.

A speculative snapshot also sees the commits that were accepted (validated,
ordered: ``on_accepted`` was called) and may not be durable yet. A store
without a gap between the two just returns a plain snapshot, so every test
here holds either way: each asserts what a reader can rely on, not whether a
gap was seen. The SQLite store's gap, forced by holding its disk, is tested
in tests/test_speculative.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable

import anyio
import pytest

from convexpy.ids import new_id
from convexpy.store import ConflictError, IndexDef, ReadSet, Snapshot, Store, Write
from convexpy.store.base import Document

from .helpers import BY_V, T0, TASKS, Txn, assert_keys, full, insert, read_get, replace

BY_CREATION = IndexDef.by_creation_time(TASKS)


def doc_of(store: Store, **fields: object) -> Document:
    return {"_id": new_id(TASKS), "_creationTime": store.creation_time(TASKS, T0), **fields}


def read_set(writes: Iterable[Write], *read: str) -> ReadSet:
    """The ids read: ``read`` and, as the port asks, every written id."""
    return ReadSet(ids={*read, *(write.id for write in writes)})


async def accepted(
    store: Store, snapshot: Snapshot, writes: list[Write], reads: ReadSet | None = None
) -> tuple[asyncio.Task[int], Snapshot]:
    """Start committing ``writes`` from ``snapshot``; once the store has
    accepted them, the commit (still running or done) and a speculative
    snapshot taken in ``on_accepted``. The caller releases both snapshots."""
    taken: list[Snapshot] = []
    was_accepted = asyncio.Event()

    def on_accepted() -> None:
        taken.append(store.snapshot(speculative=True))
        was_accepted.set()

    reads = reads if reads is not None else read_set(writes)
    task = asyncio.create_task(store.commit(snapshot, reads, writes, on_accepted))
    task.add_done_callback(lambda _: was_accepted.set())
    with anyio.fail_after(10):
        await was_accepted.wait()
    if not taken:
        await task  # refused: raises why
    assert len(taken) == 1, "the commit returned without calling on_accepted"
    return task, taken[0]


async def landed(*commits: asyncio.Task[int]) -> list[int]:
    with anyio.fail_after(10):
        return list(await asyncio.gather(*commits))


async def test_a_speculative_snapshot_sees_accepted_commits_and_keeps_seeing_them(
    store: Store,
) -> None:
    await store.prepare_table(TASKS)
    doc = doc_of(store, n=1)
    missing = new_id(TASKS)
    plain = store.snapshot()
    writing, spec = await accepted(store, plain, [Write(doc["_id"], TASKS, None, doc)])
    try:
        assert await store.get(spec, doc["_id"]) == doc
        assert await store.get_many(spec, [doc["_id"], missing]) == {doc["_id"]: doc, missing: None}
        assert [d for _, d in await store.scan(spec, full(BY_CREATION), "asc", 10)] == [doc]
        # A later commit over the document, made from the speculative
        # snapshot: the snapshot keeps seeing the version it saw.
        newer = {**doc, "n": 2}
        moves = [Write(doc["_id"], TASKS, doc, newer)]
        moving, after_move = await accepted(store, spec, moves)
        store.release(after_move)
        assert await store.get(spec, doc["_id"]) == doc
        assert await store.get_many(spec, [doc["_id"]]) == {doc["_id"]: doc}
        assert [d for _, d in await store.scan(spec, full(BY_CREATION), "desc", 10)] == [doc]
        first, second = await landed(writing, moving)
        # It saw exactly the commits up to its timestamp; the commit made
        # from it is ordered after them.
        assert first <= spec.ts < second
        assert await store.get(spec, doc["_id"]) == doc
    finally:
        store.release(plain)
        store.release(spec)
    assert await read_get(store, doc["_id"]) == newer


async def test_a_read_only_commit_from_a_speculative_snapshot_returns_once_what_it_saw_is_durable(
    store: Store,
) -> None:
    await store.prepare_table(TASKS)
    doc = doc_of(store)
    plain = store.snapshot()
    writing, spec = await accepted(store, plain, [Write(doc["_id"], TASKS, None, doc)])
    try:
        assert await store.get(spec, doc["_id"]) == doc
        with anyio.fail_after(10):
            ts = await store.commit(spec, ReadSet(ids={doc["_id"]}), [])
        assert ts == spec.ts
        # Durable: a plain snapshot, which sees only durable commits, sees it.
        assert await read_get(store, doc["_id"]) == doc
    finally:
        store.release(plain)
        store.release(spec)
    await landed(writing)


async def test_commits_from_a_speculative_snapshot_conflict_only_with_what_it_did_not_see(
    store: Store,
) -> None:
    a = await insert(store, TASKS, n=0)
    b = await insert(store, TASKS, n=0)
    a1, b1 = {**a, "n": 1}, {**b, "n": 1}
    plain = store.snapshot()
    writing, spec = await accepted(store, plain, [Write(a["_id"], TASKS, a, a1)])
    try:
        # Accepted after the speculative snapshot was taken: it does not see it.
        later = store.snapshot(speculative=True)
        try:
            await landed((await accepted(store, later, [Write(b["_id"], TASKS, b, b1)]))[0])
        finally:
            store.release(later)
        assert await store.get(spec, b["_id"]) == b
        stale = doc_of(store, saw="b")
        writes = [Write(stale["_id"], TASKS, None, stale)]
        with pytest.raises(ConflictError) as caught:
            await store.commit(spec, read_set(writes, b["_id"]), writes)
        assert caught.value.table == TASKS
        # The commit it saw is no conflict: it is ordered after it.
        assert await store.get(spec, a["_id"]) == a1
        a2 = {**a, "n": 2}
        writes = [Write(a["_id"], TASKS, a1, a2)]
        with anyio.fail_after(10):
            ts = await store.commit(spec, read_set(writes), writes)
        assert ts > (await landed(writing))[0]
    finally:
        store.release(plain)
        store.release(spec)
    assert await read_get(store, a["_id"]) == a2
    assert await read_get(store, b["_id"]) == b1
    assert await read_get(store, stale["_id"]) is None


async def test_on_accepted_is_called_once_for_a_commit_and_never_for_a_refused_one(
    store: Store,
) -> None:
    calls: list[str] = []
    a = await insert(store, TASKS, n=0)
    txn = Txn(store)
    await txn.replace(TASKS, a["_id"], n=1)
    await txn.commit(lambda: calls.append("accepted"))
    assert calls == ["accepted"]

    stale = Txn(store)
    await stale.replace(TASKS, a["_id"], n=2)
    await replace(store, TASKS, a["_id"], n=4)  # changes what ``stale`` read
    with pytest.raises(ConflictError):
        await stale.commit(lambda: calls.append("refused"))
    assert calls == ["accepted"]
    assert (await read_get(store, a["_id"]) or {})["n"] == 4


async def test_a_failing_on_accepted_callback_does_not_fail_the_commit(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    bug = RuntimeError("listener bug")

    def broken() -> None:
        raise bug

    await store.prepare_table(TASKS)
    doc = doc_of(store)
    writes = [Write(doc["_id"], TASKS, None, doc)]
    snapshot = store.snapshot()
    try:
        with caplog.at_level(logging.ERROR):
            await store.commit(snapshot, read_set(writes), writes, broken)
    finally:
        store.release(snapshot)
    assert any(record.exc_info and record.exc_info[1] is bug for record in caplog.records)
    assert "on_accepted callback failed" in caplog.text
    assert await read_get(store, doc["_id"]) == doc


async def test_snapshots_read_exactly_the_commits_up_to_their_timestamp(store: Store) -> None:
    """Chains of commits, each made from a speculative snapshot that saw the
    one before: every snapshot, speculative or plain, reads exactly the state
    as of its timestamp, while the chain is in flight and after it landed."""
    rng = random.Random(11)
    await store.configure_indexes([BY_V])
    await store.prepare_table(TASKS)
    every_id = [new_id(TASKS)]  # one that never exists
    live: dict[str, Document] = {}
    history: list[tuple[int, dict[str, Document]]] = []  # (commit ts, state after it)
    held: list[Snapshot] = []

    def state_at(ts: int) -> dict[str, Document]:
        return next((state for at, state in reversed(history) if at <= ts), {})

    async def reads(snapshot: Snapshot, some: str) -> tuple[object, ...]:
        by_v = await store.scan(snapshot, full(BY_V), "desc", 1000)
        assert_keys(BY_V, by_v, "desc")
        return (
            await store.get_many(snapshot, every_id),
            (some, await store.get(snapshot, some)),
            [d for _, d in await store.scan(snapshot, full(BY_CREATION), "asc", 1000)],
            [d for _, d in by_v],
        )

    def expected(snapshot: Snapshot, some: str) -> tuple[object, ...]:
        state = state_at(snapshot.ts)
        docs = sorted(state.values(), key=lambda d: d["_creationTime"])
        return (
            {i: state.get(i) for i in every_id},
            (some, state.get(some)),
            docs,
            sorted(docs, key=lambda d: (d["v"], d["_creationTime"]), reverse=True),
        )

    def random_writes() -> list[Write]:
        writes: list[Write] = []
        for _ in range(rng.randrange(1, 4)):
            action = rng.random()
            if action < 0.5 or not live:
                doc = doc_of(store, v=rng.randrange(5))
                every_id.append(doc["_id"])
                writes.append(Write(doc["_id"], TASKS, None, doc))
                live[doc["_id"]] = doc
                continue
            doc_id = rng.choice(list(live))
            if any(w.id == doc_id for w in writes):
                continue
            old = live[doc_id]
            new = None if action < 0.7 else {**old, "v": rng.randrange(5)}
            writes.append(Write(doc_id, TASKS, old, new))
            if new is None:
                del live[doc_id]
            else:
                live[doc_id] = new
        return writes

    for _round in range(6):
        spec = store.snapshot(speculative=True)
        chain: list[asyncio.Task[int]] = []
        states: list[dict[str, Document]] = []
        for _ in range(rng.randrange(1, 6)):
            held.append(spec)
            task, spec = await accepted(store, spec, random_writes())
            chain.append(task)
            states.append(dict(live))
        held.extend([spec, store.snapshot()])
        some = [rng.choice(every_id) for _ in held]
        in_flight = [await reads(snapshot, one) for snapshot, one in zip(held, some, strict=True)]
        timestamps = await landed(*chain)
        assert timestamps == sorted(set(timestamps))  # each after the one it saw
        history.extend(zip(timestamps, states, strict=True))
        for snapshot, one, seen in zip(held, some, in_flight, strict=True):
            assert seen == expected(snapshot, one)  # read while the chain was in flight
            assert await reads(snapshot, one) == expected(snapshot, one)  # after it landed
        for snapshot in held[:-2]:
            store.release(snapshot)
        del held[:-2]
    for snapshot in held:
        store.release(snapshot)
