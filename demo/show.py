#!/usr/bin/env python3
"""Show the demo's state over the API: each tank's tags, its processor's last
invocation summaries and its notifications. Usage: show.py [BASE_URL]"""
import json
import os
import sys
import urllib.request

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
TOKEN = os.environ.get("DEMO_TOKEN", "pdk_demo_token_do_not_use_in_production")


def get(path):
    req = urllib.request.Request(BASE + path, headers={"authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


org = get("/v1/orgs")["organisations"][0]["id"]
print(f"organisation {org}")
installs = get(f"/v1/orgs/{org}/installations")["installations"]
for i in installs:
    print(f"  installation {i['id']}  {i['app']:<12} on agent {i['agent_id']}  ({i['display_name']})")
for agent in get(f"/v1/orgs/{org}/agents")["agents"]:
    if not agent.get("serial_number"):
        continue
    aid = agent["id"]
    print(f"\n{agent['name']} ({agent['serial_number']}, agent {aid})")
    try:
        tags = get(f"/v1/orgs/{org}/agents/{aid}/channels/tag_values/aggregate")["data"]
    except urllib.error.HTTPError:
        tags = {}
    print(f"  tags: {json.dumps(tags)}")
    for inst in (i for i in installs if i["agent_id"] == aid):
        for s in get(f"/v1/orgs/{org}/installations/{inst['id']}/invocations?limit=3")["invocations"]:
            lines = s["logs"]["lines"]
            line = lines[0]["message"] if lines else ""
            print(f"  summary: {s['op']:<18} {s['status']:<8} {s['duration_ms']:.2f} ms  {s['fuel']} fuel  {line}")
    for m in get(f"/v1/orgs/{org}/agents/{aid}/channels/notifications/messages")["messages"]:
        print(f"  notification: {m['data'].get('message', m['data'])}")
