"""``python -m convexpy dev``: the runtime, the HTTP API, hot reload and the log, in one loop.

The :class:`~convexpy.Runtime` is opened in the event loop that serves HTTP
(uvicorn, driven programmatically), so handlers, scheduled jobs and requests
share one loop. Beside the database, ``.convexpy/`` holds ``admin_key``
(generated once) and, while the server runs, ``server.json`` (``url``,
``pid``, ``state``: that directory), which ``python -m convexpy run`` and
``data`` read; a copy of ``server.json`` goes to ``.convexpy/`` in the
directory the server was started from, so they work from there too.

SIGINT / SIGTERM stop the server cleanly: it stops accepting connections,
lets in-flight requests finish (a second signal cuts that short), closes the
runtime (pending jobs stay in the store and resume on the next start) and
exits with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from watchfiles import PythonFilter, awatch

from ..errors import StoreLockedError
from ..functions import FunctionKind, Visibility
from ..loader import AppLoadError
from ..runtime import Runtime
from ..store import Store
from ..store.memory import MemoryStore
from ..store.sqlite import SqliteStore
from .http import create_app
from .logs import LogPrinter

__all__ = [
    "DevOptions",
    "load_or_create_admin_key",
    "read_server_info",
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
    crons: bool = True
    watch: bool = True


# --------------------------------------------------------------------------
# .convexpy/: admin key and server.json


def state_dir_for(app_dir: Path, db: Path | None = None) -> Path:
    """Where ``admin_key`` and ``server.json`` live: beside the database.

    By default that is ``.convexpy/`` beside the app directory.
    """
    if db is not None:
        return db.resolve().parent
    return app_dir.resolve().parent / STATE_DIR


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
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(key + "\n")
    return key


def write_server_info(state_dir: Path, url: str, pid: int, **extra: Any) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    temporary = state_dir / f".{SERVER_FILE}.{pid}.tmp"
    temporary.write_text(json.dumps({"url": url, "pid": pid, **extra}, indent=2) + "\n")
    temporary.replace(state_dir / SERVER_FILE)


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


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: :class:`_Signals` owns SIGINT/SIGTERM.

    (uvicorn re-raises a caught signal after shutting down, which for SIGTERM
    would kill the process before the runtime is closed.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _Signals:
    """SIGINT/SIGTERM: the first asks for a graceful stop, the next forces it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, printer: LogPrinter) -> None:
        self.printer = printer
        self.received = 0
        self.server: uvicorn.Server | None = None
        self._installed: list[signal.Signals] = []

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self.SIGNALS:
            try:
                loop.add_signal_handler(sig, self.handle, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            self._installed.append(sig)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def handle(self, sig: signal.Signals) -> None:
        self.received += 1
        if self.received == 1:
            self.printer.info(f"{sig.name}: stopping (finishing in-flight requests)...")
        else:
            self.printer.warning(f"{sig.name}: stopping now")
        self.attach(self.server)

    def attach(self, server: uvicorn.Server | None) -> None:
        self.server = server
        if server is not None and self.received:
            server.should_exit = True
            if self.received > 1:
                server.force_exit = True


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


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


async def _banner(
    runtime: Runtime,
    printer: LogPrinter,
    options: DevOptions,
    url: str,
    data: str,
    admin_key: str,
    state_dir: Path,
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
        ]
    )
    if printer.verbosity >= 1:
        for path, kind in sorted(_functions_by_kind(runtime).items()):
            printer.debug(f"    {kind:<9} {path}")
    watching = f"watching {options.app_dir} for changes; " if options.watch else ""
    printer.info(printer.style(f"  ({watching}Ctrl+C to stop)", "dim"))


