"""``ctx.db``: transactions, the database reader and writer, and queries.

A :class:`Transaction` is one attempt of a query or mutation: a pinned store
snapshot, the read set it builds up, and its pending writes. Reads see the
snapshot plus the transaction's own writes. :class:`DatabaseReader` and
:class:`DatabaseWriter` are what handlers get as ``ctx.db``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .errors import (
    CommitFailedError,
    DocumentNotFoundError,
    InvalidIdError,
    InvalidValueError,
    ReadOnlyError,
)
from .ids import decode_id, new_id, table_number
from .store.base import BY_ID, ConflictError, Document, IndexDef, KeyRange, ReadSet, Store, Write
from .store.engine import overlay_scan
from .store.keys import encode_prefix, prefix_successor
from .values import check_document

if TYPE_CHECKING:
    from .schema import Schema

__all__ = [
    "DatabaseReader",
    "DatabaseWriter",
    "IndexRangeBuilder",
    "Query",
    "SystemReader",
    "TableNames",
    "Transaction",
]

Order = Literal["asc", "desc"]

_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def copy_value(value: Any) -> Any:
    """A deep copy of a Convex value (only containers need copying)."""
    if isinstance(value, dict):
        return {key: copy_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_value(item) for item in value]
    return value


def check_table_name(table: object, *, system: bool = False) -> str:
    if not isinstance(table, str):
        raise InvalidValueError(f"table name must be a string, got {type(table).__name__}")
    if system:
        if not (table.startswith("_") and _TABLE_NAME.fullmatch(table[1:])):
            raise InvalidValueError(f"{table!r} is not a system table name")
        return table
    if table.startswith("_"):
        raise InvalidValueError(
            f"table {table!r} is a system table name: system tables are read with "
            "ctx.db.system and written only by convexpy"
        )
    if not _TABLE_NAME.fullmatch(table):
        raise InvalidValueError(
            f"invalid table name {table!r}: use 1-64 ASCII letters, digits and "
            "underscores, starting with a letter"
        )
    return table


class TableNames:
    """Maps the table numbers inside ids back to table names.

    Numbers are derived from names, so this only needs to have seen a name
    once: schema tables, system tables, tables in the store, and every table a
    transaction inserts into.
    """

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._known: set[str] = set()

    def add(self, table: str) -> None:
        if table in self._known:
            return
        number = table_number(table)
        other = self._names.get(number)
        if other is not None and other != table:
            raise InvalidValueError(
                f"table names {other!r} and {table!r} hash to the same table number, so their "
                "ids would be indistinguishable; rename one of them"
            )
        self._names[number] = table
        self._known.add(table)

    def of_id(self, doc_id: object) -> str | None:
        """The table of a well-formed id (None if no such table was seen).

        Raises :class:`InvalidIdError` for a malformed id.
        """
        number, _ = decode_id(doc_id)
        return self._names.get(number)


class Transaction:
    """One attempt of a query or mutation against a store snapshot."""

    def __init__(
        self,
        store: Store,
        *,
        now: Callable[[], float],
        tables: TableNames,
        schema: Schema | None = None,
        writable: bool,
    ) -> None:
        self.store = store
        self.snapshot = store.snapshot()
        self.reads = ReadSet()
        self.writes: dict[str, Write] = {}
        self.writable = writable
        self.now = now
        self.table_names = tables
        self.schema = schema
        self._released = False
        self._cache: dict[str, Document | None] = {}
        """Snapshot versions already read (the snapshot never changes)."""
        self._undo: list[tuple[str, Write | None]] = []
        """Previous write of each id written, for :meth:`rollback_to`."""

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.store.release(self.snapshot)

    async def commit(self) -> int:
        """Commit the writes (raises ``ConflictError`` if the reads went stale)."""
        writes = [w for w in self.writes.values() if w.old is not None or w.new is not None]
        try:
            return await self.store.commit(self.snapshot, self.reads, writes)
        except ConflictError:
            raise
        except Exception as exc:
            raise CommitFailedError(f"the store failed to commit: {exc}") from exc
        finally:
            self.release()

    # -- reads ---------------------------------------------------------------

    async def get(self, doc_id: str) -> Document | None:
        """The document as this transaction sees it (not a copy: do not mutate)."""
        write = self.writes.get(doc_id)
        if write is not None:
            return write.new
        self.reads.ids.add(doc_id)
        if doc_id in self._cache:
            return self._cache[doc_id]
        doc = await self.store.get(self.snapshot, doc_id)
        self._cache[doc_id] = doc
        return doc

    async def prefetch(self, doc_ids: list[str]) -> None:
        """Read several documents in one store round trip (they join the read
        set only when :meth:`get` asks for them)."""
        missing = [i for i in doc_ids if i not in self._cache and i not in self.writes]
        if missing:
            self._cache.update(await self.store.get_many(self.snapshot, missing))

    # -- savepoints ------------------------------------------------------------

    def savepoint(self) -> int:
        """A mark to :meth:`rollback_to`: undoes the writes made after it
        (reads stay in the read set, which only makes conflicts more likely)."""
        return len(self._undo)

    def rollback_to(self, mark: int) -> None:
        undo = self._undo
        while len(undo) > mark:
            doc_id, previous = undo.pop()
            if previous is None:
                self.writes.pop(doc_id, None)
            else:
                self.writes[doc_id] = previous

    async def scan(
        self, index: IndexDef, key_range: KeyRange, order: Order, limit: int
    ) -> list[tuple[bytes, Document]]:
        """Index rows as this transaction sees them; records the range read."""
        own = {w.id: w.new for w in self.writes.values() if w.table == index.table}
        if own:
            rows = await overlay_scan(
                lambda r, o, n: self.store.scan(self.snapshot, r, o, n),
                lambda: own,
                index,
                key_range,
                order,
                limit,
            )
        else:
            rows = await self.store.scan(self.snapshot, key_range, order, limit)
        if len(rows) < limit:
            self.reads.ranges.append(key_range)
        elif order == "asc":
            self.reads.ranges.append(
                KeyRange(key_range.index, key_range.low, rows[-1][0] + b"\x00")
            )
        else:
            self.reads.ranges.append(KeyRange(key_range.index, rows[-1][0], key_range.high))
        return rows

    # -- writes --------------------------------------------------------------

    def _record(
        self, table: str, doc_id: str, current: Document | None, new: Document | None
    ) -> None:
        # ``old`` stays the version in the snapshot, however often we write.
        previous = self.writes.get(doc_id)
        self._undo.append((doc_id, previous))
        old = previous.old if previous is not None else current
        if old is None and new is None:
            self.writes.pop(doc_id, None)
        else:
            self.writes[doc_id] = Write(doc_id, table, old, new)

    async def insert(self, table: str, fields: Document) -> str:
        """Insert ``fields`` (already validated) as a new document of ``table``."""
        await self.store.prepare_table(table)
        self.table_names.add(table)
        doc_id = new_id(table)
        doc = {"_id": doc_id, "_creationTime": self.store.creation_time(table, self.now())}
        doc.update(fields)
        self._record(table, doc_id, None, doc)
        return doc_id

    async def existing(self, doc_id: str, verb: str) -> tuple[str, Document]:
        """The table and current version of a document that must exist."""
        table = self.table_names.of_id(doc_id)
        doc = await self.get(doc_id) if table is not None else None
        if doc is None or table is None:
            raise DocumentNotFoundError(f"cannot {verb} document {doc_id!r}: it does not exist")
        return table, doc

    def put(self, table: str, current: Document, new: Document | None) -> None:
        """Replace (or with ``new=None`` delete) a document read through :meth:`existing`."""
        self._record(table, current["_id"], current, new)


def _user_fields(value: object, what: str) -> Document:
    if not isinstance(value, dict):
        raise InvalidValueError(f"{what} expects a dict of fields, got {type(value).__name__}")
    check_document(value)
    fields: Document = copy_value(value)
    return fields


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
    from .values import check_value

    check_value(value)
    return value


class Query:
    """A lazy query over one table; nothing runs until a terminal method."""

    def __init__(self, txn: Transaction, table: str) -> None:
        self._txn = txn
        self._table = table
        self._index = IndexDef.by_creation_time(table)
        self._range: KeyRange | None = None
        self._filters: list[Callable[[Document], object]] = []
        self._order: Order = "asc"
        self._index_set = False
        self._order_set = False

    def _copy(self) -> Query:
        other = Query(self._txn, self._table)
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

    async def collect(self) -> list[Document]:
        return [copy_value(doc) async for _, doc in self._rows(self._full_range(), None)]

    async def take(self, n: int) -> list[Document]:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"take() needs a non-negative integer, got {n!r}")
        if n == 0:
            return []
        return [copy_value(doc) async for _, doc in self._rows(self._full_range(), n)]

    async def first(self) -> Document | None:
        docs = await self.take(1)
        return docs[0] if docs else None

    async def unique(self) -> Document | None:
        docs = await self.take(2)
        if len(docs) > 1:
            raise ValueError(
                f"unique() found more than one document in {self._table!r}: "
                f"{docs[0]['_id']!r} and {docs[1]['_id']!r}"
            )
        return docs[0] if docs else None

    async def paginate(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """One page: ``{"page", "isDone", "continueCursor"}``.

        Cursors are stable: they encode the last key returned, so documents
        inserted or deleted between pages neither repeat nor disappear.
        """
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
            if self._order == "asc":
                key_range = KeyRange(full.index, max(full.low, last + b"\x00"), full.high)
            else:
                high = last if full.high is None else min(full.high, last)
                key_range = KeyRange(full.index, full.low, high)
        page: list[Document] = []
        last_key: bytes | None = None
        more = False
        async for key, doc in self._rows(key_range, num + 1):
            if len(page) == num:
                more = True
                break
            page.append(copy_value(doc))
            last_key = key
        if last_key is not None:
            continue_cursor = _encode_cursor(full.index, last_key)
        elif isinstance(cursor, str):
            continue_cursor = cursor
        else:
            continue_cursor = _encode_cursor(full.index, b"")
        return {"page": page, "isDone": not more, "continueCursor": continue_cursor}

    def __aiter__(self) -> AsyncIterator[Document]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Document]:
        async for _, doc in self._rows(self._full_range(), None):
            yield copy_value(doc)


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


class DatabaseReader:
    """``ctx.db`` in a query: reads only.

    ``allow_system_reads`` (the test harness's ``t.run``) lets ``get`` and
    ``query`` read system tables directly.
    """

    def __init__(self, txn: Transaction, *, allow_system_reads: bool = False) -> None:
        self._txn = txn
        self._system_reads = allow_system_reads

    def _user_table(self, table: object) -> str:
        if self._system_reads and isinstance(table, str) and table.startswith("_"):
            return check_table_name(table, system=True)
        return check_table_name(table)

    async def get(self, doc_id: str) -> Document | None:
        """The document with ``doc_id``, or None (a malformed id raises InvalidIdError)."""
        table = self._txn.table_names.of_id(doc_id)
        if table is not None and table.startswith("_") and not self._system_reads:
            raise InvalidIdError(
                f"{doc_id!r} is an id of the system table {table!r}: read it with ctx.db.system.get"
            )
        if table is None:
            return None
        doc = await self._txn.get(doc_id)
        return None if doc is None else copy_value(doc)

    def query(self, table: str) -> Query:
        return Query(self._txn, self._user_table(table))

    def normalize_id(self, table: str, doc_id: str) -> str | None:
        """``doc_id`` if it is a well-formed id of ``table``, else None."""
        try:
            number, _ = decode_id(doc_id)
        except InvalidIdError:
            return None
        return doc_id if number == table_number(table) else None

    @property
    def system(self) -> SystemReader:
        return SystemReader(self._txn)

    async def insert(self, table: str, value: Document) -> str:
        raise ReadOnlyError(_read_only("insert"))

    async def patch(self, doc_id: str, value: Document) -> None:
        raise ReadOnlyError(_read_only("patch"))

    async def replace(self, doc_id: str, value: Document) -> None:
        raise ReadOnlyError(_read_only("replace"))

    async def delete(self, doc_id: str) -> None:
        raise ReadOnlyError(_read_only("delete"))


def _system_fields(doc: Document) -> Document:
    return {"_id": doc["_id"], "_creationTime": doc["_creationTime"]}


def _read_only(verb: str) -> str:
    return f"ctx.db.{verb}() is not allowed in a query: queries are read-only, use a mutation"


class SystemReader:
    """``ctx.db.system``: read-only access to ``_scheduled_functions`` and ``_cron_jobs``."""

    def __init__(self, txn: Transaction) -> None:
        self._txn = txn

    async def get(self, doc_id: str) -> Document | None:
        table = self._txn.table_names.of_id(doc_id)
        if table is None:
            return None
        if not table.startswith("_"):
            raise InvalidIdError(f"{doc_id!r} is an id of table {table!r}: use ctx.db.get")
        doc = await self._txn.get(doc_id)
        return None if doc is None else copy_value(doc)

    def query(self, table: str) -> Query:
        return Query(self._txn, check_table_name(table, system=True))


class DatabaseWriter(DatabaseReader):
    """``ctx.db`` in a mutation: reads and writes, committed together."""

    async def insert(self, table: str, value: Document) -> str:
        table = check_table_name(table)
        fields = self._validate(table, _user_fields(value, "insert"))
        return await self._txn.insert(table, fields)

    async def patch(self, doc_id: str, value: Document) -> None:
        """Shallow-merge ``value`` into the document (a ``None`` field becomes null)."""
        if not isinstance(value, dict):
            raise InvalidValueError(f"patch expects a dict of fields, got {type(value).__name__}")
        table, doc = await self._user_doc(doc_id, "patch")
        changes = dict(value)
        for system_field in ("_id", "_creationTime"):
            if system_field in changes and changes.pop(system_field) != doc[system_field]:
                raise InvalidValueError(f"patch cannot change the system field {system_field}")
        merged = {k: v for k, v in doc.items() if not k.startswith("_")}
        merged.update(_user_fields(changes, "patch"))
        check_document(merged)
        merged = self._validate(table, merged)
        self._txn.put(table, doc, {**_system_fields(doc), **merged})

    async def replace(self, doc_id: str, value: Document) -> None:
        if not isinstance(value, dict):
            raise InvalidValueError(f"replace expects a dict of fields, got {type(value).__name__}")
        table, doc = await self._user_doc(doc_id, "replace")
        fields = dict(value)
        for system_field in ("_id", "_creationTime"):
            if system_field in fields and fields.pop(system_field) != doc[system_field]:
                raise InvalidValueError(f"replace cannot change the system field {system_field}")
        fields = self._validate(table, _user_fields(fields, "replace"))
        self._txn.put(table, doc, {**_system_fields(doc), **fields})

    async def delete(self, doc_id: str) -> None:
        table, doc = await self._user_doc(doc_id, "delete")
        self._txn.put(table, doc, None)

    async def _user_doc(self, doc_id: str, verb: str) -> tuple[str, Document]:
        table = self._txn.table_names.of_id(doc_id)
        if table is not None and table.startswith("_"):
            raise ReadOnlyError(f"cannot {verb} {doc_id!r}: system tables are read-only")
        return await self._txn.existing(doc_id, verb)

    def _validate(self, table: str, fields: Document) -> Document:
        schema = self._txn.schema
        return fields if schema is None else schema.validate(table, fields)
