"""Compiled validators: a function's arguments and return value, a table's documents.

Each runs the msgspec fast path and, only when it fails, the Python path to
report the exact path, value and expectation.
"""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Callable
from typing import Any, NoReturn

import msgspec

from ..errors import (
    ArgumentValidationError,
    ReturnsValidationError,
    SchemaValidationError,
)
from ..values import INT64_MAX, INT64_MIN, describe_value, format_path, is_valid_field_name
from .annotations import _as_validator, _from_annotation
from .core import _BUILTIN_TYPES, _dec_hook, _Mismatch, _to_plain
from .nodes import Validator, VBoolean, VFloat64, VInt64, VNull, VObject, VRecord, VString

# --------------------------------------------------------------------------
# Compiled validators

_SCALAR_TYPES: dict[type, type] = {
    VString: str,
    VFloat64: float,
    VInt64: int,
    VBoolean: bool,
    VNull: type(None),
}
"""Validators whose accepted values of one exact Python type convert to themselves."""


def _converted(root_struct: Any, value: object) -> Any:
    return msgspec.convert(
        value, root_struct, strict=True, dec_hook=_dec_hook, builtin_types=_BUILTIN_TYPES
    )


def _mismatch_or_none(validator: Validator, value: object) -> _Mismatch | None:
    try:
        validator._check(value)
    except _Mismatch as mismatch:
        return mismatch
    return None


def _divergence(error: msgspec.ValidationError) -> _Mismatch:
    # The Python path accepted what msgspec refused; that is a bug in this
    # module. Still report something useful rather than accept the input.
    text = str(error)
    return _Mismatch(None, "", reason=f"invalid value ({text})")


class ArgsValidator:
    """Validates and converts the arguments of one function.

    ``fields`` maps argument names to validators; ``extra`` is the validator
    for undeclared arguments (a handler with ``**kwargs``), or ``None`` when
    they are refused.
    """

    __slots__ = ("_object", "_scalars", "_struct", "extra", "fields")

    def __init__(self, fields: dict[str, Validator], extra: Validator | None = None) -> None:
        self._object = VObject(fields)
        self.fields = self._object.fields
        self.extra = extra
        self._struct = self._object._ms()
        scalars = [(name, _SCALAR_TYPES.get(type(f))) for name, f in self.fields.items()]
        self._scalars: tuple[tuple[str, type], ...] | None = (
            tuple((name, kind) for name, kind in scalars if kind is not None)
            if all(kind is not None for _, kind in scalars)
            else None
        )
        """Every argument a scalar: (name, exact Python type) each; else None."""

    def describe(self) -> str:
        """The arguments as an object type, e.g. ``{ body: string }``."""
        return self._object.describe()

    def json(self) -> dict[str, Any]:
        """The arguments as Convex validator JSON (an object validator)."""
        return self._object.json()

    def __repr__(self) -> str:
        return f"ArgsValidator({self._object!r}, extra={self.extra!r})"

    def validate(self, args: object, function: str) -> dict[str, object]:
        """Return the converted arguments or raise :class:`ArgumentValidationError`."""
        if not isinstance(args, dict):
            raise ArgumentValidationError(
                f'Invalid arguments for "{function}": expected an object (dict) of arguments, '
                f"got {describe_value(args)}",
                function=function,
                path="$",
                value=args,
                expected=self.describe(),
            )
        scalars = self._scalars
        if scalars is not None and len(args) == len(scalars):
            # The fast path: values of exactly the declared types convert to
            # themselves, so checking the types is the whole validation.
            for name, kind in scalars:
                value = args.get(name, args)
                if type(value) is not kind or (
                    kind is int and not INT64_MIN <= value <= INT64_MAX  # type: ignore[operator]
                ):
                    break
            else:
                return dict(args)
        extras: dict[str, object] | None = None
        if self.extra is not None:
            known = self.fields
            if any(key not in known for key in args):
                extras = {k: item for k, item in args.items() if k not in known}
                args = {k: item for k, item in args.items() if k in known}
        try:
            result: dict[str, object] = _to_plain(_converted(self._struct, args))
        except msgspec.ValidationError as error:
            self._fail(args, function, error)
        if extras:
            result.update(self._check_extras(extras, function))
        return result

    def _check_extras(self, extras: dict[Any, object], function: str) -> dict[str, object]:
        assert self.extra is not None
        record = VRecord(VString(), self.extra)
        try:
            converted: dict[str, object] = record._check(extras)
        except _Mismatch as mismatch:
            self._raise(mismatch, function)
        return converted

    def _fail(self, args: object, function: str, error: msgspec.ValidationError) -> NoReturn:
        mismatch = _mismatch_or_none(self._object, args) or _divergence(error)
        self._raise(mismatch, function)

    def _raise(self, mismatch: _Mismatch, function: str) -> NoReturn:
        parts = mismatch.path_parts()
        path = format_path(parts)
        if len(parts) == 1 and mismatch.kind == "missing":
            message = (
                f'Invalid arguments for "{function}": missing required argument `{parts[0]}` '
                f"(expected {mismatch.expected})"
            )
        elif len(parts) == 1 and mismatch.kind == "unexpected":
            message = (
                f'Invalid arguments for "{function}": unexpected argument `{parts[0]}` '
                f"(expected arguments: {self.describe()})"
            )
        else:
            message = f'Invalid argument for "{function}" at {path}: {mismatch.describe()}'
        raise ArgumentValidationError(
            message,
            function=function,
            path=path,
            value=mismatch.value,
            expected=mismatch.expected,
        ) from None


