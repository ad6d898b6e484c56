from __future__ import annotations

from pathlib import Path

import pytest

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
