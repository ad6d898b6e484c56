"""The PostgreSQL store beyond the conformance suite: URLs, the layout's
version, failures and timeouts, and serializability across processes.

Runs on the session's throwaway cluster (tests/pg_server.py); skips without
PostgreSQL, fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pg_server
import pytest
from conformance.helpers import TASKS, Txn, insert, read_get, replace
from conformance.test_job_queue import add_jobs
from conformance.test_serializable import T0, by_v, replay
from convex.http_client import ConvexHttpClient
from e2e_helpers import dev_server, run_cli, write_app

from convexpy.db import TableNames, Transaction
from convexpy.errors import CommitFailedError, StoreUnavailableError, StoreVersionError
from convexpy.ids import new_id
from convexpy.store import (
    ConflictError,
    IndexDef,
    KeyRange,
    PostgresStore,
    Snapshot,
    store_from_url,
)
from convexpy.store.jobs import (
    SCHEDULED_FUNCTIONS,
    SYSTEM_INDEXES,
    JobChanges,
    JobState,
    ended,
    new_job,
    started,
    state_range,
)
from convexpy.store.postgres import SnapshotTooOldError, Timeouts

CHILD = str(Path(__file__).with_name("pg_child.py"))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return pg_server.database_url(tmp_path)


@pytest.fixture
async def two(url: str) -> Any:
    """Two stores on one database, as two processes would have."""
    first, second = PostgresStore(url), PostgresStore(url)
    await first.open()
    await second.open()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def learns(store: PostgresStore, other: PostgresStore) -> None:
    """Wait until ``store``'s new snapshots pin ``other``'s last commit (NOTIFY)."""
    with anyio.fail_after(30):
        # The store has no event to wait on: poll what new snapshots pin.
        while store.snapshot().ts < other.snapshot().ts:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
async def store(url: str) -> Any:
    opened = PostgresStore(url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


# -- the test cluster -------------------------------------------------------------------


@pytest.mark.parametrize("ci", [None, "true"])
def test_missing_postgresql_skips_the_tests_but_fails_them_under_ci(
    ci: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="apt-get install postgresql"):
        pg_server._missing()


# -- URLs --------------------------------------------------------------------------------


def test_urls_make_postgres_stores_with_their_options() -> None:
    store = store_from_url(
        "postgresql://me:secret@db.example:6543/app?statement_timeout=5&lock_timeout=0.5"
        "&idle_in_transaction_timeout=20&connect_timeout=3&pool_size=4&history=60&sslmode=disable"
    )
    assert isinstance(store, PostgresStore)
    assert store.timeouts == Timeouts(statement=5, lock=0.5, idle_in_transaction=20, connect=3)
    assert store.pool_size == 4 and store.history == 60
    assert store.url == "postgresql://me:secret@db.example:6543/app?sslmode=disable"
    assert isinstance(store_from_url("postgres://localhost/app"), PostgresStore)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("postgresql://me:secret@host:port/app", "invalid PostgreSQL store URL"),
        ("postgresql://me:secret@host:5432/", "names no database"),
        ("postgresql://me:secret@host/app?statement_timeout=soon", "statement_timeout must be"),
        ("postgresql://me:secret@host/app?lock_timeout=-1", "lock_timeout must be"),
        ("postgresql://me:secret@host/app?history=0", "history must be"),
        ("postgresql://me:secret@host/app?pool_size=0", "pool_size must be"),
        ("postgresql://me:secret@host/app?connect_timeout=0", "connect timeout must be more"),
    ],
)
def test_bad_urls_are_refused_naming_them_without_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        store_from_url(url)
    assert "secret" not in str(caught.value)
    assert "me:***@host" in str(caught.value) or "<an unparseable URL>" in str(caught.value)


async def test_an_unreachable_server_is_a_clear_error_naming_the_url() -> None:
    port = pg_server._free_port()
    store = store_from_url(f"postgresql://me:secret@127.0.0.1:{port}/app?connect_timeout=2")
    with anyio.fail_after(30), pytest.raises(StoreUnavailableError) as caught:
        await store.open()
    text = str(caught.value)
    assert f"postgresql://me:***@127.0.0.1:{port}/app" in text and "secret" not in text
    await store.close()


# -- the layout ----------------------------------------------------------------------------


async def test_a_database_with_a_newer_layout_is_refused(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.close()
    pg_server.cluster().psql("UPDATE convexpy_schema SET version = 99", url.rpartition("/")[2])
    again = PostgresStore(url)
    with pytest.raises(StoreVersionError) as caught:
        await again.open()
    assert "schema version 99" in str(caught.value) and "up to 4" in str(caught.value)
    await again.close()


async def test_an_older_layout_is_migrated_on_open(url: str) -> None:
    """Version 1 (no claims table, jobs kept as versioned documents) is
    brought to the current layout: documents kept, and every job moved to
    the job table with its states at each past commit."""
    store = PostgresStore(url)
    await store.open()
    await store.configure_indexes(SYSTEM_INDEXES)
    note = await insert(store, "notes", n=1)
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        ts = await conn.fetchval("SELECT ts FROM convexpy_clock")
        await conn.execute("DROP TABLE convexpy_jobs, convexpy_claims")
        await conn.execute("DROP FUNCTION convexpy_commit")
        await conn.execute("DROP TYPE convexpy_new_job, convexpy_job_change")
        # Version 3's signature, which the migration must drop.
        await conn.execute(
            "CREATE FUNCTION convexpy_commit(bigint, bigint, text[], text[], bytea[], bytea[],"
            " text[], text[], text[], bytea[], text[], bytea[], text[], text[],"
            " OUT out_ts bigint, OUT out_conflict text)"
            " LANGUAGE sql AS 'SELECT 0::bigint, NULL::text'"
        )
        await conn.execute("UPDATE convexpy_schema SET version = 1")
        t1, t2, t3 = ts + 1, ts + 2, ts + 3
        encode = msgspec.msgpack.encode
        ids = [new_id(SCHEDULED_FUNCTIONS) for _ in range(3)]
        ran, running, gone = (
            new_job(f"jobs:{n}", {"n": n}, 5.0) | {"_id": i, "_creationTime": 1.0 + n}
            for n, i in enumerate(ids)
        )
        versions = [  # (id, from_ts, to_ts, doc)
            (ran["_id"], t1, t2, ran),
            (ran["_id"], t2, None, ended(ran, JobState.SUCCESS, 7.0)),
            (running["_id"], t1, t3, running),
            (running["_id"], t3, None, started(running)),
            (gone["_id"], t1, t2, gone),
            (gone["_id"], t2, t3, ended(gone, JobState.CANCELED, 6.0)),
        ]
        await conn.executemany(
            "INSERT INTO convexpy_documents (id, from_ts, to_ts, tbl, doc)"
            " VALUES ($1, $2, $3, '_scheduled_functions', $4)",
            [(i, f, t, encode(doc)) for i, f, t, doc in versions],
        )
        await conn.execute(
            "INSERT INTO convexpy_index_entries (idx, key, from_ts, id)"
            " VALUES ('_scheduled_functions.by_state', '\\x00', $1, $2)",
            t1,
            ran["_id"],
        )
        await conn.execute("UPDATE convexpy_clock SET ts = $1", t3)
    finally:
        await conn.close()
    again = PostgresStore(url)
    await again.open()
    try:
        await again.configure_indexes(SYSTEM_INDEXES)
        assert await read_get(again, note["_id"]) == note
        await replace(again, "notes", note["_id"], n=2)  # through the new commit function
        at = {t: Snapshot(t) for t in (t1, t2, t3)}
        states = {
            t: [
                None if (job := await again.get(snapshot, i)) is None else job["state"]["kind"]
                for i in ids
            ]
            for t, snapshot in at.items()
        }
        assert states == {
            t1: ["pending", "pending", "pending"],
            t2: ["success", "pending", "canceled"],
            t3: ["success", "inProgress", None],
        }
        assert await again.get(at[t2], ran["_id"]) == ended(ran, JobState.SUCCESS, 7.0)
        pending = await again.scan(at[t2], state_range(JobState.PENDING), "asc", 10)
        assert [doc["_id"] for _, doc in pending] == [running["_id"]]
        now = again.snapshot()
        assert await again.due_jobs(10) == []
        in_progress = await again.scan(now, state_range(JobState.IN_PROGRESS), "asc", 10)
        assert [doc for _, doc in in_progress] == [started(running)]
        assert await again.oldest_finished_job() == 7.0
        assert (await again.claim_jobs(ids)).granted == [running["_id"]]  # the one not ended
        assert await again.finish_action(running["_id"], JobState.SUCCESS, 8.0)
    finally:
        await again.close()
    database = url.rpartition("/")[2]
    assert pg_server.cluster().psql("SELECT version FROM convexpy_schema", database).strip() == "4"
    left = pg_server.cluster().psql(
        "SELECT (SELECT count(*) FROM convexpy_documents WHERE tbl = '_scheduled_functions')"
        " + (SELECT count(*) FROM convexpy_index_entries WHERE idx LIKE '\\_scheduled%')"
        " + (SELECT count(*) FROM pg_proc WHERE proname = 'convexpy_commit') - 1",
        database,
    )
    assert left.strip() == "0"


async def test_stores_opened_at_once_create_the_layout_once(url: str) -> None:
    stores = [PostgresStore(url) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        doc = await insert(stores[0], TASKS, n=1)
        for store in stores:
            assert await read_get(store, doc["_id"]) == doc
    finally:
        await asyncio.gather(*(store.close() for store in stores))


# -- failures and timeouts ---------------------------------------------------------------


async def test_lost_connections_are_replaced(store: PostgresStore, url: str) -> None:
    doc = await insert(store, TASKS, n=1)
    database = url.rpartition("/")[2]
    killed = pg_server.cluster().psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    assert int(killed) >= 1
    with anyio.fail_after(30):
        assert await read_get(store, doc["_id"]) == doc  # tried again on a new connection
        txn = Txn(store)
        await txn.replace(TASKS, doc["_id"], n=2)
        await txn.commit()
    assert (await read_get(store, doc["_id"]) or {})["n"] == 2


@pytest.mark.slow
async def test_a_server_restart_is_survived(two: tuple[PostgresStore, PostgresStore]) -> None:
    first, second = two
    doc = await insert(first, TASKS, n=1)
    await asyncio.to_thread(pg_server.cluster().restart)
    with anyio.fail_after(60):
        assert await read_get(first, doc["_id"]) == doc  # on a new connection
        assert await read_get(second, doc["_id"]) == doc
        other = await insert(second, TASKS, n=2)
    await learns(first, second)  # it listens again
    assert await first.get(first.snapshot(), other["_id"]) == other


async def test_a_commit_waits_for_a_lock_no_longer_than_lock_timeout(url: str) -> None:
    store = PostgresStore(url, timeouts=Timeouts(lock=0.2))
    await store.open()
    try:
        await store.prepare_table(TASKS)
        holder = await asyncpg.connect(url)
        try:
            async with holder.transaction():
                await holder.execute("SELECT ts FROM convexpy_clock FOR UPDATE")
                txn = Txn(store)
                await txn.insert(TASKS, n=1)
                with anyio.fail_after(30), pytest.raises(CommitFailedError) as caught:
                    await store.commit_and_report(
                        txn.snapshot, txn.reads, list(txn.writes.values())
                    )
                assert "lock timeout" in str(caught.value)
                assert store.health.error is not None
        finally:
            await holder.close()
        txn = Txn(store)  # the lock is free again: writes work
        await txn.insert(TASKS, n=2)
        await store.commit_and_report(txn.snapshot, txn.reads, list(txn.writes.values()))
        assert store.health.error is None
    finally:
        await store.close()


async def test_a_serialization_failure_in_the_server_is_a_conflict(
    store: PostgresStore, url: str
) -> None:
    pg_server.cluster().psql(
        "CREATE FUNCTION fail_40001() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '40001'; END $$;"
        " CREATE TRIGGER fail BEFORE INSERT ON convexpy_documents"
        " FOR EACH ROW EXECUTE FUNCTION fail_40001()",
        url.rpartition("/")[2],
    )
    txn = Txn(store)
    doc = await txn.insert(TASKS, n=1)
    with pytest.raises(ConflictError) as caught:
        await txn.commit()
    assert caught.value.table == TASKS
    assert await read_get(store, doc["_id"]) is None
    assert await store.tables() == []


async def test_another_process_commits_are_seen_by_new_snapshots(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    """A store learns of another's commits (NOTIFY) without reading first."""
    first, second = two
    doc = await insert(first, TASKS, n=1)
    await learns(second, first)
    assert await second.get(second.snapshot(), doc["_id"]) == doc


