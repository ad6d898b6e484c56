#!/usr/bin/env bash
# The dev server under wrk: 64 connections, a query and a durable mutation, in
# alternating rounds on a fresh SQLite database (see benchmarks/README.md).
# Usage: benchmarks/http/run.sh [ROUNDS] [SECONDS]   (needs wrk: apt-get install wrk)
# PYTHON=... picks the interpreter (and so the convexpy) that serves; KINDS="status
# query mutation" adds GET / (the HTTP stack alone) to the default "query mutation".
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-3}
seconds=${2:-10}
port=${PORT:-3299}
data=$(mktemp -d)
"${PYTHON:-python}" -m convexpy dev convex --db "$data/data.sqlite3" --port "$port" --no-watch -q \
    > "$data/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/" > /dev/null && break
    sleep 0.1
done
url="http://127.0.0.1:$port"
wrk -t1 -c64 -d3s -s mutation.lua "$url" > /dev/null  # warm-up (and 10k+ documents)
for round in $(seq "$rounds"); do
    for kind in ${KINDS:-query mutation}; do
        script=()
        [ "$kind" = status ] || script=(-s "$kind.lua")
        out=$(wrk -t1 -c64 -d"${seconds}s" "${script[@]}" "$url/")
        rate=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
        bad=$(awk '/Non-2xx/ {print $5}' <<< "$out")
        echo "round $round  $kind  ${rate} req/s${bad:+  ($bad non-2xx)}"
    done
done
"${PYTHON:-python}" - "$port" <<'PY'
import json, sys, urllib.request
body = json.dumps({"path": "bench:latest", "args": {}, "format": "json"}).encode()
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/query", body) as response:
    assert json.load(response)["status"] == "success"
PY
