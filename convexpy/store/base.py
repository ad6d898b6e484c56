"""The storage port: the contract every document store implements.

A store holds documents (dicts with ``_id`` and ``_creationTime``) grouped in
tables, plus index entries over them, and runs serializable optimistic
transactions:

* :meth:`Store.snapshot` pins a consistent, committed point in time. Every read
  made with that snapshot (:meth:`Store.get`, :meth:`Store.scan`) sees exactly
  the commits up to it, however many commits land meanwhile.
* :meth:`Store.commit` validates a transaction's read set against every commit
  made after its snapshot. If any of them wrote a document the transaction
  read by id, or changed an index entry inside a key range the transaction
  scanned, the commit raises :class:`ConflictError` and nothing is written.
  Otherwise the writes are applied atomically and are durable (for durable
  stores) when the call returns.

Conflict checks happen inside the store, so a store shared by several
processes (PostgreSQL, later) can do them in the database itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConvexpyError
from .health import StoreHealth

__all__ = [
    "BY_CREATION_TIME",
    "BY_ID",
    "ConflictError",
    "Document",
    "IndexDef",
    "KeyRange",
    "ReadSet",
    "Snapshot",
    "Store",
    "Write",
]

Document = dict[str, Any]
Order = Literal["asc", "desc"]

BY_ID = "by_id"
BY_CREATION_TIME = "by_creation_time"


@dataclass(frozen=True, slots=True)
class IndexDef:
    """An index of ``table`` on ``fields`` (``_creationTime`` and ``_id`` are implied last).

    Two refinements are internal, for system tables. A ``sparse`` index leaves
    out documents that lack one of its fields, which keeps it small when most
    documents lack it. A *partial* index (``where=(field, values)``) holds only
    the documents whose ``field`` is one of ``values``.
    """

    table: str
    name: str
    fields: tuple[str, ...]
    sparse: bool = False
    where: tuple[str, tuple[str, ...]] | None = None

    @property
    def key(self) -> str:
        """The store-wide name of the index, ``"table.name"``."""
        return f"{self.table}.{self.name}"

    @staticmethod
    def by_creation_time(table: str) -> IndexDef:
        return IndexDef(table, BY_CREATION_TIME, ())


@dataclass(frozen=True, slots=True)
class KeyRange:
    """The half-open byte range ``[low, high)`` of index keys; ``high=None`` is unbounded."""

    index: str
    low: bytes
    high: bytes | None

    def contains(self, key: bytes) -> bool:
        return key >= self.low and (self.high is None or key < self.high)


@dataclass(slots=True)
class ReadSet:
    """What a transaction observed: documents read by id and index ranges scanned.

    ``ids`` also holds ids that were looked up and not found, so a later
    insert of that id (impossible with random ids, but cheap to cover) or a
    delete both count as conflicts.
    """

    ids: set[str] = field(default_factory=set)
    ranges: list[KeyRange] = field(default_factory=list)


@dataclass(slots=True)  # not frozen: frozen construction costs 3x, and this is per write
class Write:
    """One document change of a transaction: ``old`` is None for an insert, ``new`` for a delete."""

    id: str
    table: str
    old: Document | None
    new: Document | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A pinned point in the commit history; release it with :meth:`Store.release`.

    ``base`` is set on a speculative snapshot (see :meth:`Store.snapshot`):
    the last durable commit when it was taken, ``ts`` being the last commit
    accepted, durable or not.
    """

    ts: int
    base: int | None = None

    @property
    def durable(self) -> int:
        """The last durable commit when it was taken: what it pins, and where
        the commits it may need overlaid start."""
        return self.ts if self.base is None else self.base


