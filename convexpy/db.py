"""``ctx.db``: transactions and the database reader and writer.

A :class:`Transaction` is one attempt of a query or mutation: a pinned store
snapshot, the read set it builds up, and its pending writes. Reads see the
snapshot plus the transaction's own writes. :class:`DatabaseReader` and
:class:`DatabaseWriter` are what handlers get as ``ctx.db``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .errors import (
    DocumentNotFoundError,
    InvalidIdError,
    InvalidValueError,
    ReadOnlyError,
)
from .ids import decode_id, new_id, table_number
from .queries import IndexRangeBuilder, Journal, Order, Query
from .store.base import Document, IndexDef, KeyRange, ReadSet, Store, Write
from .store.engine import overlay_scan
from .store.keys import index_key_of
from .unawaited import CallTracker, track
from .values import check_document, copy_document, copy_value

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
    "copy_value",
]

_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


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
        speculative: bool = False,
    ) -> None:
        self.store = store
        self.snapshot = store.snapshot(speculative=True) if speculative else store.snapshot()
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
        self.prepared: set[str] = set()
        """Tables :meth:`prepare`-d in this transaction."""
        self.jobs_scheduled = 0
        """Jobs this transaction scheduled (Convex allows 1000)."""
        self.job_args_bytes = 0
        """The size of their arguments (Convex allows 16 MiB in all)."""
        self.journal: Journal | None = None
        """A live query's journal (see :class:`~convexpy.queries.Journal`), if it is one."""
        self.calls = CallTracker()
        """The ``ctx`` calls of the handler running in this transaction (one
        at a time: the jobs of a batch are checked one by one)."""

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.store.release(self.snapshot)
            if self.calls:  # the handler raised: close what it never awaited
                self.calls.close_unawaited()

    async def commit(self, on_accepted: Callable[[], None] | None = None) -> int:
        """Commit the writes (raises ``ConflictError`` if the reads went stale);
        ``on_accepted`` is called when the store has accepted them (see
        :meth:`~convexpy.store.base.Store.commit`)."""
        writes = [w for w in self.writes.values() if w.old is not None or w.new is not None]
        try:
            return await self.store.commit_and_report(
                self.snapshot, self.reads, writes, on_accepted
            )
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

    def get_prefetched(self, doc_id: str) -> Document | None:
        """:meth:`get` of an id :meth:`prefetch` read (or this transaction wrote)."""
        write = self.writes.get(doc_id)
        if write is not None:
            return write.new
        self.reads.ids.add(doc_id)
        return self._cache[doc_id]

    async def prefetch(self, doc_ids: list[str]) -> None:
        """Read several documents in one store round trip (they join the read
        set only when :meth:`get` asks for them)."""
        missing = [i for i in doc_ids if i not in self._cache and i not in self.writes]
        if missing:
            self._cache.update(await self.store.get_many(self.snapshot, missing))

    # -- savepoints ------------------------------------------------------------

    def savepoint(self) -> tuple[int, int, int]:
        """A mark to :meth:`rollback_to`: undoes the writes made after it, and
        forgets the jobs they scheduled (reads stay in the read set, which
        only makes conflicts more likely)."""
        return len(self._undo), self.jobs_scheduled, self.job_args_bytes

    def rollback_to(self, mark: tuple[int, int, int]) -> None:
        length, self.jobs_scheduled, self.job_args_bytes = mark
        undo = self._undo
        while len(undo) > length:
            doc_id, previous = undo.pop()
            if previous is None:
                self.writes.pop(doc_id, None)
            else:
                self.writes[doc_id] = previous

    async def scan(
        self, index: IndexDef, key_range: KeyRange, order: Order, limit: int
    ) -> list[tuple[bytes, Document]]:
        """Index rows as this transaction sees them; records the range read."""
        own = {
            w.id: (None if w.new is None else index_key_of(index, w.new), w.new)
            for w in self.writes.values()
            if w.table == index.table
        }
        if own:
            rows = await overlay_scan(
                lambda r, o, n: self.store.scan(self.snapshot, r, o, n),
                lambda: own,
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

    async def prepare(self, table: str) -> None:
        """Get ``table`` ready for :meth:`insert_prepared` in this transaction."""
        if table not in self.prepared:
            await self.store.prepare_table(table)
            self.table_names.add(table)
            self.prepared.add(table)

    async def insert(self, table: str, fields: Document) -> str:
        """Insert ``fields`` (already validated) as a new document of ``table``."""
        if table not in self.prepared:
            await self.prepare(table)
        return self.insert_prepared(table, fields)

    def insert_prepared(self, table: str, fields: Document, now: float | None = None) -> str:
        """:meth:`insert` into a table this transaction has :meth:`prepare`-d
        (``now``: the clock's time, if the caller just read it)."""
        doc_id = new_id(table)
        doc = {
            "_id": doc_id,
            "_creationTime": self.store.creation_time(table, self.now() if now is None else now),
            **fields,
        }
        # A fresh id has no earlier write to remember (what put does).
        self._undo.append((doc_id, None))
        self.writes[doc_id] = Write(doc_id, table, None, doc)
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
        doc_id = current["_id"]
        # ``old`` stays the version in the snapshot, however often we write.
        previous = self.writes.get(doc_id)
        self._undo.append((doc_id, previous))
        old = previous.old if previous is not None else current
        if old is None and new is None:
            self.writes.pop(doc_id, None)
        else:
            self.writes[doc_id] = Write(doc_id, table, old, new)


def _user_fields(value: object, what: str) -> Document:
    if not isinstance(value, dict):
        raise InvalidValueError(f"{what} expects a dict of fields, got {type(value).__name__}")
    return copy_document(value)


class DatabaseReader:
    """``ctx.db`` in a query: reads only.

    ``allow_system_reads`` (the test harness's ``t.run``) lets ``get`` and
    ``query`` read system tables directly. Calls are recorded in ``calls``
    (default: the transaction's), to find those never awaited.
    """

    _label = "ctx.db"

    def __init__(
        self,
        txn: Transaction,
        *,
        allow_system_reads: bool = False,
        calls: CallTracker | None = None,
    ) -> None:
        self._txn = txn
        self._system_reads = allow_system_reads
        self._calls = txn.calls if calls is None else calls

    def _user_table(self, table: object) -> str:
        if self._system_reads and isinstance(table, str) and table.startswith("_"):
            return check_table_name(table, system=True)
        return check_table_name(table)

    def get(self, doc_id: str) -> Coroutine[Any, Any, Document | None]:
        """The document with ``doc_id``, or None (a malformed id raises InvalidIdError)."""
        return track(self, "get", self._get(doc_id))

    def insert(self, table: str, value: Document) -> Coroutine[Any, Any, str]:
        """Insert ``value`` as a new document of ``table``; returns its id (mutations only)."""
        return track(self, "insert", self._insert(table, value))

    def patch(self, doc_id: str, value: Document) -> Coroutine[Any, Any, None]:
        """Shallow-merge ``value`` into the document (a ``None`` field becomes
        null; mutations only)."""
        return track(self, "patch", self._patch(doc_id, value))

    def replace(self, doc_id: str, value: Document) -> Coroutine[Any, Any, None]:
        """Replace the document's fields with ``value`` (mutations only)."""
        return track(self, "replace", self._replace(doc_id, value))

    def delete(self, doc_id: str) -> Coroutine[Any, Any, None]:
        """Delete the document (mutations only)."""
        return track(self, "delete", self._delete(doc_id))

    async def _get(self, doc_id: str) -> Document | None:
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
        return Query(self._txn, self._user_table(table), self._calls)

    def normalize_id(self, table: str, doc_id: str) -> str | None:
        """``doc_id`` if it is a well-formed id of ``table``, else None."""
        try:
            number, _ = decode_id(doc_id)
        except InvalidIdError:
            return None
        return doc_id if number == table_number(table) else None

    @property
    def system(self) -> SystemReader:
        return SystemReader(self._txn, self._calls)

    async def _insert(self, table: str, value: Document) -> str:
        raise ReadOnlyError(_read_only("insert"))

    async def _patch(self, doc_id: str, value: Document) -> None:
        raise ReadOnlyError(_read_only("patch"))

    async def _replace(self, doc_id: str, value: Document) -> None:
        raise ReadOnlyError(_read_only("replace"))

    async def _delete(self, doc_id: str) -> None:
        raise ReadOnlyError(_read_only("delete"))


def _system_fields(doc: Document) -> Document:
    return {"_id": doc["_id"], "_creationTime": doc["_creationTime"]}


def _read_only(verb: str) -> str:
    return f"ctx.db.{verb}() is not allowed in a query: queries are read-only, use a mutation"


class SystemReader:
    """``ctx.db.system``: read-only access to ``_scheduled_functions`` and ``_cron_jobs``."""

    _label = "ctx.db.system"

    def __init__(self, txn: Transaction, calls: CallTracker | None = None) -> None:
        self._txn = txn
        self._calls = txn.calls if calls is None else calls

    def get(self, doc_id: str) -> Coroutine[Any, Any, Document | None]:
        """The system document with ``doc_id``, or None."""
        return track(self, "get", self._get(doc_id))

    async def _get(self, doc_id: str) -> Document | None:
        table = self._txn.table_names.of_id(doc_id)
        if table is None:
            return None
        if not table.startswith("_"):
            raise InvalidIdError(f"{doc_id!r} is an id of table {table!r}: use ctx.db.get")
        doc = await self._txn.get(doc_id)
        return None if doc is None else copy_value(doc)

    def query(self, table: str) -> Query:
        return Query(self._txn, check_table_name(table, system=True), self._calls)


class DatabaseWriter(DatabaseReader):
    """``ctx.db`` in a mutation: reads and writes, committed together."""

    async def _insert(self, table: str, value: Document) -> str:
        table = check_table_name(table)
        fields = self._validate(table, _user_fields(value, "insert"))
        txn = self._txn
        if table not in txn.prepared:
            await txn.prepare(table)
        return txn.insert_prepared(table, fields)

    async def _patch(self, doc_id: str, value: Document) -> None:
        table, doc, changes = await self._user_change(doc_id, value, "patch")
        merged = {k: v for k, v in doc.items() if not k.startswith("_")}
        merged.update(copy_value(changes))
        check_document(merged)  # the merge as a whole: names, nesting, size
        merged = self._validate(table, merged)
        self._txn.put(table, doc, {**_system_fields(doc), **merged})

    async def _replace(self, doc_id: str, value: Document) -> None:
        table, doc, fields = await self._user_change(doc_id, value, "replace")
        fields = self._validate(table, _user_fields(fields, "replace"))
        self._txn.put(table, doc, {**_system_fields(doc), **fields})

    async def _user_change(
        self, doc_id: str, value: object, verb: str
    ) -> tuple[str, Document, Document]:
        """The table, the current document, and ``value`` without system fields
        (which may be given, but only unchanged)."""
        if not isinstance(value, dict):
            raise InvalidValueError(f"{verb} expects a dict of fields, got {type(value).__name__}")
        table, doc = await self._user_doc(doc_id, verb)
        fields = dict(value)
        for system_field in ("_id", "_creationTime"):
            if system_field in fields and fields.pop(system_field) != doc[system_field]:
                raise InvalidValueError(f"{verb} cannot change the system field {system_field}")
        return table, doc, fields

    async def _delete(self, doc_id: str) -> None:
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
