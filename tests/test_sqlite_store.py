"""SqliteStore specifics below the storage port: the file layout, its versions
and migration, and the cache of latest document versions.

The port's behaviour is covered for every store in tests/conformance/.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import select
import sqlite3
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import msgspec
import pytest

from convexpy.errors import ConvexpyError, StoreVersionError
from convexpy.ids import new_id
from convexpy.store import IndexDef, KeyRange, ReadSet, SqliteStore, Write
from convexpy.store._sqlite_writer import padded, padded_most
from convexpy.store.base import Document
from convexpy.store.engine import index_key_of
from convexpy.store.sqlite import SCHEMA_VERSION, _WriterProcess

TASKS = "tasks"
NOTES = "notes"
BY_OWNER = IndexDef(TASKS, "by_owner", ("owner",))
BY_TITLE = IndexDef(TASKS, "by_title", ("title",))
PARTIAL = IndexDef(TASKS, "partial", ("title",), where=("owner", ("b", "c")))

# The layout before index numbers (schema version 0), exactly as it was created.
V0_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    tbl TEXT NOT NULL,
    doc BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries (
    idx TEXT NOT NULL,
    key BLOB NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (idx, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS indexes (
    idx TEXT PRIMARY KEY,
    tbl TEXT NOT NULL,
    fields TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""


# -- helpers -------------------------------------------------------------------------------


def by_creation(table: str) -> IndexDef:
    return IndexDef.by_creation_time(table)


def full(index: IndexDef) -> KeyRange:
    return KeyRange(index.key, b"", None)


def doc_of(table: str, creation: float, **fields: Any) -> Document:
    return {"_id": new_id(table), "_creationTime": creation, **fields}


async def commit(store: SqliteStore, *writes: Write) -> None:
    snapshot = store.snapshot()
    try:
        await store.commit(snapshot, ReadSet(), list(writes))
    finally:
        store.release(snapshot)


async def insert(store: SqliteStore, table: str, **fields: Any) -> Document:
    await store.prepare_table(table)
    doc = doc_of(table, store.creation_time(table, 1.7e12), **fields)
    await commit(store, Write(doc["_id"], table, None, doc))
    return doc


async def get(store: SqliteStore, doc_id: str) -> Document | None:
    snapshot = store.snapshot()
    try:
        return await store.get(snapshot, doc_id)
    finally:
        store.release(snapshot)


async def get_many(store: SqliteStore, doc_ids: list[str]) -> dict[str, Document | None]:
    snapshot = store.snapshot()
    try:
        return await store.get_many(snapshot, doc_ids)
    finally:
        store.release(snapshot)


async def scan_ids(store: SqliteStore, index: IndexDef) -> list[str]:
    snapshot = store.snapshot()
    try:
        rows = await store.scan(snapshot, full(index), "asc", 10_000)
    finally:
        store.release(snapshot)
    assert [key for key, _ in rows] == [index_key_of(index, doc) for _, doc in rows]
    return [doc["_id"] for _, doc in rows]


def ids_by(index: IndexDef, docs: list[Document]) -> list[str]:
    """Ids of ``docs`` in ``index`` order (the documents it holds)."""
    keyed = [(index_key_of(index, doc), doc["_id"]) for doc in docs]
    return [doc_id for key, doc_id in sorted((k, i) for k, i in keyed if k is not None)]


def raw_query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def user_version(path: Path) -> int:
    version: int = raw_query(path, "PRAGMA user_version")[0][0]
    return version


def entries_per_index(path: Path) -> dict[str, int]:
    return dict(
        raw_query(
            path,
            "SELECT i.idx, count(*) FROM index_entries e JOIN indexes i ON i.num = e.idx"
            " GROUP BY i.idx",
        )
    )


# -- layout versions -------------------------------------------------------------------------


def write_v0_file(path: Path, docs: dict[str, list[Document]], declared: list[IndexDef]) -> None:
    """A file as the version 0 code wrote it: index entries named by their index key."""
    encode = msgspec.msgpack.encode
    conn = sqlite3.connect(path)
    try:
        conn.executescript(V0_SCHEMA)
        for table, table_docs in docs.items():
            conn.execute("INSERT INTO tables (name) VALUES (?)", (table,))
            indexes = [by_creation(table), *(i for i in declared if i.table == table)]
            for doc in table_docs:
                conn.execute(
                    "INSERT INTO documents (id, tbl, doc) VALUES (?, ?, ?)",
                    (doc["_id"], table, encode(doc)),
                )
                for index in indexes:
                    key = index_key_of(index, doc)
                    if key is not None:
                        conn.execute(
                            "INSERT INTO index_entries (idx, key, id) VALUES (?, ?, ?)",
                            (index.key, key, doc["_id"]),
                        )
        for index in declared:
            spec: object = list(index.fields)  # the oldest form: a plain list of fields
            if index.where is not None:
                where = [index.where[0], list(index.where[1])]
                spec = {"fields": list(index.fields), "sparse": index.sparse, "where": where}
            conn.execute(
                "INSERT INTO indexes (idx, tbl, fields) VALUES (?, ?, ?)",
                (index.key, index.table, json.dumps(spec)),
            )
        conn.commit()
    finally:
        conn.close()


async def test_version_0_file_is_migrated_in_place(tmp_path: Path, built: list[str]) -> None:
    path = tmp_path / "db.sqlite3"
    tasks = [
        doc_of(TASKS, 1.0, owner="b", title="t2"),
        doc_of(TASKS, 2.0, owner="a", title="t3"),
        doc_of(TASKS, 3.0, owner="c", title="t1"),
        doc_of(TASKS, 4.0, title="no owner"),
    ]
    notes = [doc_of(NOTES, 1.5, text="n")]
    await asyncio.to_thread(write_v0_file, path, {TASKS: tasks, NOTES: notes}, [BY_OWNER, PARTIAL])
    assert await asyncio.to_thread(user_version, path) == 0

    store = SqliteStore(path)
    await store.open()
    try:
        await store.configure_indexes([BY_OWNER, PARTIAL])
        assert built == []  # the definitions were kept: nothing rebuilt
        for doc in tasks + notes:
            assert await get(store, doc["_id"]) == doc
        assert await store.tables() == [NOTES, TASKS]
        for index in (by_creation(TASKS), by_creation(NOTES), BY_OWNER, PARTIAL):
            expected = ids_by(index, notes if index.table == NOTES else tasks)
            assert await scan_ids(store, index) == expected
        assert ids_by(PARTIAL, tasks) == [tasks[2]["_id"], tasks[0]["_id"]]
        # The migrated file takes new writes like any other.
        added = await insert(store, TASKS, owner="b", title="t0")
        tasks.append(added)
        await store.configure_indexes([BY_OWNER, PARTIAL, BY_TITLE])
        assert built == [BY_TITLE.key]
        assert await scan_ids(store, BY_TITLE) == ids_by(BY_TITLE, tasks)
    finally:
        await store.close()

    assert await asyncio.to_thread(user_version, path) == SCHEMA_VERSION
    tables = await asyncio.to_thread(
        raw_query, path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    )
    assert [name for (name,) in tables] == [
        "documents",
        "index_entries",
        "indexes",
        "job_names",
        "jobs",
        "tables",
    ]
    types = await asyncio.to_thread(
        raw_query, path, "SELECT DISTINCT typeof(idx) FROM index_entries"
    )
    assert types == [("integer",)]
    assert await asyncio.to_thread(entries_per_index, path) == {
        by_creation(TASKS).key: 5,
        by_creation(NOTES).key: 1,
        BY_OWNER.key: 5,
        PARTIAL.key: 3,
        BY_TITLE.key: 5,
    }

    built.clear()
    store = SqliteStore(path)
    await store.open()  # now at the current version: opens as is
    try:
        await store.configure_indexes([BY_OWNER, PARTIAL, BY_TITLE])
        assert built == []
        assert await scan_ids(store, BY_OWNER) == ids_by(BY_OWNER, tasks)
        assert await scan_ids(store, by_creation(TASKS)) == ids_by(by_creation(TASKS), tasks)
    finally:
        await store.close()


async def test_empty_version_0_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    await asyncio.to_thread(write_v0_file, path, {}, [])
    store = SqliteStore(path)
    await store.open()
    try:
        doc = await insert(store, TASKS, owner="a")
        assert await scan_ids(store, by_creation(TASKS)) == [doc["_id"]]
    finally:
        await store.close()
    assert await asyncio.to_thread(user_version, path) == SCHEMA_VERSION


async def test_new_file_is_created_at_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    assert await asyncio.to_thread(user_version, path) == SCHEMA_VERSION


async def test_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        doc = await insert(store, TASKS, owner="a")
    finally:
        await store.close()
    await asyncio.to_thread(raw_query, path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    for _ in range(2):  # the failed open let go of the file
        store = SqliteStore(path)
        with pytest.raises(StoreVersionError) as caught:
            await store.open()
        await store.close()
        assert isinstance(caught.value, ConvexpyError)
        message = str(caught.value)
        assert str(path) in message
        assert f"schema version {SCHEMA_VERSION + 1}" in message
        assert "upgrade convexpy" in message
    # Untouched.
    assert await asyncio.to_thread(user_version, path) == SCHEMA_VERSION + 1
    rows = await asyncio.to_thread(raw_query, path, "SELECT id FROM documents")
    assert rows == [(doc["_id"],)]


# -- reopening ---------------------------------------------------------------------------------


async def test_reopening_keeps_built_indexes_and_builds_only_new_ones(
    tmp_path: Path, built: list[str]
) -> None:
    """What a reopened store reads is checked for every durable store in
    tests/conformance/; here, what the file keeps: built indexes are not
    rebuilt, and dropped ones leave it."""
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [BY_OWNER, PARTIAL])
    try:
        assert built == [BY_OWNER.key, PARTIAL.key]
        for owner, title in ("b1", "a2", "c0"):
            await insert(store, TASKS, owner=owner, title=title)
        gone = await insert(store, TASKS, owner="d", title="d")
        await commit(store, Write(gone["_id"], TASKS, gone, None))
    finally:
        await store.close()

    built.clear()
    store = await reopened(path, [BY_OWNER, PARTIAL])
    try:
        assert built == []  # kept, not rebuilt
        await store.configure_indexes([BY_OWNER, BY_TITLE])
        assert built == [BY_TITLE.key]  # only the new one
        await store.configure_indexes([BY_TITLE])
    finally:
        await store.close()
    counts = await asyncio.to_thread(entries_per_index, path)
    assert BY_OWNER.key not in counts  # dropped from disk
    assert PARTIAL.key not in counts
    assert counts[BY_TITLE.key] == 3


# -- index numbers ---------------------------------------------------------------------------


async def test_index_numbers_survive_drops_and_are_never_reused(
    tmp_path: Path, built: list[str]
) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.configure_indexes([BY_OWNER])
        docs = [await insert(store, TASKS, owner=o, title=t) for o, t in ("b1", "a2", "c3")]
        await store.configure_indexes([BY_TITLE])  # drops by_owner
        await store.configure_indexes([BY_OWNER, BY_TITLE])  # builds it again
        assert built == [BY_OWNER.key, BY_TITLE.key, BY_OWNER.key]
        assert await scan_ids(store, BY_OWNER) == ids_by(BY_OWNER, docs)
        assert await scan_ids(store, BY_TITLE) == ids_by(BY_TITLE, docs)
    finally:
        await store.close()
    numbers = await asyncio.to_thread(raw_query, path, "SELECT idx, num FROM indexes")
    assert sorted(name for name, _ in numbers) == sorted(
        [by_creation(TASKS).key, BY_OWNER.key, BY_TITLE.key]
    )
    assert len({num for _, num in numbers}) == 3
    assert await asyncio.to_thread(entries_per_index, path) == {
        by_creation(TASKS).key: 3,
        BY_OWNER.key: 3,
        BY_TITLE.key: 3,
    }


async def test_entries_of_an_index_whose_build_never_finished_are_dropped(
    tmp_path: Path, built: list[str]
) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        docs = [await insert(store, TASKS, owner=o) for o in ("b", "a")]
    finally:
        await store.close()

    # What commits leave behind when the process stops between declaring an
    # index and its build committing: entries, and a number without a definition.
    def half_built() -> None:
        conn = sqlite3.connect(path)
        try:
            conn.execute(
                "INSERT INTO indexes (idx, num, tbl, fields) VALUES (?, 99, ?, NULL)",
                (BY_OWNER.key, TASKS),
            )
            key = index_key_of(BY_OWNER, docs[0])
            conn.execute(
                "INSERT INTO index_entries (idx, key, id) VALUES (99, ?, ?)", (key, docs[0]["_id"])
            )
            conn.commit()
        finally:
            conn.close()

    await asyncio.to_thread(half_built)
    store = SqliteStore(path)
    await store.open()
    try:
        await store.configure_indexes([])
        assert BY_OWNER.key not in await asyncio.to_thread(entries_per_index, path)
        await store.configure_indexes([BY_OWNER])
        assert built == [BY_OWNER.key]
        assert await scan_ids(store, BY_OWNER) == ids_by(BY_OWNER, docs)
    finally:
        await store.close()


# -- group commits ---------------------------------------------------------------------------


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many commits each write batch held."""
    sizes: list[int] = []
    start = SqliteStore._base_start

    def spy(self: SqliteStore, commits: list[Any], done: Any) -> None:
        sizes.append(len(commits))
        start(self, commits, done)

    monkeypatch.setattr(SqliteStore, "_base_start", spy)
    return sizes


