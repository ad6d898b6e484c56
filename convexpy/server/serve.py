"""``python -m convexpy serve``: the production server.

The same runtime and HTTP API as the dev server (functions, scheduler,
crons, the sync protocol, the dashboard behind the admin key), without what
only helps while developing:

* no reload and no file watching: the app is loaded once, at start;
* no state files (``.convexpy/``): the store is named by URL (``--store`` or
  ``CONVEXPY_STORE``), and the admin key comes from ``CONVEXPY_ADMIN_KEY``.
  Without a key, admin calls (internal functions, the dashboard, ``run``
  and ``data``) are refused; and the server will not listen anywhere but on
  loopback, where only this machine can reach it;
* bearer tokens are always verified (``auth_config.py``), with no way to
  turn that off;
* quiet: one line when it is ready, one when it stops, and errors. ``--log``
  prints every call, job and cron run as the dev server does.

SIGTERM (or SIGINT) drains: the server stops accepting connections, lets
in-flight requests finish, closes websockets with a reason, and gives
running jobs ``--grace`` seconds to finish before it closes the runtime
(a job cut short resumes on the next start: a mutation runs again, an
action ends ``failed``). A second signal exits at once. Exit status: 0
after a clean stop, 1 when the app or the store cannot start or the store
fails for good, 2 for bad options.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..auth import TokenVerifier
from ..runtime import Runtime
from ..store import store_from_url
from ..store.postgres import safe_url
from .faults import failure_line
from .http import DEFAULT_BODY_TIMEOUT, create_app
from .logs import LogPrinter
from .process import (
    Signals,
    UvicornServer,
    bind_socket,
    event_loop_factory,
    freeze_startup_objects,
    server_config,
    store_failure_line,
)
from .process import server_url as url_of

__all__ = ["ServeOptions", "is_loopback", "run", "serve"]

ADMIN_KEY_VARIABLE = "CONVEXPY_ADMIN_KEY"
STORE_VARIABLE = "CONVEXPY_STORE"
MIN_ADMIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class ServeOptions:
    """What ``python -m convexpy serve`` was asked to do."""

    app_dir: Path
    store: str
    host: str = "127.0.0.1"
    port: int = 3210
    admin_key: str | None = None
    log: bool = False
    grace: float = 30.0
    crons: bool = True
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    import_timeout: float = 30.0

    def problem(self) -> str | None:
        """What makes these options unusable (None: nothing)."""
        if self.admin_key is not None and len(self.admin_key) < MIN_ADMIN_KEY_LENGTH:
            return (
                f"{ADMIN_KEY_VARIABLE} is too short ({len(self.admin_key)} characters): use at "
                f"least {MIN_ADMIN_KEY_LENGTH}, e.g. from "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.admin_key is None and not is_loopback(self.host):
            return (
                f"refusing to listen on {self.host} without an admin key: anyone who can reach "
                f"it could not be told from the admin. Set {ADMIN_KEY_VARIABLE}, or listen on "
                "127.0.0.1"
            )
        if not self.grace >= 0:
            return f"--grace must be a number of seconds >= 0, got {self.grace!r}"
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``,
    ``127.0.0.0/8``, ``::1``). A name is resolved; one that does not resolve
    is not loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def run(options: ServeOptions, printer: LogPrinter) -> int:
    """Serve until SIGTERM/SIGINT, in an event loop of its own; the exit status."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(serve(options, printer))


async def serve(options: ServeOptions, printer: LogPrinter) -> int:
    """Serve until SIGTERM/SIGINT; the exit status (see the module docstring)."""
    problem = options.problem()
    if problem is not None:
        printer.error(f"Cannot serve: {problem}.")
        return 2
    if not options.app_dir.is_dir():
        printer.error(f"App directory {str(options.app_dir)!r} does not exist.")
        return 1
    signals = Signals(printer)
    signals.install(asyncio.get_running_loop())
    try:
        try:
            sock = bind_socket(options.host, options.port)
        except OSError as exc:
            printer.error(f"Cannot listen on {options.host}:{options.port}: {exc.strerror or exc}.")
            return 1
        with sock:
            return await _serve_on(sock, options, printer, signals)
    finally:
        signals.uninstall()


async def _serve_on(
    sock: socket.socket, options: ServeOptions, printer: LogPrinter, signals: Signals
) -> int:
    where = safe_url(options.store)
    failure: str | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            runtime = Runtime(
                options.app_dir,
                store=store_from_url(options.store),
                crons=options.crons,
                capture_logs=options.log,
                shutdown_grace=options.grace,
                import_timeout=options.import_timeout,
            )
            if options.log:
                runtime.listeners.append(printer.on_event)
            await stack.enter_async_context(runtime)
            clock = runtime.clock
            app = create_app(
                runtime,
                admin_key=options.admin_key,
                reporter=printer,
                body_timeout=options.body_timeout,
                verifier=TokenVerifier(clock=lambda: clock.now() / 1000),
            )
            if app.dashboard is not None and options.admin_key is not None:
                app.dashboard.watch()
            stack.push_async_callback(app.close)  # before the runtime closes
            server = UvicornServer(server_config(app))
            signals.attach(server)
            server.stop_on_store_failure(runtime.store)
            freeze_startup_objects()
            url = url_of(options.host, sock.getsockname()[1])
            admin = "admin key set" if options.admin_key else "no admin key: admin calls refused"
            printer.now(
                f"convexpy serve: {options.app_dir} on {url} (store {where}; {admin}; "
                f"pid {os.getpid()})"
            )
            await server.serve(sockets=[sock])
            failure = server.store_failure
            if failure is not None:
                printer.error(store_failure_line(failure))
    except Exception as exc:
        printer.error(_failure(exc, where))
        return 1
    if failure is not None:
        return 1
    printer.now("convexpy serve: stopped")
    return 0


def _failure(exc: BaseException, store: str) -> str:
    """One line saying why the server could not start (or stop cleanly)."""
    line = failure_line(exc, None, "serve", lambda target: "point --store at another disk")
    return f"{line} (store {store})"
