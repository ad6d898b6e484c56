from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from convexpy.store import IndexDef, SqliteStore
from convexpy.testing import ConvexTest

# No per-example deadline: a loaded CI machine must not turn a slow example
# into a failure. On CI, examples are derived from the test itself, so a run
# is reproducible; locally they stay random and keep exploring.
settings.register_profile(
    "dev", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

APPS = Path(__file__).parent / "apps"


@pytest.fixture
def basic_app() -> Path:
    return APPS / "basic"


@pytest.fixture
def make_app(tmp_path: Path):
    """Write an app directory from ``{"module.py": source}`` and return its path."""

    def make(files: dict[str, str], name: str = "convex") -> Path:
        root = tmp_path / name
        for relative, source in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        root.mkdir(parents=True, exist_ok=True)
        return root

    return make


@pytest.fixture
def module_app(make_app: Any, request: pytest.FixtureRequest) -> Path:
    """The app of the test module's ``APP`` (``{"module.py": source}``)."""
    path: Path = make_app(request.module.APP)
    return path


@pytest.fixture
async def t(module_app: Path) -> AsyncIterator[ConvexTest]:
    """A :class:`ConvexTest` on ``module_app`` (modules with their own ``t`` keep it)."""
    async with ConvexTest(module_app) as harness:
        yield harness


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys of the indexes SqliteStore builds (backfills), in order."""
    keys: list[str] = []
    backfill = SqliteStore._backfill

    async def spy(self: SqliteStore, conn: Any, index: IndexDef) -> None:
        keys.append(index.key)
        await backfill(self, conn, index)

    monkeypatch.setattr(SqliteStore, "_backfill", spy)
    return keys


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"2m"``) mounted at the new directory ``mount``
    for the block: a disk a test can fill. Mounting needs root; under
    ``CI=true`` failing to mount fails the test (a missing capability must
    show), elsewhere it skips it."""
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        problem = result.stderr.strip() if result.returncode else ""
    except OSError as exc:
        problem = str(exc)
    if problem:
        reason = f"cannot mount a tmpfs (root needed): {problem}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the throwaway PostgreSQL cluster, if a test started one."""
    import pg_server

    pg_server.stop()
