from __future__ import annotations

import datetime
import math
from typing import Any, Literal, NotRequired, Optional, TypedDict, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convexpy.errors import (
    ArgumentValidationError,
    ReturnsValidationError,
    SchemaValidationError,
)
from convexpy.ids import Id, encode_id, new_id, table_number
from convexpy.validators import (
    ArgsValidator,
    Validator,
    VAny,
    VArray,
    VBoolean,
    VBytes,
    VFloat64,
    VId,
    VInt64,
    VIntAnnotation,
    VLiteral,
    VNull,
    VObject,
    VRecord,
    VString,
    VUnion,
    compile_args,
    compile_object,
    compile_returns,
    v,
    validator_from_annotation,
)
from convexpy.values import INT64_MAX, INT64_MIN, check_value

# --------------------------------------------------------------------------
# Helpers


def accepts(validator: Validator, value: object) -> bool:
    returns = compile_returns(validator)
    assert returns is not None
    try:
        returns.validate(value, "t:f")
    except ReturnsValidationError:
        return False
    return True


def convert(validator: Validator, value: object) -> object:
    returns = compile_returns(validator)
    assert returns is not None
    return returns.validate(value, "t:f")


def returns_error(validator: Validator, value: object) -> str:
    returns = compile_returns(validator)
    assert returns is not None
    with pytest.raises(ReturnsValidationError) as info:
        returns.validate(value, "t:f")
    return str(info.value)


def python_path(validator: Validator, value: object) -> tuple[bool, object]:
    try:
        return True, validator._check(value)
    except Exception:
        return False, None


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def noop(ctx: object) -> None:
    return None


MESSAGE_ID = new_id("messages")
USER_ID = new_id("users")


# --------------------------------------------------------------------------
# Each validator


@pytest.mark.parametrize(
    ("validator", "good", "bad"),
    [
        (v.string(), ["", "x", "é"], [1, None, b"x", True, ["x"]]),
        (v.number(), [1.5, -0.0, math.inf, 3, -(2**63)], ["1", True, None, 10**400]),
        (v.float64(), [0.5], [False]),
        (v.int64(), [0, INT64_MIN, INT64_MAX], [INT64_MAX + 1, INT64_MIN - 1, 1.0, True, "1"]),
        (v.bigint(), [7], [7.0]),
        (v.boolean(), [True, False], [0, 1, None, "true"]),
        (v.null(), [None], [0, False, ""]),
        (v.bytes(), [b"", b"\x00\xff", bytearray(b"x")], ["aGk=", [1], None]),
        (v.id("messages"), [MESSAGE_ID], [USER_ID, "abc", MESSAGE_ID.upper(), 5, None]),
        (v.array(v.int64()), [[], [1, 2], (1, 2)], [[1, "x"], "ab", {"a": 1}, [True]]),
        (v.literal("a"), ["a"], ["b", "A", None]),
        (v.literal(1), [1], [True, 1.0, 2]),
        (v.literal(True), [True], [1, False]),
        (v.literal(1.5), [1.5], [1, "1.5"]),
        (v.any(), [None, 1, [1, {"a": b"x"}]], [(1,), {1: 2}, {"$a": 1}, 2**64, [{1, 2}]]),
        (
            v.record(v.string(), v.int64()),
            [{}, {"a": 1, "b-c": 2}],
            [{"a": "x"}, {"$a": 1}, {"": 1}, [1]],
        ),
        (v.nullable(v.string()), [None, "x"], [1]),
    ],
)
def test_validator_accepts_and_rejects(
    validator: Validator, good: list[object], bad: list[object]
) -> None:
    for value in good:
        assert accepts(validator, value), value
        assert python_path(validator, value)[0], value
    for value in bad:
        assert not accepts(validator, value), value
        assert not python_path(validator, value)[0], value


def test_number_converts_ints_to_floats() -> None:
    assert same(convert(v.number(), 3), 3.0)
    assert same(convert(v.array(v.number()), [1, 2.5]), [1.0, 2.5])
    assert same(convert(v.object({"x": v.number()}), {"x": 2}), {"x": 2.0})


def test_bool_is_not_an_int() -> None:
    assert "expected int64, got true (boolean)" in returns_error(v.int64(), True)
    assert "expected float64, got false (boolean)" in returns_error(v.number(), False)


