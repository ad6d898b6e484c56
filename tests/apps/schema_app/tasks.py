from convexpy import mutation, query, v


@mutation
async def add(ctx, title: str, owner: str, due: float, done: bool = False) -> str:
    return await ctx.db.insert("tasks", {"title": title, "owner": owner, "due": due, "done": done})


@mutation
async def insert_raw(ctx, table: str, doc: dict):
    return await ctx.db.insert(table, doc)


@mutation
async def patch(ctx, id: str, fields: dict):
    await ctx.db.patch(id, fields)


@mutation
async def replace(ctx, id: str, doc: dict):
    await ctx.db.replace(id, doc)


@mutation
async def remove(ctx, id: str):
    await ctx.db.delete(id)


@query
async def get(ctx, id: str):
    return await ctx.db.get(id)


@query
async def by_owner(ctx, owner: str, after: float | None = None, order: str = "asc"):
    def rng(r):
        r = r.eq("owner", owner)
        return r if after is None else r.gt("due", after)

    return await ctx.db.query("tasks").with_index("by_owner", rng).order(order).collect()


@query
async def open_tasks(ctx):
    return await ctx.db.query("tasks").filter(lambda t: not t["done"]).collect()


@query
async def first_open(ctx, owner: str):
    q = ctx.db.query("tasks").with_index("by_owner", lambda r: r.eq("owner", owner))
    return await q.filter(lambda t: not t["done"]).first()


@query
async def unique_owner(ctx, owner: str):
    return (
        await ctx.db.query("tasks").with_index("by_owner", lambda r: r.eq("owner", owner)).unique()
    )


@query
async def take(ctx, n: int, order: str = "asc"):
    return await ctx.db.query("tasks").order(order).take(n)


@query(
    args={
        "numItems": v.number(),
        "cursor": v.nullable(v.string()),
        "endCursor": v.optional(v.nullable(v.string())),
    }
)
async def page(ctx, numItems, cursor, endCursor=None):
    options = {"numItems": numItems, "cursor": cursor, "endCursor": endCursor}
    return await ctx.db.query("tasks").paginate(options)


@query
async def iterate(ctx) -> list:
    titles = []
    async for task in ctx.db.query("tasks").order("desc"):
        titles.append(task["title"])
    return titles


@query
async def write_from_query(ctx):
    await ctx.db.insert("tasks", {"title": "x", "owner": "o", "due": 1.0, "done": False})


@query(returns=v.int64())
async def bad_return(ctx):
    return "not an int"


@query
async def non_convex_return(ctx):
    return {1, 2}


@mutation
async def insert_with_field(ctx, field: str):
    doc = {"title": "x", "owner": "o", "due": 1.0, "done": False, field: 1}
    return await ctx.db.insert("tasks", doc)


@mutation
async def insert_non_convex(ctx):
    return await ctx.db.insert("tasks", {"title": {1, 2}, "owner": "o", "due": 1.0, "done": False})
