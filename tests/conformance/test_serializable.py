"""Every store is serializable: checked against a serial replay (hypothesis).

Random transactions run concurrently on a few counters through
:class:`convexpy.db.Transaction` (the read set and own-writes layer above the
store), some of them on speculative snapshots. Each one reads by id and by
index range, yields to the event loop at random points, and writes values
computed from everything it read. The committed transactions, replayed one by
one in commit-timestamp order against a plain dict, must read exactly what
they read concurrently and leave exactly the state the store ends with.

All examples share the test's store, each in a table of its own, so a store
is also checked with the history of earlier examples behind it.
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convexpy.db import TableNames, Transaction
from convexpy.errors import DocumentNotFoundError
from convexpy.store import ConflictError, IndexDef, KeyRange, Store
from convexpy.store.base import BY_CREATION_TIME, Document
from convexpy.store.keys import encode_prefix, prefix_successor

T0 = 1.7e12
VALUES = 6  # counter values live in range(VALUES), so index ranges overlap a lot
SLOTS = 4  # counters that exist at the start
TABLES = (f"counters{n}" for n in itertools.count())

# -- transactions as data -------------------------------------------------------------
# A transaction is (delay, speculative, program): it starts after ``delay``
# turns of the event loop, on a speculative snapshot or a plain one.
# ("get", slot)                          read an initial counter by id
# ("scan", index, lo, hi, order, limit)  read a range: by_v with lo <= v < hi, or
#                                        by_creation_time (lo/hi unused)
# ("set", target, delta)                 v := f(everything read so far, delta)
# ("delete", target)
# ("insert", delta)
# ("yield",)                             let the other transactions run
# A target is ("slot", i) (an initial counter) or ("seen", j) (the j-th document
# of the transaction's latest scan, if any).

targets = st.one_of(
    st.tuples(st.just("slot"), st.integers(0, SLOTS - 1)),
    st.tuples(st.just("seen"), st.integers(0, 3)),
)
ops = st.one_of(
    st.tuples(st.just("get"), st.integers(0, SLOTS - 1)),
    st.tuples(
        st.just("scan"),
        st.sampled_from(["by_v", "by_v", BY_CREATION_TIME]),
        st.integers(0, VALUES - 1),
        st.integers(1, VALUES),
        st.sampled_from(["asc", "desc"]),
        st.integers(1, 5),
    ),
    st.tuples(st.just("set"), targets, st.integers(0, VALUES - 1)),
    st.tuples(st.just("delete"), targets),
    st.tuples(st.just("insert"), st.integers(0, VALUES - 1)),
    st.just(("yield",)),
    st.just(("yield",)),
)
transactions = st.lists(
    st.tuples(st.integers(0, 3), st.booleans(), st.lists(ops, min_size=1, max_size=7)),
    min_size=2,
    max_size=6,
)
initial_values = st.lists(st.integers(0, VALUES - 1), min_size=SLOTS, max_size=SLOTS)

Spec = tuple[int, bool, list[tuple[Any, ...]]]


@dataclass
class Outcome:
    committed: bool = False
    ts: int = 0
    wrote: bool = False
    reads: list[Any] = field(default_factory=list)
    inserted: list[Document] = field(default_factory=list)


def by_v(table: str) -> IndexDef:
    return IndexDef(table, "by_v", ("v",))


def key_range(table: str, op: tuple[Any, ...]) -> tuple[IndexDef, KeyRange]:
    _, name, lo, hi, _, _ = op
    if name == BY_CREATION_TIME:
        index = IndexDef.by_creation_time(table)
        return index, KeyRange(index.key, b"", None)
    index = by_v(table)
    if hi == lo + 1 and lo % 2:  # sometimes spell an equality as prefix..successor
        prefix = encode_prefix([lo])
        return index, KeyRange(index.key, prefix, prefix_successor(prefix))
    return index, KeyRange(index.key, encode_prefix([lo]), encode_prefix([max(lo, hi)]))


def summary(doc: Document | None) -> tuple[str, int] | None:
    return None if doc is None else (doc["_id"], doc["v"])


class Reader:
    """What a transaction computes from its reads; identical in both runs."""

    def __init__(self) -> None:
        self.acc = 0
        self.seen: list[str] = []
        self.reads: list[Any] = []

    def saw(self, what: Any) -> None:
        self.reads.append(what)
        self.acc = (self.acc * 31 + zlib.crc32(repr(what).encode())) % 1_000_003

    def value(self, delta: int) -> int:
        return (self.acc + delta) % VALUES

    def target(self, target: tuple[str, int], slots: list[str]) -> str | None:
        kind, i = target
        if kind == "slot":
            return slots[i]
        return self.seen[i] if i < len(self.seen) else None


async def run_transaction(
    store: Store, table: str, tables: TableNames, slots: list[str], spec: Spec
) -> Outcome:
    delay, speculative, program = spec
    for _ in range(delay):
        await asyncio.sleep(0)
    txn = Transaction(store, now=lambda: T0, tables=tables, writable=True, speculative=speculative)
    reader = Reader()
    outcome = Outcome()
    try:
        for op in program:
            match op:
                case ("yield",):
                    await asyncio.sleep(0)
                case ("get", slot):
                    reader.saw(("get", summary(await txn.get(slots[slot]))))
                case ("scan", _, _, _, order, limit):
                    index, scanned = key_range(table, op)
                    rows = await txn.scan(index, scanned, order, limit)
                    reader.seen = [doc["_id"] for _, doc in rows]
                    reader.saw(("scan", [summary(doc) for _, doc in rows]))
                case ("set" | "delete", target, *rest):
                    doc_id = reader.target(target, slots)
                    if doc_id is None:
                        continue
                    try:
                        _, current = await txn.existing(doc_id, "patch")
                    except DocumentNotFoundError:
                        reader.saw((op[0], None))
                        continue
                    reader.saw((op[0], summary(current)))
                    new = None if op[0] == "delete" else {**current, "v": reader.value(rest[0])}
                    txn.put(table, current, new)
                case ("insert", delta):
                    doc_id = await txn.insert(table, {"v": reader.value(delta)})
                    inserted = txn.writes[doc_id].new
                    assert inserted is not None
                    outcome.inserted.append(inserted)
        outcome.wrote = any(w.old is not None or w.new is not None for w in txn.writes.values())
        outcome.ts = await txn.commit()
        outcome.committed = True
    except ConflictError:
        pass
    finally:
        txn.release()
    outcome.reads = reader.reads
    return outcome


def replay(
    state: dict[str, Document], slots: list[str], spec: Spec, inserted: list[Document]
) -> tuple[list[Any], dict[str, Document]]:
    """Run one transaction alone against ``state``: its reads and the new state."""
    local = dict(state)
    reader = Reader()
    new_docs = iter(inserted)
    for op in spec[2]:
        match op:
            case ("get", slot):
                reader.saw(("get", summary(local.get(slots[slot]))))
            case ("scan", name, lo, hi, order, limit):
                if name == BY_CREATION_TIME:
                    rows = sorted(local.values(), key=lambda d: d["_creationTime"])
                else:
                    rows = sorted(
                        (d for d in local.values() if lo <= d["v"] < max(lo, hi)),
                        key=lambda d: (d["v"], d["_creationTime"]),
                    )
                if order == "desc":
                    rows.reverse()
                rows = rows[:limit]
                reader.seen = [doc["_id"] for doc in rows]
                reader.saw(("scan", [summary(doc) for doc in rows]))
            case ("set" | "delete", target, *rest):
                doc_id = reader.target(target, slots)
                if doc_id is None:
                    continue
                current = local.get(doc_id)
                reader.saw((op[0], summary(current)))
                if current is None:
                    continue
                if op[0] == "delete":
                    del local[doc_id]
                else:
                    local[doc_id] = {**current, "v": reader.value(rest[0])}
            case ("insert", delta):
                made = next(new_docs)
                local[made["_id"]] = {
                    "_id": made["_id"],
                    "_creationTime": made["_creationTime"],
                    "v": reader.value(delta),
                }
    return reader.reads, local


async def check_serializable(
    store: Store, table: str, initial: list[int], specs: list[Spec]
) -> None:
    await store.configure_indexes([by_v(table)])
    tables = TableNames()
    tables.add(table)
    setup = Transaction(store, now=lambda: T0, tables=tables, writable=True)
    slots = [await setup.insert(table, {"v": v}) for v in initial]
    state = {doc_id: setup.writes[doc_id].new for doc_id in slots}
    await setup.commit()

    outcomes = await asyncio.gather(
        *(run_transaction(store, table, tables, slots, spec) for spec in specs)
    )

    committed = [(o, spec) for o, spec in zip(outcomes, specs, strict=True) if o.committed]
    assert committed, "the first transaction to commit cannot conflict"
    # A read-only commit returns its snapshot's timestamp: it goes right
    # after the commit that made that snapshot.
    committed.sort(key=lambda pair: (pair[0].ts, not pair[0].wrote))
    write_ts = [o.ts for o, _ in committed if o.wrote]
    assert len(write_ts) == len(set(write_ts)), "two writing commits share a timestamp"
    for outcome, spec in committed:
        reads, state = replay(state, slots, spec, outcome.inserted)  # type: ignore[arg-type]
        assert outcome.reads == reads, f"transaction {spec} read differently than serially"

    snapshot = store.snapshot()
    try:
        for index in (IndexDef.by_creation_time(table), by_v(table)):
            rows = await store.scan(snapshot, KeyRange(index.key, b"", None), "asc", 1000)
            expected = sorted(
                state.values(),  # type: ignore[arg-type]
                key=lambda d: (*(d[f] for f in index.fields), d["_creationTime"]),
            )
            assert [doc for _, doc in rows] == expected
        for doc_id in slots:
            assert await store.get(snapshot, doc_id) == state.get(doc_id)
    finally:
        store.release(snapshot)


# The store fixture is function-scoped on purpose: the examples share it.
@settings(
    max_examples=150,
    suppress_health_check=[
        *settings.default.suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(initial=initial_values, specs=transactions)
async def test_store_is_serializable(store: Store, initial: list[int], specs: list[Spec]) -> None:
    await check_serializable(store, next(TABLES), initial, specs)


def test_replay_detects_a_lost_update() -> None:
    """The checker itself: two increments from the same snapshot cannot both be serial."""
    a = {"_id": "a", "_creationTime": 1.0, "v": 0}
    spec: Spec = (0, False, [("get", 0), ("set", ("slot", 0), 1)])
    first_reads, after_first = replay({"a": a}, ["a"], spec, [])
    second_reads, _ = replay(after_first, ["a"], spec, [])
    assert first_reads != second_reads  # a stale second reader would be caught