def test_int64_bounds() -> None:
    assert convert(v.int64(), INT64_MAX) == INT64_MAX
    assert "outside the int64 range" in returns_error(v.int64(), INT64_MAX + 1)


def test_bytes_are_not_decoded_from_strings() -> None:
    assert convert(v.bytes(), bytearray(b"hi")) == b"hi"
    assert type(convert(v.bytes(), bytearray(b"hi"))) is bytes
    assert "expected bytes" in returns_error(v.bytes(), "aGk=")


def test_arrays_become_lists() -> None:
    assert convert(v.array(v.string()), ("a", "b")) == ["a", "b"]


def test_ids_of_other_tables_and_malformed_ids() -> None:
    message = returns_error(v.id("messages"), USER_ID)
    assert 'expected id("messages")' in message
    assert "it is an id of table 'users'" in message
    assert "not a valid document id" in returns_error(v.id("messages"), "x" * 37)
    assert accepts(validator_from_annotation(Id), USER_ID)
    assert not accepts(validator_from_annotation(Id), "nope")


def test_objects_fields() -> None:
    person = v.object({"name": v.string(), "age": v.optional(v.int64())})
    assert convert(person, {"name": "a"}) == {"name": "a"}
    assert convert(person, {"name": "a", "age": 3}) == {"name": "a", "age": 3}
    assert "expected int64, got null" in returns_error(person, {"name": "a", "age": None})
    assert "missing required field `name`" in returns_error(person, {"age": 1})
    assert "unexpected field `nmae`" in returns_error(person, {"name": "a", "nmae": "b"})
    assert "object keys must be strings" in returns_error(person, {"name": "a", 1: 2})


def test_unusual_field_names_work() -> None:
    odd = v.object({"my-field": v.int64(), "class": v.string(), "_x": v.optional(v.null())})
    assert convert(odd, {"my-field": 1, "class": "c"}) == {"my-field": 1, "class": "c"}
    assert convert(odd, {"my-field": 1, "class": "c", "_x": None})["_x"] is None  # type: ignore[index]
    with pytest.raises(ValueError):
        v.object({"$bad": v.string()})


def test_union_of_objects() -> None:
    shape = v.union(
        v.object({"kind": v.literal("circle"), "r": v.number()}),
        v.object({"kind": v.literal("square"), "side": v.number()}),
    )
    assert convert(shape, {"kind": "circle", "r": 1}) == {"kind": "circle", "r": 1.0}
    assert convert(shape, {"kind": "square", "side": 2.5}) == {"kind": "square", "side": 2.5}
    # The literal discriminant picks the member whose error is reported.
    assert "at $.side: expected float64, got " in returns_error(
        shape, {"kind": "square", "side": "x"}
    )
    message = returns_error(shape, {"kind": "triangle"})
    assert 'expected { kind: "circle", r: float64 } | { kind: "square", side: float64 }' in message


def test_union_keeps_ints_when_it_accepts_int64() -> None:
    either = v.union(v.number(), v.int64())
    assert same(convert(either, 3), 3)
    assert same(convert(either, 2**63), float(2**63))
    assert same(convert(either, 2.5), 2.5)
    assert same(convert(v.union(v.number(), v.string()), 3), 3.0)


def test_union_of_literals_and_nullable() -> None:
    mode = v.union(v.literal("a"), v.literal("b"), v.null())
    assert convert(mode, "b") == "b"
    assert convert(mode, None) is None
    assert 'expected "a" | "b" | null, got "c" (string)' in returns_error(mode, "c")


def test_nullable_object_reports_the_inner_error() -> None:
    maybe = v.nullable(v.object({"n": v.int64()}))
    assert "at $.n: expected int64" in returns_error(maybe, {"n": "x"})


def test_records() -> None:
    by_user = v.record(v.id("users"), v.number())
    assert convert(by_user, {USER_ID: 1}) == {USER_ID: 1.0}
    assert "invalid record key" in returns_error(by_user, {MESSAGE_ID: 1})
    keyed = v.record(v.union(v.literal("a"), v.literal("b")), v.string())
    assert convert(keyed, {"a": "x"}) == {"a": "x"}
    assert not accepts(keyed, {"c": "x"})
    assert "invalid record key" in returns_error(v.record(v.string(), v.null()), {"$x": None})
    with pytest.raises(TypeError):
        v.record(v.int64(), v.string())


def test_any_checks_convex_values() -> None:
    message = returns_error(v.object({"x": v.any()}), {"x": {"a": [1, (2,)]}})
    assert "at $.x.a[1]: not a Convex value: unsupported type tuple" in message


