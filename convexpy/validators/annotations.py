"""Python type annotations -> validators."""

from __future__ import annotations

import copy
import enum
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from ..ids import Id, IdOf
from .nodes import (
    Validator,
    VAny,
    VArray,
    VBoolean,
    VBytes,
    VFloat64,
    VId,
    VIntAnnotation,
    VLiteral,
    VNull,
    VObject,
    VRecord,
    VString,
    VUnion,
)

# --------------------------------------------------------------------------
# Annotations -> validators

_SUPPORTED = (
    "supported annotations are str, int, float, bool, None, bytes, list[X], "
    'dict[str, X], a TypedDict, Literal[...], X | None, Union[...], Any and Id["table"]'
)


def validator_from_annotation(annotation: object) -> Validator:
    """The validator matching a Python type annotation.

    ``str`` → string, ``int`` → int64 that also takes whole floats within
    ±2^53 as ints (:class:`~convexpy.validators.nodes.VIntAnnotation`;
    ``v.int64()`` refuses floats), ``float`` → number, ``bool``,
    ``None``, ``bytes``, ``list[X]``, ``dict[str, X]`` (record), TypedDict
    (object; ``NotRequired`` fields optional), ``Literal[...]``,
    ``X | None`` / ``Optional[X]`` / ``Union[...]``, ``Any`` / ``object``
    (any Convex value), ``Id["t"]`` / ``Id``. A validator is returned as is.
    Raises ``TypeError`` for anything else.
    """
    return _from_annotation(annotation, ())


def _from_annotation(tp: Any, seen: tuple[type, ...]) -> Validator:
    if isinstance(tp, Validator):
        return tp
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return VAny()
    if tp is None or tp is type(None):
        return VNull()
    if isinstance(tp, type):
        if issubclass(tp, Id):
            return VId(None)
        simple: dict[type, Callable[[], Validator]] = {
            str: VString,
            bool: VBoolean,
            int: VIntAnnotation,
            float: VFloat64,
            bytes: VBytes,
        }
        if tp in simple:
            return simple[tp]()
        if tp is list:
            return VArray(VAny())
        if tp is dict:
            return VRecord(VString(), VAny())
        if typing.is_typeddict(tp):
            return _from_typeddict(tp, seen)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        for meta in tp.__metadata__:
            if isinstance(meta, IdOf):
                return VId(meta.table)
            if isinstance(meta, Validator):
                return meta
        return _from_annotation(args[0], seen)
    if origin in (typing.Required, typing.NotRequired):
        return _from_annotation(args[0], seen)
    if origin is list:
        return VArray(_from_annotation(args[0], seen))
    if origin is dict:
        return VRecord(_from_annotation(args[0], seen), _from_annotation(args[1], seen))
    if origin is Literal:
        literals: list[Validator] = []
        for value in args:
            if value is None:
                literals.append(VNull())
            elif isinstance(value, str | int | float) and not isinstance(value, enum.Enum):
                literals.append(VLiteral(value))
            else:
                raise TypeError(f"unsupported Literal value {value!r} in {tp!r}")
        return literals[0] if len(literals) == 1 else VUnion(tuple(literals))
    if origin is Union or origin is types.UnionType:
        members = tuple(_from_annotation(arg, seen) for arg in args)
        return members[0] if len(members) == 1 else VUnion(members)
    raise TypeError(f"unsupported type annotation {tp!r}; {_SUPPORTED}")


def _from_typeddict(tp: type, seen: tuple[type, ...]) -> Validator:
    if tp in seen:
        raise TypeError(f"recursive TypedDict {tp.__qualname__} is not supported")
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except Exception as error:
        raise TypeError(f"cannot resolve the annotations of {tp.__qualname__}: {error}") from None
    # With string annotations (PEP 563), Python 3.11 computes
    # __optional_keys__ without seeing Required/NotRequired, so the wrappers
    # (kept by include_extras=True) decide when present.
    optional: frozenset[str] = getattr(tp, "__optional_keys__", frozenset())
    fields: dict[str, Validator] = {}
    for name, hint in hints.items():
        wrapper = typing.get_origin(hint)
        is_optional = wrapper is typing.NotRequired or (
            wrapper is not typing.Required and name in optional
        )
        field = _from_annotation(hint, (*seen, tp))
        if is_optional:
            field = copy.copy(field)
            field.is_optional = True
        fields[name] = field
    return VObject(fields)


def _as_validator(spec: object, where: str) -> Validator:
    if isinstance(spec, Validator):
        return spec
    try:
        return validator_from_annotation(spec)
    except TypeError as error:
        raise TypeError(f"{where}: {error}") from None