async def commit_together(store: SqliteStore, ahead: Document, *commits: list[Write]) -> None:
    """Commit each list of writes in one write batch.

    A commit starts writing at once when the writer is idle, so an unchanged
    rewrite of ``ahead`` (an existing document) goes first, alone; the lists,
    committed while it is being written, then form the next batch. (So that
    they do even on a machine slow enough for the writer to reply while they
    are being committed, the reply is left to the loop's reader callback.)
    """
    snapshot = store.snapshot()
    try:
        first = Write(ahead["_id"], TASKS, ahead, ahead)
        with mock.patch.object(_WriterProcess, "collect", lambda self: None):
            await asyncio.gather(
                store.commit(snapshot, ReadSet(), [first]),
                *(store.commit(snapshot, ReadSet(), writes) for writes in commits),
            )
    finally:
        store.release(snapshot)


async def test_a_reply_waits_until_as_many_commits_wait_as_its_batch_held(
    tmp_path: Path, batch_sizes: list[int]
) -> None:
    """Batches do not shrink: with two commits being written, the writer's
    reply is collected by the second commit made after it came, not the first."""
    store = await reopened(tmp_path / "db.sqlite3", [BY_OWNER])
    try:
        await insert(store, TASKS, owner="a")
        batch_sizes.clear()
        docs = [doc_of(TASKS, 1.8e12, owner=owner) for owner in "bcdef"]

        def insert_task(doc: Document) -> asyncio.Task[None]:
            return asyncio.create_task(commit(store, Write(doc["_id"], TASKS, None, doc)))

        loop = asyncio.get_running_loop()
        process = store._process
        assert process is not None
        replies = process._inbox.fileno()
        send = _WriterProcess.write

        def write(self: _WriterProcess, message: Any, done: Any) -> None:
            send(self, message, done)
            if len(message[2]) == 2:  # only a commit may collect this reply
                loop.remove_reader(replies)

        with (
            mock.patch.object(_WriterProcess, "collect", lambda self: None),
            mock.patch.object(_WriterProcess, "write", write),
        ):
            earlier = [insert_task(doc) for doc in docs[:3]]
            with anyio.fail_after(30):
                await earlier[0]  # landed: the other two are being written
        assert batch_sizes == [1, 2]
        replied, _, _ = select.select([replies], [], [], 30)
        assert replied, "the writer did not reply within 30 s"
        later = [insert_task(doc) for doc in docs[3:]]
        seen: list[list[int]] = []
        loop.call_soon(lambda: seen.append(list(batch_sizes)))
        loop.call_soon(loop.add_reader, replies, process._on_reply)
        with anyio.fail_after(30):
            await asyncio.gather(*earlier, *later)
        assert seen == [[1, 2, 2]]
        assert await get_many(store, [doc["_id"] for doc in docs]) == {
            doc["_id"]: doc for doc in docs
        }
    finally:
        await store.close()


CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="none")


async def test_a_reply_that_came_is_collected_by_the_next_commit(
    tmp_path: Path, batch_sizes: list[int]
) -> None:
    """While tasks keep the loop busy, the writer's reply waits for no loop
    poll: the next commit hands the writer its next batch."""
    store = await reopened(tmp_path / "db.sqlite3", [BY_OWNER])
    try:
        await insert(store, TASKS, owner="a")
        batch_sizes.clear()
        first, second = doc_of(TASKS, 1.8e12, owner="b"), doc_of(TASKS, 1.8e12, owner="c")
        # A listener told of the first commit runs outside the task whose
        # commit collected the reply (not in its context).
        heard: list[tuple[str, str]] = []
        store.watch_commits(lambda c: heard.append((c.writes[0].id, CALLER.get())))
        writing = asyncio.create_task(commit(store, Write(first["_id"], TASKS, None, first)))
        await asyncio.sleep(0)  # the first commit is being written
        assert batch_sizes == [1]
        # The loop is kept busy (here: blocked) until the writer has replied.
        assert store._process is not None
        replied, _, _ = select.select([store._process._inbox.fileno()], [], [], 30)
        assert replied, "the writer did not reply within 30 s"
        context = contextvars.copy_context()
        context.run(CALLER.set, "second")
        following = asyncio.create_task(
            commit(store, Write(second["_id"], TASKS, None, second)), context=context
        )
        seen: list[list[int]] = []
        # Runs right after the second commit's first step, before the loop
        # polls for the reply and runs its reader callback.
        asyncio.get_running_loop().call_soon(lambda: seen.append(list(batch_sizes)))
        with anyio.fail_after(30):
            await asyncio.gather(writing, following)
        assert seen == [[1, 1]]
        assert heard == [(first["_id"], "none"), (second["_id"], "none")]
        assert await get_many(store, [first["_id"], second["_id"]]) == {
            first["_id"]: first,
            second["_id"]: second,
        }
    finally:
        await store.close()


