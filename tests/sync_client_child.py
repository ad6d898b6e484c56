"""The official ``convex`` ``ConvexClient``, driven one command per stdin line.

Run as ``python sync_client_child.py URL``. Each input line is a JSON command
``{"op": ..., ...}``; each output line the JSON answer ``{"ok": value}`` or
``{"error": kind, "message": ..., "data": ...}`` (the client's own output,
the functions' log lines, goes to stderr). The client's Rust side holds
the GIL while it waits (``next`` on a subscription included), so it gets a
process of its own, and the test that drives it applies the deadlines.

Ops: ``query`` / ``mutation`` / ``action`` (``path``, ``args``),
``subscribe`` (``path``, ``args``; answers a subscription number), ``next``
(``sub``: the subscription's next value), ``unsubscribe`` (``sub``),
``admin`` (``key``: ``set_admin_auth``), ``auth`` (``token``: ``set_auth``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from convex import ConvexClient, ConvexError, ConvexInt64


def plain(value: Any) -> Any:
    """A client value as JSON: int64 as ``{"$int": n}``, floats as they are."""
    if isinstance(value, ConvexInt64):
        return {"$int": value.value}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    return value


def main() -> None:
    # Answers go to the real stdout; the client prints the functions' log lines
    # to file descriptor 1, which now goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    client = ConvexClient(sys.argv[1])
    subscriptions: list[Any] = []
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        try:
            if op in ("query", "mutation", "action"):
                result = getattr(client, op)(command["path"], command.get("args"))
            elif op == "subscribe":
                subscription = client.subscribe(command["path"], command.get("args"))
                subscriptions.append(iter(subscription))
                result = len(subscriptions) - 1
            elif op == "next":
                result = next(subscriptions[command["sub"]])
            elif op == "unsubscribe":
                subscriptions[command["sub"]].unsubscribe()
                result = None
            elif op == "admin":
                client.set_admin_auth(command["key"])
                result = None
            elif op == "auth":
                client.set_auth(command["token"])
                result = None
            else:
                raise ValueError(f"unknown op {op!r}")
            answer = {"ok": plain(result)}
        except ConvexError as exc:
            answer = {"error": "ConvexError", "message": str(exc), "data": plain(exc.data)}
        except Exception as exc:
            answer = {"error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(answer), file=answers, flush=True)


if __name__ == "__main__":
    main()
