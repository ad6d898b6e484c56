"""Child process of tests/test_store_durability.py: commit and acknowledge, until killed.

Usage: ``python store_child.py DB_PATH FIRST_SEQ``

Opens a :class:`SqliteStore` (``synchronous="full"``) and runs several workers
at once, so commits share group commits. Each transaction inserts two
documents ``{"seq": n, "part": 0}`` and ``{"seq": n, "part": 1}``; once its
commit has returned, the child prints ``n`` on its own line and flushes. It
prints ``ready`` first. It stops by itself after ``MAX_COMMITS`` or when its
stdout goes away (the parent died), so it never outlives a broken test run.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

from convexpy.ids import new_id
from convexpy.store import IndexDef, ReadSet, SqliteStore, Write

TABLE = "items"
INDEXES = [IndexDef(TABLE, "by_seq", ("seq", "part"))]
WORKERS = 8
MAX_COMMITS = 100_000


async def main(path: Path, first: int) -> None:
    store = SqliteStore(path, synchronous="full")
    await store.open()
    try:
        await store.configure_indexes(INDEXES)
        await store.prepare_table(TABLE)
        print("ready", flush=True)
        numbers = iter(range(first, first + MAX_COMMITS))

        async def worker() -> None:
            for seq in numbers:
                reads = ReadSet()
                writes = []
                for part in (0, 1):
                    doc_id = new_id(TABLE)
                    created = store.creation_time(TABLE, 0.0)
                    doc = {"_id": doc_id, "_creationTime": created, "seq": seq, "part": part}
                    reads.ids.add(doc_id)
                    writes.append(Write(doc_id, TABLE, None, doc))
                snapshot = store.snapshot()
                try:
                    await store.commit(snapshot, reads, writes)
                finally:
                    store.release(snapshot)
                # One write() of a short line into a pipe is atomic.
                sys.stdout.write(f"{seq}\n")
                sys.stdout.flush()

        await asyncio.gather(*(worker() for _ in itertools.repeat(None, WORKERS)))
    finally:
        await store.close()


if __name__ == "__main__":
    try:
        asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
    except BrokenPipeError:
        sys.exit(1)