async def reopened(path: Path, indexes: list[IndexDef]) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    await store.configure_indexes(indexes)
    return store


def changed(doc: Document, **fields: Any) -> Document:
    return {**doc, **fields}


async def test_batch_keeps_the_last_write_of_each_document_and_entry(
    tmp_path: Path, batch_sizes: list[int]
) -> None:
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [BY_OWNER])
    try:
        back = await insert(store, TASKS, owner="a")  # moves out of "a" and back
        moved = await insert(store, TASKS, owner="a")  # moves twice
        gone = await insert(store, TASKS, owner="a")  # deleted after a move
        batch_sizes.clear()
        ephemeral = doc_of(TASKS, 1.8e12, owner="z")  # inserted and deleted
        back_b, moved_b, gone_b = (changed(d, owner="b") for d in (back, moved, gone))
        moved_c = changed(moved, owner="c")
        await commit_together(
            store,
            back,
            [
                Write(back["_id"], TASKS, back, back_b),
                Write(moved["_id"], TASKS, moved, moved_b),
                Write(gone["_id"], TASKS, gone, gone_b),
                Write(ephemeral["_id"], TASKS, None, ephemeral),
            ],
            [
                Write(back["_id"], TASKS, back_b, back),
                Write(moved["_id"], TASKS, moved_b, moved_c),
                Write(gone["_id"], TASKS, gone_b, None),
                Write(ephemeral["_id"], TASKS, ephemeral, None),
            ],
        )
        assert batch_sizes == [1, 2]
        live = [back, moved_c]
        assert await scan_ids(store, BY_OWNER) == ids_by(BY_OWNER, live)
    finally:
        await store.close()

    store = await reopened(path, [BY_OWNER])
    try:
        assert await get(store, back["_id"]) == back
        assert await get(store, moved["_id"]) == moved_c
        assert await get(store, gone["_id"]) is None
        assert await get(store, ephemeral["_id"]) is None
        assert await scan_ids(store, BY_OWNER) == ids_by(BY_OWNER, live)
        assert await scan_ids(store, by_creation(TASKS)) == ids_by(by_creation(TASKS), live)
    finally:
        await store.close()
    assert await asyncio.to_thread(entries_per_index, path) == {
        by_creation(TASKS).key: 2,
        BY_OWNER.key: 2,
    }


