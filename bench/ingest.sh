#!/usr/bin/env bash
# Ingestion benchmark: requests/s and latency of POST /v1/ingest/{id} (token
# check, durable write, 202) under wrk, and in the same run `wasmtime serve`
# answering the same request with a hello-world wasi:http component.
#
# Needs: wrk (Debian package `wrk`), wasmtime-cli 48.0.8
# (`cargo install wasmtime-cli --version 48.0.8 --locked`), curl.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-10s}
conns=${CONNECTIONS:-32}
threads=${THREADS:-1}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
command -v wasmtime >/dev/null || { echo "wasmtime is missing: cargo install wasmtime-cli --version 48.0.8 --locked" >&2; exit 1; }
# Where cargo puts what it builds (CARGO_TARGET_DIR, as `make` and CI set
# it, or each workspace's own target/).
root=$(pwd)
cargo build --release --quiet --bin paddock
paddock="${CARGO_TARGET_DIR:-$root/target}/release/paddock"
(cd bench/hello-http && cargo build --release --quiet)
hello="${CARGO_TARGET_DIR:-$root/bench/hello-http/target}/wasm32-wasip2/release/hello_http.wasm"

mkdir -p "$work/plugins"
cp -r plugins/webhook "$work/plugins/" 2>/dev/null; rm -rf "$work/plugins/webhook/src" "$work/plugins/webhook/target"
cat > "$work/bootstrap.toml" <<'TOML'
[[organisations]]
name = "Bench"
[[organisations.installations]]
app = "webhook"
app_key = "readings"
[[organisations.ingestions]]
id = 1
installation = "readings"
token = "pdi_bench"
rate_per_s = 1000000
TOML
# No throttle and no backlog bound: measure acceptance, not backpressure
# (with the defaults, a 10,000-event backlog answers 429 tenant_busy).
cat > "$work/serve.toml" <<'TOML'
max_ingest_rate = 1000000
max_queue = 1000000
max_queue_per_org = 1000000
TOML
# INGRESS_BATCH=N sets the server's `ingress_batch` (default: the server's).
if [ -n "${INGRESS_BATCH:-}" ]; then echo "ingress_batch = $INGRESS_BATCH" >> "$work/serve.toml"; fi
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"readings":[{"serial":"NONE","distance_mm":812}]}'
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer pdi_bench"
local other = 0
response = function(status, headers, body)
  if status ~= 202 then other = other + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("answers other than 202: %d\n", other))
end
LUA

PADDOCK_OPERATOR_TOKEN=pdo_bench "$paddock" serve --push-listen off --config "$work/serve.toml" --data "$work/data" \
  --plugins "$work/plugins" --listen 127.0.0.1:18090 --bootstrap "$work/bootstrap.toml" 2>"$work/paddock.log" &
wasmtime serve --addr 127.0.0.1:18091 "$hello" 2>"$work/wasmtime.log" &
for port in 18090 18091; do
  for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'authorization: Bearer pdi_bench' \
  -d '{"readings":[]}' http://127.0.0.1:18090/v1/ingest/1)
[ "$status" = 202 ] || { echo "paddock answered $status"; cat "$work/paddock.log"; exit 1; }

run() { wrk -t"$threads" -c"$conns" -d"$duration" --latency -s "$work/post.lua" "$1" | tee "$work/$2.txt"; }
# wasmtime serve first: after its run Paddock goes on working through the
# backlog its run accepted, which would slow whatever ran next.
echo "== wasmtime serve 48.0.8: hello-world wasi:http component (reads the body, 202)"
run http://127.0.0.1:18091/ wasmtime
echo "== paddock serve: POST /v1/ingest/1 (token, durable write with group commit, 202; the integration runs after)"
run http://127.0.0.1:18090/v1/ingest/1 paddock
rps() { awk '/Requests\/sec/ {print $2}' "$work/$1.txt"; }
p=$(rps paddock); w=$(rps wasmtime)
echo "== paddock $p req/s, wasmtime serve $w req/s: paddock/wasmtime = $(awk -v p="$p" -v w="$w" 'BEGIN {printf "%.2f", p / w}')"
depth=$(curl -s http://127.0.0.1:18090/v1/health | sed 's/.*"queue_depth":\([0-9]*\).*/\1/')
echo "== paddock's backlog right after the run: $depth events still to process (accepted durably, run after the 202)"