class ReturnsValidator:
    """Validates and converts the return value of one function."""

    __slots__ = ("_struct", "validator")

    def __init__(self, validator: Validator) -> None:
        self.validator = validator
        # A one-field struct as the root: msgspec caches the compiled type
        # info on struct classes, while a bare list[...] would be re-parsed
        # on every call.
        self._struct = msgspec.defstruct("Returns", [("v", validator._ms())], gc=False)

    def __repr__(self) -> str:
        return f"ReturnsValidator({self.validator!r})"

    def validate(self, value: object, function: str) -> object:
        """Return the converted value or raise :class:`ReturnsValidationError`."""
        try:
            return _to_plain(_converted(self._struct, {"v": value}).v)
        except msgspec.ValidationError as error:
            mismatch = _mismatch_or_none(self.validator, value) or _divergence(error)
        path = format_path(mismatch.path_parts())
        raise ReturnsValidationError(
            f'Invalid return value of "{function}" at {path}: {mismatch.describe()}'
        )


class ObjectValidator:
    """Validates documents of one table against its schema (system fields excluded)."""

    __slots__ = ("_object", "_struct", "name")

    def __init__(self, fields: dict[str, Validator], name: str) -> None:
        self._object = VObject(fields)
        self.name = name
        self._struct = self._object._ms()

    @property
    def fields(self) -> dict[str, Validator]:
        """The field validators."""
        return self._object.fields

    def describe(self) -> str:
        """The document type, e.g. ``{ title: string, done: boolean }``."""
        return self._object.describe()

    def json(self) -> dict[str, Any]:
        """Convex validator JSON of the document type."""
        return self._object.json()

    def __repr__(self) -> str:
        return f"ObjectValidator({self.name!r}, {self._object!r})"

    def validate(self, doc: object) -> dict[str, object]:
        """Return the converted document or raise :class:`SchemaValidationError`."""
        try:
            result: dict[str, object] = _to_plain(_converted(self._struct, doc))
            return result
        except msgspec.ValidationError as error:
            mismatch = _mismatch_or_none(self._object, doc) or _divergence(error)
        path = format_path(mismatch.path_parts())
        raise SchemaValidationError(
            f'Document does not match the schema of table "{self.name}" at {path}: '
            f"{mismatch.describe()}"
        )


def compile_object(fields: dict[str, Validator], *, name: str) -> ObjectValidator:
    """Compile a table's document validator (``name`` is the table, for messages)."""
    return ObjectValidator(
        {key: _as_validator(f, f"table {name!r} field {key!r}") for key, f in fields.items()},
        name,
    )


def compile_returns(returns: object) -> ReturnsValidator | None:
    """Compile a ``returns=`` validator or return annotation; ``None`` means unchecked."""
    if returns is None:
        return None
    return ReturnsValidator(_as_validator(returns, "returns"))


def _function_name(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", None) or "?"
    name = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{module}.{name}"


def _argument_hints(
    handler: Callable[..., Any], parameters: list[inspect.Parameter], name: str
) -> dict[str, Any]:
    namespace = getattr(inspect.unwrap(handler), "__globals__", {})
    hints: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.annotation is inspect.Parameter.empty:
            continue

        def holder() -> None: ...

        holder.__annotations__ = {parameter.name: parameter.annotation}
        try:
            hints.update(typing.get_type_hints(holder, namespace, include_extras=True))
        except Exception as error:
            raise TypeError(
                f"{name}: parameter `{parameter.name}`: cannot resolve its annotation "
                f"{parameter.annotation!r}: {error}"
            ) from None
    return hints


def compile_args(
    args: dict[str, Validator] | VObject | None, handler: Callable[..., Any]
) -> ArgsValidator:
    """Compile the argument validator of a function.

    With ``args`` (a dict of validators, or ``v.object(...)``), the handler's
    annotations are ignored. Without it, the parameters after the first
    (``ctx``) define the arguments from their annotations; parameters with a
    default are optional, unannotated ones accept any Convex value, and
    ``**kwargs`` accepts extra arguments. Raises ``TypeError`` naming the
    function and parameter for annotations that cannot be validated.
    """
    name = _function_name(handler)
    if args is not None:
        if isinstance(args, VObject):
            return ArgsValidator(args.fields)
        if not isinstance(args, dict):
            raise TypeError(f"{name}: args= must be a dict of validators, got {args!r}")
        return ArgsValidator(
            {key: _as_validator(f, f"{name}: argument {key!r}") for key, f in args.items()}
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: cannot read the signature: {error}") from None
    parameters = list(signature.parameters.values())
    try:
        hints = typing.get_type_hints(handler, include_extras=True)
    except Exception:
        # Often only `ctx` or the return type is unresolvable (imported under
        # TYPE_CHECKING); only the arguments' annotations matter here.
        hints = _argument_hints(handler, parameters[1:], name)
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"{name} must take `ctx` as its first positional parameter")
    fields: dict[str, Validator] = {}
    extra: Validator | None = None
    for parameter in parameters[1:]:
        hint = hints.get(parameter.name, inspect.Parameter.empty)
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue  # the handler is called with keywords only
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(
                f"{name}: parameter `{parameter.name}` is positional-only, but arguments "
                "are passed by name"
            )
        try:
            validator = _from_annotation(hint, ())
        except TypeError as error:
            raise TypeError(f"{name}: parameter `{parameter.name}`: {error}") from None
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = validator
            continue
        if not is_valid_field_name(parameter.name):
            raise TypeError(
                f"{name}: parameter `{parameter.name}` is not a valid Convex field name "
                "(printable ASCII only)"
            )
        if parameter.default is not inspect.Parameter.empty:
            validator = copy.copy(validator)
            validator.is_optional = True
        fields[parameter.name] = validator
    return ArgsValidator(fields, extra)