@pytest.mark.parametrize(
    "build",
    [
        lambda: v.array(v.optional(v.string())),
        lambda: v.record(v.string(), v.optional(v.string())),
        lambda: v.union(v.optional(v.string()), v.null()),
    ],
)
def test_optional_only_for_fields(build: Any) -> None:
    with pytest.raises(TypeError, match="only allowed as an object field"):
        build()


def test_literal_construction_checks() -> None:
    with pytest.raises(ValueError):
        v.literal(2**63)
    with pytest.raises(ValueError):
        v.literal(math.nan)
    with pytest.raises(TypeError):
        v.literal(b"x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# describe / json / repr / equality


@pytest.mark.parametrize(
    ("validator", "text"),
    [
        (v.string(), "string"),
        (v.array(v.int64()), "array<int64>"),
        (v.id("messages"), 'id("messages")'),
        (
            v.object({"name": v.string(), "age": v.optional(v.int64())}),
            "{ name: string, age?: int64 }",
        ),
        (v.union(v.literal("a"), v.literal("b")), '"a" | "b"'),
        (v.record(v.string(), v.nullable(v.bytes())), "record<string, bytes | null>"),
        (v.literal(True), "true"),
        (v.any(), "any"),
    ],
)
def test_describe(validator: Validator, text: str) -> None:
    assert validator.describe() == text


def test_json_export_has_convex_shape() -> None:
    validator = v.object(
        {
            "id": v.id("users"),
            "n": v.optional(v.int64()),
            "tags": v.array(v.union(v.literal(1), v.string())),
        }
    )
    assert validator.json() == {
        "type": "object",
        "value": {
            "id": {"fieldType": {"type": "id", "tableName": "users"}, "optional": False},
            "n": {"fieldType": {"type": "bigint"}, "optional": True},
            "tags": {
                "fieldType": {
                    "type": "array",
                    "value": {
                        "type": "union",
                        "value": [
                            {"type": "literal", "value": {"$integer": "AQAAAAAAAAA="}},
                            {"type": "string"},
                        ],
                    },
                },
                "optional": False,
            },
        },
    }


def test_repr_and_equality() -> None:
    validator = v.object({"a": v.optional(v.array(v.number()))})
    assert repr(validator) == "v.object({'a': v.optional(v.array(v.number()))})"
    assert validator == v.object({"a": v.optional(v.array(v.float64()))})
    assert validator != v.object({"a": v.array(v.number())})
    assert hash(v.string()) == hash(v.string())
    assert v.optional(v.string()).is_optional and not v.string().is_optional


# --------------------------------------------------------------------------
# Annotations


class Address(TypedDict):
    city: str
    zip: NotRequired[str]


class Partial(TypedDict, total=False):
    a: int
    b: list[float]


INT = VIntAnnotation()  # `int`: an int64 that also takes whole floats (v.int64() does not)


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, v.string()),
        (int, INT),
        (float, v.number()),
        (bool, v.boolean()),
        (None, v.null()),
        (bytes, v.bytes()),
        (Any, v.any()),
        (list[int], v.array(INT)),
        (list, v.array(v.any())),
        (dict[str, float], v.record(v.string(), v.number())),
        (Literal["a"], v.literal("a")),
        (Literal["a", 2, True], v.union(v.literal("a"), v.literal(2), v.literal(True))),
        (str | None, v.union(v.string(), v.null())),
        (Optional[int], v.nullable(INT)),  # noqa: UP045
        (Union[int, str], v.union(INT, v.string())),  # noqa: UP007
        (Id["messages"], v.id("messages")),
        (Id, VId(None)),
        (Id[str], VId(None)),
        (dict[Id["users"], int], v.record(v.id("users"), INT)),  # noqa: F821
        (Id[Literal["users"]], v.id("users")),
        (Address, v.object({"city": v.string(), "zip": v.optional(v.string())})),
        (
            Partial,
            v.object({"a": v.optional(INT), "b": v.optional(v.array(v.number()))}),
        ),
        (
            list[Address | None],
            v.array(v.nullable(v.object({"city": v.string(), "zip": v.optional(v.string())}))),
        ),
    ],
)
def test_annotations_match_v(annotation: object, expected: Validator) -> None:
    assert validator_from_annotation(annotation) == expected


