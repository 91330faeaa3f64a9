"""Paddock's monitors driven by the real clients users have.

- python-devicecloud 0.5.10 (PyPI): credentials check, create/list/find/
  metadata/delete of TCP and HTTP monitors over /ws/Monitor, and TCP pushes
  received through its own TCPClientManager (plain TCP: the wheel's TLS
  default cannot connect anywhere, see MONITORS.md section 3.1).
- standardwebhooks 1.1.0 (PyPI): a signed HTTP monitor's batches verify.

Run by tests/tests/python_clients.rs against a live server; the settings
come from the environment. Exits non-zero on the first failed check.
"""

import http.server
import json
import os
import queue
import threading
import time

import requests
import devicecloud.monitor_tcp as mt
from devicecloud import DeviceCloud
from devicecloud.monitor import TCPDeviceCloudMonitor
from devicecloud.monitor_tcp import TCPClientManager
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

URL = os.environ["PADDOCK_URL"]
ORG = os.environ["PADDOCK_ORG"]
TOKEN = os.environ["PADDOCK_TOKEN"]
AGENT = os.environ["PADDOCK_AGENT"]
PUSH_PORT = int(os.environ["PADDOCK_PUSH_PORT"])
PUSH_TLS_PORT = int(os.environ["PADDOCK_PUSH_TLS_PORT"])
CA = os.environ["PADDOCK_PUSH_CA"]
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def publish(channel, data):
    r = requests.post(f"{URL}/v1/orgs/{ORG}/agents/{AGENT}/channels/{channel}/messages",
                      json=data, headers=BEARER, timeout=10)
    assert r.status_code == 201, r.text


def check_rest(dc):
    assert dc.has_valid_credentials()
    assert not DeviceCloud(ORG, "pdk_wrong", base_url=URL).has_valid_credentials()
    topics = [f"DataPoint/{AGENT}/levels"]
    tcp = dc.monitor.create_tcp_monitor(topics)
    # The client does not escape the URL: a bare '&' reaches the server.
    http_mon = dc.monitor.create_http_monitor(["DeviceCore"], "http://127.0.0.1:9/hook?a=1&b=2")
    ids = {m.get_id() for m in dc.monitor.get_monitors()}
    assert {tcp.get_id(), http_mon.get_id()} <= ids, ids
    found = dc.monitor.get_monitor(topics)
    assert found is not None and found.get_id() == tcp.get_id()
    assert dc.monitor.get_monitor(["DataStream"]) is None
    meta = tcp.get_metadata()
    assert meta["monTopic"] == ",".join(topics) and meta["monTransportType"] == "tcp", meta
    hmeta = http_mon.get_metadata()
    assert hmeta["monTransportUrl"] == "http://127.0.0.1:9/hook?a=1&b=2", hmeta
    assert "monTransportToken" not in hmeta
    return tcp, http_mon


def check_tcp_push(dc, monitor, secure):
    """Pushes through the client's own manager: plain TCP on the open port,
    or TLS on the secure port trusting Paddock's certificate."""
    mt.PUSH_OPEN_PORT = PUSH_PORT
    mt.PUSH_SECURE_PORT = PUSH_TLS_PORT
    got = queue.Queue()

    def callback(data):
        got.put(data)
        return True  # the client acknowledges a truthy answer

    if secure:
        manager = TCPClientManager(dc.get_connection(), ca_certs=CA)
    else:
        manager = TCPClientManager(dc.get_connection(), secure=False)
    base = 41 if not secure else 51
    try:
        TCPDeviceCloudMonitor(dc.get_connection(), monitor.get_id(), manager).add_callback(callback)
        publish("levels", {"level": base})
        publish("other", {"ignored": True})
        publish("levels", {"level": base + 1})
        levels = []
        for _ in range(2):
            msg = got.get(timeout=10)["Document"]["Msg"]
            assert isinstance(msg, dict), msg
            assert msg["operation"] == "INSERTION", msg
            assert msg["topic"].startswith(f"{ORG}/Message/{AGENT}/levels/"), msg
            levels.append(msg["Message"]["data"]["level"])
        assert levels == [base, base + 1], levels
        time.sleep(0.5)
        assert got.empty(), "a message of another channel was pushed"
    finally:
        manager.stop()


def check_signed_http(dc):
    received = queue.Queue()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = requests.post(f"{URL}/v1/orgs/{ORG}/monitors", headers=BEARER, timeout=10, json={
            "topics": [f"DataPoint/{AGENT}"], "type": "http", "sign": True, "batch_size": 1,
            "batch_duration": 0, "url": f"http://127.0.0.1:{server.server_port}/in",
        })
        assert r.status_code == 201, r.text
        secret = r.json()["signing_secret"]
        publish("levels", {"level": 43})
        headers, body = received.get(timeout=10)
        payload = Webhook(secret).verify(body, headers)
        assert payload["Document"]["Msg"]["Message"]["data"]["level"] == 43, payload
        try:
            Webhook(secret).verify(body + b" ", headers)
            raise AssertionError("a tampered body verified")
        except WebhookVerificationError:
            pass
    finally:
        server.shutdown()


def main():
    dc = DeviceCloud(ORG, TOKEN, base_url=URL)
    tcp, http_mon = check_rest(dc)
    check_tcp_push(dc, tcp, secure=False)
    check_tcp_push(dc, tcp, secure=True)
    tcp.delete()
    http_mon.delete()
    ids = {m.get_id() for m in dc.monitor.get_monitors()}
    assert tcp.get_id() not in ids and http_mon.get_id() not in ids, ids
    check_signed_http(dc)
    print("devicecloud and standardwebhooks: every check passed")


if __name__ == "__main__":
    main()
