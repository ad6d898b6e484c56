"""Store faults: what a failure of the database means, in words for people.

:func:`store_fault` reads an exception, and the causes it wraps (a store
wraps its driver's error), as a :class:`StoreFault`: a ``code``
(``NoSpaceLeft``, ``DatabaseDamaged``, ``StoreClosed``, ``CommitFailed``,
``StoreUnavailable``, ``DatabaseError``) and a one-line ``message`` saying
what to do. Anything else is not a store fault. :func:`no_space` finds a full
disk alone. The HTTP API answers store faults with 503 and tells functions
that hit one; the dev server names them when it cannot start or stop.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import CommitFailedError, StoreClosedError, StoreLockedError, StoreUnavailableError
from ..loader import AppLoadError

__all__ = ["StoreFault", "failure_line", "no_space", "store_fault"]


@dataclass(frozen=True, slots=True)
class StoreFault:
    """What a store failure means, for people: a ``code`` and a one-line ``message``."""

    code: str
    message: str


_SQLITE_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_DAMAGED_TEXT = ("malformed", "not a database", "database corrupt")
_FULL_TEXT = ("database or disk is full", "no space left on device")
_NEARLY_FULL_BYTES = 1 << 20
"""An I/O error on a file system with less free space than this is read as a full disk
(SQLite says "disk I/O error" when it cannot grow its shared-memory file)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _summary(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _nearly_full(path: Path | None) -> bool:
    directory = None if path is None else path.parent
    while directory is not None and not directory.exists() and directory != directory.parent:
        directory = directory.parent
    if directory is None:
        return False
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < _NEARLY_FULL_BYTES


def no_space(exc: BaseException, path: Path | None = None) -> BaseException | None:
    """The error in ``exc``'s chain that says the disk is full, if one does.

    ``path`` is the file being written when the driver's error is only an I/O
    error (then a file system with almost no free space counts as full).
    """
    for err in _chain(exc):
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return err
        text = str(err).lower()
        if _sqlite_code(err) == sqlite3.SQLITE_FULL or any(t in text for t in _FULL_TEXT):
            return err
    for err in _chain(exc):
        io_error = isinstance(err, OSError) and err.errno == errno.EIO
        sqlite_io = isinstance(err, sqlite3.Error) and (
            _sqlite_code(err) == sqlite3.SQLITE_IOERR or "disk i/o error" in str(err).lower()
        )
        if (io_error or sqlite_io) and _nearly_full(path):
            return err
    return None


def store_fault(exc: BaseException, path: Path | None = None) -> StoreFault | None:
    """What ``exc`` means if it is a store fault (None if it is not one).

    ``path`` is the database file, named in the message. Looks through the
    exception's causes: the store wraps the driver's error.
    """
    where = "the database" if path is None else f"the database file {str(path)!r}"
    subject = where[0].upper() + where[1:]
    full = no_space(exc, path)
    if full is not None:
        return StoreFault(
            "NoSpaceLeft",
            f"No space left on device for {where} ({_summary(full)}): free some space; "
            "nothing was written",
        )
    for err in _chain(exc):
        damaged = _sqlite_code(err) in _SQLITE_DAMAGED
        if damaged or (
            isinstance(err, sqlite3.DatabaseError)
            and any(t in str(err).lower() for t in _DAMAGED_TEXT)
        ):
            return StoreFault(
                "DatabaseDamaged",
                f"{subject} is damaged ({_summary(err)}), so convexpy cannot read it: "
                "restore it from a backup while the server is stopped (or, if its data does "
                "not matter, delete it to start empty)",
            )
    if isinstance(exc, StoreClosedError):
        return StoreFault("StoreClosed", f"The store is closed: {exc}")
    if isinstance(exc, CommitFailedError):
        cause = exc.__cause__
        reason = _summary(cause) if cause is not None else str(exc)
        return StoreFault("CommitFailed", f"{subject} could not commit: {reason}")
    if isinstance(exc, StoreUnavailableError):
        return StoreFault("StoreUnavailable", f"{subject} is unavailable: {exc}")
    for err in _chain(exc):
        if isinstance(err, sqlite3.Error):
            return StoreFault("DatabaseError", f"{subject} failed: {_summary(err)}")
    return None


def failure_line(
    exc: BaseException,
    db: Path | None,
    doing: str,
    elsewhere: Callable[[str], str],
) -> str:
    """One line saying why a server could not ``doing`` (start, stop cleanly):
    a full disk (``elsewhere(file)`` says where else the data could go), an
    app that does not load, a locked or failing store, or the error itself."""
    full = no_space(exc, db)
    if full is not None:
        filename = full.filename if isinstance(full, OSError) else None
        target = filename if isinstance(filename, str) else str(db) if db else "its files"
        return (
            f"Could not {doing}: no space left on device (writing {target}). "
            f"Free some space, or {elsewhere(target)}."
        )
    if isinstance(exc, AppLoadError):
        return f"Could not load the app: {exc}"
    if isinstance(exc, StoreLockedError):
        return f"Could not open the database: {exc}"
    fault = store_fault(exc, db)
    if fault is not None:
        return f"Could not {doing}: {fault.message}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"Could not {doing}: {exc.strerror or exc}: {exc.filename}"
    return f"Could not {doing}: {type(exc).__name__}: {exc}"
