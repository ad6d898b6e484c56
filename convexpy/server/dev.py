"""``python -m convexpy dev``: the runtime, the HTTP API, hot reload and the log, in one loop.

The :class:`~convexpy.Runtime` is opened in the event loop that serves HTTP
(uvicorn, driven programmatically), so handlers, scheduled jobs and requests
share one loop. Beside the database, ``.convexpy/`` holds ``admin_key``
(generated once) and, while the server runs, ``server.json`` (``url``,
``pid``, ``state``: that directory), which ``python -m convexpy run`` and
``data`` read; a copy of ``server.json`` goes to ``.convexpy/`` in the
directory the server was started from, so they work from there too.

SIGINT / SIGTERM stop the server cleanly: it stops accepting connections,
lets in-flight requests finish, closes the runtime (pending jobs stay in the
store and resume on the next start) and exits with status 0. A second
SIGINT / SIGTERM exits the process at once (status 128 + the signal's
number), whatever the runtime is doing.

The event loop and HTTP parser are uvicorn's ``"auto"`` choices: uvloop and
httptools when installed (``uvicorn[standard]``), else asyncio's and h11.
Connections are limited (:data:`~.process.DEFAULT_MAX_CONNECTIONS`; past it uvicorn
answers 503), and so are request bodies (see :func:`~.http.create_app`).

Starting on a full disk, or on a damaged database, prints one line saying so
(naming the file) and exits with status 1, leaving no temporary files.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from watchfiles import PythonFilter, awatch

from ..auth import TokenVerifier
from ..functions import FunctionKind, Visibility
from ..loader import AppLoadError
from ..runtime import Runtime
from ..store import Store, store_from_url
from ..store.memory import MemoryStore
from ..store.postgres import PostgresStore, safe_url
from ..store.sqlite import SqliteStore
from .faults import failure_line, no_space
from .http import DEFAULT_BODY_TIMEOUT, ConvexApp, create_app
from .logs import LogPrinter
from .process import (
    Signals,
    UvicornServer,
    bind_socket,
    event_loop_factory,
    freeze_startup_objects,
    server_config,
    server_url,
    store_failure_line,
)

__all__ = [
    "DevOptions",
    "load_or_create_admin_key",
    "read_server_info",
    "run",
    "serve",
    "state_dir_for",
]

STATE_DIR = ".convexpy"
ADMIN_KEY_FILE = "admin_key"
SERVER_FILE = "server.json"
DB_FILE = "data.sqlite3"


@dataclass(frozen=True)
class DevOptions:
    """What ``python -m convexpy dev`` was asked to do."""

    app_dir: Path
    host: str = "127.0.0.1"
    port: int = 3210
    db: Path | None = None
    memory: bool = False
    store: str | None = None
    """A store URL (``--store``, ``CONVEXPY_STORE``): instead of ``db`` / ``memory``."""
    crons: bool = True
    watch: bool = True
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    write_timeout: float = 30.0
    import_timeout: float = 30.0
    insecure_unverified_jwt: bool = False
    """Read bearer tokens WITHOUT verifying them (``--insecure-unverified-jwt``):
    an option of the dev server only, announced in red at start."""


# --------------------------------------------------------------------------
# .convexpy/: admin key and server.json


def state_dir_for(app_dir: Path, db: Path | None = None) -> Path:
    """Where ``admin_key`` and ``server.json`` live: beside the database.

    By default that is ``.convexpy/`` beside the app directory.
    """
    if db is not None:
        return db.resolve().parent
    return app_dir.resolve().parent / STATE_DIR


def _write_file(path: Path, text: str, mode: int = 0o666) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it (created
    with ``mode``, less the umask), renamed over it.

    On failure the temporary file is removed and the ``OSError`` names ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        temporary.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def load_or_create_admin_key(state_dir: Path) -> str:
    """The admin key stored in ``state_dir``; generated (and stored, mode 0600) once."""
    path = state_dir / ADMIN_KEY_FILE
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    key = "convexpy-admin-" + secrets.token_urlsafe(32)
    _write_file(path, key + "\n", 0o600)
    return key


def write_server_info(state_dir: Path, url: str, pid: int, **extra: Any) -> None:
    text = json.dumps({"url": url, "pid": pid, **extra}, indent=2) + "\n"
    _write_file(state_dir / SERVER_FILE, text)


def read_server_info(state_dir: Path) -> dict[str, Any] | None:
    """``server.json`` of ``state_dir``, or None if absent or unreadable."""
    try:
        info = json.loads((state_dir / SERVER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def remove_server_info(state_dir: Path, pid: int) -> None:
    """Remove ``server.json`` if it is still ours (another server may have taken over)."""
    info = read_server_info(state_dir)
    if info is not None and info.get("pid") == pid:
        with contextlib.suppress(OSError):
            (state_dir / SERVER_FILE).unlink()


# --------------------------------------------------------------------------
# Serving


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    return f"{count} {'queries' if word == 'query' else word + 's'}"


def _functions_by_kind(runtime: Runtime) -> dict[str, str]:
    app = runtime.app
    return {} if app is None else {path: fn.kind.value for path, fn in app.registry}


def _describe_functions(runtime: Runtime) -> str:
    app = runtime.app
    if app is None or not len(app.registry):
        return "none (add a module with @query / @mutation / @action functions)"
    counts = dict.fromkeys(FunctionKind, 0)
    internal = 0
    for _, fn in app.registry:
        counts[fn.kind] += 1
        internal += fn.visibility is Visibility.INTERNAL
    text = ", ".join(_plural(n, kind.value) for kind, n in counts.items() if n)
    return text + (f" ({internal} internal)" if internal else "")


def _cron_names(runtime: Runtime) -> list[str]:
    crons = None if runtime.app is None else runtime.app.crons
    if crons is None:
        return []
    return [str(getattr(job, "name", job)) for job in crons]


def _describe_auth(runtime: Runtime, options: DevOptions) -> str:
    if options.insecure_unverified_jwt:
        return "bearer tokens read WITHOUT verification (--insecure-unverified-jwt)"
    config = None if runtime.app is None else runtime.app.auth_config
    if config is None:
        return "none: bearer tokens are refused (add auth_config.py to accept some)"
    if not config.providers:
        return "auth_config.py lists no providers: bearer tokens are refused"
    return ", ".join(f"{p.label} ({p.algorithm})" for p in config.providers)


def _server_stack(config: uvicorn.Config) -> str:
    """``uvicorn 0.30.0 on uvloop, httptools``: the event loop and HTTP parser in use."""
    if not config.loaded:
        config.load()
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    http = config.http_protocol_class.__module__.rsplit(".", 1)[-1].removesuffix("_impl")
    return f"uvicorn {uvicorn.__version__} on {loop}, {http}"


async def _banner(
    runtime: Runtime,
    printer: LogPrinter,
    options: DevOptions,
    url: str,
    data: str,
    admin_key: str,
    state_dir: Path,
    config: uvicorn.Config,
) -> None:
    crons = _cron_names(runtime)
    cron_text = "none" if not crons else f"{len(crons)}: " + ", ".join(f'"{n}"' for n in crons)
    if crons and not options.crons:
        cron_text += " (not running: --no-crons)"
    names = set(await runtime.store.tables())
    if runtime.app is not None and runtime.app.schema is not None:
        names.update(runtime.app.schema.tables)
    tables = sorted(t for t in names if not t.startswith("_"))
    printer.info(printer.style(f"convexpy dev: {runtime.app_dir.resolve()}", "bold"))
    printer.banner(
        [
            ("functions", _describe_functions(runtime)),
            ("crons", cron_text),
            ("tables", ", ".join(tables) if tables else "none yet"),
            ("API", printer.style(url, "cyan", "bold")),
            ("data", data),
            ("admin key", f"{admin_key}  ({state_dir / ADMIN_KEY_FILE})"),
            ("dashboard", printer.style(f"{url}/dashboard#key={admin_key}", "cyan")),
            ("auth", _describe_auth(runtime, options)),
        ]
    )
    if options.insecure_unverified_jwt:
        printer.error(
            "  WARNING: --insecure-unverified-jwt: bearer tokens are NOT verified. Anyone can "
            "claim to be any user. For development only; never expose this server."
        )
    if printer.verbosity >= 1:
        printer.debug(f"  server     {_server_stack(config)}")
        for path, kind in sorted(_functions_by_kind(runtime).items()):
            printer.debug(f"    {kind:<9} {path}")
    watching = f"watching {options.app_dir} for changes; " if options.watch else ""
    printer.info(printer.style(f"  ({watching}Ctrl+C to stop)", "dim"))


def reload_error_text(runtime: Runtime, exc: BaseException) -> str:
    """One line saying why a reload failed: ``convex/tasks.py:3: SyntaxError: ...``."""
    cause: BaseException = exc
    where = ""
    if isinstance(exc, AppLoadError) and exc.file:
        path = Path(exc.file)
        with contextlib.suppress(ValueError):
            path = path.relative_to(runtime.app_dir.resolve().parent)
        where = f"{path.as_posix()}:{exc.line}: " if exc.line else f"{path.as_posix()}: "
        cause = exc.__cause__ or exc
    text = str(cause)
    summary = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return where + " ".join(summary.split())


async def reload_app(
    runtime: Runtime,
    printer: LogPrinter,
    changed: Iterable[str],
    app: ConvexApp | None = None,
) -> bool:
    """Reload the app after ``changed`` files changed; print the outcome. True on success.

    ``app`` (the HTTP app) learns why a reload failed, until one succeeds.
    """
    names = ", ".join(sorted(changed)) or "files"
    before = _functions_by_kind(runtime)
    started = time.perf_counter()
    try:
        await runtime.reload()
    except Exception as exc:
        if app is not None:
            app.reload_error = reload_error_text(runtime, exc)
        if isinstance(exc, AppLoadError):
            where = exc.file or "?"
            if exc.line:
                where += f":{exc.line}"
            printer.error(f"Reload failed ({where}); still serving the previous version")
            printer.detail([str(exc)], marker="!", styles=("red",))
        else:
            printer.error(
                f"Reload failed; still serving the previous version: {type(exc).__name__}: {exc}"
            )
        return False
    if app is not None:
        app.reload_error = None
        app.sync.reloaded()
    elapsed = (time.perf_counter() - started) * 1000
    after = _functions_by_kind(runtime)
    changes = [f"+{path}" for path in sorted(after.keys() - before.keys())]
    changes += [f"-{path}" for path in sorted(before.keys() - after.keys())]
    summary = f"Reloaded ({names} changed) in {elapsed:.0f} ms: {_describe_functions(runtime)}"
    printer.success(summary + (f"  [{' '.join(changes)}]" if changes else ""))
    return True


async def watch_app(
    runtime: Runtime, printer: LogPrinter, stop: asyncio.Event, app: ConvexApp | None = None
) -> None:
    """Reload the app whenever a ``.py`` file under its directory changes, until ``stop``."""
    root = runtime.app_dir.resolve()
    async for changes in awatch(root, watch_filter=PythonFilter(), stop_event=stop, step=100):
        names: set[str] = set()
        for _, changed in changes:
            try:
                names.add(Path(changed).relative_to(root).as_posix())
            except ValueError:
                names.add(changed)
        await reload_app(runtime, printer, names, app)


def _db_path(options: DevOptions, state_dir: Path) -> Path | None:
    if options.memory or options.store is not None:
        return None
    return (options.db or state_dir / DB_FILE).resolve()


def _open_store(options: DevOptions, state_dir: Path) -> tuple[Store, str]:
    if options.store is not None:
        store = store_from_url(options.store)
        if isinstance(store, PostgresStore):
            return store, safe_url(store.url)
        if isinstance(store, SqliteStore):
            return store, str(store.path)
        return store, "in memory: nothing is kept after exit"
    db = _db_path(options, state_dir)
    if db is None:
        return MemoryStore(), "in memory (--memory): nothing is kept after exit"
    db.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(db, write_timeout=options.write_timeout), str(db)


def run(options: DevOptions, printer: LogPrinter) -> int:
    """Run the dev server in an event loop of its own until SIGINT/SIGTERM; the exit status."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(serve(options, printer))


