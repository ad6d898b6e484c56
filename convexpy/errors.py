"""The exceptions convexpy raises.

``ConvexpyError`` is the root of every framework error. Each specific error
also subclasses the builtin it resembles, so ``except ValueError`` keeps
working for code that does not know convexpy. ``ConvexError`` is different:
it is the application's own error, raised by user handlers, and its ``data``
travels to callers (over HTTP as ``errorData``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentValidationError",
    "CommitFailedError",
    "ConvexError",
    "ConvexpyError",
    "CronSpecError",
    "DocumentNotFoundError",
    "FunctionNotFoundError",
    "InvalidIdError",
    "InvalidValueError",
    "OptimisticConcurrencyError",
    "ReadOnlyError",
    "ReturnsValidationError",
    "SchedulerError",
    "SchemaValidationError",
    "StoreClosedError",
    "StoreLockedError",
    "StoreUnavailableError",
    "StoreVersionError",
    "UnawaitedCallError",
]


class ConvexError(Exception):
    """An application error carrying ``data`` (any Convex value) to the caller."""

    def __init__(self, data: Any = None) -> None:
        self.data = data
        super().__init__(data if isinstance(data, str) else repr(data))


class ConvexpyError(Exception):
    """Root of all errors raised by convexpy itself."""


class InvalidValueError(ConvexpyError, ValueError):
    """A value is not a Convex value, or breaks a Convex limit.

    ``path`` locates the offending part (``"$.tags[3]"``), or is empty.
    """

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class InvalidIdError(ConvexpyError, ValueError):
    """A string is not a well-formed document id, or names another table."""


class ArgumentValidationError(ConvexpyError, TypeError):
    """Arguments of a function call do not match its validator.

    ``function`` is the function path, ``path`` the location of the bad value
    inside the arguments (``"$.user.age"``), ``value`` the offending value
    (absent for missing fields) and ``expected`` a description of what would
    have been accepted.
    """

    def __init__(
        self,
        message: str,
        *,
        function: str = "",
        path: str = "",
        value: Any = None,
        expected: str = "",
    ) -> None:
        self.function = function
        self.path = path
        self.value = value
        self.expected = expected
        super().__init__(message)


class ReturnsValidationError(ConvexpyError, TypeError):
    """A function returned a value that does not match its ``returns=`` validator."""


class SchemaValidationError(ConvexpyError, ValueError):
    """A document written to a table does not match the table's schema."""


class FunctionNotFoundError(ConvexpyError, LookupError):
    """No function is registered under the given path (or it is not reachable)."""

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class DocumentNotFoundError(ConvexpyError, LookupError):
    """``patch``, ``replace`` or ``delete`` named a document that does not exist."""


class ReadOnlyError(ConvexpyError, PermissionError):
    """A write was attempted where only reads are allowed (a query, a system table)."""


class OptimisticConcurrencyError(ConvexpyError, RuntimeError):
    """A mutation kept conflicting with concurrent writes and ran out of retries.

    ``table`` names a table whose documents changed under the mutation.
    """

    def __init__(self, message: str, *, table: str = "") -> None:
        self.table = table
        super().__init__(message)


class SchedulerError(ConvexpyError, ValueError):
    """A ``ctx.scheduler`` call was given something it cannot schedule or cancel."""


class CronSpecError(ConvexpyError, ValueError):
    """A cron job's schedule or definition is invalid.

    ``job`` names the cron job when known, ``field`` the part of the spec.
    """

    def __init__(self, message: str, *, job: str | None = None, field: str | None = None) -> None:
        self.job = job
        self.field = field
        super().__init__(message)


class StoreUnavailableError(ConvexpyError, RuntimeError):
    """The store could not read or write, for a reason other than a conflict:
    a full disk, an I/O error, a damaged file, a writer that died or hangs.
    The driver's error is on ``__cause__``. Calls made by clients see this
    error; scheduled jobs and cron runs retry until the store works again."""


class CommitFailedError(StoreUnavailableError):
    """The store could not commit a transaction (see :class:`StoreUnavailableError`);
    nothing of it was written."""


class StoreClosedError(ConvexpyError, RuntimeError):
    """The store was used after it was closed, or can no longer write (the
    SQLite store's writer process is gone)."""


class StoreLockedError(ConvexpyError, RuntimeError):
    """Another process already has this SQLite database open."""


class StoreVersionError(ConvexpyError, RuntimeError):
    """The database (a SQLite file, a PostgreSQL database) was written by a newer
    convexpy, in a layout this one cannot read."""


class UnawaitedCallError(ConvexpyError, RuntimeError):
    """A handler returned without awaiting a ``ctx`` call it made
    (``ctx.db.insert(...)`` without ``await``): the call never ran, so the
    function fails instead of succeeding without it. In a mutation nothing is
    committed. ``calls`` spells each such call as the handler wrote it
    (``"ctx.db.insert(...)"``)."""

    def __init__(self, message: str, *, calls: list[str]) -> None:
        self.calls = calls
        super().__init__(message)


def error_text(exc: BaseException) -> str:
    """How an exception is shown to callers and recorded in a failed job's
    ``state.error``: ``"ValueError: boom"``, ``"ConvexError: data"``."""
    if isinstance(exc, ConvexError):
        return f"ConvexError: {exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
