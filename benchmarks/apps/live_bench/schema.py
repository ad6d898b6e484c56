from convexpy import define_schema, define_table, v

schema = define_schema(
    {"items": define_table({"key": v.int64(), "at": v.float64()}).index("by_key", ["key"])}
)
