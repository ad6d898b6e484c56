"""Function decorators, references and the per-runtime registry.

Decorators only attach metadata: ``@mutation`` turns an ``async def`` into a
:class:`ConvexFunction`. Nothing is registered globally; the loader finds the
decorated objects in an app's modules and records them, by path, in the
:class:`FunctionRegistry` of one ``Runtime``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, overload

from .errors import FunctionNotFoundError
from .validators import ArgsValidator, ReturnsValidator, Validator, compile_args, compile_returns

__all__ = [
    "ConvexFunction",
    "FunctionKind",
    "FunctionReference",
    "FunctionRegistry",
    "Visibility",
    "action",
    "api",
    "internal",
    "internal_action",
    "internal_mutation",
    "internal_query",
    "mutation",
    "query",
]

Handler = Callable[..., Awaitable[Any]]


class FunctionKind(StrEnum):
    QUERY = "query"
    MUTATION = "mutation"
    ACTION = "action"


class Visibility(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"


class ConvexFunction:
    """A decorated handler: its kind, visibility and compiled validators."""

    __slots__ = ("__dict__", "args", "handler", "kind", "returns", "visibility")

    def __init__(
        self,
        handler: Handler,
        kind: FunctionKind,
        visibility: Visibility,
        args: ArgsValidator,
        returns: ReturnsValidator | None,
    ) -> None:
        self.handler = handler
        self.kind = kind
        self.visibility = visibility
        self.args = args
        self.returns = returns
        self.__name__ = handler.__name__
        self.__doc__ = handler.__doc__

    @property
    def module(self) -> str:
        return self.handler.__module__

    def __repr__(self) -> str:
        prefix = "internal_" if self.visibility is Visibility.INTERNAL else ""
        return f"<{prefix}{self.kind} {self.handler.__qualname__}>"

    def __call__(self, *args: object, **kwargs: object) -> Any:
        raise TypeError(
            f"{self.__name__} is a Convex {self.kind} and cannot be called directly: "
            f"use ctx.run_{self.kind}(...) in an action, ctx.scheduler to schedule it, "
            f"or runtime.{self.kind}(...); to reuse code, call a plain async helper instead"
        )


_DECORATOR_NAMES = {
    (FunctionKind.QUERY, Visibility.PUBLIC): "query",
    (FunctionKind.MUTATION, Visibility.PUBLIC): "mutation",
    (FunctionKind.ACTION, Visibility.PUBLIC): "action",
    (FunctionKind.QUERY, Visibility.INTERNAL): "internal_query",
    (FunctionKind.MUTATION, Visibility.INTERNAL): "internal_mutation",
    (FunctionKind.ACTION, Visibility.INTERNAL): "internal_action",
}


class _Decorator:
    """One of the six decorators; works bare and with ``args=`` / ``returns=``."""

    def __init__(self, kind: FunctionKind, visibility: Visibility) -> None:
        self.kind = kind
        self.visibility = visibility
        self.__name__ = _DECORATOR_NAMES[(kind, visibility)]

    @overload
    def __call__(self, handler: Handler, /) -> ConvexFunction: ...

    @overload
    def __call__(
        self,
        handler: None = None,
        /,
        *,
        args: dict[str, Validator] | None = None,
        returns: Validator | Any = None,
    ) -> Callable[[Handler], ConvexFunction]: ...

    def __call__(
        self,
        handler: Handler | None = None,
        /,
        *,
        args: dict[str, Validator] | None = None,
        returns: Validator | Any = None,
    ) -> ConvexFunction | Callable[[Handler], ConvexFunction]:
        if handler is not None:
            return self._wrap(handler, None, None)

        def decorate(fn: Handler) -> ConvexFunction:
            return self._wrap(fn, args, returns)

        return decorate

    def _wrap(self, handler: object, args: Any, returns: Any) -> ConvexFunction:
        name = self.__name__
        if isinstance(handler, ConvexFunction):
            raise TypeError(f"@{name} applied to {handler!r}, which is already decorated")
        if not callable(handler):
            raise TypeError(
                f"@{name} decorates an async function; got {type(handler).__name__}. "
                f"Write @{name} or @{name}(args={{...}}) above `async def`."
            )
        if not inspect.iscoroutinefunction(handler):
            fn_name = getattr(handler, "__name__", repr(handler))
            raise TypeError(
                f"@{name} needs an async function, but {fn_name!r} is not: "
                f"write `async def {fn_name}(ctx, ...)`"
            )
        if args is not None and not isinstance(args, dict):
            raise TypeError(f"@{name}(args=...) takes a dict of v.* validators")
        return ConvexFunction(
            handler,
            self.kind,
            self.visibility,
            compile_args(args, handler),
            compile_returns(returns),
        )


query = _Decorator(FunctionKind.QUERY, Visibility.PUBLIC)
mutation = _Decorator(FunctionKind.MUTATION, Visibility.PUBLIC)
action = _Decorator(FunctionKind.ACTION, Visibility.PUBLIC)
internal_query = _Decorator(FunctionKind.QUERY, Visibility.INTERNAL)
internal_mutation = _Decorator(FunctionKind.MUTATION, Visibility.INTERNAL)
internal_action = _Decorator(FunctionKind.ACTION, Visibility.INTERNAL)


class FunctionReference:
    """A lazy reference such as ``api.messages.send`` or ``internal.billing.invoices.send``.

    Attribute access builds the path; it is resolved against a registry only
    when used, so modules need not import each other.
    """

    def __init__(self, parts: tuple[str, ...], visibility: Visibility) -> None:
        self._parts = parts
        self._visibility = visibility

    def __getattr__(self, name: str) -> FunctionReference:
        if name.startswith("__"):
            raise AttributeError(name)
        # References never change, so the child is kept as a plain attribute:
        # `internal.jobs.noop` in a loop builds (and falls back here) only once.
        child = FunctionReference((*self._parts, name), self._visibility)
        self.__dict__[name] = child
        return child

    @property
    def visibility(self) -> Visibility:
        return self._visibility

    @property
    def path(self) -> str:
        root = "api" if self._visibility is Visibility.PUBLIC else "internal"
        if len(self._parts) < 2:
            raise FunctionNotFoundError(
                f"{root}.{'.'.join(self._parts)} is not a function reference: "
                f"write {root}.<module>.<function>"
            )
        return "/".join(self._parts[:-1]) + ":" + self._parts[-1]

    def __repr__(self) -> str:
        root = "api" if self._visibility is Visibility.PUBLIC else "internal"
        return ".".join((root, *self._parts))


api = FunctionReference((), Visibility.PUBLIC)
internal = FunctionReference((), Visibility.INTERNAL)


def normalize_path(path: str) -> str:
    """``"messages:send"`` from the accepted spellings (``messages.py:send`` …)."""
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        dotted = path.split(".")
        hint = ""
        if not sep and len(dotted) > 1 and all(dotted) and dotted[-1] != "py":
            hint = f"; did you mean {'/'.join(dotted[:-1])}:{dotted[-1]}?"
        raise FunctionNotFoundError(
            f"invalid function path {path!r}: write '<module>:<function>', "
            f"e.g. 'messages:send' or 'billing/invoices:send'{hint}",
            path=path,
        )
    module = module.removesuffix(".py").replace("\\", "/")
    return f"{module}:{name}"


class FunctionRegistry:
    """The functions of one loaded app, by path."""

    def __init__(self) -> None:
        self._by_path: dict[str, ConvexFunction] = {}
        self._paths: dict[int, str] = {}
        self._unlisted: set[str] = set()
        self._resolved: dict[tuple[str, bool], tuple[str, ConvexFunction]] = {}
        """Path strings already resolved (the registry never changes once loaded)."""
        self._trusted_refs: dict[FunctionReference, tuple[str, ConvexFunction]] = {}
        self._public_refs: dict[FunctionReference, tuple[str, ConvexFunction]] = {}

    def register(self, path: str, function: ConvexFunction, *, listed: bool = True) -> None:
        """Add ``function`` at ``path``; ``listed=False`` (convexpy's own
        functions) resolves it without listing it among the app's."""
        if path in self._by_path and self._by_path[path] is not function:
            raise ValueError(f"two functions registered at {path!r}")
        self._by_path[path] = function
        self._paths.setdefault(id(function), path)
        if not listed:
            self._unlisted.add(path)

    def __iter__(self) -> Any:
        """The app's functions, as ``(path, function)`` pairs."""
        return ((p, f) for p, f in self._by_path.items() if p not in self._unlisted)

    def __len__(self) -> int:
        return len(self._by_path) - len(self._unlisted)

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    def path_of(self, function: ConvexFunction) -> str:
        path = self._paths.get(id(function))
        if path is None:
            raise FunctionNotFoundError(
                f"{function!r} is not a function of this app: functions must be defined at "
                "the top level of a module in the app directory"
            )
        return path

    def resolve(self, ref: object, *, trusted: bool) -> tuple[str, ConvexFunction]:
        """Find a function from any reference form.

        Untrusted callers (HTTP clients without the admin key) only reach
        public functions; internal ones look exactly like missing ones.
        ``api.*`` references never reach internal functions.
        """
        if isinstance(ref, FunctionReference):
            # By identity: references are made once per attribute and never change.
            by_ref = self._trusted_refs if trusted else self._public_refs
            hit = by_ref.get(ref)
            if hit is None:
                public_only = not trusted or ref.visibility is Visibility.PUBLIC
                hit = by_ref[ref] = self._resolve(ref.path, public_only)
            return hit
        public_only = not trusted
        if type(ref) is str:
            hit = self._resolved.get((ref, public_only))
            if hit is not None:
                return hit
            found = self._resolve(normalize_path(ref), public_only)
            self._resolved[(ref, public_only)] = found
            return found
        if isinstance(ref, ConvexFunction):
            path = self.path_of(ref)
        elif isinstance(ref, str):
            path = normalize_path(ref)
        else:
            raise FunctionNotFoundError(
                f"a function reference must be a decorated function, a path string like "
                f"'messages:send', or api.x.y / internal.x.y; got {type(ref).__name__}"
            )
        return self._resolve(path, public_only)

    def _resolve(self, path: str, public_only: bool) -> tuple[str, ConvexFunction]:
        function = self._by_path.get(path)
        if function is None or (public_only and function.visibility is Visibility.INTERNAL):
            kind = "public function" if public_only else "function"
            raise FunctionNotFoundError(f"Could not find {kind} for {path!r}", path=path)
        return path, function
