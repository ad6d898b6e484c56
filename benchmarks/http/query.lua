-- wrk -s benchmarks/http/query.lua: POST /api/query bench:latest (the newest 10 items)
wrk.method = "POST"
wrk.path = "/api/query"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"path": "bench:latest", "args": {}, "format": "json"}'
