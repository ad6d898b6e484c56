"""The SQLite store under real faults: a killed, stopped or unstartable writer
process, and the file lock against links and orphaned writers."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from e2e_helpers import writer_pids
from test_speculative import EVERYTHING, TASKS, commit_now, doc_of, file_ids, opened, read

from convexpy.errors import StoreLockedError, StoreUnavailableError
from convexpy.store import ReadSet, SqliteStore, Write, store_from_url
from convexpy.store.base import ConflictError

TESTS = Path(__file__).parent


def writer_pid(store: SqliteStore) -> int:
    assert store._process is not None
    return store._process._proc.pid


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def in_flight(store: SqliteStore) -> asyncio.Task[int]:
    """A commit of one new document, started and handed to the writer process."""
    doc = doc_of(store)
    snapshot = store.snapshot()
    task = asyncio.create_task(
        store.commit(snapshot, ReadSet(), [Write(doc["_id"], TASKS, None, doc)])
    )
    task.add_done_callback(lambda _: store.release(snapshot))
    with anyio.fail_after(10):
        while store._process is None or store._process._in_flight is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return task


async def test_a_killed_idle_writer_is_restarted_and_commits_go_on(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        before = doc_of(store)
        await commit_now(store, Write(before["_id"], TASKS, None, before))
        first = writer_pid(store)
        os.kill(first, signal.SIGKILL)
        after = doc_of(store)
        with anyio.fail_after(10):
            await commit_now(store, Write(after["_id"], TASKS, None, after))
        assert writer_pid(store) != first
        assert not alive(first)
    assert await asyncio.to_thread(file_ids, path) == {before["_id"], after["_id"]}


async def test_a_batch_in_flight_when_the_writer_dies_is_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="convexpy.store")
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        os.kill(writer_pid(store), signal.SIGSTOP)  # it will not read the batch
        task = await in_flight(store)
        os.kill(writer_pid(store), signal.SIGKILL)
        with anyio.fail_after(10):
            await task
        written = await asyncio.to_thread(file_ids, path)
    assert len(written) == 1
    assert "had not landed; writing it again" in caplog.text
    assert store.health.error is None  # the streak ended with the batch landing


async def test_a_batch_that_landed_before_the_writer_died_is_reported_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="convexpy.store")
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        os.kill(writer_pid(store), signal.SIGSTOP)
        task = await in_flight(store)
        # As if the writer committed the batch and died before it could reply.
        assert store._process is not None and store._process._in_flight is not None
        writes = store._process._in_flight[0][2]
        conn = sqlite3.connect(path)
        try:
            with conn:
                conn.executemany(
                    "INSERT INTO documents (id, tbl, doc) VALUES (?, ?, ?)",
                    [(doc_id, table, blob) for doc_id, table, blob, _ in writes],
                )
        finally:
            conn.close()
        os.kill(writer_pid(store), signal.SIGKILL)
        with anyio.fail_after(10):
            await task
    assert "had landed; nothing was lost" in caplog.text
    assert "writing it again" not in caplog.text


async def test_a_hung_writer_times_out_with_a_clear_error_and_is_replaced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path, write_timeout=0.5)
    await store.open()
    try:
        await store.configure_indexes([])
        await store.prepare_table(TASKS)
        stopped = writer_pid(store)
        os.kill(stopped, signal.SIGSTOP)
        task = await in_flight(store)
        with anyio.fail_after(10), pytest.raises(StoreUnavailableError, match="within 0.5 s"):
            await task
        assert not alive(stopped)  # killed, so it can never land the batch later
        doc = doc_of(store)
        with anyio.fail_after(10):
            await commit_now(store, Write(doc["_id"], TASKS, None, doc))
    finally:
        await store.close()
    assert await asyncio.to_thread(file_ids, path) == {doc["_id"]}


async def test_a_writer_that_cannot_be_restarted_fails_writes_clearly_and_is_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        fatal: list[str] = []
        store.health.on_fatal(fatal.append)
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
        os.kill(writer_pid(store), signal.SIGKILL)
        for _ in range(3):  # the first write notices; later ones fail the same way
            doc = doc_of(store)
            with anyio.fail_after(10), pytest.raises(StoreUnavailableError) as caught:
                await commit_now(store, Write(doc["_id"], TASKS, None, doc))
            assert not isinstance(caught.value, ConflictError)
            assert "could not be restarted" in str(caught.value)
        assert fatal and "could not be restarted" in fatal[0]
        assert store.health.status()["writable"] is False


# -- the lock ----------------------------------------------------------------------------------


async def test_a_second_store_on_the_same_file_is_locked_out_until_the_first_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    async with opened(path) as first:
        doc = doc_of(first, n=1)
        await commit_now(first, Write(doc["_id"], TASKS, None, doc))
        second = SqliteStore(path)
        with pytest.raises(StoreLockedError) as caught:
            await second.open()
        assert str(path) in str(caught.value)
        await second.close()
    async with opened(path) as third:  # the lock went with the first store
        assert await read(third, doc["_id"]) == doc


def start_holder(path: Path) -> subprocess.Popen[str]:
    """A child process with a store open on ``path`` (committing, until killed)."""
    child = subprocess.Popen(
        [sys.executable, str(TESTS / "store_child.py"), str(path), "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


async def test_links_to_an_open_database_are_refused_naming_the_process(tmp_path: Path) -> None:
    path = tmp_path / "data.sqlite3"
    child = start_holder(path)
    try:
        hard = tmp_path / "other" / "hard.sqlite3"
        hard.parent.mkdir()
        os.link(path, hard)
        soft = tmp_path / "soft.sqlite3"
        soft.symlink_to(path)
        for name in (hard, soft, path):
            store = SqliteStore(name)
            with pytest.raises(StoreLockedError) as caught:
                await store.open()
            assert f"PID {child.pid}" in str(caught.value)
            await store.close()
    finally:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


async def test_opening_right_after_the_runtime_was_killed_waits_for_its_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.sqlite3"
    child = start_holder(path)
    child.kill()  # SIGKILL: its writer process is killed with it, a moment later
    child.wait()
    assert child.stdout is not None
    child.stdout.close()
    store = SqliteStore(path)
    with anyio.fail_after(10):
        await store.open()  # no StoreLockedError: it waits for the orphan
    try:
        await store.configure_indexes([])
    finally:
        await store.close()


def damage(path: Path) -> None:
    """Garbage over the second half of the file (the header page kept)."""
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.seek(size // 2)
        file.write(os.urandom(size // 2 - 4096))


async def test_a_damaged_file_is_reported_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        docs = [doc_of(store, body="x" * 200, n=n) for n in range(2000)]
        await commit_now(store, *(Write(d["_id"], TASKS, None, d) for d in docs))
    await asyncio.to_thread(damage, path)
    # Where the damage shows depends on the pages hit: opening (the store
    # reads its index tables) or the scan; either way, as a damaged file.
    with pytest.raises(StoreUnavailableError, match="is damaged"):
        async with opened(path) as store:
            snapshot = store.snapshot()
            try:
                await store.scan(snapshot, EVERYTHING, "asc", 10_000)
            finally:
                store.release(snapshot)


def test_store_urls_take_a_write_timeout_and_refuse_bad_ones(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path}/a.db?write_timeout=2.5&synchronous=normal")
    assert isinstance(store, SqliteStore)
    assert store.write_timeout == 2.5
    assert store_from_url(f"sqlite:///{tmp_path}/a.db").write_timeout == 30.0  # type: ignore[attr-defined]
    for bad in ("0", "-1", "inf", "nan", "soon"):
        with pytest.raises(ValueError, match="write_timeout must be a positive number"):
            store_from_url(f"sqlite:///{tmp_path}/a.db?write_timeout={bad}")
    with pytest.raises(ValueError, match="unknown SQLite store option"):
        store_from_url(f"sqlite:///{tmp_path}/a.db?timeout=3")


async def test_the_writer_process_dies_with_its_runtime(tmp_path: Path) -> None:
    path = tmp_path / "data.sqlite3"
    child = start_holder(path)
    try:
        writers = writer_pids(path)
        assert len(writers) == 1
    finally:
        child.kill()  # SIGKILL: the runtime cannot close anything
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    with anyio.fail_after(10):
        while alive(writers[0]):  # noqa: ASYNC110 - another process: nothing to wait on
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("landed", [False, True])
async def test_a_job_written_when_the_writer_dies_is_settled_from_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, landed: bool
) -> None:
    from convexpy.ids import new_id
    from convexpy.store.jobs import SCHEDULED_FUNCTIONS, SYSTEM_INDEXES, new_job

    caplog.set_level(logging.WARNING, logger="convexpy.store")
    path = tmp_path / "db.sqlite3"
    async with opened(path) as store:
        await store.configure_indexes(SYSTEM_INDEXES)
        await store.prepare_table(SCHEDULED_FUNCTIONS)
        job_id = new_id(SCHEDULED_FUNCTIONS)
        created = store.creation_time(SCHEDULED_FUNCTIONS, 1.7e12)
        job = {"_id": job_id, "_creationTime": created, **new_job("a:f", {"n": 1}, 1.7e12)}
        os.kill(writer_pid(store), signal.SIGSTOP)
        snapshot = store.snapshot()
        task = asyncio.create_task(
            store.commit(
                snapshot, ReadSet({job_id}), [Write(job_id, SCHEDULED_FUNCTIONS, None, job)]
            )
        )
        task.add_done_callback(lambda _: store.release(snapshot))
        with anyio.fail_after(10):
            while store._process is None or store._process._in_flight is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        if landed:  # as if the writer committed the batch and died before replying
            inserts, _, _ = store._process._in_flight[0][4]
            names = store._process._in_flight[0][5]
            conn = sqlite3.connect(path)
            try:
                with conn:
                    conn.executemany("INSERT INTO job_names (num, name) VALUES (?, ?)", names)
                    conn.executemany("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", inserts)
            finally:
                conn.close()
        os.kill(writer_pid(store), signal.SIGKILL)
        with anyio.fail_after(10):
            await task
        assert await read(store, job_id) == job
        assert [due.id for due in await store.due_jobs(10)] == [job_id]
    expected = "had landed; nothing was lost" if landed else "had not landed; writing it again"
    assert expected in caplog.text
