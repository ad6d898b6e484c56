"""Loading an app directory: functions, ``schema.py`` and ``crons.py``.

Each load imports the app under a fresh private package name
(``_convexpy_app_<n>``), so an app directory called ``convex`` never clashes
with the ``convex`` client package, two runtimes never share module state,
and a reload gets fresh modules. Relative imports between app modules work
because the directory is imported as a package.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ConvexpyError
from .functions import ConvexFunction, FunctionRegistry
from .schema import Schema

__all__ = ["AppLoadError", "LoadedApp", "load_app", "unload_app"]

_counter = itertools.count(1)


class AppLoadError(ConvexpyError, ImportError):
    """The app could not be loaded; ``file`` and ``line`` locate the cause when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        super().__init__(message)


@dataclass
class LoadedApp:
    """The result of loading an app directory."""

    root: Path
    package: str
    registry: FunctionRegistry
    schema: Schema | None = None
    crons: Any = None
    modules: dict[str, ModuleType] = field(default_factory=dict)


def _module_paths(root: Path) -> list[str]:
    paths = []
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root)
        if any(part.startswith(("_", ".")) for part in relative.parts):
            continue
        paths.append(relative.with_suffix("").as_posix())
    return paths


def load_app(app_dir: str | Path) -> LoadedApp:
    """Import every module of ``app_dir`` and collect what it defines."""
    root = Path(app_dir).resolve()
    if not root.is_dir():
        raise AppLoadError(f"app directory {str(root)!r} does not exist or is not a directory")
    package = f"_convexpy_app_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(
        package, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    assert spec is not None
    package_module = importlib.util.module_from_spec(spec)
    sys.modules[package] = package_module
    if (root / "__init__.py").exists() and spec.loader is not None:
        spec.loader.exec_module(package_module)
    app = LoadedApp(root, package, FunctionRegistry())
    try:
        for path in _module_paths(root):
            module_name = f"{package}.{path.replace('/', '.')}"
            try:
                module = importlib.import_module(module_name)
            except AppLoadError:
                raise
            except BaseException as exc:
                raise _load_error(root, path, exc) from exc
            app.modules[path] = module
            _collect(app, path, module)
    except BaseException:
        unload_app(app)
        raise
    return app


def _collect(app: LoadedApp, path: str, module: ModuleType) -> None:
    for name, value in vars(module).items():
        if isinstance(value, ConvexFunction) and value.module == module.__name__:
            app.registry.register(f"{path}:{name}", value)
    if path == "schema":
        schemas = [value for value in vars(module).values() if isinstance(value, Schema)]
        if len(schemas) > 1:
            raise AppLoadError("schema.py defines more than one schema", file=module.__file__)
        app.schema = schemas[0] if schemas else None
    if path == "crons":
        from .cron.jobs import CronJobs

        crons = getattr(module, "crons", None)
        if crons is None:
            found = [value for value in vars(module).values() if isinstance(value, CronJobs)]
            crons = found[0] if len(found) == 1 else None
        if crons is not None and not isinstance(crons, CronJobs):
            raise AppLoadError(
                "crons.py: `crons` must be the object returned by cron_jobs()",
                file=module.__file__,
            )
        app.crons = crons


def _load_error(root: Path, path: str, exc: BaseException) -> AppLoadError:
    file = str(root / f"{path}.py")
    line = None
    if isinstance(exc, SyntaxError):
        file = exc.filename or file
        line = exc.lineno
    else:
        tb = exc.__traceback__
        while tb is not None:
            frame_file = tb.tb_frame.f_code.co_filename
            if frame_file.startswith(str(root)):
                file, line = frame_file, tb.tb_lineno
            tb = tb.tb_next
    where = f"{file}:{line}" if line else file
    return AppLoadError(
        f"failed to load {path}.py ({where}): {type(exc).__name__}: {exc}", file=file, line=line
    )


def unload_app(app: LoadedApp) -> None:
    """Forget the app's modules so a later load starts fresh."""
    prefix = app.package + "."
    for name in [n for n in sys.modules if n == app.package or n.startswith(prefix)]:
        del sys.modules[name]
