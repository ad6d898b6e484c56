"""Document stores behind one port (:class:`Store`): memory, SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from .base import ConflictError, IndexDef, KeyRange, ReadSet, Snapshot, Store, Write
from .memory import MemoryStore
from .postgres import PostgresStore
from .sqlite import SqliteStore

__all__ = [
    "ConflictError",
    "IndexDef",
    "KeyRange",
    "MemoryStore",
    "PostgresStore",
    "ReadSet",
    "Snapshot",
    "SqliteStore",
    "Store",
    "Write",
    "store_from_url",
]


def store_from_url(url: str | Store) -> Store:
    """Make a store from ``"memory"``, ``"sqlite:///relative.db"``,
    ``"sqlite:////absolute.db"`` (options ``?synchronous=normal`` and
    ``write_timeout=SECONDS``, joined by ``&``),
    ``"postgresql://user@host:port/database"`` (see
    :meth:`PostgresStore.from_url`), or pass a :class:`Store` through."""
    if isinstance(url, Store):
        return url
    if not isinstance(url, str):
        raise TypeError(f"store must be a URL string or a Store, got {type(url).__name__}")
    if url in ("memory", "memory://", ":memory:"):
        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore.from_url(url)
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        path, _, query = rest.partition("?")
        if not path.startswith("/") or len(path) < 2:
            raise ValueError(
                f"invalid SQLite store URL {url!r}: use sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        options = dict(part.partition("=")[::2] for part in query.split("&") if part)
        synchronous = options.pop("synchronous", "full")
        timeout_text = options.pop("write_timeout", "30")
        if options:
            raise ValueError(f"unknown SQLite store option(s) in {url!r}: {', '.join(options)}")
        if synchronous not in ("full", "normal", "off"):
            raise ValueError(f"synchronous must be full, normal or off in {url!r}")
        try:
            write_timeout = float(timeout_text)
        except ValueError:
            write_timeout = float("nan")
        if not 0 < write_timeout < float("inf"):
            raise ValueError(
                f"write_timeout must be a positive number of seconds in {url!r}, "
                f"got {timeout_text!r}"
            )
        return SqliteStore(
            Path(path[1:]),
            synchronous=synchronous,  # type: ignore[arg-type]
            write_timeout=write_timeout,
        )
    raise ValueError(
        f"unknown store {url!r}: use 'memory', 'sqlite:///path.db', "
        "'postgresql://user@host:port/database' or a Store instance"
    )