@pytest.mark.parametrize(
    "annotation", [tuple[int, int], set[int], datetime.datetime, complex, dict[int, str], frozenset]
)
def test_unsupported_annotations(annotation: object) -> None:
    with pytest.raises(TypeError, match="unsupported|keys must be"):
        validator_from_annotation(annotation)


async def create_user(
    ctx: object,
    name: str,
    age: int,
    address: Address,
    tags: list[str] = [],  # noqa: B006
) -> str:
    return name


async def with_kwargs(ctx: object, first: Id["messages"], **rest: float) -> None:  # noqa: F821, UP037
    return None


async def untyped(ctx, a, b=1):  # type: ignore[no-untyped-def]
    return None


def test_annotation_args_match_explicit_args() -> None:
    derived = compile_args(None, create_user)
    explicit = compile_args(
        {
            "name": v.string(),
            "age": INT,
            "address": v.object({"city": v.string(), "zip": v.optional(v.string())}),
            "tags": v.optional(v.array(v.string())),
        },
        noop,
    )
    assert derived.fields == explicit.fields
    args = {"name": "a", "age": 3, "address": {"city": "x"}}
    assert derived.validate(args, "f") == explicit.validate(args, "f") == args


def test_explicit_args_ignore_annotations() -> None:
    validator = compile_args({"n": v.number()}, create_user)
    assert validator.validate({"n": 1}, "f") == {"n": 1.0}
    with pytest.raises(ArgumentValidationError):
        validator.validate({"name": "a", "age": 3, "address": {"city": "x"}}, "f")


def test_unannotated_parameters_accept_any_value() -> None:
    validator = compile_args(None, untyped)
    assert validator.validate({"a": [1, {"b": None}]}, "f") == {"a": [1, {"b": None}]}
    with pytest.raises(ArgumentValidationError, match="not a Convex value"):
        validator.validate({"a": (1,)}, "f")
    with pytest.raises(ArgumentValidationError, match="missing required argument `a`"):
        validator.validate({"b": 2}, "f")


def test_kwargs_accept_extra_arguments() -> None:
    validator = compile_args(None, with_kwargs)
    assert validator.validate({"first": MESSAGE_ID, "x": 1, "y": 2.5}, "f") == {
        "first": MESSAGE_ID,
        "x": 1.0,
        "y": 2.5,
    }
    with pytest.raises(ArgumentValidationError) as info:
        validator.validate({"first": MESSAGE_ID, "x": "s"}, "f")
    assert info.value.path == "$.x"
    with pytest.raises(ArgumentValidationError) as info:
        validator.validate({"first": USER_ID}, "f")
    assert info.value.path == "$.first"


def test_eager_annotations_work_too() -> None:
    namespace: dict[str, Any] = {"Id": Id}
    exec("async def handler(ctx, m: Id['messages'], n: 'int | None' = None): pass", namespace)
    validator = compile_args(None, namespace["handler"])
    assert validator.fields == {"m": v.id("messages"), "n": v.optional(v.nullable(INT))}


async def ctx_type_unresolvable(ctx: NotImported, n: int) -> Missing:  # type: ignore[name-defined]  # noqa: F821
    return None


async def bad_param(ctx: object, when: datetime.datetime) -> None:
    return None


async def positional_only(ctx: object, a: int, /) -> None:
    return None


async def no_ctx() -> None:
    return None


