from __future__ import annotations

import datetime
import enum
import json
import math
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convexpy.convex_json import from_convex_json, to_convex_json, to_plain_json
from convexpy.errors import InvalidValueError
from convexpy.values import (
    INT64_MAX,
    INT64_MIN,
    MAX_DOCUMENT_SIZE,
    check_document,
    check_value,
    convex_type_name,
    copy_document,
    copy_value,
    copy_with_size,
    describe_value,
    find_invalid,
    format_path,
    is_valid_field_name,
    value_size,
)

# --------------------------------------------------------------------------
# Strategies and helpers

field_names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=8
).filter(lambda s: not s.startswith("$"))

scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
)

convex_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(field_names, inner, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Exact equality of Convex values: types must match, NaN equals NaN, -0.0 is not 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_dicts(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def invalid(value: object) -> InvalidValueError:
    with pytest.raises(InvalidValueError) as info:
        check_value(value)
    return info.value


# --------------------------------------------------------------------------
# check_value


@given(convex_values)
def test_generated_values_are_valid(value: Any) -> None:
    check_value(value)
    assert find_invalid(value) is None


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, INT64_MIN, INT64_MAX, 1.5, math.nan, -math.inf, "", "é", b"\x00"],
)
def test_scalars_are_valid(value: object) -> None:
    check_value(value)


class Color(enum.IntEnum):
    RED = 1


def test_subclasses_of_value_types_are_accepted() -> None:
    check_value(Color.RED)
    check_value(OrderedDict(a=1))
    check_value({"k": type("S", (str,), {})("x")})


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ((1, 2), "tuple"),
        ({1, 2}, "set"),
        (datetime.datetime(2024, 1, 1), "datetime"),
        (object(), "object"),
        (bytearray(b"x"), "bytearray"),
    ],
)
def test_unsupported_types_are_refused(value: object, type_name: str) -> None:
    error = invalid({"a": [0, value]})
    assert error.path == "$.a[1]"
    assert f"unsupported type {type_name}" in str(error)
    assert "Convex values are None, bool, int (int64)" in str(error)


@pytest.mark.parametrize("number", [INT64_MAX + 1, INT64_MIN - 1, 2**100])
def test_ints_outside_int64_are_refused(number: int) -> None:
    error = invalid({"n": number})
    assert error.path == "$.n"
    assert "outside the int64 range" in str(error)


def test_error_path_names_the_exact_location() -> None:
    error = invalid({"tags": [{"name": "a"}, {}, {}, {"name": (1,)}]})
    assert error.path == "$.tags[3].name"
    assert "at $.tags[3].name" in str(error)


def test_check_value_prefixes_the_given_path() -> None:
    with pytest.raises(InvalidValueError) as info:
        check_value({"x": {1, 2}}, path="args")
    assert info.value.path == "args.x"


def test_non_string_keys_are_refused() -> None:
    error = invalid({"outer": {1: "a"}})
    assert error.path == "$.outer"
    assert "object keys must be strings" in str(error)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("$x", "starts with '$'"),
        ("tab\there", "not printable ASCII"),
        ("café", "not printable ASCII"),
        ("x" * 1025, "1025 characters long"),
    ],
)
def test_invalid_field_names_are_refused(name: str, problem: str) -> None:
    assert not is_valid_field_name(name)
    error = invalid({"ok": {name: 1}})
    assert problem in str(error)
    assert "field names must be non-empty printable ASCII" in str(error)


@pytest.mark.parametrize("name", ["x", "_x", "a b", "x" * 1024, "~!@#", "my-field"])
def test_valid_field_names(name: str) -> None:
    assert is_valid_field_name(name)
    check_value({name: 1})


def test_array_and_object_length_limits() -> None:
    check_value([0] * 8192)
    assert "array has 8193 items" in str(invalid([0] * 8193))
    check_value({f"f{i}": i for i in range(1024)})
    assert "object has 1025 fields" in str(invalid({f"f{i}": i for i in range(1025)}))


def test_nesting_limit_is_64() -> None:
    check_value(nested_lists(64))
    check_value(nested_dicts(64))
    assert "nested more than 64 levels" in str(invalid(nested_lists(65)))
    assert "nested more than 64 levels" in str(invalid(nested_dicts(65)))


def test_deeply_nested_garbage_does_not_recurse_forever() -> None:
    assert "nested more than 64" in str(invalid(nested_lists(10_000)))


def test_lone_surrogates_are_refused() -> None:
    assert "lone surrogate" in str(invalid(["ok", "\ud800"]))


# --------------------------------------------------------------------------
# check_document


