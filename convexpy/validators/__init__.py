"""Validators (``v``) and argument validation, compiled to msgspec.

A validator tree (``v.object({"name": v.string()})``, or one derived from a
handler's annotations) is checked in two ways that must agree:

* the fast path: the tree compiled once to a msgspec type (``str``,
  ``list[...]``, a ``Struct`` per object ...) and run by
  ``msgspec.convert``. Nodes msgspec cannot express (ids, ``v.any()``,
  unions of several objects, boolean and float literals ...) become marker
  classes whose values msgspec hands to a ``dec_hook`` that runs the Python
  check for that node only;
* the Python path: every node's ``_check``. It runs inside those markers, and
  again over the whole input when the fast path fails, to find the exact path,
  value and expectation for the error message. Errors are rare, so the fast
  path carries no bookkeeping.

Conversions: ``v.number()`` turns ints into floats; arrays accept lists,
tuples and sets and produce lists; bytes accept ``bytearray`` and
``memoryview`` and produce ``bytes``; ``str``/``int`` subclasses become
plain ``str``/``int``. A union keeps an int an int when one of its members
accepts int64 (or an int literal), and only then tries ``v.number()``. An
``int`` annotation (:class:`VIntAnnotation`) also takes a whole float within
±2^53 as an int (clients that only have float64 send ``3`` as ``3.0``):
msgspec refuses it, and the Python path converts it; ``v.int64()`` refuses
floats.
"""

from __future__ import annotations

from .annotations import validator_from_annotation
from .builder import ValidatorBuilder, v
from .compiled import (
    ArgsValidator,
    ObjectValidator,
    ReturnsValidator,
    compile_args,
    compile_object,
    compile_returns,
)
from .nodes import (
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
)

__all__ = [
    "ArgsValidator",
    "ObjectValidator",
    "ReturnsValidator",
    "VAny",
    "VArray",
    "VBoolean",
    "VBytes",
    "VFloat64",
    "VId",
    "VInt64",
    "VIntAnnotation",
    "VLiteral",
    "VNull",
    "VObject",
    "VRecord",
    "VString",
    "VUnion",
    "Validator",
    "ValidatorBuilder",
    "compile_args",
    "compile_object",
    "compile_returns",
    "v",
    "validator_from_annotation",
]
