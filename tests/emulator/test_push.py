"""Push notifications after watch, coalesced to one per second per mailbox."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from .conftest import ALICE


def test_push_after_watch(gmail, emu):
    received: list[dict] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    sink = HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        emu.config.push_url = f"http://127.0.0.1:{sink.server_address[1]}/push"
        emu.insert_message(ALICE)  # before watch: no notification
        gmail.users().watch(userId="me", body={"topicName": "projects/p/topics/gmail"}).execute()
        for _ in range(5):
            emu.insert_message(ALICE)
        deadline = time.time() + 3
        while time.time() < deadline and not received:
            time.sleep(0.02)
        time.sleep(0.2)
        assert 1 <= len(received) <= 2  # coalesced
        body = received[-1]
        assert body["subscription"] == "projects/emulator/subscriptions/gmail"
        data = json.loads(base64.b64decode(body["message"]["data"]))
        assert data["emailAddress"] == ALICE
        assert set(body["message"]) >= {"data", "messageId", "publishTime"}
        deadline = time.time() + 2.5
        while time.time() < deadline and int(
            json.loads(base64.b64decode(received[-1]["message"]["data"]))["historyId"]
        ) < int(emu.snapshot(ALICE)["historyId"]):
            time.sleep(0.05)
        last = json.loads(base64.b64decode(received[-1]["message"]["data"]))
        assert str(last["historyId"]) == emu.snapshot(ALICE)["historyId"]
    finally:
        sink.shutdown()
        sink.server_close()


def test_push_failure_is_logged_not_fatal(gmail, emu):
    emu.config.push_url = "http://127.0.0.1:9/unreachable"
    gmail.users().watch(userId="me", body={"topicName": "projects/p/topics/gmail"}).execute()
    emu.insert_message(ALICE)
    deadline = time.time() + 3
    while time.time() < deadline and emu.notifier.failed == 0:
        time.sleep(0.02)
    assert emu.notifier.failed >= 1
    gmail.users().getProfile(userId="me").execute()


def test_push_requests_carry_a_pubsub_oidc_token_its_certs_verify(gmail, emu, base_url):
    """Pub/Sub's token: RS256 with a `kid`, verifiable by google-auth against the certs
    the emulator serves like https://www.googleapis.com/oauth2/v1/certs."""
    import google.auth.transport.requests
    from google.oauth2 import id_token

    tokens: list[str] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            tokens.append(self.headers.get("Authorization", ""))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    sink = HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{sink.server_address[1]}/gmail/push/"
        emu.config.push_url = url
        gmail.users().watch(userId="me", body={"topicName": "projects/p/topics/gmail"}).execute()
        emu.insert_message(ALICE)
        deadline = time.time() + 3
        while time.time() < deadline and not tokens:
            time.sleep(0.02)
        assert tokens[0].startswith("Bearer ")
        request = google.auth.transport.requests.Request()
        certs_url = base_url + "oauth2/v1/certs"
        claims = id_token.verify_token(tokens[0][7:], request, audience=url, certs_url=certs_url)
        assert claims["iss"] == "https://accounts.google.com"
        assert claims["email"] == emu.config.push_service_account
        assert claims["email_verified"] is True
        assert claims["exp"] - claims["iat"] == 3600
        # A configured audience and service account replace the defaults.
        emu.config.push_audience = "https://mirror.example/gmail/push/"
        emu.config.push_service_account = "push@project.iam.gserviceaccount.com"
        claims = id_token.verify_token(
            emu.push_token(url), request, audience=emu.config.push_audience, certs_url=certs_url
        )
        assert claims["email"] == "push@project.iam.gserviceaccount.com"
        emu.config.push_auth = False
        emu.insert_message(ALICE)
        deadline = time.time() + 3
        while time.time() < deadline and len(tokens) < 2:
            time.sleep(0.02)
        assert tokens[-1] == ""  # push_auth off: no token, as an unauthenticated subscription
    finally:
        sink.shutdown()
        sink.server_close()
