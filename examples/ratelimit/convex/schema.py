from convexpy import define_schema, define_table, v

schema = define_schema(
    {
        "counters": define_table(
            {"user": v.string(), "window": v.int64(), "count": v.int64()}
        ).index("by_user_window", ["user", "window"]),
        "messages": define_table({"user": v.string(), "body": v.string()}),
    }
)
