"""Refusing a schema that the stored documents violate, as Convex refuses such a push.

Each table's validator, as last accepted, is kept in the ``_schemas`` system
table (``{table, validator}``: the validator's JSON description). When the
app starts or reloads, every table whose validator is new or changed has all
its documents checked against it; the first document that does not match
refuses the whole schema, naming the table, the document and the field, and
the previous version of the app keeps running. Unchanged tables cost one
small read, so a restart does not re-read a large database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import SchemaValidationError
from .loader import AppLoadError
from .schema import Schema
from .store.base import IndexDef, KeyRange

if TYPE_CHECKING:
    from .db import Transaction
    from .runtime import Runtime

__all__ = ["SCHEMAS", "check_documents", "record_schema"]

SCHEMAS = "_schemas"
_PAGE = 1000


def _fingerprints(schema: Schema | None) -> dict[str, str]:
    """Table -> its validator's JSON, for the tables whose documents are validated."""
    if schema is None or not schema.schema_validation:
        return {}
    return {table: schema.fingerprint(table) for table in schema.tables}


async def _recorded(txn: Transaction) -> dict[str, dict[str, Any]]:
    rows = await _scan_all(txn, SCHEMAS)
    return {doc["table"]: doc for doc in rows}


async def _scan_all(txn: Transaction, table: str) -> list[dict[str, Any]]:
    index = IndexDef.by_creation_time(table)
    key_range = KeyRange(index.key, b"", None)
    rows = await txn.scan(index, key_range, "asc", 1 << 30)
    return [doc for _, doc in rows]


async def check_documents(runtime: Runtime, schema: Schema | None, schema_file: str) -> None:
    """Raise :class:`AppLoadError` if stored documents violate ``schema``
    (only tables whose validator changed since it was last recorded)."""
    wanted = _fingerprints(schema)
    if not wanted:
        return
    assert schema is not None
    txn = runtime.transaction(writable=False)
    try:
        recorded = await _recorded(txn)
        for table, fingerprint in wanted.items():
            previous = recorded.get(table)
            if previous is not None and previous["validator"] == fingerprint:
                continue
            await _check_table(txn, schema, table, schema_file)
    finally:
        txn.release()


async def _check_table(txn: Transaction, schema: Schema, table: str, schema_file: str) -> None:
    index = IndexDef.by_creation_time(table)
    low = b""
    while True:
        rows = await txn.scan(index, KeyRange(index.key, low, None), "asc", _PAGE)
        for _, doc in rows:
            fields = {k: v for k, v in doc.items() if k not in ("_id", "_creationTime")}
            try:
                schema.validate(table, fields)
            except SchemaValidationError as exc:
                raise AppLoadError(
                    f"Schema validation failed: document {doc['_id']!r} in table {table!r} "
                    f"does not match the new schema ({exc}). Change that data first, or "
                    "relax the validator (v.optional(...) for a field some documents lack); "
                    "the previous schema stays in force",
                    file=schema_file,
                ) from None
        if len(rows) < _PAGE:
            return
        low = rows[-1][0] + b"\x00"


async def record_schema(runtime: Runtime, schema: Schema | None) -> None:
    """Remember ``schema``'s validators as accepted (see the module docstring)."""
    wanted = _fingerprints(schema)

    async def body(txn: Transaction) -> None:
        await txn.prepare(SCHEMAS)
        recorded = await _recorded(txn)
        for table, doc in recorded.items():
            if table not in wanted:
                txn.put(SCHEMAS, doc, None)
        for table, fingerprint in wanted.items():
            known = recorded.get(table)
            if known is None:
                await txn.insert(SCHEMAS, {"table": table, "validator": fingerprint})
            elif known["validator"] != fingerprint:
                txn.put(SCHEMAS, known, {**known, "validator": fingerprint})

    await runtime.system_mutation(body)
