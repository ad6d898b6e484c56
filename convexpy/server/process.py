"""Running the HTTP app in this process: uvicorn, the socket and the signals.

What ``python -m convexpy dev`` and ``python -m convexpy serve`` share:
:class:`UvicornServer` (uvicorn without its own signal handling, closing the
app's websockets and long polls first when it stops), :class:`Signals` (the
first SIGINT/SIGTERM stops gracefully, the second exits at once), binding
the listening socket, and how uvicorn is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import threading
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any

import uvicorn

from ..store import Store
from .http import MAX_REQUEST_BYTES, ConvexApp
from .logs import LogPrinter

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "Signals",
    "UvicornServer",
    "bind_socket",
    "event_loop_factory",
    "freeze_startup_objects",
    "server_config",
    "server_url",
    "store_failure_line",
]

DEFAULT_MAX_CONNECTIONS = 512
"""Open connections a server serves at once (uvicorn's ``limit_concurrency``):
past it, requests get 503. With the body budget, this bounds the memory that
slow or stalled clients can hold."""


class UvicornServer(uvicorn.Server):
    """uvicorn, minus its signal handling: :class:`Signals` owns SIGINT/SIGTERM.

    (uvicorn re-raises a caught signal after shutting down, which for SIGTERM
    would kill the process before the runtime is closed.)
    """

    store_failure: str | None = None
    """Why the store failed for good, if it did (see :meth:`stop_on_store_failure`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def stop_on_store_failure(self, store: Store) -> None:
        """Stop serving once ``store`` fails for good (it cannot restart its
        writer, say), keeping the reason in :attr:`store_failure`."""

        def failed(reason: str) -> None:
            if self.store_failure is None:
                self.store_failure = reason
            self.should_exit = True

        store.health.on_fatal(failed)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Websocket clients first, with a reason (uvicorn would close them with 1012),
        # and the dashboard's waiting log polls (they would hold up the stop).
        app = self.config.app
        if isinstance(app, ConvexApp):
            await app.close()
        await super().shutdown(sockets)


class Signals:
    """SIGINT/SIGTERM: the first asks for a graceful stop, the second exits at once.

    The loop's signal handlers would never run while the loop is stuck (a
    handler blocking it), nor would Python-level ones while the main thread
    sleeps in a system call that another thread's signal does not interrupt.
    So the signal numbers come through ``signal.set_wakeup_fd``, which the
    C-level handler writes from whatever thread it runs on, to a thread of
    our own: on the first it hands the stop to the loop; on the second it
    runs the ``on_exit`` callbacks (removing ``server.json``), prints one
    line and ends the process with ``os._exit(128 + signal)``.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, printer: LogPrinter) -> None:
        self.printer = printer
        self.received = 0
        self.server: uvicorn.Server | None = None
        self.on_exit: list[Callable[[], object]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._wakeup: tuple[int, int] | None = None
        """Our pipe's write end and the wakeup fd it replaced."""

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals are the caller's business
        self._loop = loop
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._wakeup = (write_fd, previous_fd)
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, _note_signal)
        threading.Thread(
            target=self._watch, args=(read_fd,), name="convexpy-signals", daemon=True
        ).start()

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        if self._wakeup is not None:
            write_fd, previous_fd = self._wakeup
            self._wakeup = None
            signal.set_wakeup_fd(previous_fd)
            os.close(write_fd)  # the watching thread sees the end and stops

    def _watch(self, read_fd: int) -> None:
        try:
            while data := os.read(read_fd, 64):
                for signum in data:
                    if signum in self.SIGNALS:
                        self._received(signal.Signals(signum))
        finally:
            os.close(read_fd)

    def _received(self, sig: signal.Signals) -> None:
        self.received += 1
        if self.received > 1:
            self.exit_now(sig)
            return
        if self.printer.verbosity >= 0:
            self.printer.now(
                f"{sig.name}: stopping (finishing in-flight requests; {sig.name} again to "
                "exit now)..."
            )
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self.attach, self.server)

    def exit_now(self, sig: signal.Signals) -> None:
        for callback in self.on_exit:
            with contextlib.suppress(Exception):
                callback()
        self.printer.now(
            f"{sig.name} again: exiting now, without waiting for running functions and jobs "
            "(pending jobs resume on the next start)",
            "red",
            "bold",
        )
        os._exit(128 + sig)

    def attach(self, server: uvicorn.Server | None) -> None:
        self.server = server
        if server is not None and self.received:
            server.should_exit = True


def _note_signal(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do (the wakeup fd carries the signal),
    but it replaces the default actions (KeyboardInterrupt, termination)."""


def bind_socket(host: str, port: int) -> socket.socket:
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


def server_url(host: str, port: int) -> str:
    """The URL clients use to reach a server listening on ``host:port``."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def server_config(
    app: ConvexApp, *, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> uvicorn.Config:
    """How convexpy runs uvicorn: its "auto" loop and HTTP parser (uvloop and
    httptools when installed), no logging set-up of its own, ``max_connections``."""
    return uvicorn.Config(
        app,
        loop="auto",
        http="auto",
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        limit_concurrency=max_connections,
        # websockets' sans-I/O protocol (the /api/sync endpoint); a frame larger
        # than this is refused before the app, which has its own, smaller limit.
        ws="websockets-sansio",
        ws_max_size=2 * MAX_REQUEST_BYTES,
    )


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop uvicorn's ``loop="auto"`` picks: uvloop's when installed."""
    return uvicorn.Config(_no_app, loop="auto", log_config=None).get_loop_factory()


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    raise RuntimeError("only used to ask uvicorn for its event loop")


def freeze_startup_objects() -> None:
    """Exempt what exists once the server has started (modules, the app, the
    runtime) from the garbage collector's full passes.

    A server keeps allocating objects that outlive the young generations
    (each live query's read set, each round's outcomes), so full collections
    come every second or so; each walked every object alive, the whole
    import graph included: 40-60 ms pauses under live-query load, the tail
    of every update's latency (``benchmarks/README.md``). Frozen objects are
    never freed, which is what a server's modules and app are anyway.
    """
    gc.collect()
    gc.freeze()


def store_failure_line(reason: str) -> str:
    """What a server prints as it stops because its store failed for good."""
    return (
        f"Stopping: the store cannot recover ({reason}). Exiting with status 1 so that a "
        "supervisor restarts convexpy."
    )
