"""The data types of the storage port: documents, indexes, key ranges,
read sets, writes, snapshots and the conflict error.

The types made per transaction, scan or write (key ranges, read sets,
writes, snapshots) are msgspec structs: built in C, several times cheaper
than a dataclass. Those that only refer to data are not tracked by the
garbage collector (``gc=False``): they can be part of no reference cycle.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from ..errors import ConvexpyError

__all__ = [
    "BY_CREATION_TIME",
    "BY_ID",
    "ConflictError",
    "Document",
    "IndexDef",
    "KeyRange",
    "Order",
    "ReadSet",
    "Snapshot",
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
    @functools.lru_cache(maxsize=1024)  # every query starts from it: made once per table
    def by_creation_time(table: str) -> IndexDef:
        return IndexDef(table, BY_CREATION_TIME, ())

    def spec(self) -> str:
        """The definition beyond its name, as JSON (how durable stores keep it)."""
        spec: dict[str, Any] = {"fields": list(self.fields), "sparse": self.sparse}
        if self.where is not None:
            spec["where"] = [self.where[0], list(self.where[1])]
        return json.dumps(spec)

    @staticmethod
    def from_spec(key: str, table: str, spec: str) -> IndexDef:
        """The index ``key`` (``"table.name"``) of ``table`` as :meth:`spec` wrote it."""
        parsed = json.loads(spec)
        if isinstance(parsed, list):  # written before sparse indexes existed
            parsed = {"fields": parsed, "sparse": False}
        where = parsed.get("where")
        return IndexDef(
            table,
            key.rpartition(".")[2],
            tuple(parsed["fields"]),
            parsed["sparse"],
            None if where is None else (where[0], tuple(where[1])),
        )


class KeyRange(msgspec.Struct, frozen=True, gc=False):
    """The half-open byte range ``[low, high)`` of index keys; ``high=None`` is unbounded."""

    index: str
    low: bytes
    high: bytes | None

    def contains(self, key: bytes) -> bool:
        return key >= self.low and (self.high is None or key < self.high)


class ReadSet(msgspec.Struct):
    """What a transaction observed: documents read by id and index ranges scanned.

    ``ids`` also holds ids that were looked up and not found, so a later
    insert of that id (impossible with random ids, but cheap to cover) or a
    delete both count as conflicts.
    """

    ids: set[str] = msgspec.field(default_factory=set)
    ranges: list[KeyRange] = msgspec.field(default_factory=list)


class Write(msgspec.Struct, gc=False):
    """One document change of a transaction: ``old`` is None for an insert, ``new`` for a delete."""

    id: str
    table: str
    old: Document | None
    new: Document | None


class Snapshot(msgspec.Struct, frozen=True, gc=False):
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
