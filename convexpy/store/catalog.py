"""What every store keeps in its process beside the data: the indexes the app
declared, and the last ``_creationTime`` handed out per table.

:class:`CatalogStore` implements the parts of the port that only read or
update these (``indexes_of``, ``creation_time``, ``prepare_table``), for the
embedded stores and the PostgreSQL store alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from .base import Store
from .types import BY_CREATION_TIME, IndexDef, KeyRange

__all__ = ["CatalogStore", "declared_by_table"]


def declared_by_table(indexes: Iterable[IndexDef]) -> dict[str, dict[str, IndexDef]]:
    """``indexes`` by table and name, as ``configure_indexes`` takes them;
    ``by_creation_time`` is refused (it is implied)."""
    declared: dict[str, dict[str, IndexDef]] = {}
    for index in indexes:
        if index.name == BY_CREATION_TIME:
            raise ValueError(f"index name {BY_CREATION_TIME!r} is reserved")
        declared.setdefault(index.table, {})[index.name] = index
    return declared


class CatalogStore(Store):
    """A store's declared indexes and creation times (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._declared: dict[str, dict[str, IndexDef]] = {}
        """The declared indexes, by table and name."""
        self._index_by_key: dict[str, IndexDef] = {}
        """The declared indexes by key, and the ``by_creation_time`` ones asked for."""
        self._last_creation: dict[str, float] = {}

    def _declare(self, declared: dict[str, dict[str, IndexDef]]) -> None:
        """Make ``declared`` (see :func:`declared_by_table`) the declared set."""
        self._declared = declared
        self._index_by_key = {i.key: i for t in declared.values() for i in t.values()}

    def indexes_of(self, table: str) -> Mapping[str, IndexDef]:
        indexes = {BY_CREATION_TIME: IndexDef.by_creation_time(table)}
        indexes.update(self._declared.get(table, {}))
        return MappingProxyType(indexes)

    def _index(self, key: str) -> IndexDef:
        """The declared index ``key`` (or a ``by_creation_time`` one); KeyError if none."""
        index = self._index_by_key.get(key)
        if index is None:
            table, _, name = key.rpartition(".")
            if name != BY_CREATION_TIME:
                raise KeyError(f"unknown index {key!r}")
            index = IndexDef.by_creation_time(table)
            self._index_by_key[key] = index
        return index

    async def prepare_table(self, table: str) -> None:
        if table in self._last_creation:
            return
        snapshot = self.snapshot()
        try:
            rows = await self.scan(
                snapshot,
                KeyRange(IndexDef.by_creation_time(table).key, b"", None),
                "desc",
                1,
            )
        finally:
            self.release(snapshot)
        last = rows[0][1]["_creationTime"] if rows else 0.0
        self._last_creation.setdefault(table, last)

    def creation_time(self, table: str, now_ms: float) -> float:
        last = self._last_creation.get(table, 0.0)
        value = now_ms if now_ms > last else math.nextafter(last, math.inf)
        self._last_creation[table] = value
        return value