async def test_one_commit_writing_a_document_twice_keeps_the_last_write(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [BY_OWNER])
    try:
        doc = await insert(store, TASKS, owner="a")
        b, c = changed(doc, owner="b"), changed(doc, owner="c")
        await commit(store, Write(doc["_id"], TASKS, doc, b), Write(doc["_id"], TASKS, b, c))
        assert await scan_ids(store, BY_OWNER) == [doc["_id"]]
    finally:
        await store.close()
    store = await reopened(path, [BY_OWNER])
    try:
        assert await get(store, doc["_id"]) == c
        snapshot = store.snapshot()
        try:
            rows = await store.scan(snapshot, full(BY_OWNER), "asc", 10)
        finally:
            store.release(snapshot)
        assert rows == [(index_key_of(BY_OWNER, c), c)]
    finally:
        await store.close()


# -- the cache of latest versions --------------------------------------------------------------


class SqlReads:
    """Counts the reader connection's queries; can hold one after it ran."""

    def __init__(self, store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.hold: asyncio.Event | None = None
        self.ran = asyncio.Event()
        reader = store._reader
        assert reader is not None
        fetch = reader.execute_fetchall

        async def counted(sql: str, params: Any = None) -> Any:
            self.count += 1
            rows = await fetch(sql, params)
            if self.hold is not None:
                self.ran.set()
                await self.hold.wait()
            return rows

        monkeypatch.setattr(reader, "execute_fetchall", counted)


def file_documents(path: Path) -> dict[str, Document]:
    decode = msgspec.msgpack.decode
    return {i: decode(doc) for i, doc in raw_query(path, "SELECT id, doc FROM documents")}


async def test_written_and_read_documents_are_served_without_sql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [])
    try:
        first = await insert(store, TASKS, n=1)
        second = await insert(store, TASKS, n=2)
        await commit(store, Write(first["_id"], TASKS, first, None))
    finally:
        await store.close()

    store = await reopened(path, [])
    try:
        await store.prepare_table(TASKS)  # (a scan)
        reads = SqlReads(store, monkeypatch)
        never = new_id(TASKS)
        assert await get(store, first["_id"]) is None
        assert await get_many(store, [second["_id"], never]) == {second["_id"]: second, never: None}
        assert reads.count == 2
        # Known now, absent ones too.
        assert await get(store, first["_id"]) is None
        assert await get(store, second["_id"]) == second
        assert await get_many(store, [first["_id"], second["_id"], never]) == {
            first["_id"]: None,
            second["_id"]: second,
            never: None,
        }
        # Written ones too, deleted ones as absent.
        third = await insert(store, TASKS, n=3)
        third_b = changed(third, n=4)
        await commit(store, Write(third["_id"], TASKS, third, third_b))
        await commit(store, Write(second["_id"], TASKS, second, None))
        assert await get(store, third["_id"]) == third_b
        assert await get_many(store, [second["_id"], third["_id"]]) == {
            second["_id"]: None,
            third["_id"]: third_b,
        }
        assert reads.count == 2
    finally:
        await store.close()


