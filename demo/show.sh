#!/usr/bin/env bash
# Show the demo's state over the API: each tank's tags, its processor's last
# invocation summaries and its notifications.
set -euo pipefail
base=${1:-http://127.0.0.1:8080}
token=${DEMO_TOKEN:-pdk_demo_token_do_not_use_in_production}
get() { curl -sS -H "authorization: Bearer $token" "$base$1"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }

org=$(get /v1/orgs | json 'print(d["organisations"][0]["id"])')
echo "organisation $org"
get "/v1/orgs/$org/installations" | json '
for i in d["installations"]: print(f"  installation {i[\"id\"]}  {i[\"app\"]:<12} on agent {i[\"agent_id\"]}  ({i[\"display_name\"]})")'
for agent in $(get "/v1/orgs/$org/agents" | json 'print(" ".join(a["id"] for a in d["agents"] if a["serial_number"]))'); do
  echo
  get "/v1/orgs/$org/agents/$agent" | json 'print(f"{d[\"name\"]} ({d[\"serial_number\"]}, agent {d[\"id\"]})")'
  echo -n "  tags: "; get "/v1/orgs/$org/agents/$agent/channels/tag_values/aggregate" | json 'print(json.dumps(d["data"]))'
  install=$(get "/v1/orgs/$org/installations" | json "print(next(i['id'] for i in d['installations'] if i['agent_id']=='$agent'))")
  get "/v1/orgs/$org/installations/$install/invocations?limit=3" | json '
for s in d["invocations"]:
    line = s["logs"]["lines"][0]["message"] if s["logs"]["lines"] else ""
    print(f"  summary: {s[\"op\"]:<18} {s[\"status\"]:<8} {s[\"duration_ms\"]:.2f} ms  {s[\"fuel\"]} fuel  {line}")'
  get "/v1/orgs/$org/agents/$agent/channels/notifications/messages" | json '
for m in d["messages"]: print("  notification:", m["data"].get("message", m["data"]))'
done
