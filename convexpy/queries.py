"""Queries: ``ctx.db.query(table)`` and its index ranges, filters and pages.

A :class:`Query` is lazy: ``with_index``, ``filter`` and ``order`` return new
queries, and nothing is read until a terminal method (``collect``, ``take``,
``first``, ``unique``, ``paginate``, ``async for``). Reads go through the
transaction, so they see its snapshot and its own writes, and join its read
set: an index range read this way conflicts with any later write inside it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidValueError
from .store.base import BY_ID, Document, IndexDef, KeyRange
from .store.keys import encode_prefix, prefix_successor
from .unawaited import CallTracker, track
from .values import check_value, copy_value

if TYPE_CHECKING:
    from .db import Transaction

__all__ = ["TO_THE_END", "IndexRangeBuilder", "Journal", "Order", "Query"]

Order = Literal["asc", "desc"]


class IndexRangeBuilder:
    """The ``lambda r: r.eq(...).gt(...)`` argument of ``with_index``.

    Equalities come first, on the index's fields in order; then at most one
    lower bound (``gt``/``gte``) and one upper bound (``lt``/``lte``) on the
    next field.
    """

    def __init__(self, index: IndexDef) -> None:
        self._index = index
        self._fields = (*index.fields, "_creationTime")
        self._equal: list[object] = []
        self._bound_field: str | None = None
        self._lower: tuple[object, bool] | None = None
        self._upper: tuple[object, bool] | None = None

    def _next_field(self, field: str, op: str) -> None:
        position = len(self._equal)
        if self._bound_field is not None and field != self._bound_field:
            raise ValueError(
                f"index range on {self._index.key}: {op}({field!r}) after a range on "
                f"{self._bound_field!r}; only one field can have a range, after the eq() fields"
            )
        if self._bound_field is None and (
            position >= len(self._fields) or self._fields[position] != field
        ):
            expected = self._fields[position] if position < len(self._fields) else None
            raise ValueError(
                f"index range on {self._index.key} (fields {list(self._fields)}): "
                f"{op}({field!r}) must name the next index field, "
                + (f"{expected!r}" if expected else "but all fields are used")
            )

    def eq(self, field: str, value: object) -> IndexRangeBuilder:
        if self._bound_field is not None:
            raise ValueError(f"index range on {self._index.key}: eq() must come before gt/lt")
        self._next_field(field, "eq")
        self._equal.append(_indexable(value))
        return self

    def _bound(self, field: str, value: object, op: str) -> IndexRangeBuilder:
        self._next_field(field, op)
        self._bound_field = field
        lower = op in ("gt", "gte")
        if (self._lower if lower else self._upper) is not None:
            raise ValueError(
                f"index range on {self._index.key}: two {'lower' if lower else 'upper'} bounds"
            )
        bound = (_indexable(value), op in ("gte", "lte"))
        if lower:
            self._lower = bound
        else:
            self._upper = bound
        return self

    def gt(self, field: str, value: object) -> IndexRangeBuilder:
        return self._bound(field, value, "gt")

    def gte(self, field: str, value: object) -> IndexRangeBuilder:
        return self._bound(field, value, "gte")

    def lt(self, field: str, value: object) -> IndexRangeBuilder:
        return self._bound(field, value, "lt")

    def lte(self, field: str, value: object) -> IndexRangeBuilder:
        return self._bound(field, value, "lte")

    def key_range(self) -> KeyRange:
        prefix = encode_prefix(self._equal)
        low, high = prefix, prefix_successor(prefix)
        if self._lower is not None:
            value, inclusive = self._lower
            key = prefix + encode_prefix([value])
            low = key if inclusive else (prefix_successor(key) or key)
        if self._upper is not None:
            value, inclusive = self._upper
            key = prefix + encode_prefix([value])
            high = prefix_successor(key) if inclusive else key
        return KeyRange(self._index.key, low, high)


def _indexable(value: object) -> object:
    check_value(value)
    return value


class Query:
    """A lazy query over one table; nothing runs until a terminal method.

    Terminal calls are recorded in ``calls`` (default: the transaction's), to
    find those never awaited.
    """

    def __init__(self, txn: Transaction, table: str, calls: CallTracker | None = None) -> None:
        self._txn = txn
        self._calls = txn.calls if calls is None else calls
        self._table = table
        self._index = IndexDef.by_creation_time(table)
        self._range: KeyRange | None = None
        self._filters: list[Callable[[Document], object]] = []
        self._order: Order = "asc"
        self._index_set = False
        self._order_set = False

    def _copy(self) -> Query:
        other = Query(self._txn, self._table, self._calls)
        other.__dict__.update(self.__dict__)
        other._filters = list(self._filters)
        return other

    def with_index(
        self, name: str, range_fn: Callable[[IndexRangeBuilder], IndexRangeBuilder] | None = None
    ) -> Query:
        if self._index_set:
            raise ValueError("with_index() can only be called once per query")
        indexes = self._txn.store.indexes_of(self._table)
        if name == BY_ID:
            raise ValueError("use ctx.db.get(id) to read by id")
        index = indexes.get(name)
        if index is None:
            known = ", ".join(sorted(indexes))
            raise ValueError(f"table {self._table!r} has no index {name!r} (indexes: {known})")
        query = self._copy()
        query._index = index
        query._index_set = True
        if range_fn is not None:
            builder = range_fn(IndexRangeBuilder(index))
            if not isinstance(builder, IndexRangeBuilder):
                raise TypeError(
                    "the with_index range function must return the builder it was given"
                )
            query._range = builder.key_range()
        return query

    def filter(self, predicate: Callable[[Document], object]) -> Query:
        if not callable(predicate):
            raise TypeError("filter() takes a function of the document")
        query = self._copy()
        query._filters.append(predicate)
        return query

    def order(self, order: Order) -> Query:
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        if self._order_set:
            raise ValueError("order() can only be called once per query")
        query = self._copy()
        query._order = order
        query._order_set = True
        return query

    @property
    def _label(self) -> str:
        reader = "ctx.db.system" if self._table.startswith("_") else "ctx.db"
        return f"{reader}.query({json.dumps(self._table)})"

    def _full_range(self) -> KeyRange:
        return self._range or KeyRange(self._index.key, b"", None)

    async def _rows(
        self, key_range: KeyRange, limit: int | None
    ) -> AsyncIterator[tuple[bytes, Document]]:
        """Matching rows in order; pages through the index in growing chunks."""
        chunk = 16 if limit is None else max(1, min(limit, 1024))
        remaining = key_range
        produced = 0
        while True:
            rows = await self._txn.scan(self._index, remaining, self._order, chunk)
            for key, doc in rows:
                if all(predicate(doc) for predicate in self._filters):
                    yield key, doc
                    produced += 1
                    if limit is not None and produced >= limit:
                        return
            if len(rows) < chunk:
                return
            last = rows[-1][0]
            if self._order == "asc":
                remaining = KeyRange(remaining.index, last + b"\x00", remaining.high)
            else:
                remaining = KeyRange(remaining.index, remaining.low, last)
            chunk = min(chunk * 4, 1024)

    def collect(self) -> Coroutine[Any, Any, list[Document]]:
        """Every matching document, in order."""
        return track(self, "collect", self._collect())

    def take(self, n: int) -> Coroutine[Any, Any, list[Document]]:
        """The first ``n`` matching documents."""
        return track(self, "take", self._take(n))

    def first(self) -> Coroutine[Any, Any, Document | None]:
        """The first matching document, or None."""
        return track(self, "first", self._first())

    def unique(self) -> Coroutine[Any, Any, Document | None]:
        """The only matching document, or None; more than one raises ``ValueError``."""
        return track(self, "unique", self._unique())

    def paginate(self, options: Mapping[str, Any]) -> Coroutine[Any, Any, dict[str, Any]]:
        """One page: ``{"page", "isDone", "continueCursor"}``.

        Cursors are stable: they encode the last key returned, so documents
        inserted or deleted between pages neither repeat nor disappear.
        """
        return track(self, "paginate", self._paginate(options))

    async def _collect(self) -> list[Document]:
        return [copy_value(doc) async for _, doc in self._rows(self._full_range(), None)]

    async def _take(self, n: int) -> list[Document]:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"take() needs a non-negative integer, got {n!r}")
        if n == 0:
            return []
        return [copy_value(doc) async for _, doc in self._rows(self._full_range(), n)]

    async def _first(self) -> Document | None:
        docs = await self._take(1)
        return docs[0] if docs else None

    async def _unique(self) -> Document | None:
        docs = await self._take(2)
        if len(docs) > 1:
            raise ValueError(
                f"unique() found more than one document in {self._table!r}: "
                f"{docs[0]['_id']!r} and {docs[1]['_id']!r}"
            )
        return docs[0] if docs else None

    async def _paginate(self, options: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(options, Mapping):
            raise TypeError("paginate() takes {'numItems': int, 'cursor': str | None}")
        num = options.get("numItems")
        if not isinstance(num, int | float) or isinstance(num, bool) or not 1 <= num <= 2**31:
            raise ValueError(f"paginate(): numItems must be a positive integer, got {num!r}")
        if num != int(num):
            raise ValueError(f"paginate(): numItems must be a positive integer, got {num!r}")
        num = int(num)
        full = self._full_range()
        key_range = full
        cursor = options.get("cursor")
        last = None if cursor is None else _decode_cursor(cursor, full.index)
        if last:  # b"" is the cursor of an empty first page: start over
            key_range = self._after(key_range, last)
        txn = self._txn
        journal = txn.journal if txn.journal is not None and not txn.journal.used else None
        end_cursor = options.get("endCursor")
        if end_cursor is None and journal is not None:
            end_cursor = journal.end_cursor  # a live query's page keeps its end
        if end_cursor is None:
            page = await self._page_of(key_range, num)
        elif end_cursor == TO_THE_END:
            page = await self._page_to(key_range, None)
        else:
            page = await self._page_to(key_range, _decode_cursor(end_cursor, full.index))
        if isinstance(end_cursor, str) and end_cursor != TO_THE_END:
            continue_cursor = end_cursor  # the page ends there, documents or not
        elif page.last_key is not None:
            continue_cursor = _encode_cursor(full.index, page.last_key)
        elif isinstance(cursor, str):
            continue_cursor = cursor
        else:
            continue_cursor = _encode_cursor(full.index, b"")
        if journal is not None:
            # The last page reaches the end of the range, whatever lands there later.
            journal.used = True
            journal.end_cursor = TO_THE_END if page.done else continue_cursor
        return {"page": list(page), "isDone": page.done, "continueCursor": continue_cursor}

    def _after(self, key_range: KeyRange, key: bytes) -> KeyRange:
        """The part of ``key_range`` past ``key`` in this query's order."""
        if self._order == "asc":
            return KeyRange(key_range.index, max(key_range.low, key + b"\x00"), key_range.high)
        high = key if key_range.high is None else min(key_range.high, key)
        return KeyRange(key_range.index, key_range.low, high)

    async def _page_of(self, key_range: KeyRange, num: int) -> _Page:
        """Up to ``num`` documents, and whether that was all of them."""
        page = _Page()
        async for key, doc in self._rows(key_range, num + 1):
            if len(page) == num:
                return page
            page.append(copy_value(doc))
            page.last_key = key
        page.done = True
        return page

    async def _page_to(self, key_range: KeyRange, end: bytes | None) -> _Page:
        """Every document up to the one at ``end`` (included; None: to the end of
        the range), and whether none comes after it."""
        upto = key_range
        if end is not None and self._order == "asc":
            high = end + b"\x00" if key_range.high is None else min(key_range.high, end + b"\x00")
            upto = KeyRange(key_range.index, key_range.low, high)
        elif end is not None:
            upto = KeyRange(key_range.index, max(key_range.low, end), key_range.high)
        page = _Page()
        async for key, doc in self._rows(upto, None):
            page.append(copy_value(doc))
            page.last_key = key
        if end is None:
            page.done = True
        else:
            beyond = self._after(key_range, end) if end else key_range
            page.done = not [row async for row in self._rows(beyond, 1)]
        return page

    def __aiter__(self) -> AsyncIterator[Document]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Document]:
        async for _, doc in self._rows(self._full_range(), None):
            yield copy_value(doc)


TO_THE_END = "end"
"""A journal's end for a page that reached the end of its range (no cursor
is 3 characters long, so none is mistaken for it)."""


class Journal:
    """What a live query's run decided and its next runs keep: the end of its
    page (Convex's query journal). Handed to a transaction by the live
    queries; the first ``paginate`` of a run reads and records it."""

    __slots__ = ("end_cursor", "used")

    def __init__(self, end_cursor: str | None = None) -> None:
        self.end_cursor = end_cursor
        self.used = False


class _Page(list[Document]):
    """A page being read: its documents, the key of the last, whether it ends the range."""

    last_key: bytes | None = None
    done = False


def _encode_cursor(index: str, key: bytes) -> str:
    return base64.urlsafe_b64encode(index.encode() + b"\x00" + key).decode("ascii")


def _decode_cursor(cursor: object, index: str) -> bytes:
    try:
        if not isinstance(cursor, str):
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor.encode("ascii"))
        name, _, key = raw.partition(b"\x00")
        if name.decode() != index:
            raise ValueError
    except ValueError:
        raise InvalidValueError(
            f"paginate(): cursor {cursor!r} is not a cursor of this query"
        ) from None
    return key