async def test_failed_write_batch_leaves_the_cache_as_the_file(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [BY_OWNER])
    try:
        doc = await insert(store, TASKS, owner="a")
        assert await get(store, doc["_id"]) == doc
        # The batch writes the documents, then fails on an index entry, and rolls back.
        await asyncio.to_thread(
            raw_query,
            path,
            "CREATE TRIGGER refuse BEFORE INSERT ON index_entries WHEN NEW.key >= x'00'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        fresh = doc_of(TASKS, 1.8e12, owner="b")
        moved = changed(doc, owner="b")
        with pytest.raises(sqlite3.IntegrityError, match="refused"):
            await commit_together(
                store,
                doc,
                [Write(doc["_id"], TASKS, doc, moved)],
                [Write(fresh["_id"], TASKS, None, fresh)],
            )
        assert await get(store, doc["_id"]) == doc
        assert await get_many(store, [doc["_id"], fresh["_id"]]) == {
            doc["_id"]: doc,
            fresh["_id"]: None,
        }
        assert await scan_ids(store, BY_OWNER) == [doc["_id"]]
        assert await asyncio.to_thread(file_documents, path) == {doc["_id"]: doc}
        await asyncio.to_thread(raw_query, path, "DROP TRIGGER refuse")
        await commit(store, Write(doc["_id"], TASKS, doc, moved))
        assert await get(store, doc["_id"]) == moved
    finally:
        await store.close()


@pytest.mark.parametrize("many", [False, True])
async def test_read_that_raced_a_write_batch_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, many: bool
) -> None:
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [])
    try:
        doc = await insert(store, TASKS, n=1)
    finally:
        await store.close()

    store = await reopened(path, [])  # nothing cached
    try:
        reads = SqlReads(store, monkeypatch)
        gate = reads.hold = asyncio.Event()
        before = store.snapshot()
        try:
            reading = asyncio.create_task(
                store.get_many(before, [doc["_id"]]) if many else store.get(before, doc["_id"])
            )
            await reads.ran.wait()  # it read version 1 from the file ...
            reads.hold = None
            newer = changed(doc, n=2)
            await commit(store, Write(doc["_id"], TASKS, doc, newer))  # ... then 2 landed
            gate.set()
            # Its snapshot still sees version 1,
            assert await reading == ({doc["_id"]: doc} if many else doc)
        finally:
            store.release(before)
        # and later reads see 2, from the cache.
        count = reads.count
        assert await get(store, doc["_id"]) == newer
        assert await get_many(store, [doc["_id"]]) == {doc["_id"]: newer}
        assert reads.count == count
    finally:
        await store.close()


async def test_cache_is_bounded_and_stays_exact(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [BY_OWNER])
    store.cache_documents = 16
    store.cache_bytes = 2_000
    rng = random.Random(7)
    live: dict[str, Document] = {}
    try:
        for step in range(300):
            action = rng.random()
            if action < 0.4 or not live:
                doc = await insert(
                    store, TASKS, owner=rng.choice("abc"), pad="x" * rng.randrange(90)
                )
                live[doc["_id"]] = doc
            elif action < 0.7:
                doc_id = rng.choice(list(live))
                new = changed(live[doc_id], owner=rng.choice("abc"), step=step)
                await commit(store, Write(doc_id, TASKS, live[doc_id], new))
                live[doc_id] = new
            elif action < 0.8:
                doc_id = rng.choice(list(live))
                await commit(store, Write(doc_id, TASKS, live.pop(doc_id), None))
            else:
                asked = [*rng.sample(list(live), min(len(live), 5)), new_id(TASKS)]
                found = await get_many(store, asked)
                assert found == {i: live.get(i) for i in asked}
                doc_id = rng.choice(asked)
                assert await get(store, doc_id) == live.get(doc_id)
            cache, sizes = store._cache, store._cache_sizes
            assert list(cache) == list(sizes)
            assert len(cache) <= store.cache_documents
            assert store._cache_size == sum(sizes.values())
            assert store._cache_size <= store.cache_bytes
        on_disk = await asyncio.to_thread(file_documents, path)
        assert on_disk == live
        for doc_id, doc in store._cache.items():
            size = store._cache_sizes[doc_id]
            assert doc == on_disk.get(doc_id)
            assert size == (0 if doc is None else len(msgspec.msgpack.encode(on_disk[doc_id])))
        assert await scan_ids(store, BY_OWNER) == ids_by(BY_OWNER, list(live.values()))
    finally:
        await store.close()


async def test_a_commit_whose_caller_gave_up_still_lands_and_the_cache_follows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [])
    blocker: sqlite3.Connection | None = None
    try:
        doc = await insert(store, TASKS, n=1)
        assert await get(store, doc["_id"]) == doc  # cached

        # Another connection holds the write lock: the writer process waits for it.
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        newer = changed(doc, n=2)
        committing = asyncio.create_task(commit(store, Write(doc["_id"], TASKS, doc, newer)))
        await asyncio.sleep(0)  # its first step hands the batch to the writer
        assert store._writing is not None
        committing.cancel()  # the caller gives up while the writer is at it
        with pytest.raises(asyncio.CancelledError):
            await committing
        assert await get(store, doc["_id"]) == doc  # not on disk yet
        blocker.execute("ROLLBACK")
        with anyio.fail_after(10):
            await store._drain()  # the batch is done

        on_disk = await asyncio.to_thread(file_documents, path)
        assert on_disk == {doc["_id"]: newer}
        assert store._cache[doc["_id"]] == newer
        assert await get(store, doc["_id"]) == newer
    finally:
        if blocker is not None:
            blocker.close()
        await store.close()


