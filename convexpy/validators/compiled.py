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
from .nodes import (
    Validator,
    VBoolean,
    VFloat64,
    VInt64,
    VIntAnnotation,
    VNull,
    VObject,
    VRecord,
    VString,
    integral_float,
    whole_floats_to_ints,
)

# --------------------------------------------------------------------------
# Compiled validators

_SCALAR_TYPES: dict[type, type] = {
    VString: str,
    VFloat64: float,
    VInt64: int,
    VIntAnnotation: int,  # whole floats go through the Python path
    VBoolean: bool,
    VNull: type(None),
}
"""Validators whose accepted values of one exact Python type convert to themselves."""


def _converted(root_struct: Any, value: object) -> Any:
    return msgspec.convert(
        value, root_struct, strict=True, dec_hook=_dec_hook, builtin_types=_BUILTIN_TYPES
    )


class _SecondTry:
    """What a validator with ``int`` annotations tries when msgspec refused
    the input: the msgspec type that also takes whole floats there (still at
    C speed), then the conversion of those floats to ints.

    Ints pass the first try, so only inputs with such floats pay for this.
    ``wrapped``: the root is a one-field struct, as in :class:`ReturnsValidator`.
    """

    __slots__ = ("struct", "to_ints", "wrapped")

    def __init__(self, struct: Any, to_ints: Callable[[Any], Any], *, wrapped: bool) -> None:
        self.struct = struct
        self.to_ints = to_ints
        self.wrapped = wrapped

    @classmethod
    def of(cls, validator: Validator, *, wrapped: bool = False) -> _SecondTry | None:
        """The second try of ``validator``; None when it has no ``int`` annotation."""
        to_ints = whole_floats_to_ints(validator)
        if to_ints is None:
            return None
        struct = validator._ms(whole=True)
        if wrapped:
            struct = msgspec.defstruct("Returns", [("v", struct)], gc=False)
        return cls(struct, to_ints, wrapped=wrapped)


def _retry(validator: Validator, second: _SecondTry | None, value: object, error: Exception) -> Any:
    """After msgspec refused ``value``: its conversion by ``second``, or the
    ``_Mismatch`` (raised) that explains the refusal, from the Python path."""
    if second is not None:
        try:
            if second.wrapped:
                return second.to_ints(_to_plain(_converted(second.struct, {"v": value}).v))
            return second.to_ints(_to_plain(_converted(second.struct, value)))
        except msgspec.ValidationError:
            pass
    validator._check(value)  # raises _Mismatch
    # The Python path accepted what msgspec refused; that is a bug in this
    # module. Still report something useful rather than accept the input.
    raise _Mismatch(None, "", reason=f"invalid value ({error})")


_INTEGRAL_ARGUMENT = (
    "an `int` parameter takes integers (a float only when it is whole and within ±2^53); "
    "clients should send an int64 (`ConvexInt64` in the Python client), or the function "
    "can declare `float` / `v.number()` to take any number"
)


def _with_whole_ints(args: dict[Any, object], names: tuple[str, ...]) -> dict[Any, object] | None:
    """A copy of ``args`` with the whole floats of ``names`` as ints (None: none to convert)."""
    converted: dict[Any, object] | None = None
    for name in names:
        value = args.get(name)
        if type(value) is float and (number := integral_float(value)) is not None:
            if converted is None:
                converted = dict(args)
            converted[name] = number
    return converted


class ArgsValidator:
    """Validates and converts the arguments of one function.

    ``fields`` maps argument names to validators; ``extra`` is the validator
    for undeclared arguments (a handler with ``**kwargs``), or ``None`` when
    they are refused.
    """

    __slots__ = ("_object", "_scalars", "_second", "_struct", "_wholes", "extra", "fields")

    def __init__(self, fields: dict[str, Validator], extra: Validator | None = None) -> None:
        self._object = VObject(fields)
        self.fields = self._object.fields
        self.extra = extra
        self._struct = self._object._ms()
        self._second = _SecondTry.of(self._object)
        scalars = [(name, _SCALAR_TYPES.get(type(f))) for name, f in self.fields.items()]
        self._scalars: tuple[tuple[str, type], ...] | None = (
            tuple((name, kind) for name, kind in scalars if kind is not None)
            if all(kind is not None for _, kind in scalars)
            else None
        )
        """Every argument a scalar: (name, exact Python type) each; else None."""
        self._wholes = tuple(
            name
            for name, field in self.fields.items()
            if self._scalars is not None and type(field) is VIntAnnotation
        )
        """With ``_scalars``: the ``int`` annotations, which take whole floats."""

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
            if self._wholes:
                converted = _with_whole_ints(args, self._wholes)
                if converted is not None:  # ints now: the fast path again
                    return self.validate(converted, function)
        extras: dict[str, object] | None = None
        if self.extra is not None:
            known = self.fields
            if any(key not in known for key in args):
                extras = {k: item for k, item in args.items() if k not in known}
                args = {k: item for k, item in args.items() if k in known}
        result: dict[str, object]
        try:
            result = _to_plain(_converted(self._struct, args))
        except msgspec.ValidationError as error:
            try:
                result = _retry(self._object, self._second, args, error)
            except _Mismatch as mismatch:
                self._raise(mismatch, function)
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
            if mismatch.kind == "integral":
                mismatch.detail = _INTEGRAL_ARGUMENT
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

    __slots__ = ("_second", "_struct", "validator")

    def __init__(self, validator: Validator) -> None:
        self.validator = validator
        self._second = _SecondTry.of(validator, wrapped=True)
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
            try:
                return _retry(self.validator, self._second, value, error)
            except _Mismatch as refused:
                mismatch = refused
        path = format_path(mismatch.path_parts())
        raise ReturnsValidationError(
            f'Invalid return value of "{function}" at {path}: {mismatch.describe()}'
        )


class ObjectValidator:
    """Validates documents of one table against its schema (system fields excluded)."""

    __slots__ = ("_object", "_second", "_struct", "name")

    def __init__(self, fields: dict[str, Validator], name: str) -> None:
        self._object = VObject(fields)
        self.name = name
        self._struct = self._object._ms()
        self._second = _SecondTry.of(self._object)

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
        result: dict[str, object]
        try:
            result = _to_plain(_converted(self._struct, doc))
            return result
        except msgspec.ValidationError as error:
            try:
                result = _retry(self._object, self._second, doc, error)
                return result
            except _Mismatch as refused:
                mismatch = refused
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