async def unresolvable(ctx: object, x: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
    return None


def test_only_argument_annotations_need_to_resolve() -> None:
    # `ctx: MutationCtx` imported under TYPE_CHECKING is common.
    assert compile_args(None, ctx_type_unresolvable).fields == {"n": INT}


def test_bad_handlers_fail_at_compile_time() -> None:
    with pytest.raises(TypeError) as info:
        compile_args(None, bad_param)
    assert "bad_param" in str(info.value) and "`when`" in str(info.value)
    with pytest.raises(TypeError, match="positional-only"):
        compile_args(None, positional_only)
    with pytest.raises(TypeError, match="ctx"):
        compile_args(None, no_ctx)
    with pytest.raises(TypeError, match="unresolvable: parameter `x`: cannot resolve"):
        compile_args(None, unresolvable)
    with pytest.raises(TypeError):
        compile_args({"x": 3}, noop)  # type: ignore[dict-item]


# --------------------------------------------------------------------------
# Argument errors


USERS_CREATE = compile_args(
    {"name": v.string(), "age": v.int64(), "user": v.optional(v.object({"age": v.int64()}))},
    noop,
)


def test_argument_error_names_function_path_value_expected() -> None:
    with pytest.raises(ArgumentValidationError) as info:
        USERS_CREATE.validate({"name": "a", "age": "x"}, "users:create")
    error = info.value
    assert (
        str(error)
        == 'Invalid argument for "users:create" at $.age: expected int64, got "x" (string)'
    )
    assert (error.function, error.path, error.value, error.expected) == (
        "users:create",
        "$.age",
        "x",
        "int64",
    )


def test_nested_argument_error() -> None:
    with pytest.raises(ArgumentValidationError) as info:
        USERS_CREATE.validate({"name": "a", "age": 1, "user": {"age": 1.5}}, "users:create")
    assert info.value.path == "$.user.age"
    assert info.value.value == 1.5
    assert "expected int64, got 1.5 (float64)" in str(info.value)


def test_missing_and_unexpected_arguments() -> None:
    with pytest.raises(ArgumentValidationError) as info:
        USERS_CREATE.validate({"name": "a"}, "users:create")
    assert "missing required argument `age`" in str(info.value)
    assert info.value.path == "$.age"
    with pytest.raises(ArgumentValidationError) as info:
        USERS_CREATE.validate({"name": "a", "age": 1, "foo": 2}, "users:create")
    assert "unexpected argument `foo`" in str(info.value)
    assert info.value.value == 2


@pytest.mark.parametrize("args", [None, [1], "x", 3])
def test_args_must_be_a_dict(args: object) -> None:
    with pytest.raises(ArgumentValidationError, match="expected an object"):
        USERS_CREATE.validate(args, "users:create")


def test_args_validator_describes_itself() -> None:
    assert isinstance(USERS_CREATE, ArgsValidator)
    assert USERS_CREATE.describe() == "{ name: string, age: int64, user?: { age: int64 } }"
    assert USERS_CREATE.json()["type"] == "object"


# --------------------------------------------------------------------------
# `int` annotations take whole floats (clients that only have float64 send 3 as 3.0)


class Point(TypedDict):
    x: int
    y: NotRequired[int]


async def takes_ints(
    ctx: object,
    n: int,
    xs: list[int] = [],  # noqa: B006
    point: Point | None = None,
    counts: dict[str, int] = {},  # noqa: B006
    maybe: int | None = None,
    either: int | float = 0,
) -> None:
    return None


INTS = compile_args(None, takes_ints)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"n": 3.0}, {"n": 3}),
        ({"n": -0.0}, {"n": 0}),
        ({"n": 2.0**53}, {"n": 2**53}),
        ({"n": -(2.0**53)}, {"n": -(2**53)}),
        ({"n": 1, "xs": [1.0, 2, -3.0]}, {"n": 1, "xs": [1, 2, -3]}),
        ({"n": 1, "point": {"x": 4.0, "y": 5.0}}, {"n": 1, "point": {"x": 4, "y": 5}}),
        ({"n": 1, "point": {"x": 4.0}}, {"n": 1, "point": {"x": 4}}),
        ({"n": 1, "counts": {"a": 7.0, "b": 8}}, {"n": 1, "counts": {"a": 7, "b": 8}}),
        ({"n": 1, "maybe": 9.0}, {"n": 1, "maybe": 9}),
        ({"n": 1, "maybe": None}, {"n": 1, "maybe": None}),
    ],
)
def test_int_annotations_take_whole_floats_as_ints(args: dict, expected: dict) -> None:
    result = INTS.validate(args, "m:f")
    assert same(result, expected)  # same types too: the handler gets ints


def test_int_annotations_keep_a_float_a_float_where_float_is_allowed() -> None:
    assert same(INTS.validate({"n": 1, "either": 2.0}, "m:f"), {"n": 1, "either": 2.0})
    assert same(INTS.validate({"n": 1, "either": 2}, "m:f"), {"n": 1, "either": 2})


