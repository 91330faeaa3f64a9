#!/usr/bin/env bash
# The console with a 1,000-device organisation: time the organisation page and a device page.
# Usage: bench/console.sh target/release/paddock   (curl and python3 needed)
set -euo pipefail
bin=$1; port=18090; B=http://127.0.0.1:$port; OP=pdo_measure
rm -rf /tmp/m-data; mkdir -p /tmp/m-plugins
PADDOCK_OPERATOR_TOKEN=$OP $bin serve --data /tmp/m-data --plugins /tmp/m-plugins --listen 127.0.0.1:$port --push-listen off 2>/tmp/m.log &
pid=$!; trap 'kill $pid' EXIT
for _ in $(seq 1 100); do curl -sf $B/v1/health >/dev/null && break; sleep 0.1; done
ORG=$(curl -s -X POST -H "authorization: Bearer $OP" $B/v1/orgs -d '{"name":"Big"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
TOKEN=$(curl -s -X POST -H "authorization: Bearer $OP" $B/v1/orgs/$ORG/tokens -d '{"name":"m"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
python3 - "$B" "$ORG" "$TOKEN" <<'PY'
import json, sys, http.client
b, org, token = sys.argv[1:]
host, port = b.replace("http://", "").split(":")
c = http.client.HTTPConnection(host, int(port))
for i in range(1000):
    c.request("POST", f"/v1/orgs/{org}/agents", json.dumps({"name": f"Tank {i:04}", "serial_number": f"T-{i:04}"}), {"authorization": f"Bearer {token}"})
    r = c.getresponse(); body = r.read()
    assert r.status == 201, body
    if i == 500:
        agent = json.loads(body)["id"]
        for n in range(50):
            c.request("POST", f"/v1/orgs/{org}/agents/{agent}/channels/levels/messages", json.dumps({"level": n}), {"authorization": f"Bearer {token}"})
            c.getresponse().read()
PY
C=$(curl -s -i -X POST $B/console/login --data "token=$TOKEN" | grep -i set-cookie | sed 's/set-cookie: //I' | cut -d';' -f1)
AG=$(curl -s -H "authorization: Bearer $TOKEN" "$B/v1/orgs/$ORG/agents?limit=1000" | python3 -c 'import json,sys; a=json.load(sys.stdin)["agents"]; print([x["id"] for x in a if x["name"]=="Tank 0500"][0])')
for page in "/console/orgs/$ORG" "/console/orgs/$ORG?q=t-0500" "/console/orgs/$ORG/devices/$AG" "/console/orgs/$ORG/devices/$AG?channel=levels"; do
  for i in 1 2 3; do curl -s -o /dev/null -b "$C" -w "%{http_code} %{time_total}s %{size_download}B  $page\n" "$B$page"; done
done
