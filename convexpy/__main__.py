"""``python -m convexpy``: see :mod:`convexpy.cli`."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
