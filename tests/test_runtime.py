"""Functions, the loader, references, the Runtime and its guarantees."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

import convexpy
from convexpy import (
    ArgumentValidationError,
    ConvexError,
    OptimisticConcurrencyError,
    Runtime,
    UserIdentity,
    api,
    internal,
    mutation,
    query,
    v,
)
from convexpy.errors import FunctionNotFoundError
from convexpy.functions import FunctionKind
from convexpy.loader import AppLoadError


def src(code: str) -> str:
    return textwrap.dedent(code).lstrip()


# -- decorators ---------------------------------------------------------------


def test_decorators_bare_and_with_keywords():
    @query
    async def bare(ctx, x: int) -> int:
        return x

    @mutation(args={"x": v.int64()}, returns=v.int64())
    async def keyed(ctx, x):
        return x

    assert bare.kind is FunctionKind.QUERY and keyed.kind is FunctionKind.MUTATION
    assert keyed.returns is not None


def test_sync_handler_is_refused_at_decoration():
    with pytest.raises(TypeError, match="async def sync_fn"):

        @mutation
        def sync_fn(ctx):
            return 1

    with pytest.raises(TypeError, match="async"):
        query(args={})(lambda ctx: None)


def test_decorated_function_cannot_be_called_directly():
    @query
    async def f(ctx):
        return 1

    with pytest.raises(TypeError, match="cannot be called directly"):
        f(None)


# -- loader and references ------------------------------------------------------


async def test_loader_paths_nested_private_and_relative_imports(basic_app):
    async with Runtime(basic_app) as rt:
        paths = {path for path, _ in rt.app.registry}
        assert {"messages:send", "counter:increment", "nested/deep:hello"} <= paths
        assert not any(p.startswith("_helpers") for p in paths)
        # counter.py uses `from ._helpers import ...`
        counter = await rt.mutation("counter:create", {"name": "c"})
        assert await rt.mutation(api.counter.increment, {"counter_id": counter}) == 1


async def test_references_by_object_string_and_lazy_namespaces(basic_app):
    async with Runtime(basic_app) as rt:
        module = rt.app.modules["nested/deep"]
        assert await rt.query(module.hello, {"name": "a"}) == "hello a"
        assert await rt.query("nested/deep:hello", {"name": "b"}) == "hello b"
        assert await rt.query("nested/deep.py:hello") == "hello world"
        assert await rt.query(api.nested.deep.hello, {"name": "c"}) == "hello c"
        assert await rt.query(internal.counter.secret) == "internal"


async def test_internal_functions_are_unreachable_through_api_and_untrusted(basic_app):
    async with Runtime(basic_app) as rt:
        with pytest.raises(FunctionNotFoundError):
            await rt.query(api.counter.secret)
        with pytest.raises(FunctionNotFoundError, match="public function"):
            await rt.call(FunctionKind.QUERY, "counter:secret", {}, trusted=False)
        assert await rt.call(FunctionKind.QUERY, "counter:secret", {}, trusted=True) == "internal"


async def test_unknown_function_and_wrong_kind(basic_app):
    async with Runtime(basic_app) as rt:
        with pytest.raises(FunctionNotFoundError, match="nope:nothing"):
            await rt.query("nope:nothing")
        with pytest.raises(FunctionNotFoundError, match="invalid function path"):
            await rt.query("no-colon")
        with pytest.raises(FunctionNotFoundError, match="is a mutation"):
            await rt.query(api.messages.send, {"body": "x"})
        assert await rt.query(api.messages.count) == 0


async def test_two_runtimes_never_share_registries_or_module_state(make_app):
    code = src(
        """
        from convexpy import mutation, query

        state = {"calls": 0}

        @mutation
        async def bump(ctx) -> int:
            state["calls"] += 1
            return state["calls"]
        """
    )
    app_a = make_app({"m.py": code}, name="a")
    app_b = make_app({"m.py": code, "other.py": code}, name="b")
    async with Runtime(app_a) as a, Runtime(app_b) as b, Runtime(app_a) as a2:
        assert await a.mutation("m:bump") == 1
        assert await a.mutation("m:bump") == 2
        assert await b.mutation("m:bump") == 1
        assert await a2.mutation("m:bump") == 1
        with pytest.raises(FunctionNotFoundError):
            await a.mutation("other:bump")
        # A function object from one runtime's app is not a function of another.
        with pytest.raises(FunctionNotFoundError, match="not a function of this app"):
            await a.mutation(b.app.modules["m"].bump)


async def test_app_dir_named_convex_does_not_shadow_the_client_package(make_app):
    root = make_app(
        {
            "hello.py": src(
                """
                from convexpy import query

                @query
                async def hi(ctx) -> str:
                    return "hi"
                """
            )
        },
        name="convex",
    )
    async with Runtime(root) as rt:
        assert await rt.query("hello:hi") == "hi"
    import convex  # the official client package still imports

    assert hasattr(convex, "ConvexClient")


async def test_broken_module_reports_file_and_line(make_app):
    root = make_app({"good.py": "x = 1\n", "bad.py": "x = 1\nraise RuntimeError('boom')\n"})
    with pytest.raises(AppLoadError, match=r"bad\.py:2.*boom") as info:
        async with Runtime(root):
            pass
    assert info.value.line == 2


async def test_missing_app_dir(tmp_path):
    with pytest.raises(AppLoadError, match="does not exist"):
        async with Runtime(tmp_path / "nope"):
            pass


def test_public_names_are_exported():
    for name in convexpy.__all__:
        assert hasattr(convexpy, name), name
    public = {n for n in dir(convexpy) if not n.startswith("_")}
    modules = {
        "clock",
        "client",
        "context",
        "convex_json",
        "cron",
        "db",
        "errors",
        "functions",
        "ids",
        "live",
        "loader",
        "runtime",
        "scheduler",
        "schema",
        "schema_check",
        "store",
        "testing",
        "validators",
        "values",
        "annotations",
        "logcapture",
        "queries",
        "server",
        "cli",
        "unawaited",
        "auth",
        "components",
    }
    assert public - modules <= set(convexpy.__all__)


# -- transactions -------------------------------------------------------------------

INCREMENT_APP = {
    "counter.py": src(
        """
        import asyncio
        from convexpy import mutation, query

        @mutation
        async def create(ctx) -> str:
            return await ctx.db.insert("counters", {"value": 0})

        @mutation
        async def increment(ctx, id: str) -> int:
            doc = await ctx.db.get(id)
            await asyncio.sleep(0)  # let other increments interleave
            await ctx.db.patch(id, {"value": doc["value"] + 1})
            return doc["value"] + 1

        @query
        async def value(ctx, id: str) -> int:
            return (await ctx.db.get(id))["value"]
        """
    )
}


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_200_concurrent_increments_end_exact(make_app, tmp_path, store_kind):
    store = "memory" if store_kind == "memory" else f"sqlite:///{tmp_path}/c.sqlite3"
    async with Runtime(make_app(INCREMENT_APP), store=store, mutation_retries=1000) as rt:
        counter = await rt.mutation("counter:create")
        results = await asyncio.gather(
            *(rt.mutation("counter:increment", {"id": counter}) for _ in range(200))
        )
        assert await rt.query("counter:value", {"id": counter}) == 200
        assert sorted(results) == list(range(1, 201))
        assert rt.store.conflicts > 0  # conflicts really happened and were retried


async def test_conflicts_exhaust_retries_with_named_table(make_app):
    async with Runtime(make_app(INCREMENT_APP), mutation_retries=0) as rt:
        counter = await rt.mutation("counter:create")
        results = await asyncio.gather(
            *(rt.mutation("counter:increment", {"id": counter}) for _ in range(20)),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, Exception)]
        assert errors and all(isinstance(e, OptimisticConcurrencyError) for e in errors)
        assert errors[0].table == "counters" and '"counters"' in str(errors[0])
        successes = [r for r in results if not isinstance(r, Exception)]
        assert await rt.query("counter:value", {"id": counter}) == len(successes)


async def test_failing_mutation_writes_nothing_and_keeps_convex_error_data(basic_app):
    async with Runtime(basic_app) as rt:
        with pytest.raises(ConvexError) as info:
            await rt.mutation(api.messages.fail, {"body": "x"})
        assert info.value.data == {"code": "nope", "body": "x"}
        assert await rt.query(api.messages.count) == 0
        jobs = await rt.query(api.messages.count)
        assert jobs == 0


async def test_bad_arguments_raise_and_change_nothing(basic_app):
    async with Runtime(basic_app) as rt:
        for args in ({"body": 1}, {}, {"body": "x", "extra": 1}, {"body": {1, 2}}):
            with pytest.raises(ArgumentValidationError):
                await rt.mutation(api.messages.send, args)
        with pytest.raises(ArgumentValidationError):
            await rt.mutation(api.messages.send, ["not", "a", "dict"])  # type: ignore[arg-type]
        assert await rt.query(api.messages.count) == 0


async def test_actions_run_functions_and_have_no_db(make_app):
    app = make_app(
        {
            "a.py": src(
                """
                from convexpy import action, mutation, query, internal

                @mutation
                async def put(ctx, x: int) -> str:
                    return await ctx.db.insert("xs", {"x": x})

                @query
                async def total(ctx) -> int:
                    return sum(d["x"] for d in await ctx.db.query("xs").collect())

                @action
                async def work(ctx, n: int) -> int:
                    for i in range(n):
                        await ctx.run_mutation(internal.a.put, {"x": i})
                    return await ctx.run_query("a:total")

                @action
                async def touch_db(ctx):
                    return ctx.db

                @action
                async def who(ctx):
                    ident = ctx.auth.get_user_identity()
                    return None if ident is None else ident.subject

                @action
                async def nested_who(ctx):
                    return await ctx.run_action("a:who")
                """
            )
        }
    )
    async with Runtime(app) as rt:
        assert await rt.action("a:work", {"n": 4}) == 6
        with pytest.raises(AttributeError, match="actions have no ctx.db"):
            await rt.action("a:touch_db")
        me = UserIdentity(subject="user1", issuer="https://issuer")
        assert await rt.action("a:who", identity=me) == "user1"
        assert await rt.action("a:nested_who", identity=me) == "user1"
        assert await rt.action("a:who") is None
        assert me.token_identifier == "https://issuer|user1"