@pytest.mark.parametrize(
    ("count", "max_params"),
    [(1, None), (9, None), (700, None), (6000, None), (1, 30), (11, 30), (101, 30), (700, 999)],
)
async def test_large_batches_are_written_whole(
    tmp_path: Path, count: int, max_params: int | None
) -> None:
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [BY_OWNER])
    if max_params is not None:  # statements split into many runs
        store._max_params = max_params
    try:
        await store.prepare_table(TASKS)
        docs = [
            doc_of(TASKS, store.creation_time(TASKS, 1.7e12), owner=f"o{i % 7}")
            for i in range(count)
        ]
        await commit(store, *(Write(d["_id"], TASKS, None, d) for d in docs))
        # Move every other one, delete every third: runs of every length.
        moved = {d["_id"]: changed(d, owner="moved") for d in docs[::2]}
        dropped = {d["_id"] for d in docs[::3]}
        await commit(store, *(Write(d["_id"], TASKS, d, moved[d["_id"]]) for d in docs[::2]))
        live = {d["_id"]: moved.get(d["_id"], d) for d in docs}
        await commit(store, *(Write(i, TASKS, live.pop(i), None) for i in sorted(dropped)))
    finally:
        await store.close()

    store = await reopened(path, [BY_OWNER])
    try:
        assert await get_many(store, [d["_id"] for d in docs]) == {
            d["_id"]: live.get(d["_id"]) for d in docs
        }
        assert await scan_ids(store, BY_OWNER) == ids_by(BY_OWNER, list(live.values()))
    finally:
        await store.close()
    assert await asyncio.to_thread(file_documents, path) == live
    counts = await asyncio.to_thread(entries_per_index, path)
    assert counts == ({by_creation(TASKS).key: len(live), BY_OWNER.key: len(live)} if live else {})


def test_statement_sizes_are_few_and_pad_little() -> None:
    sizes = {padded(count) for count in range(1, 20_001)}
    assert len(sizes) < 60
    for count in range(1, 20_001):
        assert count <= padded(count) < count * 1.25 + 1
    for limit in [*range(1, 3000), 32_765, 32_766, 250_000]:
        most = padded_most(limit)
        assert padded(most) == most <= limit < padded(most + 1)


async def test_commits_of_different_documents_share_one_batch(
    tmp_path: Path, batch_sizes: list[int]
) -> None:
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [BY_OWNER])
    try:
        first = await insert(store, TASKS, owner="a")
        second = await insert(store, TASKS, owner="a")
        third = await insert(store, TASKS, owner="a")
        batch_sizes.clear()
        fresh = doc_of(TASKS, 1.8e12, owner="y")
        moved = changed(second, owner="b")
        await commit_together(
            store,
            first,
            [Write(second["_id"], TASKS, second, moved), Write(fresh["_id"], TASKS, None, fresh)],
            [Write(third["_id"], TASKS, third, None)],
        )
        assert batch_sizes == [1, 2]
        live = [first, moved, fresh]
        assert await scan_ids(store, BY_OWNER) == ids_by(BY_OWNER, live)
    finally:
        await store.close()

    assert await asyncio.to_thread(file_documents, path) == {d["_id"]: d for d in live}
    store = await reopened(path, [BY_OWNER])
    try:
        assert await scan_ids(store, BY_OWNER) == ids_by(BY_OWNER, live)
        assert await scan_ids(store, by_creation(TASKS)) == ids_by(by_creation(TASKS), live)
    finally:
        await store.close()


# -- index entries, worked out by the writer process ------------------------------------------


def file_entries(path: Path) -> set[tuple[str, bytes, str]]:
    """Every index entry in the file: (index key, entry key, document id)."""
    rows = raw_query(
        path,
        "SELECT i.idx, e.key, e.id FROM index_entries e JOIN indexes i ON i.num = e.idx",
    )
    return {(idx, bytes(key), doc_id) for idx, key, doc_id in rows}


def expected_entries(indexes: list[IndexDef], docs: list[Document]) -> set[tuple[str, bytes, str]]:
    return {
        (index.key, key, doc["_id"])
        for index in [by_creation(TASKS), *indexes]
        for doc in docs
        if (key := index_key_of(index, doc)) is not None
    }


async def test_entries_stay_exact_across_restarts_and_new_indexes(tmp_path: Path) -> None:
    """The writer finds the keys of versions it did not write (an earlier
    process wrote them, or an index was added since) in the file."""
    path = tmp_path / "db.sqlite3"
    store = await reopened(path, [BY_OWNER])
    try:
        docs = [await insert(store, TASKS, owner=f"o{i % 3}", title=f"t{i}") for i in range(30)]
    finally:
        await store.close()
    assert await asyncio.to_thread(file_entries, path) == expected_entries([BY_OWNER], docs)

    # A new process: every version is new to its writer.
    store = await reopened(path, [BY_OWNER, PARTIAL])
    try:
        live = {d["_id"]: d for d in docs}
        moved = [changed(d, owner="b" if i % 2 else "z") for i, d in enumerate(docs[:20])]
        await commit(store, *(Write(m["_id"], TASKS, live[m["_id"]], m) for m in moved))
        live.update((m["_id"], m) for m in moved)
        gone = docs[20:25]
        await commit(store, *(Write(d["_id"], TASKS, live.pop(d["_id"]), None) for d in gone))
        # The index set changes while the writer holds keys of every live version.
        await store.configure_indexes([BY_TITLE, PARTIAL])
        again = [changed(live[d["_id"]], owner="c", title="x") for d in docs[10:15]]
        await commit(store, *(Write(a["_id"], TASKS, live[a["_id"]], a) for a in again))
        live.update((a["_id"], a) for a in again)
    finally:
        await store.close()
    expected = expected_entries([BY_TITLE, PARTIAL], list(live.values()))
    assert await asyncio.to_thread(file_entries, path) == expected
    assert await asyncio.to_thread(file_documents, path) == live


