"""Key sets and discovery documents fetched over HTTP, cached.

:class:`KeyFetcher` gets JSON documents (a provider's JWKS, an OIDC
``/.well-known/openid-configuration``) with httpx, within ``timeout``
seconds in all, and keeps them for ``max_age`` seconds. Asking again with
``refresh=True`` (a token named a key the cached set lacks: the provider
may have rotated its keys) fetches anew at most once per ``refresh_interval``
seconds per URL, so tokens with made-up key ids cannot make the server
hammer a provider. Concurrent requests for one URL share one fetch, which
runs as a task of its own: a slow or failing endpoint holds up only the
requests that need its keys, each for at most ``timeout`` seconds, and
never blocks the event loop. When a refresh fails, the keys fetched before
keep serving.

Time comes from the injected ``clock`` (seconds), so tests move it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import ConvexpyError

__all__ = ["KeyFetchError", "KeyFetcher"]

logger = logging.getLogger("convexpy.auth")

MAX_DOCUMENT_BYTES = 1 << 20
"""A JWKS or discovery document larger than this is refused (real ones are a few KiB)."""


class KeyFetchError(ConvexpyError, OSError):
    """A document could not be fetched or is not what was expected; the message says why."""


@dataclass
class _Cached:
    document: Any
    fetched_at: float


@dataclass
class _Outcome:
    document: Any = None
    error: KeyFetchError | None = None


Check = Callable[[object], "str | None"]
"""Why a fetched JSON document is unusable, or None."""


class KeyFetcher:
    """JSON documents by URL, fetched over HTTP and cached (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        timeout: float = 5.0,
        max_age: float = 600.0,
        refresh_interval: float = 30.0,
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.max_age = max_age
        self.refresh_interval = refresh_interval
        self._cache: dict[str, _Cached] = {}
        self._attempted: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[_Outcome]] = {}

    async def get(self, url: str, check: Check, *, refresh: bool = False) -> Any:
        """The document at ``url``, from the cache when it may be used.

        Raises :class:`KeyFetchError` when it cannot be fetched (within the
        timeout) and nothing was fetched before.
        """
        now = self.clock()
        cached = self._cache.get(url)
        if cached is not None:
            if not refresh and now < cached.fetched_at + self.max_age:
                return cached.document
            if refresh and now < self._attempted.get(url, -float("inf")) + self.refresh_interval:
                return cached.document  # refreshed moments ago: the key is not there
        task = self._inflight.get(url)
        if task is None:
            self._attempted[url] = now
            task = asyncio.get_running_loop().create_task(self._fetch(url, check))
            self._inflight[url] = task
            task.add_done_callback(lambda done: self._done(url, done))
        # (shield: a waiter that goes away does not cancel the fetch others wait for)
        outcome = await asyncio.shield(task)
        if outcome.error is None:
            return outcome.document
        if cached is not None:
            logger.warning("%s; using the keys fetched before", outcome.error)
            return cached.document
        raise outcome.error

    def _done(self, url: str, task: asyncio.Task[_Outcome]) -> None:
        if self._inflight.get(url) is task:
            del self._inflight[url]
        if not task.cancelled() and task.result().error is None:
            self._cache[url] = _Cached(task.result().document, self._attempted[url])

    async def _fetch(self, url: str, check: Check) -> _Outcome:
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._download(url)
        except TimeoutError:
            return _Outcome(error=KeyFetchError(f"{url} did not answer within {self.timeout:g} s"))
        except KeyFetchError as exc:
            return _Outcome(error=exc)
        except Exception as exc:  # httpx's errors, a URL it refuses, TLS: all mean "no keys"
            reason = str(exc) or type(exc).__name__
            return _Outcome(error=KeyFetchError(f"{url} could not be fetched: {reason}"))
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return _Outcome(error=KeyFetchError(f"{url} did not answer with JSON"))
        problem = check(document)
        if problem is not None:
            return _Outcome(error=KeyFetchError(f"{url}: {problem}"))
        return _Outcome(document)

    async def _download(self, url: str) -> bytes:
        async with (
            httpx.AsyncClient(timeout=self.timeout, follow_redirects=True) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise KeyFetchError(f"{url} answered HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_DOCUMENT_BYTES:
                    raise KeyFetchError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
