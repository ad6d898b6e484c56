"""Index keys (``convexpy.store.keys``): byte strings that sort like Convex
values, and prefix ranges over them; and the engine's cache of index keys.

The stores' behaviour is covered for every store in tests/conformance/.
"""

from __future__ import annotations

import random
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from convexpy.ids import new_id
from convexpy.store import IndexDef, KeyRange, Write
from convexpy.store.base import Document
from convexpy.store.keys import (
    MISSING,
    encode_index_key,
    encode_prefix,
    encode_value,
    prefix_successor,
)

T0 = 1.7e12
TASKS = "tasks"
BY_OWNER = IndexDef(TASKS, "by_owner", ("owner",))
BY_OWNER_DUE = IndexDef(TASKS, "by_owner_due", ("owner", "due"))

_RANK = {type(None): 1, int: 2, float: 3, bool: 4, str: 5, bytes: 6, list: 7, dict: 8}


def _rank(value: object) -> int:
    return 0 if value is MISSING else _RANK[type(value)]


def _total_order(x: float) -> int:
    """IEEE 754 totalOrder as an int (Rust's ``f64::total_cmp``, which Convex uses)."""
    bits: int = struct.unpack(">q", struct.pack(">d", x))[0]
    return bits ^ 0x7FFF_FFFF_FFFF_FFFF if bits < 0 else bits


def _sign(x: Any, y: Any) -> int:
    return (x > y) - (x < y)


def convex_cmp(a: object, b: object) -> int:
    """Convex's order of values: by type, then by value; objects compare as
    their (field, value) pairs sorted by field name, like Convex's BTreeMap."""
    if _rank(a) != _rank(b):
        return _sign(_rank(a), _rank(b))
    if isinstance(a, float) and isinstance(b, float):
        return _sign(_total_order(a), _total_order(b))
    if isinstance(a, list) and isinstance(b, list):
        return _seq_cmp(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return _seq_cmp(
            [item for pair in sorted(a.items()) for item in pair],
            [item for pair in sorted(b.items()) for item in pair],
        )
    if a is None or a is MISSING:
        return 0
    return _sign(a, b)


def _seq_cmp(a: list[Any], b: list[Any]) -> int:
    for x, y in zip(a, b, strict=False):
        if c := convex_cmp(x, y):
            return c
    return _sign(len(a), len(b))


scalars = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.booleans(),
    st.text(max_size=6),
    st.binary(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, max_size=3),
    ),
    max_leaves=8,
)
# Small pools of values make ties and shared prefixes likely.
near_values = st.one_of(
    values,
    st.sampled_from([0, 1, -1, 0.0, -0.0, 1.0, "", "a", "a\x00", "ab", b"", b"\x00", [], {}]),
)


@settings(max_examples=400)
@given(near_values, near_values)
def test_encode_value_order_matches_convex(a: object, b: object) -> None:
    expected = convex_cmp(a, b)
    assert _sign(encode_value(a), encode_value(b)) == expected
    assert (encode_value(a) == encode_value(b)) == (expected == 0)


def test_encode_value_type_order() -> None:
    ordered = [MISSING, None, -(2**63), 2**63 - 1, float("-inf"), 0.5, float("inf")]
    ordered += [False, True, "", "z", b"", b"\xff", [], [None], {}, {"a": None}]
    keys = [encode_value(value) for value in ordered]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def _doc_cmp(a: tuple[list[object], float, str], b: tuple[list[object], float, str]) -> int:
    return _seq_cmp(list(a[0]), list(b[0])) or convex_cmp(a[1], b[1]) or _sign(a[2], b[2])


docs_fields = st.lists(st.one_of(near_values, st.just(MISSING)), min_size=2, max_size=2)


@settings(max_examples=200)
@given(docs_fields, docs_fields, st.sampled_from([1.0, 2.0]), st.sampled_from([1.0, 2.0]))
def test_index_key_order_and_prefix_ranges(
    a: list[object], b: list[object], ta: float, tb: float
) -> None:
    fields = ("f", "g")
    id_a, id_b = "a" * 32, "b" * 32

    def key(values: list[object], creation: float, doc_id: str) -> bytes:
        doc = {name: v for name, v in zip(fields, values, strict=True) if v is not MISSING}
        return encode_index_key(doc, fields, creation, doc_id)

    key_a, key_b = key(a, ta, id_a), key(b, tb, id_b)
    assert _sign(key_a, key_b) == _doc_cmp((a, ta, id_a), (b, tb, id_b))
    # A prefix range on the leading field holds exactly the equal values.
    for size in (1, 2):
        prefix = encode_prefix(a[:size])
        high = prefix_successor(prefix)
        in_range = KeyRange("t.i", prefix, high).contains(key_b)
        assert in_range == (_seq_cmp(a[:size], b[:size]) == 0)
    # Exclusive and inclusive bounds on the first field.
    bound = encode_prefix(a[:1])
    after = prefix_successor(bound)
    first = convex_cmp(b[0], a[0])
    assert (key_b < bound) == (first < 0)
    assert (after is None or key_b < after) == (first <= 0)


def test_prefix_successor() -> None:
    assert prefix_successor(b"") is None
    assert prefix_successor(b"\xff\xff") is None
    assert prefix_successor(b"ab") == b"ac"
    assert prefix_successor(b"a\xff") == b"b"


def test_cached_index_keys_match_fresh_ones_in_any_order() -> None:
    """The engine reuses a version's keys for the next write of that document;
    whatever order commits compute their changes in, the result is the same
    as computing every commit from scratch."""
    from convexpy.store.engine import KeyCache, index_changes
    from convexpy.store.keys import prefix_encoder

    rng = random.Random(7)
    indexes = [BY_OWNER, BY_OWNER_DUE, IndexDef(TASKS, "p", ("due",), where=("owner", ("a",)))]
    encoders = {TASKS: [(i.key, prefix_encoder(i.fields, i.sparse, i.where)) for i in indexes]}
    current: dict[str, Document] = {}
    commits: list[list[Write]] = []
    for step in range(300):
        doc_id = rng.choice([*current, new_id(TASKS)]) if current else new_id(TASKS)
        old = current.get(doc_id)
        if old is not None and rng.random() < 0.2:
            new = None
            del current[doc_id]
        else:
            created = old["_creationTime"] if old else T0 + step
            new = {"_id": doc_id, "_creationTime": created, "owner": rng.choice("ab")}
            if rng.random() < 0.7:
                new["due"] = rng.randint(0, 3)
            current[doc_id] = new
        commits.append([Write(doc_id, TASKS, old, new)])
    fresh = [index_changes(encoders, KeyCache(), writes) for writes in commits]
    cache = KeyCache(limit=50)
    order = list(range(len(commits)))
    for start in range(0, len(order), 10):  # mostly in order, shuffled in blocks
        block = order[start : start + 10]
        rng.shuffle(block)
        order[start : start + 10] = block
    cached = {i: index_changes(encoders, cache, commits[i]) for i in order}
    assert [cached[i] for i in range(len(commits))] == fresh
