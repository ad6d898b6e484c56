"""A throwaway PostgreSQL cluster for the tests (and the driver benchmark).

One cluster per test session, started on first use: ``initdb`` in a
temporary directory (as the ``postgres`` OS user when running as root, the
directory handed to it), ``pg_ctl start`` listening on 127.0.0.1 at a free
port and on a Unix socket in that directory. ``fsync`` is off: the cluster
dies with the session, and the tests check convexpy's logic, not the disk.
:func:`database_url` gives each test directory a database of its own, made
on first use, so a store made again at the same directory is the same
database. :func:`stop` removes the cluster (a session hook calls it).

Without PostgreSQL binaries the tests skip, saying how to install them;
under ``CI=true`` they fail instead: a missing dependency must show.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

INSTALL_HINT = "install PostgreSQL to run them: apt-get install postgresql"


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or None if PostgreSQL is missing."""
    candidates: list[str] = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        candidates.append(out)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


class Cluster:
    """A running throwaway cluster; see the module docstring."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="convexpy-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        self._made: set[str] = set()
        self._lock = threading.Lock()
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def _run(self, program: str, *args: str) -> str:
        command = [str(self.bindir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}\n{tail}"
            )
        return result.stdout

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            "psql", "-X", "-q", "-h", str(self.root), "-p", str(self.port), "-U", "postgres",
            "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
        )  # fmt: skip

    def database(self, name: str) -> str:
        """The URL of database ``name``, created if it does not exist yet."""
        with self._lock:
            if name not in self._made:
                self.psql(f'CREATE DATABASE "{name}"')
                self._made.add(name)
        return self.url(name)

    def restart(self) -> None:
        """Stop the server (fast: sessions are cut) and start it again."""
        # With its log file: output to our pipe would keep the pipe open forever.
        log = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


_cluster: Cluster | None = None
_start_lock = threading.Lock()


def cluster() -> Cluster:
    """The session's cluster, started on first use; skips (fails under CI) without PostgreSQL."""
    global _cluster
    with _start_lock:
        if _cluster is None:
            bindir = find_bindir()
            if bindir is None:
                _missing()
            assert bindir is not None
            _cluster = Cluster(bindir)
        return _cluster


def database_url(directory: Path) -> str:
    """A database of its own for ``directory`` (the same one every time)."""
    digest = hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:20]
    return cluster().database(f"t_{digest}")


def stop() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None


def _missing() -> None:
    import pytest

    reason = f"PostgreSQL binaries (initdb, pg_ctl) not found; {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
