#!/usr/bin/env bash
# Show the demo's state over the API (see show.py). Usage: demo/show.sh [BASE_URL]
exec python3 "$(dirname "$0")/show.py" "${1:-http://127.0.0.1:8080}"