async def reload_app(runtime: Runtime, printer: LogPrinter, changed: Iterable[str]) -> bool:
    """Reload the app after ``changed`` files changed; print the outcome. True on success."""
    names = ", ".join(sorted(changed)) or "files"
    before = _functions_by_kind(runtime)
    started = time.perf_counter()
    try:
        await runtime.reload()
    except AppLoadError as exc:
        where = exc.file or "?"
        if exc.line:
            where += f":{exc.line}"
        printer.error(f"Reload failed ({where}); still serving the previous version")
        printer.detail([str(exc)], marker="!", styles=("red",))
        return False
    except Exception as exc:
        printer.error(
            f"Reload failed; still serving the previous version: {type(exc).__name__}: {exc}"
        )
        return False
    elapsed = (time.perf_counter() - started) * 1000
    after = _functions_by_kind(runtime)
    changes = [f"+{path}" for path in sorted(after.keys() - before.keys())]
    changes += [f"-{path}" for path in sorted(before.keys() - after.keys())]
    summary = f"Reloaded ({names} changed) in {elapsed:.0f} ms: {_describe_functions(runtime)}"
    printer.success(summary + (f"  [{' '.join(changes)}]" if changes else ""))
    return True


async def watch_app(runtime: Runtime, printer: LogPrinter, stop: asyncio.Event) -> None:
    """Reload the app whenever a ``.py`` file under its directory changes, until ``stop``."""
    root = runtime.app_dir.resolve()
    async for changes in awatch(root, watch_filter=PythonFilter(), stop_event=stop, step=100):
        names: set[str] = set()
        for _, changed in changes:
            try:
                names.add(Path(changed).relative_to(root).as_posix())
            except ValueError:
                names.add(changed)
        await reload_app(runtime, printer, names)


def _open_store(options: DevOptions, state_dir: Path) -> tuple[Store, str]:
    if options.memory:
        return MemoryStore(), "in memory (--memory): nothing is kept after exit"
    db = (options.db or state_dir / DB_FILE).resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(db), str(db)


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
    signals = _Signals(printer)
    signals.install(loop)
    try:
        try:
            sock = _bind(options.host, options.port)
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
        signals.uninstall(loop)


async def _serve_on(
    sock: socket.socket,
    options: DevOptions,
    printer: LogPrinter,
    state_dir: Path,
    signals: _Signals,
) -> int:
    store, data = _open_store(options, state_dir)
    runtime = Runtime(options.app_dir, store=store, crons=options.crons, capture_logs=True)
    runtime.listeners.append(printer.on_event)
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(runtime)
        except AppLoadError as exc:
            printer.error(f"Could not load the app: {exc}")
            return 1
        except StoreLockedError as exc:
            printer.error(f"Could not open the database: {exc}")
            return 1
        except Exception as exc:
            printer.error(f"Could not start: {type(exc).__name__}: {exc}")
            if printer.verbosity >= 1:
                printer.detail(printer.traceback_lines(exc), marker="!")
            return 1
        admin_key = load_or_create_admin_key(state_dir)
        url = _url(options.host, sock.getsockname()[1])
        app = create_app(runtime, admin_key=admin_key, reporter=printer)
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        server = _Server(config)
        signals.attach(server)
        await _banner(runtime, printer, options, url, data, admin_key, state_dir)
        pid = os.getpid()
        info = {"app": str(options.app_dir.resolve()), "data": data, "state": str(state_dir)}
        # Also where the server was started from, so `run` and `data` work there too
        # (as `npx convex dev` keeps its deployment in the project's .env.local).
        for directory in dict.fromkeys([state_dir, Path.cwd().resolve() / STATE_DIR]):
            write_server_info(directory, url, pid, **info)
            stack.callback(remove_server_info, directory, pid)
        stop_watching = asyncio.Event()
        if options.watch:
            watcher = asyncio.create_task(watch_app(runtime, printer, stop_watching))
            stack.push_async_callback(_stop_task, watcher, stop_watching)
        await server.serve(sockets=[sock])
        printer.info("Stopping the runtime...")
    printer.info("Stopped.")
    return 0


async def _stop_task(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    try:
        await asyncio.wait_for(task, timeout=5)
    except (TimeoutError, asyncio.CancelledError):
        pass
    except Exception:  # the watcher died earlier; nothing left to stop
        pass
