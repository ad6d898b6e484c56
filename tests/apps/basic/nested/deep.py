from convexpy import action, api, query


@query
async def hello(ctx, name: str = "world") -> str:
    return f"hello {name}"


@action
async def call_hello(ctx, name: str) -> str:
    return await ctx.run_query(api.nested.deep.hello, {"name": name})