@pytest.mark.parametrize(
    ("args", "path", "bad"),
    [
        ({"n": 3.5}, "$.n", 3.5),
        ({"n": 2.0**60}, "$.n", 2.0**60),
        ({"n": 2.0**53 + 2}, "$.n", 2.0**53 + 2),  # whole, but floats are inexact there
        ({"n": float("inf")}, "$.n", float("inf")),
        ({"n": float("-inf")}, "$.n", float("-inf")),
        ({"n": 1, "xs": [1.0, 2.5]}, "$.xs[1]", 2.5),
        ({"n": 1, "point": {"x": 0.5}}, "$.point.x", 0.5),
        ({"n": 1, "counts": {"a": 1e300}}, "$.counts.a", 1e300),
        ({"n": 1, "maybe": 1.5}, "$.maybe", 1.5),
    ],
)
def test_int_annotations_refuse_other_floats(args: dict, path: str, bad: float) -> None:
    with pytest.raises(ArgumentValidationError) as info:
        INTS.validate(args, "m:f")
    error = info.value
    assert (error.function, error.path, error.value) == ("m:f", path, bad)
    message = str(error)
    assert f'Invalid argument for "m:f" at {path}: expected int64' in message
    assert f"got {bad!r} (float64)" in message
    assert "an `int` parameter takes integers" in message
    assert "`ConvexInt64` in the Python client" in message
    assert "`float` / `v.number()` to take any number" in message


def test_int_annotations_refuse_nan() -> None:
    with pytest.raises(ArgumentValidationError) as info:
        INTS.validate({"n": float("nan")}, "m:f")
    assert info.value.path == "$.n" and "got nan (float64)" in str(info.value)


def test_scalar_int_annotations_take_whole_floats() -> None:
    args = compile_args(None, create_user)  # not all scalars: msgspec's second try
    assert same(
        args.validate({"name": "a", "age": 30.0, "address": {"city": "x"}}, "m:f"),
        {"name": "a", "age": 30, "address": {"city": "x"}},
    )

    async def scalars(ctx: object, n: int, label: str, ratio: float) -> None:
        return None

    fast = compile_args(None, scalars)  # all scalars: the fast path converts
    assert fast._scalars is not None
    result = fast.validate({"n": 4.0, "label": "x", "ratio": 5.0}, "m:f")
    assert same(result, {"n": 4, "label": "x", "ratio": 5.0})
    with pytest.raises(ArgumentValidationError, match=r"at \$\.n: expected int64, got 4\.5"):
        fast.validate({"n": 4.5, "label": "x", "ratio": 5.0}, "m:f")
    with pytest.raises(ArgumentValidationError, match=r"at \$\.label: expected string"):
        fast.validate({"n": 4.0, "label": 1, "ratio": 5.0}, "m:f")


def test_int_annotations_on_extra_arguments() -> None:
    async def counts(ctx: object, **rest: int) -> None:
        return None

    args = compile_args(None, counts)
    assert same(args.validate({"a": 2.0, "b": 3}, "m:f"), {"a": 2, "b": 3})
    with pytest.raises(ArgumentValidationError, match=r"at \$\.a: expected int64, got 2\.5"):
        args.validate({"a": 2.5}, "m:f")


def test_v_int64_stays_strict() -> None:
    args = compile_args({"n": v.int64(), "xs": v.array(v.int64())}, noop)
    with pytest.raises(ArgumentValidationError) as info:
        args.validate({"n": 3.0, "xs": []}, "m:f")
    assert str(info.value) == 'Invalid argument for "m:f" at $.n: expected int64, got 3.0 (float64)'
    with pytest.raises(ArgumentValidationError, match=r"at \$\.xs\[0\]"):
        args.validate({"n": 3, "xs": [1.0]}, "m:f")
    assert VIntAnnotation() != v.int64()
    assert v.array(VIntAnnotation()) != v.array(v.int64())


def test_int_annotations_in_returns_and_schemas() -> None:
    returns = compile_returns(list[int])
    assert returns is not None
    assert same(returns.validate([1.0, 2], "f"), [1, 2])
    with pytest.raises(ReturnsValidationError) as info:
        returns.validate([1.5], "tasks:list")
    assert str(info.value) == (
        'Invalid return value of "tasks:list" at $[0]: expected int64, got 1.5 (float64): '
        "`int` takes integers (a float only when it is whole and within ±2^53)"
    )
    table = compile_object({"count": int, "exact": v.int64()}, name="counters")
    assert same(table.validate({"count": 2.0, "exact": 3}), {"count": 2, "exact": 3})
    with pytest.raises(SchemaValidationError, match=r"at \$\.exact: expected int64"):
        table.validate({"count": 2, "exact": 3.0})


# --------------------------------------------------------------------------
# Returns and schema


