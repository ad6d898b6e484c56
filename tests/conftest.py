from __future__ import annotations

import os
from collections.abc import AsyncIterator
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
