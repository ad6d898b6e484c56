from __future__ import annotations

from typing import Annotated, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convexpy.errors import InvalidIdError
from convexpy.ids import (
    ID_LENGTH,
    Id,
    IdOf,
    check_id,
    decode_id,
    encode_id,
    id_problem,
    id_table_number,
    is_id_of,
    new_id,
    table_number,
)

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

table_names = st.text(min_size=1, max_size=20)
internal_ids = st.binary(min_size=16, max_size=16)


def convex_test_internal_id() -> bytes:
    internal = [251]
    for _ in range(15):
        internal.append(internal[-1] * 251 % 256)
    return bytes(internal)


def test_encoding_matches_convex() -> None:
    # Convex's own stability test (crates/value/src/id_v6.rs).
    encoded = encode_id(1017, convex_test_internal_id())
    assert encoded == "z43zp6c3e75gkmz1kfwj6mbbx5sw281h"
    assert decode_id(encoded) == (1017, convex_test_internal_id())


def test_table_numbers_are_stable() -> None:
    # Stored ids depend on these: changing the hash would orphan every document.
    assert table_number("messages") == 2394010383
    assert table_number("users") == 2211107167
    assert table_number("_scheduled_functions") == 362668379


@given(table_names)
def test_table_number_range(table: str) -> None:
    assert 2**28 <= table_number(table) < 2**32
    assert table_number(table) == table_number(table)


@pytest.mark.parametrize("table", ["", None, 3])
def test_table_number_needs_a_name(table: object) -> None:
    with pytest.raises(ValueError):
        table_number(table)  # type: ignore[arg-type]


@given(table_names)
def test_new_id_shape(table: str) -> None:
    first, second = new_id(table), new_id(table)
    assert len(first) == len(second) == ID_LENGTH == 37
    assert set(first) <= set(ALPHABET)
    assert first[:8] == second[:8]
    assert first != second
    assert id_table_number(first) == table_number(table)
    assert is_id_of(first, table)


def test_new_ids_are_unique_and_prefixed_per_table() -> None:
    ids = {new_id("messages") for _ in range(2000)}  # several pools of random tails
    assert len(ids) == 2000
    # The footer new_id works out from precomputed sums is the encoder's.
    assert all(encode_id(*decode_id(i)) == i for i in ids)
    assert new_id("messages")[:8] != new_id("users")[:8]


def test_new_ids_follow_the_clock_and_keep_85_random_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_700_000_000.0]
    monkeypatch.setattr("convexpy.ids.time.time", lambda: now[0])
    early = [new_id("jobs") for _ in range(200)]
    now[0] += 0.001
    late = [new_id("jobs") for _ in range(200)]
    # A later millisecond sorts after, as text and as decoded bytes.
    assert max(early) < min(late)
    internals = [decode_id(i)[1] for i in early]
    assert {b[:5] for b in internals} == {(1_700_000_000_000 & (2**40 - 1)).to_bytes(5, "big")}
    assert len({b[5:] for b in internals}) == 200  # the random part differs
    assert all(decode_id(i)[0] == table_number("jobs") for i in early + late)


@given(st.integers(1, 2**32 - 1), internal_ids)
def test_encode_decode_round_trip(number: int, internal: bytes) -> None:
    encoded = encode_id(number, internal)
    assert decode_id(encoded) == (number, internal)
    assert len(encoded) in (31, 32, 34, 36, 37)


def test_encode_id_checks_its_inputs() -> None:
    with pytest.raises(ValueError):
        encode_id(0, bytes(16))
    with pytest.raises(ValueError):
        encode_id(2**32, bytes(16))
    with pytest.raises(ValueError):
        encode_id(1, bytes(15))


@given(st.data())
def test_every_single_character_change_is_rejected(data: st.DataObject) -> None:
    valid = new_id(data.draw(table_names))
    position = data.draw(st.integers(0, len(valid) - 1))
    replacement = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != valid[position]))
    corrupted = valid[:position] + replacement + valid[position + 1 :]
    with pytest.raises(InvalidIdError, match="not a valid document id"):
        decode_id(corrupted)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda good: good.upper(), "alphabet"),
        (lambda good: good[:-1] + "i", "alphabet"),
        (lambda good: good[:-1] + "u", "alphabet"),
        (lambda good: good[:10] + "_" + good[11:], "alphabet"),
        (lambda good: " " + good[1:], "alphabet"),
        (lambda good: "é" + good[1:], "alphabet"),
        (lambda good: good[:-1], "length"),
        (lambda good: good + "0", "length"),
        (lambda good: "", "length"),
        (lambda good: good[:15] + ("1" if good[15] == "0" else "0") + good[16:], "checksum"),
    ],
)
def test_malformed_ids_are_rejected(make: object, why: str) -> None:
    good = new_id("messages")
    bad = make(good)  # type: ignore[operator]
    with pytest.raises(InvalidIdError) as info:
        decode_id(bad)
    assert str(info.value).startswith("not a valid document id: ")
    assert why in str(info.value)


def test_non_canonical_trailing_bits_are_rejected() -> None:
    good = new_id("messages")
    # The last character carries one unused bit; setting it names the same bytes.
    last = ALPHABET.index(good[-1])
    assert last % 2 == 0
    with pytest.raises(InvalidIdError, match="canonical"):
        decode_id(good[:-1] + ALPHABET[last | 1])


def test_zero_and_overlong_table_numbers_are_rejected() -> None:
    from convexpy import ids

    body = bytes(16)
    for varint in (b"\x00", b"\x81\x00"):  # zero; 1 written in two bytes
        payload = varint + body
        footer = ids._fletcher16(payload).to_bytes(2, "little")
        with pytest.raises(InvalidIdError, match="table number"):
            decode_id(ids._base32(payload + footer))


@pytest.mark.parametrize("value", [None, 5, b"abc", ["x"]])
def test_non_strings_are_not_ids(value: object) -> None:
    with pytest.raises(InvalidIdError, match="ids are strings"):
        decode_id(value)
    assert not is_id_of(value, "messages")


def test_check_id_names_the_tables() -> None:
    message_id = new_id("messages")
    check_id(message_id, "messages")
    check_id(message_id, None)
    with pytest.raises(InvalidIdError) as info:
        check_id(message_id, "users")
    assert "expected an id of table 'users'" in str(info.value)
    assert "it is an id of table 'messages'" in str(info.value)
    with pytest.raises(InvalidIdError) as info:
        check_id("nope", "users")
    assert "expected an id of table 'users'" in str(info.value)
    assert "not a valid document id" in str(info.value)


def test_check_id_without_a_known_table_name() -> None:
    stranger = encode_id(2**31 + 12345, bytes(16))
    assert id_problem(stranger, "users") == "it is an id of another table"
    assert id_problem(stranger, None) is None


def test_id_annotations() -> None:
    assert Id["messages"] == Annotated[str, IdOf("messages")]
    assert Id[Literal["messages"]] == Annotated[str, IdOf("messages")]
    assert Id[str] == Annotated[str, IdOf(None)]
    assert issubclass(Id, str)
    with pytest.raises(TypeError):
        Id[3]
    with pytest.raises(TypeError):
        Id[""]
    marker = IdOf("t")
    with pytest.raises(AttributeError):
        marker.table = "u"  # type: ignore[misc]