async def serve(options: DevOptions, printer: LogPrinter) -> int:
    """Run the dev server until SIGINT/SIGTERM; the process exit status."""
    app_dir = options.app_dir
    if not app_dir.is_dir():
        printer.error(
            f"App directory {str(app_dir)!r} does not exist. Create it with your function "
            "modules, or pass the right one: python -m convexpy dev path/to/convex"
        )
        return 1
    state_dir = state_dir_for(app_dir, None if options.memory else options.db)
    loop = asyncio.get_running_loop()
    signals = Signals(printer)
    signals.install(loop)
    try:
        try:
            sock = bind_socket(options.host, options.port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            printer.error(
                f"Cannot listen on {options.host}:{options.port}: {reason}. Is another server "
                "running there? Pick another port with --port."
            )
            return 1
        with sock:
            return await _serve_on(sock, options, printer, state_dir, signals)
    finally:
        signals.uninstall()


class _Litter:
    """Files and directories a failed start may leave, and which of them existed before.

    After a start that failed for lack of space, what this start created is
    removed: temporary files never outlive their writer, but SQLite leaves a
    new database file, its lock file and its ``-shm``/``-wal`` files behind.
    A ``-wal`` file with anything in it is always kept (it may hold commits),
    and nothing is removed while another process holds the database's lock.
    """

    def __init__(self, db: Path | None, directories: Iterable[Path]) -> None:
        self.db = db
        self.files = [] if db is None else [db.with_name(db.name + s) for s in _DB_SUFFIXES]
        self.directories = sorted(set(directories), key=lambda d: len(d.parts), reverse=True)
        self.existed = {path for path in [*self.files, *self.directories] if path.exists()}

    def clean(self) -> None:
        if self.db is not None and not self._lock_is_free(self.db):
            return
        for path in self.files:
            if path in self.existed or not path.is_file():
                continue
            if path.name.endswith(("-wal", "-journal")) and path.stat().st_size > 0:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
        for directory in self.directories:
            if directory not in self.existed:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only if empty

    @staticmethod
    def _lock_is_free(db: Path) -> bool:
        try:  # the store's lock is on the database file itself
            with open(db, "rb") as file:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


_DB_SUFFIXES = ("-shm", "-wal", "-journal", "")
"""The files of a SQLite database, the database itself last."""


def _failure(exc: BaseException, db: Path | None, doing: str = "start") -> str:
    """One line saying why the dev server could not ``doing``."""

    def elsewhere(target: str) -> str:
        here = Path.cwd().resolve() / STATE_DIR
        if db is not None and Path(target).parent == here and db.parent != here:
            return "start the server from a directory on another disk"
        return "keep the data on another disk with --db PATH"

    return failure_line(exc, db, doing, elsewhere)


async def _serve_on(
    sock: socket.socket,
    options: DevOptions,
    printer: LogPrinter,
    state_dir: Path,
    signals: Signals,
) -> int:
    db = _db_path(options, state_dir)
    # server.json also goes where the server was started from, so `run` and `data`
    # work there too (as `npx convex dev` keeps its deployment in .env.local).
    info_dirs = list(dict.fromkeys([state_dir, Path.cwd().resolve() / STATE_DIR]))
    litter = _Litter(db, [*info_dirs, *([] if db is None else [db.parent])])
    failure: BaseException | None = None
    store_failure: str | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                server, runtime, app = await _start(
                    stack, sock, options, printer, state_dir, info_dirs
                )
            except Exception as exc:
                failure = exc
            else:
                for directory in info_dirs:
                    signals.on_exit.append(
                        functools.partial(remove_server_info, directory, os.getpid())
                    )
                signals.attach(server)
                server.stop_on_store_failure(runtime.store)
                stop_watching = asyncio.Event()
                if options.watch:
                    watcher = asyncio.create_task(watch_app(runtime, printer, stop_watching, app))
                    stack.push_async_callback(_stop_task, watcher, stop_watching)
                await server.serve(sockets=[sock])
                store_failure = server.store_failure
                if store_failure is not None:
                    printer.error(store_failure_line(store_failure))
                printer.info("Stopping the runtime...")
    except Exception as exc:  # closing the runtime failed
        if failure is None:
            printer.error(_failure(exc, db, "stop cleanly"))
            return 1
    if store_failure is not None:
        return 1
    if failure is not None:
        printer.error(_failure(failure, db))
        if printer.verbosity >= 1:
            printer.detail(printer.traceback_lines(failure), marker="!")
        if no_space(failure, db) is not None:
            litter.clean()
        return 1
    printer.info("Stopped.")
    return 0


async def _start(
    stack: contextlib.AsyncExitStack,
    sock: socket.socket,
    options: DevOptions,
    printer: LogPrinter,
    state_dir: Path,
    info_dirs: list[Path],
) -> tuple[UvicornServer, Runtime, ConvexApp]:
    """Open the runtime, make the HTTP app, write the state files (``stack`` undoes
    it all) and print the banner."""
    store, data = _open_store(options, state_dir)
    runtime = Runtime(
        options.app_dir,
        store=store,
        crons=options.crons,
        capture_logs=True,
        import_timeout=options.import_timeout,
    )
    # Jobs due at start run while the runtime starts: their lines wait for the banner.
    held: list[dict[str, Any]] = []
    runtime.listeners.append(held.append)
    await stack.enter_async_context(runtime)
    admin_key = load_or_create_admin_key(state_dir)
    url = server_url(options.host, sock.getsockname()[1])
    clock = runtime.clock
    verifier = TokenVerifier(
        clock=lambda: clock.now() / 1000, insecure_unverified=options.insecure_unverified_jwt
    )
    app = create_app(
        runtime,
        admin_key=admin_key,
        reporter=printer,
        body_timeout=options.body_timeout,
        verifier=verifier,
    )
    if app.dashboard is not None:
        app.dashboard.watch()
    pid = os.getpid()
    info = {"app": str(options.app_dir.resolve()), "data": data, "state": str(state_dir)}
    for directory in info_dirs:
        write_server_info(directory, url, pid, **info)
        stack.callback(remove_server_info, directory, pid)
    stack.push_async_callback(app.close)  # before the runtime closes
    config = server_config(app)
    await _banner(runtime, printer, options, url, data, admin_key, state_dir, config)
    freeze_startup_objects()
    runtime.listeners[runtime.listeners.index(held.append)] = printer.on_event
    for event in held:
        printer.on_event(event)
    return UvicornServer(config), runtime, app


async def _stop_task(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    try:
        await asyncio.wait_for(task, timeout=5)
    except (TimeoutError, asyncio.CancelledError):
        pass
    except Exception:  # the watcher died earlier; nothing left to stop
        pass