async def test_old_versions_are_collected_and_old_snapshots_refused(url: str) -> None:
    store = PostgresStore(url, history=1.0)
    store.collect_every = 1
    await store.open()
    try:
        await store.configure_indexes([by_v(TASKS)])
        doc = await insert(store, TASKS, v=1)
        old = store.snapshot()
        newer = await replace(store, TASKS, doc["_id"], v=2)
        # As if the replace was made longer than `history` ago: the next
        # commit collects what only snapshots older than it can read.
        store._samples.clear()
        store._samples.append((0.0, store.snapshot().ts))
        await insert(store, TASKS, v=3)
        with pytest.raises(SnapshotTooOldError, match="older than the store keeps history"):
            await store.get(old, doc["_id"])
        with pytest.raises(ConflictError):
            await store.scan(old, KeyRange(by_v(TASKS).key, b"", None), "asc", 10)
        txn = Txn(store)
        txn.snapshot = old
        await txn.insert(TASKS, v=4)
        with pytest.raises(ConflictError):
            await txn.commit()
        assert await read_get(store, doc["_id"]) == newer  # new snapshots read on
    finally:
        await store.close()


# -- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["--store", "CONVEXPY_STORE"])
async def test_a_bad_store_url_on_the_command_line_is_a_clear_error(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_dir = write_app(tmp_path / "convex")
    bad = "postgresql://me:secret@host:port/app"
    args = ["dev", str(app_dir), "--port", "0"]
    if where == "--store":
        args += ["--store", bad]
    else:
        monkeypatch.setenv("CONVEXPY_STORE", bad)
    result = await asyncio.to_thread(run_cli, args, tmp_path)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert f"Invalid {where}" in output and "me:***@host" in output
    assert "secret" not in output and "Traceback" not in output


@pytest.mark.slow
async def test_the_dev_server_keeps_its_data_in_postgres(tmp_path: Path, url: str) -> None:
    app_dir = write_app(tmp_path / "project" / "convex")
    async with dev_server(app_dir, url) as server:
        assert "postgresql://postgres@127.0.0.1" in "".join(server.lines)
        client = ConvexHttpClient(server.url)
        await asyncio.to_thread(client.mutation, "tasks:add", {"text": "kept"})
    async with dev_server(app_dir, url) as server:
        client = ConvexHttpClient(server.url)
        assert await asyncio.to_thread(client.query, "tasks:texts") == ["kept"]


# -- several processes -------------------------------------------------------------------


def children(*argvs: list[str]) -> list[str]:
    """Run child processes (tests/pg_child.py) together: each is let go once
    all are ready; their outputs after ``ready`` (each must succeed)."""
    procs = [
        subprocess.Popen(
            [sys.executable, CHILD, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == "ready\n", line + (proc.stderr.read() if proc.stderr else "")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
            outputs.append(out)
        return outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
async def test_three_processes_increment_one_counter_exactly(
    store: PostgresStore, url: str
) -> None:
    counter = await insert(store, "counters", n=0)
    outputs = await asyncio.to_thread(
        children, *[["counter", url, counter["_id"], "200"] for _ in range(3)]
    )
    assert (await read_get(store, counter["_id"]) or {})["n"] == 600
    conflicts = sum(json.loads(out)["conflicts"] for out in outputs)
    assert conflicts > 0, "the processes never overlapped: the test tested nothing"


@pytest.mark.slow
async def test_transactions_of_several_processes_are_serializable(
    store: PostgresStore, url: str
) -> None:
    """The conformance suite's serializability check (a serial replay in
    timestamp order), with three processes running transactions at once."""
    table = "counters"
    await store.configure_indexes([by_v(table)])
    tables = TableNames()
    tables.add(table)
    setup = Transaction(store, now=lambda: T0, tables=tables, writable=True)
    slots = [await setup.insert(table, {"v": v}) for v in (0, 1, 2, 3)]
    state: dict[str, Any] = {doc_id: setup.writes[doc_id].new for doc_id in slots}
    await setup.commit()

    argvs = [["serial", url, table, json.dumps(slots), str(seed), "40"] for seed in range(3)]
    outputs = await asyncio.to_thread(children, *argvs)
    committed = [json.loads(line) for out in outputs for line in out.splitlines()]
    writers = [c["ts"] for c in committed if c["wrote"]]
    assert len(writers) == len(set(writers)), "two writing commits share a timestamp"
    assert len(writers) > 20
    committed.sort(key=lambda c: (c["ts"], not c["wrote"]))
    for record in committed:
        reads, state = replay(state, slots, record["spec"], record["inserted"])
        assert record["reads"] == json.loads(json.dumps(reads)), record["spec"]

    snapshot = store.snapshot()
    for index in (IndexDef.by_creation_time(table), by_v(table)):
        rows = await store.scan(snapshot, KeyRange(index.key, b"", None), "asc", 1000)
        expected = sorted(
            state.values(), key=lambda d: (*(d[f] for f in index.fields), d["_creationTime"])
        )
        assert [doc for _, doc in rows] == expected


@pytest.mark.parametrize("landed", [True, False])
async def test_a_commit_that_lost_its_connection_is_settled_from_the_database(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """The reply of the commit is lost (after the server committed it, or
    before it got the call): the store finds out which, from the database,
    documents and jobs alike."""
    await store.configure_indexes(SYSTEM_INDEXES)
    kept = await insert(store, TASKS, n=1)
    (action,) = await add_jobs(store, ("a:act", T0))
    fetchrow = asyncpg.connection.Connection.fetchrow

    async def lose_reply(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if "convexpy_commit" in query:
            if landed:
                await fetchrow(self, query, *args, **kwargs)
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
        return await fetchrow(self, query, *args, **kwargs)

    txn = Txn(store)
    await txn.replace(TASKS, kept["_id"], n=2)
    new = await txn.insert(TASKS, n=3)
    await txn.delete(TASKS, new["_id"])  # written and gone in one commit: no trace
    doc = await txn.insert(TASKS, n=4)
    pending = await txn.get(action)
    assert pending is not None
    txn.write(SCHEDULED_FUNCTIONS, action, pending, started(pending))
    job = await txn.insert(SCHEDULED_FUNCTIONS, **new_job("a:f", {}, T0))
    monkeypatch.setattr(asyncpg.connection.Connection, "fetchrow", lose_reply)
    if landed:
        ts = await txn.commit()
        assert ts > txn.snapshot.ts
        monkeypatch.undo()
        assert await read_get(store, doc["_id"]) == doc
        assert (await read_get(store, kept["_id"]) or {})["n"] == 2
        assert await read_get(store, job["_id"]) == job
        assert await read_get(store, action) == started(pending)
    else:
        with pytest.raises(StoreUnavailableError, match="nothing was written"):
            await txn.commit()
        monkeypatch.undo()
        assert await read_get(store, doc["_id"]) is None
        assert (await read_get(store, kept["_id"]) or {})["n"] == 1
        assert await read_get(store, job["_id"]) is None
        assert await read_get(store, action) == pending


async def test_job_changes_too_many_for_a_notify_are_read_from_the_store(two: Any) -> None:
    """Another process hears of the jobs a commit created or cancelled, also
    when they are too many for a NOTIFY's payload (read back instead)."""
    first, second = two
    await first.configure_indexes(SYSTEM_INDEXES)
    heard = Heard()
    second.watch_jobs(heard)
    few = await add_jobs(first, *[("a:f", T0)] * 3)
    many = await add_jobs(first, *[("a:f", T0 + 1)] * 300)
    txn = Txn(first)
    for job_id in [*many, few[0]]:
        job = await txn.get(job_id)
        assert job is not None
        txn.write(SCHEDULED_FUNCTIONS, job_id, job, ended(job, JobState.CANCELED, T0))
    await txn.commit()
    with anyio.fail_after(30):
        await heard.until(lambda: len(heard.canceled) == 301)
    assert sorted(heard.created) == sorted(few + many)
    assert sorted(heard.canceled) == sorted([*many, few[0]])
    assert heard.accepted == 0  # another process's commits are durable when heard of


class Heard:
    """A job listener of the port that keeps what it was told."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.canceled: list[str] = []
        self.accepted = 0
        self._changed = asyncio.Event()

    def jobs_accepted(self, changes: JobChanges) -> None:
        self.accepted += 1

    def jobs_durable(self, changes: JobChanges) -> None:
        self.created += [job_id for job_id, _, _ in changes.created]
        self.canceled += changes.canceled
        self._changed.set()

    async def until(self, check: Any) -> None:
        while not check():
            self._changed.clear()
            await self._changed.wait()


async def test_reports_of_job_commits_move_the_job_indexes_keys(two: Any) -> None:
    """Live queries over the job table's indexes are told of job changes, the
    committing process's and another's alike (their keys are the job rows'
    own columns, not index entries)."""
    first, second = two
    await first.configure_indexes(SYSTEM_INDEXES)
    (job_id,) = await add_jobs(first, ("a:act", T0))
    heard: dict[str, list[Any]] = {"first": [], "second": []}
    first.watch_commits(heard["first"].append)
    second.watch_commits(heard["second"].append)
    assert await first.start_action(job_id) is not None
    by_state = f"{SCHEDULED_FUNCTIONS}.by_state"

    def starts(commits: list[Any]) -> list[Any]:
        # The commit that started the job. The second store may also hear of
        # the one that created it: its NOTIFY can arrive after the watch began.
        return [c for c in commits if [w.id for w in c.writes] == [job_id] and c.writes[0].old]

    with anyio.fail_after(30):
        while not starts(heard["second"]):  # noqa: ASYNC110 (told by NOTIFY, then a read)
            await asyncio.sleep(0.01)
    for name, commits in heard.items():
        (commit,) = starts(commits)
        moved = [change for change in commit.index_changes if change[0] == by_state]
        assert len(moved) == 1 and moved[0][1] == job_id, name
        _, _, old_key, new_key = moved[0]
        assert old_key is not None and new_key is not None and old_key != new_key, name