def test_document_top_level_underscore_fields_are_system_fields() -> None:
    with pytest.raises(InvalidValueError) as info:
        check_document({"title": "x", "_id": "abc"})
    assert info.value.path == "$._id"
    assert "system fields" in str(info.value)
    check_document({"nested": {"_private": 1}})


def test_document_nesting_limit_is_16() -> None:
    check_document(nested_dicts(16))
    with pytest.raises(InvalidValueError, match="nested more than 16 levels"):
        check_document(nested_dicts(17))


def test_document_size_limit() -> None:
    # {"s": "..."}: 2 + len("s") + 1 + (2 + len(string)).
    overhead = 2 + 1 + 1 + 2
    check_document({"s": "x" * (MAX_DOCUMENT_SIZE - overhead)})
    with pytest.raises(InvalidValueError) as info:
        check_document({"s": "x" * (MAX_DOCUMENT_SIZE - overhead + 1)})
    assert "1,048,577 bytes > maximum size 1,048,576 bytes" in str(info.value)


def test_document_must_be_a_dict_of_convex_values() -> None:
    with pytest.raises(InvalidValueError, match="expected an object"):
        check_document([1])  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError) as info:
        check_document({"when": datetime.date(2024, 1, 1)})
    assert info.value.path == "$.when"


# --------------------------------------------------------------------------
# value_size


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (None, 1),
        (True, 1),
        (7, 9),
        (7.0, 9),
        ("abc", 5),
        ("é", 4),
        (b"ab", 4),
        ([], 2),
        ([1, "a"], 2 + 9 + 3),
        ({"a": 1}, 2 + 2 + 9),
        ({"ab": [None]}, 2 + 3 + 3),
    ],
)
def test_value_size_follows_convex(value: object, size: int) -> None:
    assert value_size(value) == size


@settings(max_examples=50)
@given(st.lists(convex_values, max_size=5), st.dictionaries(field_names, convex_values, max_size=5))
def test_value_size_is_additive(items: list[Any], fields: dict[str, Any]) -> None:
    assert value_size(items) == 2 + sum(value_size(item) for item in items)
    assert value_size(fields) == 2 + sum(len(k) + 1 + value_size(x) for k, x in fields.items())


def test_value_size_refuses_non_values() -> None:
    with pytest.raises(InvalidValueError):
        value_size([(1,)])


@settings(max_examples=100)
@given(st.dictionaries(field_names, convex_values, max_size=6) | convex_values)
def test_copy_with_size_is_a_checked_copy(value: Any) -> None:
    copied, size = copy_with_size(value)
    assert size == value_size(value)
    assert same(copied, value)  # NaN included
    if isinstance(value, dict):
        assert copied is not value


@pytest.mark.parametrize(
    "bad",
    [{"$x": 1}, {"a": 2**63}, {"a": (1,)}, {1: 1}, {"a": {"b": set()}}, {"a": "\ud800"}],
)
def test_copy_with_size_refuses_what_value_size_refuses(bad: Any) -> None:
    with pytest.raises(InvalidValueError) as expected:
        value_size(bad)
    with pytest.raises(InvalidValueError) as got:
        copy_with_size(bad)
    assert str(got.value) == str(expected.value)


def _containers(value: Any) -> list[int]:
    """The ids of every dict and list in ``value``."""
    if isinstance(value, dict):
        return [id(value), *(i for item in value.values() for i in _containers(item))]
    if isinstance(value, list):
        return [id(value), *(i for item in value for i in _containers(item))]
    return []


def _known_system_names() -> None:
    # Valid names nested in a value (so known to the checks' cache), which a
    # document may not use at the top level.
    for name in ("_id", "_x", "_"):
        assert is_valid_field_name(name)


@settings(max_examples=200)
@given(convex_values)
def test_copy_value_shares_no_container(value: Any) -> None:
    copied = copy_value(value)
    assert same(copied, value)
    assert not set(_containers(copied)) & set(_containers(value))


@settings(max_examples=200)
@given(st.dictionaries(field_names | st.sampled_from(["_id", "_x"]), convex_values, max_size=6))
def test_copy_document_checks_as_check_document_does(fields: dict[str, Any]) -> None:
    _known_system_names()
    try:
        check_document(fields)
    except InvalidValueError as expected:
        with pytest.raises(InvalidValueError) as got:
            copy_document(fields)
        assert str(got.value) == str(expected)
        return
    copied = copy_document(fields)
    assert same(copied, fields)
    assert not set(_containers(copied)) & set(_containers(fields))


@pytest.mark.parametrize(
    "bad",
    [{"_id": 1}, {"a": 2**63}, {"a": "x" * MAX_DOCUMENT_SIZE}, {"$x": 1}, [1], {"a": (1,)}],
)
def test_copy_document_refuses_what_check_document_refuses(bad: Any) -> None:
    _known_system_names()
    with pytest.raises(InvalidValueError) as expected:
        check_document(bad)
    with pytest.raises(InvalidValueError) as got:
        copy_document(bad)
    assert str(got.value) == str(expected.value)