@pytest.mark.parametrize("version", [0, 1])
async def test_jobs_kept_as_documents_move_to_the_job_table(tmp_path: Path, version: int) -> None:
    from convexpy.store.jobs import BY_COMPLETED, BY_STATE, SCHEDULED_FUNCTIONS, SYSTEM_INDEXES
    from convexpy.store.sqlite import _migrate_from_v0

    path = tmp_path / "db.sqlite3"
    jobs = [
        doc_of(
            SCHEDULED_FUNCTIONS,
            1.0,
            name="a:f",
            args=[{"n": 1}],
            scheduledTime=5.0,
            state={"kind": "pending"},
        ),
        doc_of(
            SCHEDULED_FUNCTIONS,
            2.0,
            name="a:g",
            args=[{}],
            scheduledTime=3.0,
            state={"kind": "failed", "error": "ValueError: boom"},
            completedTime=4.0,
        ),
    ]
    notes = [doc_of(NOTES, 1.5, text="n")]
    declared = [BY_STATE, BY_COMPLETED]
    await asyncio.to_thread(
        write_v0_file, path, {SCHEDULED_FUNCTIONS: jobs, NOTES: notes}, declared
    )
    if version == 1:  # as version 1 left it: numbered index entries, jobs still documents
        conn = sqlite3.connect(path)
        try:
            with conn:
                _migrate_from_v0(conn)
                conn.execute("PRAGMA user_version = 1")
        finally:
            conn.close()

    store = SqliteStore(path)
    await store.open()
    try:
        await store.configure_indexes(SYSTEM_INDEXES)
        for doc in jobs + notes:
            assert await get(store, doc["_id"]) == doc
        assert [job.id for job in await store.due_jobs(10)] == [jobs[0]["_id"]]
        assert await store.oldest_finished_job() == 4.0
        assert await scan_ids(store, by_creation(SCHEDULED_FUNCTIONS)) == ids_by(
            by_creation(SCHEDULED_FUNCTIONS), jobs
        )
    finally:
        await store.close()
    assert await asyncio.to_thread(
        raw_query, path, "SELECT count(*) FROM documents WHERE tbl = ?", (SCHEDULED_FUNCTIONS,)
    ) == [(0,)]
    assert await asyncio.to_thread(raw_query, path, "SELECT count(*) FROM jobs") == [(2,)]
    assert set(await asyncio.to_thread(entries_per_index, path)) == {by_creation(NOTES).key}


async def test_job_index_scans_read_only_what_their_range_needs() -> None:
    from convexpy.store._sqlite_jobs import JOB_SCHEMA, STATE_CODES, scan_jobs
    from convexpy.store.jobs import SCHEDULED_FUNCTIONS, JobState, completed_before, state_range

    conn = sqlite3.connect(":memory:")
    for statement in JOB_SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT INTO job_names (num, name) VALUES (1, 'a:f')")
    args = msgspec.msgpack.encode([{}])
    rows = []
    for n in range(2000):
        state = "inProgress" if n % 500 == 7 else "pending" if n % 2 else "success"
        completed = None if state != "success" else 10.0 + n
        doc_id = new_id(SCHEDULED_FUNCTIONS)
        rows.append((doc_id, 1.0 + n, 1, args, 100.0 + n % 50, STATE_CODES[state], completed, None))
    conn.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    read_rows = 0
    plans: list[str] = []

    async def read(sql: str, params: list[object]) -> list[Any]:
        nonlocal read_rows
        found = conn.execute(sql, params).fetchall()
        read_rows += len(found)
        plans.extend(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        return found

    running = await scan_jobs(read, state_range(JobState.IN_PROGRESS), "asc", 100)
    assert [doc["state"]["kind"] for _, doc in running] == ["inProgress"] * 4
    assert read_rows == 4  # not a page of pending jobs
    read_rows = 0
    due = await scan_jobs(read, state_range(JobState.PENDING, before=111.0), "asc", 10_000)
    expected = [row for row in rows if row[5] == STATE_CODES["pending"] and row[4] < 111.0]
    assert sorted(doc["_id"] for _, doc in due) == sorted(row[0] for row in expected)
    at_bound = [row for row in rows if row[5] == STATE_CODES["pending"] and row[4] == 111.0]
    assert at_bound and read_rows <= len(expected) + len(at_bound)  # those at 111.0 read, not kept
    # SQLite seeks the index on the state and the time, not on the state alone.
    assert any("jobs_by_state (state=? AND scheduled<?)" in plan for plan in plans), plans
    read_rows = 0
    done = await scan_jobs(read, completed_before(float("inf")), "asc", 1)
    assert [doc["completedTime"] for _, doc in done] == [10.0]
    assert read_rows <= 256
    conn.close()
