from convexpy import define_schema, define_table, v

schema = define_schema(
    {
        "messages": define_table({"body": v.string(), "author": v.string()}),
    }
)
