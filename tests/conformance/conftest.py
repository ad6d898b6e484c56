"""The stores the conformance suite runs on.

Every test in this package takes the ``store`` fixture (an opened store) or
``store_kind`` (to make stores of its own), and so runs once per entry of
:data:`STORES`. A test here speaks only the port
(:class:`convexpy.store.base.Store`): no private state, no SQL, no knowledge
of how a store is built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pg_server
import pytest

from convexpy.store import MemoryStore, PostgresStore, SqliteStore, Store


@dataclass(frozen=True)
class StoreKind:
    """How to make one kind of store for a test."""

    name: str
    make: Callable[[Path], Store]
    """A new, unopened store kept under the given (empty, per-test) directory.
    Made again with the same directory, it is the same database."""
    durable: bool
    """Whether a store made again at the same place, after closing, still
    holds what was committed."""


# A new store joins the conformance suite by adding ONE entry here.
STORES = [
    StoreKind("memory", lambda directory: MemoryStore(), durable=False),
    StoreKind(
        "sqlite",
        lambda directory: SqliteStore(directory / "db.sqlite3", synchronous="full"),
        durable=True,
    ),
    StoreKind(
        "postgres",
        lambda directory: PostgresStore(pg_server.database_url(directory)),
        durable=True,
    ),
]


@pytest.fixture(params=STORES, ids=[kind.name for kind in STORES])
def store_kind(request: pytest.FixtureRequest) -> StoreKind:
    kind: StoreKind = request.param
    return kind


DURABLE_STORES = [kind for kind in STORES if kind.durable]


@pytest.fixture(params=DURABLE_STORES, ids=[kind.name for kind in DURABLE_STORES])
def durable_kind(request: pytest.FixtureRequest) -> StoreKind:
    """Each kind of store that keeps what was committed when made again."""
    kind: StoreKind = request.param
    return kind


@pytest.fixture
async def store(store_kind: StoreKind, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened store of each kind, closed after the test."""
    opened = store_kind.make(tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
