"""Loading an app directory: functions, ``schema.py``, ``crons.py`` and ``auth_config.py``.

Each load imports the app under a fresh private package name
(``_convexpy_app_<n>``), so an app directory called ``convex`` never clashes
with the ``convex`` client package, two runtimes never share module state,
and a reload gets fresh modules. Relative imports between app modules work
because the directory is imported as a package.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import itertools
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .auth.config import AuthConfig, AuthConfigError, parse_auth_config
from .components import BUILTIN_FUNCTIONS
from .errors import ConvexpyError
from .functions import ConvexFunction, FunctionRegistry
from .schema import Schema

__all__ = ["AppLoadError", "LoadedApp", "import_app", "load_app", "unload_app"]

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
    auth_config: AuthConfig | None = None
    """The providers of ``auth_config.py``; None without one (bearer tokens are refused)."""
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
    for builtin_path, builtin in BUILTIN_FUNCTIONS.items():  # the building blocks' own
        app.registry.register(builtin_path, builtin, listed=False)
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


async def import_app(app_dir: str | Path, *, give_up_after: float) -> LoadedApp:
    """:func:`load_app`, run on a thread of its own so that a module that
    blocks at import (a sleep, a network call, an endless loop) never blocks
    the event loop.

    After ``give_up_after`` seconds, :class:`AppLoadError` names the module and
    line still running. The thread cannot be stopped: it is a daemon (it
    never holds up the interpreter's exit), and if it ever finishes, what it
    loaded is unloaded.
    """
    loop = asyncio.get_running_loop()
    delivered: asyncio.Future[LoadedApp] = loop.create_future()

    def deliver(app: LoadedApp | None, error: BaseException | None) -> None:
        if delivered.done():  # given up on: nobody will use it
            if app is not None:
                unload_app(app)
        elif error is not None:
            delivered.set_exception(error)
        else:
            assert app is not None
            delivered.set_result(app)

    def run() -> None:
        app: LoadedApp | None = None
        error: BaseException | None = None
        try:
            app = load_app(app_dir)
        except BaseException as exc:  # delivered to the loop, which raises it
            error = exc
        try:
            loop.call_soon_threadsafe(deliver, app, error)
        except RuntimeError:  # the loop is closed
            if app is not None:
                unload_app(app)

    thread = threading.Thread(target=run, name="convexpy-import", daemon=True)
    thread.start()
    try:
        async with asyncio.timeout(give_up_after):
            return await delivered
    except TimeoutError:
        raise _stuck_error(Path(app_dir), thread, give_up_after) from None


def _stuck_error(root: Path, thread: threading.Thread, timeout: float) -> AppLoadError:
    """Where the import running on ``thread`` is stuck, as an error."""
    root = root.resolve()
    frame = sys._current_frames().get(thread.ident or -1)
    file: str | None = None
    line: int | None = None
    while frame is not None:  # innermost first: the app's deepest frame
        if frame.f_code.co_filename.startswith(str(root)):
            file, line = frame.f_code.co_filename, frame.f_lineno
            break
        frame = frame.f_back
    where = "the app" if file is None else f"{Path(file).name} (line {line})"
    return AppLoadError(
        f"importing {where} did not finish within {timeout:g} s: does a module block at "
        "import (a sleep, a network call, an endless loop)? Do that work in a function "
        "instead",
        file=file,
        line=line,
    )


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
    if path == "auth_config":
        app.auth_config = _auth_config(app.root, module)


def _auth_config(root: Path, module: ModuleType) -> AuthConfig:
    if not hasattr(module, "providers"):
        raise AppLoadError(
            "auth_config.py must define a module-level `providers` list, e.g. "
            'providers = [{"domain": "https://issuer.example.com", "applicationID": "my-app"}]',
            file=module.__file__,
        )
    try:
        return parse_auth_config(module.providers, base_dir=root)
    except AuthConfigError as exc:
        raise AppLoadError(f"auth_config.py: {exc}", file=module.__file__) from exc


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
