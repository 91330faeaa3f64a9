#!/usr/bin/env bash
# Post tank readings to the demo's webhook, like a field gateway would.
# Usage: demo/simulate.sh [BASE_URL] [COUNT] [FIRST] [PAUSE_S]
set -euo pipefail
base=${1:-http://127.0.0.1:8080}
count=${2:-10}
first=${3:-1}
pause=${4:-0.3}
for i in $(seq "$first" $(( first + count - 1 ))); do
  north=$(( 300 + (i * 173) % 1600 ))
  south=$(( 1500 + (i * 97) % 450 ))
  body="{\"readings\":[{\"serial\":\"TANK-001\",\"distance_mm\":$north},{\"serial\":\"TANK-002\",\"distance_mm\":$south}]}"
  printf 'reading %2d: north %4d mm, south %4d mm -> ' "$i" "$north" "$south"
  curl -sS -X POST "$base/v1/ingest/1" \
    -H 'authorization: Bearer pdi_demo_ingest_token' \
    -H 'content-type: application/json' --data "$body"
  echo
  sleep "$pause"
done
