"""What the validator nodes and the compiled validators share.

The value kinds msgspec dispatches unions on, the mismatch the Python path
raises, and the marker types and hooks through which msgspec runs the Python
path for nodes it cannot express.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

import msgspec

from ..values import INT64_MAX, INT64_MIN, PathPart, describe_value

if TYPE_CHECKING:
    from .nodes import Validator

_I64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
# What an `int` annotation takes on the second try (see VIntAnnotation): an
# int64, or a whole float within ±2^53 (NaN and infinities fail the bounds).
_I64_OR_WHOLE = Union[  # noqa: UP007
    _I64, Annotated[float, msgspec.Meta(ge=-(2.0**53), le=2.0**53, multiple_of=1.0)]
]
# Record keys must be field names: printable ASCII not starting with "$".
# msgspec applies patterns with re.search, hence the explicit anchors.
_FIELD_NAME = Annotated[str, msgspec.Meta(pattern=r"\A[ -#%-~][ -~]*\Z", max_length=1024)]
# Without this, msgspec.convert would decode base64 *strings* into bytes.
_BUILTIN_TYPES = (bytes,)

_ALL_KINDS = frozenset({"null", "bool", "int", "float", "str", "bytes", "list", "dict"})


def _value_kind(value: object) -> str:
    """The kind of Python value msgspec dispatches unions on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    if isinstance(value, list | tuple | set | frozenset):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "other"


# --------------------------------------------------------------------------
# Mismatches (Python path)


class _Mismatch(Exception):
    """A value does not match a node. ``parts`` collects the path, innermost first."""

    def __init__(
        self,
        value: object,
        expected: str,
        *,
        detail: str = "",
        reason: str = "",
        kind: str = "type",
        sub_parts: Iterable[PathPart] = (),
    ) -> None:
        super().__init__(expected)
        self.value = value
        self.expected = expected
        self.detail = detail
        self.reason = reason
        self.kind = kind
        self.parts: list[PathPart] = list(sub_parts)[::-1]

    def path_parts(self) -> list[PathPart]:
        return self.parts[::-1]

    def describe(self) -> str:
        if self.reason:
            return self.reason
        text = f"expected {self.expected}, got {describe_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text


# --------------------------------------------------------------------------
# Marker types: msgspec calls _dec_hook for them, which runs the Python check.


class _Checked:
    """A value checked by the Python path, wrapped so msgspec accepts it."""

    __slots__ = ("value",)
    node: ClassVar[Validator]

    def __init__(self, value: object) -> None:
        self.value = value


def _dec_hook(tp: type, obj: Any) -> Any:
    # msgspec's hook protocol: NotImplementedError means "not a type I handle".
    if not (isinstance(tp, type) and issubclass(tp, _Checked)):
        raise NotImplementedError
    try:
        return tp(tp.node._check(obj))
    except _Mismatch:
        # The message is never shown: a failed fast path reruns the Python
        # path over the whole input to build the real error.
        raise ValueError(f"expected {tp.node.describe()}") from None


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, _Checked):
        return obj.value
    if isinstance(obj, str):
        return str.__str__(obj)
    raise NotImplementedError  # msgspec's hook protocol: not a type we handle


def _to_plain(converted: object) -> Any:
    # Structs become dicts (UNSET fields dropped), markers their values,
    # str subclasses str: the handler sees plain Convex values.
    return msgspec.to_builtins(converted, builtin_types=_BUILTIN_TYPES, enc_hook=_enc_hook)


_FALLBACK: Any = object()
_NOT_BUILT: Any = object()