class ConflictError(ConvexpyError):
    """A commit found that data it read was changed by a concurrent commit.

    Internal: the runtime retries the transaction; callers see
    ``OptimisticConcurrencyError`` only once retries are exhausted.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        super().__init__(f"conflict on table {table!r}")


class Store(ABC):
    """A transactional document store. See the module docstring for the contract.

    ``health`` tracks whether writes are failing (see :mod:`.health`):
    transactions report each commit's outcome to it, and a store reports
    faults it knows of itself, such as a writer it cannot restart.
    """

    def __init__(self) -> None:
        self.health = StoreHealth()

    @abstractmethod
    async def open(self) -> None:
        """Open the store (create files and tables if needed)."""

    @abstractmethod
    async def close(self) -> None:
        """Finish in-flight commits and release every resource. Idempotent."""

    @abstractmethod
    async def configure_indexes(self, indexes: Iterable[IndexDef]) -> None:
        """Declare the full set of indexes beyond ``by_creation_time``.

        New indexes are built (backfilled) from the existing documents before
        this returns; indexes no longer declared are dropped. ``by_creation_time``
        exists for every table without being declared.
        """

    @abstractmethod
    def indexes_of(self, table: str) -> Mapping[str, IndexDef]:
        """The indexes of ``table`` by name, ``by_creation_time`` included."""

    @abstractmethod
    def snapshot(self, *, speculative: bool = False) -> Snapshot:
        """Pin the latest committed state for reading.

        A ``speculative`` snapshot also sees commits that were accepted but
        are not durable yet. Only a transaction whose own commit is ordered
        after them may read one (the scheduler's mutation jobs): the store
        fails its commit if one of those it saw fails to be written, so
        nothing it did outlives what it read. A store whose commits are
        durable as soon as they are accepted (the memory store; a database
        server) has no such gap and returns a plain snapshot, except while
        a commit's ``on_accepted`` runs: the memory store applies the commit
        right after it, and a snapshot taken inside it sees the commit.
        """

    @abstractmethod
    def release(self, snapshot: Snapshot) -> None:
        """Tell the store a snapshot will not be read any more."""

    @abstractmethod
    async def get(self, snapshot: Snapshot, doc_id: str) -> Document | None:
        """The document with ``doc_id`` as of ``snapshot``, or None."""

    async def get_many(self, snapshot: Snapshot, doc_ids: list[str]) -> dict[str, Document | None]:
        """Several documents as of ``snapshot`` (stores override this to batch)."""
        return {doc_id: await self.get(snapshot, doc_id) for doc_id in doc_ids}

    @abstractmethod
    async def scan(
        self,
        snapshot: Snapshot,
        key_range: KeyRange,
        order: Order,
        limit: int,
    ) -> list[tuple[bytes, Document]]:
        """Up to ``limit`` ``(key, document)`` pairs of an index range, in key order.

        ``order="desc"`` returns the highest keys first.
        """

    @abstractmethod
    async def commit(
        self,
        snapshot: Snapshot,
        reads: ReadSet,
        writes: list[Write],
        on_accepted: Callable[[], None] | None = None,
    ) -> int:
        """Validate ``reads`` against later commits, then apply ``writes`` atomically.

        ``on_accepted`` is called once the commit is validated and ordered,
        before it is durable: from then on speculative snapshots see it (a
        store that cannot tell the two calls it when the commit is durable).

        Returns the commit's timestamp. Raises :class:`ConflictError` (and
        writes nothing) on a conflict. ``old`` of each write must be the
        document as read in ``snapshot``; every written id must be in
        ``reads.ids``. When this returns, the commit is visible to new
        snapshots and, for durable stores, on disk.
        """

    @abstractmethod
    def creation_time(self, table: str, now_ms: float) -> float:
        """A ``_creationTime`` for a new document: ``>= now_ms`` and strictly
        greater than every one handed out before for ``table``."""

    @abstractmethod
    async def prepare_table(self, table: str) -> None:
        """Load what :meth:`creation_time` needs for ``table`` (idempotent, cheap)."""

    @abstractmethod
    async def tables(self) -> list[str]:
        """Names of the tables that hold or held documents."""