def test_compile_returns() -> None:
    assert compile_returns(None) is None
    returns = compile_returns(list[int])
    assert returns is not None
    assert returns.validate([1, 2], "f") == [1, 2]
    with pytest.raises(ReturnsValidationError) as info:
        returns.validate([1, "x"], "tasks:list")
    assert str(info.value) == (
        'Invalid return value of "tasks:list" at $[1]: expected int64, got "x" (string)'
    )


def test_compile_object_for_schemas() -> None:
    tasks = compile_object({"title": v.string(), "done": v.optional(v.boolean())}, name="tasks")
    assert tasks.validate({"title": "x"}) == {"title": "x"}
    with pytest.raises(SchemaValidationError) as info:
        tasks.validate({"title": "x", "done": "no"})
    assert 'table "tasks"' in str(info.value)
    assert "at $.done: expected boolean" in str(info.value)
    with pytest.raises(SchemaValidationError, match="unexpected field `_id`"):
        tasks.validate({"title": "x", "_id": "abc"})


# --------------------------------------------------------------------------
# Properties: the msgspec path and the Python path agree

field_names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=5
).filter(lambda s: not s.startswith("$"))

convex_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_names, inner, max_size=3),
    max_leaves=8,
)


def ids_of(table: str) -> st.SearchStrategy[str]:
    return st.binary(min_size=16, max_size=16).map(lambda b: encode_id(table_number(table), b))


leaf_validators: st.SearchStrategy[Validator] = st.sampled_from(
    [
        v.string(),
        v.number(),
        v.int64(),
        VIntAnnotation(),
        v.boolean(),
        v.null(),
        v.bytes(),
        v.any(),
        v.id("messages"),
        v.id("users"),
    ]
) | st.builds(
    v.literal,
    st.sampled_from(["a", "b", ""])
    | st.integers(-2, 2)
    | st.booleans()
    | st.sampled_from([0.5, -1.0]),
)

record_keys: st.SearchStrategy[Validator] = st.sampled_from(
    [v.string(), v.id("users"), v.literal("a"), v.union(v.literal("a"), v.literal("b"))]
)


def containers(inner: st.SearchStrategy[Validator]) -> st.SearchStrategy[Validator]:
    fields = st.dictionaries(field_names, st.tuples(inner, st.booleans()), max_size=3).map(
        lambda spec: v.object({k: v.optional(x) if opt else x for k, (x, opt) in spec.items()})
    )
    return (
        st.builds(v.array, inner)
        | fields
        | st.builds(v.record, record_keys, inner)
        | st.lists(inner, min_size=2, max_size=3).map(lambda xs: v.union(*xs))
        | st.builds(v.nullable, inner)
    )


validators = st.recursive(leaf_validators, containers, max_leaves=6)


wild_values = (
    convex_values
    | ids_of("messages")
    | ids_of("users")
    | st.integers()
    | st.tuples(st.integers(-2, 2))
    | st.sampled_from([{"$x": 1}, {1: 2}, {"": None}, float("nan"), set(), bytearray(b"z")])
)


def values_for(validator: Validator, noise: bool = False) -> st.SearchStrategy[Any]:
    """Values that ``validator`` must accept; with ``noise``, any part may be wrong."""
    strategy = _values_for(validator, noise)
    return strategy | wild_values if noise else strategy


