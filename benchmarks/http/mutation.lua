-- wrk -s benchmarks/http/mutation.lua: POST /api/mutation bench:insert (durable SQLite commit)
wrk.method = "POST"
wrk.path = "/api/mutation"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"path": "bench:insert", "args": {"n": 1}, "format": "json"}'
