from convexpy import define_schema, define_table, v

schema = define_schema(
    {
        "tasks": define_table(
            {
                "payload": v.string(),
                "failFirst": v.int64(),
                "tries": v.int64(),
                "status": v.string(),
                "runId": v.optional(v.string()),
                "result": v.optional(v.any()),
            }
        ).index("by_run", ["runId"]),
        "imports": define_table({"rows": v.int64(), "done": v.int64(), "failed": v.int64()}),
        "digests": define_table({"user": v.string()}),
    }
)
