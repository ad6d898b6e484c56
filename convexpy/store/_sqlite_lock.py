"""The one-process lock of a SQLite store: an exclusive ``flock`` on the database file.

The lock is taken on the database file itself, so it belongs to the file
(its device and inode), whatever name reaches it: a symlink or a hard link
to an open database is refused like the database itself. (SQLite's own
locks are POSIX record locks, which Linux keeps apart from ``flock``.)

The store's writer process inherits the locked descriptor, so the file stays
locked until both are gone. When a runtime dies without closing (SIGKILL),
its writer dies with it (see :mod:`._sqlite_writer`), a few milliseconds
later: a new runtime that finds the lock held by such an orphaned writer
waits for it to exit (up to :data:`ORPHAN_WAIT_S`) instead of failing.
A lock held by anything else fails at once, naming the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path

from ..errors import StoreLockedError

__all__ = ["ORPHAN_WAIT_S", "WRITER_MARK", "lock_database"]

ORPHAN_WAIT_S = 5.0
"""How long opening a store waits for an orphaned writer process to exit."""

WRITER_MARK = "_sqlite_writer.py"
"""How a writer process is recognised in a command line."""


async def lock_database(path: Path, *, orphan_wait_s: float = ORPHAN_WAIT_S) -> int:
    """Open ``path`` (created if missing) and lock it; the locked descriptor.

    Raises :class:`StoreLockedError` naming the holder when another process
    has the database open.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    give_up = time.monotonic() + orphan_wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                holders = lock_holders(fd)
                # No visible holder: a process in the middle of exiting.
                if not all(_going_away(pid) for pid, _ in holders):
                    raise StoreLockedError(_locked_message(path, holders)) from None
                if time.monotonic() >= give_up:
                    raise StoreLockedError(
                        _locked_message(path, holders)
                        + f" (it did not let go within {orphan_wait_s:g} s)"
                    ) from None
                await asyncio.sleep(0.05)
    except BaseException:
        os.close(fd)
        raise


def lock_holders(fd: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the other processes that have the file of
    ``fd`` open (Linux ``/proc``; empty where it cannot be read)."""
    target = os.fstat(fd)
    me = os.getpid()
    found: list[tuple[int, str]] = []
    with contextlib.suppress(OSError), os.scandir("/proc") as processes:
        for entry in processes:
            if not entry.name.isdecimal() or int(entry.name) == me:
                continue
            pid = int(entry.name)
            if _has_open(pid, target):
                found.append((pid, _command_line(pid)))
    return found


def _has_open(pid: int, target: os.stat_result) -> bool:
    """Whether process ``pid`` has a descriptor open on the file ``target``."""
    try:
        with os.scandir(f"/proc/{pid}/fd") as links:
            for link in links:
                try:
                    info = os.stat(link.path)
                except OSError:
                    continue
                if info.st_ino == target.st_ino and info.st_dev == target.st_dev:
                    return True
    except OSError:
        pass
    return False


def _arguments(pid: int) -> list[str] | None:
    """The command line of process ``pid`` (None: gone; empty: exiting)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _command_line(pid: int) -> str:
    args = _arguments(pid)
    return "?" if args is None else " ".join(args)


def _writer_started_by(args: list[str] | None) -> int | None:
    """The pid of the runtime that started a writer process with command line
    ``args`` (None: not a writer)."""
    if not args or not any(arg.endswith(WRITER_MARK) for arg in args):
        return None
    # The writer's last argument is the pid of the runtime that started it.
    return int(args[-1]) if args[-1].isdecimal() else None


def _going_away(pid: int) -> bool:
    """Whether ``pid`` is exiting, or a SQLite writer process whose runtime is
    gone (killed with it, it is about to exit)."""
    args = _arguments(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone already
    state, parent = stat.rpartition(")")[2].split()[:2]
    if state in ("Z", "X") or not args:  # a zombie, or tearing down its memory
        return True
    started_by = _writer_started_by(args)
    return started_by is not None and int(parent) != started_by


def _locked_message(path: Path, holders: list[tuple[int, str]]) -> str:
    me = os.getpid()
    if any(_writer_started_by(_arguments(pid)) == me for pid, _ in holders):
        return (
            f"the database {str(path)!r} is already open in this process (PID {me}), by "
            "another store: close it first"
        )
    if holders:
        who = "; ".join(f"PID {pid}: {command[:200]}" for pid, command in holders)
        where = f"in another process ({who})"
    else:
        where = "in another process"
    return (
        f"the database {str(path)!r} is already open {where}; stop that process "
        "or use another --db file"
    )
