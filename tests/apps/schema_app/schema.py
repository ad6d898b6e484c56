from convexpy import define_schema, define_table, v

schema = define_schema(
    {
        "tasks": define_table(
            {
                "title": v.string(),
                "owner": v.string(),
                "due": v.number(),
                "done": v.boolean(),
                "tags": v.optional(v.array(v.string())),
            }
        )
        .index("by_owner", ["owner", "due"])
        .index("by_done", ["done"]),
        "notes": define_table({"body": v.string(), "task": v.id("tasks")}),
    }
)
