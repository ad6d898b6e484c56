"""``schema.py`` support: ``define_schema`` and ``define_table``.

With a schema, every write is validated against its table's validator and
only declared tables can be written; the declared indexes are built and kept
up to date by the store. Without one, any table works and only the built-in
``by_id`` and ``by_creation_time`` indexes exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import SchemaValidationError
from .store.base import BY_CREATION_TIME, BY_ID, IndexDef
from .validators import Validator, compile_object
from .validators.nodes import VObject

__all__ = ["Schema", "TableDefinition", "define_schema", "define_table"]

_INDEX_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_FIELD_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")


class TableDefinition:
    """A table's document validator and its indexes (``.index(name, fields)`` chains)."""

    def __init__(self, fields: Mapping[str, Validator]) -> None:
        if not isinstance(fields, Mapping):
            inner = getattr(fields, "fields", None)
            if not isinstance(inner, Mapping):
                raise TypeError("define_table() takes a dict of v.* validators or v.object(...)")
            fields = inner
        for name, validator in fields.items():
            if not isinstance(name, str) or not isinstance(validator, Validator):
                raise TypeError(
                    f"define_table(): field {name!r} must map to a v.* validator, "
                    f"got {type(validator).__name__}"
                )
        self.fields: dict[str, Validator] = dict(fields)
        self.indexes: dict[str, tuple[str, ...]] = {}

    def index(self, name: str, fields: Sequence[str]) -> TableDefinition:
        if not isinstance(name, str) or not _INDEX_NAME.fullmatch(name):
            raise ValueError(
                f"invalid index name {name!r}: use letters, digits and underscores, "
                "starting with a letter"
            )
        if name in (BY_ID, BY_CREATION_TIME):
            raise ValueError(f"index name {name!r} is reserved for the built-in index")
        if name in self.indexes:
            raise ValueError(f"index {name!r} is defined twice")
        if isinstance(fields, str) or not fields:
            raise ValueError(f"index {name!r}: fields must be a non-empty list of field names")
        for field in fields:
            if not isinstance(field, str) or not _FIELD_PATH.fullmatch(field):
                raise ValueError(f"index {name!r}: invalid field {field!r}")
        if len(set(fields)) != len(fields):
            raise ValueError(f"index {name!r}: a field is listed twice")
        self.indexes[name] = tuple(fields)
        return self


class Schema:
    """The app's tables; see :func:`define_schema`."""

    def __init__(self, tables: Mapping[str, TableDefinition], *, schema_validation: bool) -> None:
        from .db import check_table_name

        self.tables: dict[str, TableDefinition] = {}
        for table, definition in tables.items():
            check_table_name(table)
            if not isinstance(definition, TableDefinition):
                raise TypeError(f"define_schema(): table {table!r} must be a define_table(...)")
            self.tables[table] = definition
        self.schema_validation = schema_validation
        self._validators = {
            table: compile_object(definition.fields, name=table)
            for table, definition in self.tables.items()
        }

    def index_defs(self) -> list[IndexDef]:
        return [
            IndexDef(table, name, fields)
            for table, definition in self.tables.items()
            for name, fields in definition.indexes.items()
        ]

    def fingerprint(self, table: str) -> str:
        """The validator of ``table`` as canonical JSON (two equal validators,
        and only they, give the same text)."""
        return json.dumps(VObject(self.tables[table].fields).json(), sort_keys=True)

    def validate(self, table: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The document's fields as stored (e.g. ints of ``v.number()`` fields as floats)."""
        validator = self._validators.get(table)
        if validator is None:
            raise SchemaValidationError(
                f"table {table!r} is not in schema.py (tables: {', '.join(sorted(self.tables))})"
            )
        if not self.schema_validation:
            return fields
        return validator.validate(fields)


def define_schema(
    tables: Mapping[str, TableDefinition],
    *,
    schema_validation: bool = True,
    strict_table_name_types: bool = True,
) -> Schema:
    """Declare the app's tables: ``define_schema({"tasks": define_table({...})})``.

    ``schema_validation=False`` keeps the indexes but skips document checks.
    ``strict_table_name_types`` exists for parity with Convex and has no effect.
    """
    if not isinstance(tables, Mapping):
        raise TypeError("define_schema() takes a dict of table name -> define_table(...)")
    return Schema(tables, schema_validation=schema_validation)


def define_table(fields: Mapping[str, Validator]) -> TableDefinition:
    """A table whose documents have ``fields``: ``define_table({"title": v.string()})``."""
    return TableDefinition(fields)
