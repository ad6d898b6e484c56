"""A commit acknowledged by SqliteStore survives the process being SIGKILLed.

A child process (tests/store_child.py) commits pairs of documents from several
concurrent workers and prints each sequence number once its commit returned.
The parent kills it at a random point, reopens the file, and checks that every
acknowledged commit is there, whole, and that the indexes match the documents.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from convexpy.store import IndexDef, KeyRange, SqliteStore
from convexpy.store.engine import index_key_of

CHILD = Path(__file__).with_name("store_child.py")
ROOT = Path(__file__).resolve().parents[1]
TABLE = "items"
BY_SEQ = IndexDef(TABLE, "by_seq", ("seq", "part"))
BY_CREATION = IndexDef.by_creation_time(TABLE)
ROUNDS = 4


async def run_child_until_killed(path: Path, first: int, acks_before_kill: int) -> set[int]:
    """Start a child, kill it after ``acks_before_kill`` acknowledgements; all it acked."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(path),
        str(first),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    acked: set[int] = set()
    try:
        with anyio.fail_after(30):
            line = await process.stdout.readline()
            while line and len(acked) < acks_before_kill:
                if line != b"ready\n":
                    acked.add(int(line))
                if len(acked) < acks_before_kill:
                    line = await process.stdout.readline()
            if not line:
                _, error = await process.communicate()
                pytest.fail(f"the child exited early ({process.returncode}):\n{error.decode()}")
            os.kill(process.pid, signal.SIGKILL)
            # Lines the child wrote before it died were acknowledged too.
            rest = await process.stdout.read()
            complete = rest[: rest.rfind(b"\n") + 1]
            acked.update(int(number) for number in complete.split())
            assert await process.wait() == -signal.SIGKILL
            await process.stderr.read()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return acked


def raw_consistency(path: Path) -> None:
    """Check the file below the store: integrity, and no index entry without its document."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        orphans = conn.execute(
            "SELECT count(*) FROM index_entries e LEFT JOIN documents d ON d.id = e.id"
            " WHERE d.id IS NULL"
        ).fetchone()
        assert orphans == (0,)
        documents = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        per_index = dict(
            conn.execute(
                "SELECT i.idx, count(*) FROM index_entries e JOIN indexes i ON i.num = e.idx"
                " GROUP BY i.idx"
            )
        )
        assert per_index == {BY_SEQ.key: documents, BY_CREATION.key: documents}
    finally:
        conn.close()


async def committed_sequences(path: Path) -> set[int]:
    """Reopen the file; check it is consistent and return the committed sequence numbers."""
    store = SqliteStore(path)
    await store.open()
    try:
        await store.configure_indexes([BY_SEQ])
        snapshot = store.snapshot()
        try:
            by_index = {
                index: await store.scan(snapshot, KeyRange(index.key, b"", None), "asc", 10**9)
                for index in (BY_CREATION, BY_SEQ)
            }
            for index, rows in by_index.items():
                assert [key for key, _ in rows] == [index_key_of(index, doc) for _, doc in rows]
            docs = [doc for _, doc in by_index[BY_CREATION]]
            assert sorted(docs, key=lambda d: d["_id"]) == sorted(
                (doc for _, doc in by_index[BY_SEQ]), key=lambda d: d["_id"]
            )
            for doc in docs:
                assert await store.get(snapshot, doc["_id"]) == doc
        finally:
            store.release(snapshot)
    finally:
        await store.close()
    await asyncio.to_thread(raw_consistency, path)
    # Each commit wrote both parts or neither.
    parts = Counter(doc["seq"] for doc in docs)
    assert {seq for seq, count in parts.items() if count != 2} == set()
    assert Counter(doc["part"] for doc in docs)[0] == len(parts)
    return set(parts)


@pytest.mark.slow
async def test_acknowledged_commits_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    rng = random.Random()
    acked: set[int] = set()
    first = 0
    for round_ in range(ROUNDS):
        acks = rng.randint(1, 300)
        acked |= await run_child_until_killed(path, first, acks)
        committed = await committed_sequences(path)
        lost = acked - committed
        assert not lost, f"round {round_}: acknowledged commits lost: {sorted(lost)[:20]}"
        first = max(committed) + 1
    assert len(acked) >= ROUNDS
