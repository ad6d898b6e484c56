"""Starting the dev server on a full disk: one plain line, status 1, nothing left behind.

The disk is a real tmpfs mounted for the test (root only) and filled to the
last page. Without the rights to mount one these tests are skipped, except
under CI=true, where they fail: a missing capability must show.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from conftest import mounted_tmpfs
from e2e_helpers import dev_server, run_cli, write_app

from convexpy import Runtime
from convexpy.server.dev import load_or_create_admin_key
from convexpy.store.sqlite import SqliteStore

pytestmark = pytest.mark.slow


@dataclass
class Disk:
    """A small tmpfs at ``path``; ``fill()`` takes its last free byte."""

    path: Path

    def fill(self) -> None:
        with open(self.path / "filler", "ab", buffering=0) as file:
            for size in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        file.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        stats = os.statvfs(self.path)
        assert stats.f_bavail == 0

    def files(self) -> list[str]:
        """Every file and directory on the disk, relative, sorted."""
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*"))


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    with mounted_tmpfs(tmp_path / "disk", "2m") as mount:
        yield Disk(mount)


async def dev(app_dir: Path, db: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = ["dev", str(app_dir), "--port", "0", "--db", str(db), "--no-watch"]
    return await anyio.to_thread.run_sync(run_cli, args, cwd)


def assert_refused_plainly(result: subprocess.CompletedProcess[str], target: Path) -> str:
    """The one line the server printed: it names ``target``; status 1, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    [line] = [line for line in result.stdout.splitlines() if "Could not" in line]
    assert line.startswith(
        f"Could not start: no space left on device (writing {target}). Free some space, or "
    ), line
    return line


def temporary_files(*directories: Path) -> list[Path]:
    return [p for d in directories if d.exists() for p in d.rglob("*") if ".tmp" in p.name]


async def test_state_files_on_a_full_disk(tmp_path: Path, disk: Disk) -> None:
    """Started from a directory on the full disk: its .convexpy/server.json cannot be written."""
    app_dir = write_app(tmp_path / "app" / "convex")
    db = tmp_path / "app" / ".convexpy" / "data.sqlite3"
    project = disk.path / "project"
    project.mkdir()
    disk.fill()
    result = await dev(app_dir, db, project)
    line = assert_refused_plainly(result, project / ".convexpy" / "server.json")
    assert line.endswith("or start the server from a directory on another disk.")
    assert disk.files() == ["filler", "project"]  # no .convexpy/, no temporary file
    assert temporary_files(db.parent) == []
    assert not (db.parent / "server.json").exists()


async def test_existing_database_on_a_full_disk(tmp_path: Path, disk: Disk) -> None:
    """SQLite cannot make its shared-memory file: it says "disk I/O error"."""
    app_dir = write_app(tmp_path / "app" / "convex")
    state = disk.path / ".convexpy"
    db = state / "data.sqlite3"
    async with Runtime(app_dir, store=SqliteStore(db)) as rt:
        await rt.mutation("tasks:add", {"text": "kept"})
    load_or_create_admin_key(state)
    before = disk.files()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    disk.fill()
    result = await dev(app_dir, db, disk.path)
    line = assert_refused_plainly(result, db)
    assert line.endswith("or keep the data on another disk with --db PATH.")
    assert disk.files() == sorted([*before, "filler"])  # no -shm, -wal or temporary file
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


async def test_new_database_on_a_full_disk(tmp_path: Path, disk: Disk) -> None:
    """SQLite cannot create the database file."""
    app_dir = write_app(tmp_path / "app" / "convex")
    db = disk.path / "data" / "data.sqlite3"
    disk.fill()
    result = await dev(app_dir, db, tmp_path)
    assert_refused_plainly(result, db)
    assert disk.files() == ["filler"]
    assert temporary_files(tmp_path / ".convexpy") == []


async def test_disk_fills_up_while_serving(tmp_path: Path, disk: Disk) -> None:
    """A mutation whose commit finds no room: a function error that says so; reads go on."""
    app_dir = write_app(tmp_path / "app" / "convex")
    db = disk.path / "data.sqlite3"
    serving = dev_server(app_dir, db, "--no-watch")
    async with serving as server, httpx.AsyncClient(base_url=server.url) as http:
        body = {"path": "tasks:add", "args": {"text": "before"}}
        assert (await http.post("/api/mutation", json=body)).json()["status"] == "success"
        await anyio.to_thread.run_sync(disk.fill)
        body = {"path": "tasks:add", "args": {"text": "x" * 100_000}}
        response = await http.post("/api/mutation", json=body)
        assert response.status_code == 200
        answer = response.json()
        assert answer["status"] == "error"
        assert answer["errorMessage"].startswith(
            f"No space left on device for the database file {str(db)!r} ("
        ), answer
        await server.wait_for_output("CommitFailedError")  # logged, with its traceback
        # Reads go on; nothing of the failed mutation is there.
        response = await http.post("/api/query", json={"path": "tasks:texts", "args": {}})
        assert response.json()["value"] == ["before"]
        # Once there is room again, writes go on too.
        await anyio.to_thread.run_sync((disk.path / "filler").unlink)
        body = {"path": "tasks:add", "args": {"text": "after"}}
        assert (await http.post("/api/mutation", json=body)).json()["status"] == "success"
        response = await http.post("/api/query", json={"path": "tasks:texts", "args": {}})
        assert response.json()["value"] == ["before", "after"]
