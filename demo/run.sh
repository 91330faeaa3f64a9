#!/usr/bin/env bash
# The demo: Paddock with the example apps, a demo organisation with two
# tanks (demo/bootstrap.toml), and a simulator posting readings to the
# webhook integration. Runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
paddock=${PADDOCK:-target/debug/paddock}
listen=${PADDOCK_LISTEN:-127.0.0.1:8080}
base="http://$listen"
export PADDOCK_DATA=${PADDOCK_DATA:-target/demo-data}
export PADDOCK_OPERATOR_TOKEN=${PADDOCK_OPERATOR_TOKEN:-pdo_demo_operator_token}
export PADDOCK_LOG=${PADDOCK_LOG:-paddock=info}

"$paddock" serve --plugins plugins --listen "$listen" --bootstrap demo/bootstrap.toml &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -sf "$base/v1/health" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "paddock serve exited" >&2; exit 1; }
  sleep 0.1
done

echo; echo "== simulator: posting readings to the webhook integration"
demo/simulate.sh "$base" "${DEMO_READINGS:-8}"
sleep 0.5
echo; echo "== what happened"
demo/show.sh "$base"
# Keep the tanks moving for the console: a reading every 5 s.
demo/simulate.sh "$base" 100000 100 5 >/dev/null 2>&1 &
simulator=$!
trap 'kill $simulator 2>/dev/null; kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
cat <<MSG

The console: $base/console/login?token=pdk_demo_token_do_not_use_in_production
  (one click signs in as the demo organisation; the simulator posts a reading every 5 s,
   so the tanks' levels move on their device pages and the low-level notification shows)

Paddock is running on $base with the demo data in $PADDOCK_DATA (Ctrl-C stops it).
  demo/simulate.sh $base 20      # more readings
  demo/show.sh $base             # tags, summaries, notifications again
  curl -H 'authorization: Bearer pdk_demo_token_do_not_use_in_production' $base/v1/orgs
  curl -H 'authorization: Bearer $PADDOCK_OPERATOR_TOKEN' $base/metrics
MSG
wait $pid