def _values_for(validator: Validator, noise: bool) -> st.SearchStrategy[Any]:
    if isinstance(validator, VString):
        return st.text(max_size=5)
    if isinstance(validator, VFloat64):
        return st.floats() | st.integers(INT64_MIN, INT64_MAX)
    if isinstance(validator, VIntAnnotation):
        whole = st.integers(-(2**53), 2**53).map(float)
        return st.integers(INT64_MIN, INT64_MAX) | whole | st.sampled_from([-0.0, 2.0**53])
    if isinstance(validator, VInt64):
        return st.integers(INT64_MIN, INT64_MAX)
    if isinstance(validator, VBoolean):
        return st.booleans()
    if isinstance(validator, VNull):
        return st.none()
    if isinstance(validator, VBytes):
        return st.binary(max_size=5) | st.binary(max_size=5).map(bytearray)
    if isinstance(validator, VAny):
        return convex_values
    if isinstance(validator, VId):
        return ids_of(validator.table or "messages")
    if isinstance(validator, VLiteral):
        return st.just(validator.value)
    if isinstance(validator, VArray):
        items = values_for(validator.item, noise)
        return st.lists(items, max_size=3) | st.lists(items, max_size=3).map(tuple)
    if isinstance(validator, VObject):
        required = {
            k: values_for(f, noise) for k, f in validator.fields.items() if not f.is_optional
        }
        optional = {k: values_for(f, noise) for k, f in validator.fields.items() if f.is_optional}
        return st.fixed_dictionaries(required, optional=optional)
    if isinstance(validator, VRecord):
        keys = values_for(validator.keys)
        if isinstance(validator.keys, VString):
            keys = field_names
        if noise:
            keys = keys | st.sampled_from(["$k", "", 3, "é", MESSAGE_ID, USER_ID])
        return st.dictionaries(keys, values_for(validator.values, noise), max_size=3)
    if isinstance(validator, VUnion):
        return st.one_of([values_for(member, noise) for member in validator.members])
    raise AssertionError(validator)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_conforming_values_are_accepted_identically(data: st.DataObject) -> None:
    validator = data.draw(validators)
    value = data.draw(values_for(validator))
    fast = convert(validator, value)
    ok, slow = python_path(validator, value)
    assert ok
    assert same(fast, slow)
    check_value(fast)
    # Validation is idempotent: the output is accepted as it is.
    assert same(convert(validator, fast), fast)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fast_and_python_paths_agree_on_any_input(data: st.DataObject) -> None:
    validator = data.draw(validators)
    value = data.draw(values_for(validator, noise=True))
    ok, slow = python_path(validator, value)
    returns = compile_returns(validator)
    assert returns is not None
    try:
        fast = returns.validate(value, "t:f")
    except ReturnsValidationError as error:
        assert not ok, f"fast path refused what the Python path accepted: {error}"
        assert "invalid value (" not in str(error)  # not the divergence fallback
        assert "at $" in str(error)
    else:
        assert ok, "fast path accepted what the Python path refused"
        assert same(fast, slow)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_argument_errors_point_at_the_bad_value(data: st.DataObject) -> None:
    validator = data.draw(validators)
    good = data.draw(values_for(validator))
    args = compile_args({"x": validator, "n": v.int64()}, noop)
    with pytest.raises(ArgumentValidationError) as info:
        args.validate({"x": good, "n": "bad"}, "m:f")
    assert info.value.path == "$.n"
    assert info.value.value == "bad"
    assert info.value.expected == "int64"


_SCALARS = {
    "s": v.string(),
    "f": v.float64(),
    "i": v.int64(),
    "b": v.boolean(),
    "n": v.null(),
    "o": v.optional(v.int64()),  # present: as int64; absent: the full path
    "w": VIntAnnotation(),  # whole floats: converted, then the fast path again
}
_scalar_values = st.one_of(
    st.text(max_size=3),
    st.floats(allow_nan=False),
    st.integers(-(2**54), 2**54).map(float),
    st.integers(INT64_MIN - 2, INT64_MAX + 2),
    st.booleans(),
    st.none(),
)


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from(sorted(_SCALARS)), min_size=1, max_size=5, unique=True),
    st.dictionaries(st.sampled_from(["s", "f", "i", "b", "n", "o", "w", "x"]), _scalar_values),
)
def test_scalar_fast_path_agrees_with_the_full_validation(names: list[str], args: dict) -> None:
    from convexpy.validators.compiled import ArgsValidator

    fast = ArgsValidator({name: _SCALARS[name] for name in names})
    slow = ArgsValidator({name: _SCALARS[name] for name in names})
    assert fast._scalars is not None
    slow._scalars = None

    def outcome(validator: ArgsValidator) -> object:
        try:
            result = validator.validate(args, "m:f")
        except ArgumentValidationError as exc:
            return ("error", str(exc))
        assert result is not args
        return ("ok", result, {k: type(x) for k, x in result.items()})

    assert outcome(fast) == outcome(slow)


def test_scalar_fast_path_only_for_required_scalars() -> None:
    from convexpy.validators.compiled import ArgsValidator

    assert ArgsValidator({"a": v.int64()})._scalars == (("a", int),)
    assert ArgsValidator({"a": v.optional(v.int64())})._scalars == (("a", int),)
    assert ArgsValidator({"a": v.union(v.int64(), v.string())})._scalars is None
    assert ArgsValidator({"a": v.array(v.int64())})._scalars is None
    assert ArgsValidator({"a": v.id("t")})._scalars is None
