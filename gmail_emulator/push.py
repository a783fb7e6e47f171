"""Pub/Sub-style push notifications after `watch`, from a background thread.

Google sends at most one notification per second per mailbox, so changes are coalesced:
a change marks the mailbox dirty and the sender posts the latest historyId once the
mailbox's one-second gap has passed. Delivery failures are logged and dropped, as
Pub/Sub push gives no guarantee either (clients must keep polling). Each request
carries Pub/Sub's OIDC token (`Authorization: Bearer`, see oidc.py).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

from .mailbox import Mailbox

log = logging.getLogger("gmail_emulator.push")


class Notifier:
    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.cond = threading.Condition()
        self.dirty: set[str] = set()
        self.last_sent: dict[str, float] = {}
        self.sent = 0
        self.failed = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    def changed(self, mb: Mailbox) -> None:
        """Mailbox listener; cheap, called with the mailbox lock held."""
        if mb.watch is None or not self.emu.config.push_url:
            return
        with self.cond:
            self.dirty.add(mb.email)
            self.cond.notify()

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="gmail-emu-push", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self.cond:
            self._stopping = True
            self.cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.dirty and not self._stopping:
                    self.cond.wait()
                if self._stopping:
                    return
                now = time.monotonic()
                due = [e for e in self.dirty if now - self.last_sent.get(e, -10.0) >= 1.0]
                if not due:
                    wait = min(1.0 - (now - self.last_sent.get(e, now)) for e in self.dirty)
                    self.cond.wait(timeout=max(0.01, wait))
                    continue
                for email in due:
                    self.dirty.discard(email)
                    self.last_sent[email] = now
            for email in due:
                self._send(email)

    def _send(self, email: str) -> None:
        url = self.emu.config.push_url
        mb = self.emu.mailboxes.get(email)
        if not url or mb is None or mb.watch is None:
            return
        if mb.watch.expiration_ms < time.time() * 1000:
            mb.watch = None
            return
        data = json.dumps({"emailAddress": mb.email, "historyId": mb.history_id}).encode()
        body = {
            "message": {
                "data": base64.b64encode(data).decode(),
                "messageId": str(uuid.uuid4().int % 10**16),
                "message_id": None,
                "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            },
            "subscription": "projects/emulator/subscriptions/gmail",
        }
        body["message"]["message_id"] = body["message"]["messageId"]
        headers = {"Content-Type": "application/json"}
        if self.emu.config.push_auth:
            headers["Authorization"] = f"Bearer {self.emu.push_token(url)}"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                resp.read()
            self.sent += 1
        except Exception as exc:
            self.failed += 1
            log.warning("push to %s for %s failed: %s", url, email, exc)
