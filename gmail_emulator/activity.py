"""Background mail activity for demos: new mail and label changes at a steady rate."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

log = logging.getLogger("gmail_emulator.activity")


class Activity:
    def __init__(self, emu: Any, per_minute: float) -> None:
        self.emu = emu
        self.per_minute = per_minute
        self.rng = random.Random()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gmail-emu-activity", daemon=True)

    def start(self) -> None:
        if self.per_minute > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = 60.0 / self.per_minute
        while not self._stop.wait(self.rng.expovariate(1 / interval)):
            try:
                self.step()
            except Exception:
                log.exception("activity step failed")

    def step(self) -> None:
        emails = self.emu.mailbox_emails()
        if not emails:
            return
        email = self.rng.choice(emails)
        mb = self.emu.mailbox(email)
        r = self.rng.random()
        if r < 0.6 or not mb.keys:
            self.emu.insert_message(email, ("INBOX", "UNREAD", "CATEGORY_PERSONAL"))
            return
        with mb.lock:
            recent = mb.keys[-min(len(mb.keys), 200):]
            msg = mb.msgs.get(self.rng.choice(recent) & 0xFFFFFF)
            user_labels = [lid for lid, lab in mb.labels.items() if lab.type == "user"]
        if msg is None:
            return
        msg_id = mb.msg_id(msg.num)
        if r < 0.8:
            self.emu.modify_message(email, msg_id, remove=("UNREAD",))
        elif r < 0.88:
            self.emu.modify_message(email, msg_id, add=("STARRED",))
        elif r < 0.95 and user_labels:
            self.emu.modify_message(email, msg_id, add=(self.rng.choice(user_labels),))
        else:
            self.emu.trash_message(email, msg_id)