# --------------------------------------------------------------------------
# Convex JSON


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (1, {"$integer": "AQAAAAAAAAA="}),
        (-1, {"$integer": "//////////8="}),
        (b"hi", {"$bytes": "aGk="}),
        (1.5, 1.5),
        (-0.0, {"$float": "AAAAAAAAAIA="}),
        (math.inf, {"$float": "AAAAAAAA8H8="}),
        ("x", "x"),
        (None, None),
        (True, True),
        ({"a": [1.0, None]}, {"a": [1.0, None]}),
    ],
)
def test_to_convex_json_examples(value: object, encoded: object) -> None:
    assert to_convex_json(value) == encoded
    assert same(from_convex_json(encoded), value)


def test_nan_uses_the_float_form() -> None:
    encoded = to_convex_json(math.nan)
    assert isinstance(encoded, dict) and set(encoded) == {"$float"}
    decoded = from_convex_json(encoded)
    assert isinstance(decoded, float) and math.isnan(decoded)


@settings(max_examples=300)
@given(convex_values)
def test_convex_json_round_trips_exactly_through_json_text(value: Any) -> None:
    text = json.dumps(to_convex_json(value), allow_nan=False)
    assert same(from_convex_json(json.loads(text)), value)


def test_json_numbers_decode_as_floats() -> None:
    decoded = from_convex_json({"a": 3, "b": [2.5]})
    assert same(decoded, {"a": 3.0, "b": [2.5]})


@pytest.mark.parametrize(
    ("obj", "path", "problem"),
    [
        ({"n": {"$integer": "AQAA"}}, "$.n", "exactly 8 bytes"),
        ({"n": {"$integer": "!!!!"}}, "$.n", "invalid base64"),
        ({"n": {"$integer": 5}}, "$.n", "base64 string"),
        ({"n": {"$float": "AAAAAAAAAAAAAAAA"}}, "$.n", "exactly 8 bytes"),
        ([{"$bytes": "a"}], "$[0]", "invalid base64"),
        ({"x": {"$date": "2024"}}, '$.x["$date"]', "unknown special key"),
        ({"x": {"$integer": "AQAAAAAAAAA=", "y": 1}}, '$.x["$integer"]', "unknown special key"),
        ({"x": (1,)}, "$.x", "unsupported type tuple"),
    ],
)
def test_from_convex_json_refuses_malformed_input(obj: object, path: str, problem: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        from_convex_json(obj)
    assert info.value.path == path
    assert problem in str(info.value)


def test_to_convex_json_refuses_non_values() -> None:
    with pytest.raises(InvalidValueError) as info:
        to_convex_json({"a": [1, {2, 3}]})
    assert info.value.path == "$.a[1]"
    with pytest.raises(InvalidValueError, match="int64"):
        to_convex_json(2**64)
    with pytest.raises(InvalidValueError, match=r"starts with '\$'"):
        to_convex_json({"$x": 1})


def test_to_plain_json_is_readable() -> None:
    assert to_plain_json({"n": 5, "b": b"hi", "f": [math.nan, -math.inf, 1.5]}) == {
        "n": 5,
        "b": "aGk=",
        "f": ["NaN", "-Infinity", 1.5],
    }


# --------------------------------------------------------------------------
# Names and descriptions


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "boolean"),
        (1, "int64"),
        (1.0, "float64"),
        ("s", "string"),
        (b"", "bytes"),
        ([], "array"),
        ({}, "object"),
        ((), "tuple"),
    ],
)
def test_convex_type_name(value: object, name: str) -> None:
    assert convex_type_name(value) == name


def test_describe_value_is_short_and_typed() -> None:
    assert describe_value("x") == '"x" (string)'
    assert describe_value(True) == "true (boolean)"
    assert describe_value(3) == "3 (int64)"
    assert describe_value(None) == "null"
    assert "outside the int64 range" in describe_value(2**70)
    assert "not a Convex value" in describe_value((1, 2))
    assert len(describe_value("y" * 10_000)) < 100
    assert len(describe_value(list(range(10_000)))) < 100


def test_format_path_quotes_non_identifiers() -> None:
    assert format_path(["tags", 3, "name"]) == "$.tags[3].name"
    assert format_path(["a b", "$x"]) == '$["a b"]["$x"]'
    assert format_path([]) == "$"


def test_find_invalid_returns_parts() -> None:
    found = find_invalid({"a": [1, {"b": (2,)}]})
    assert found is not None
    parts, problem = found
    assert parts == ("a", 1, "b")
    assert "tuple" in problem
