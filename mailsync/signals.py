"""Signals for applications built on the mirror.

Each is sent once per change, after the transaction that made the change has
committed (so a receiver that reads the database sees it), from whichever process
made it: usually a Django-Q2 worker. Receivers must be quick and must not raise
(an exception is logged and the next receiver still runs); heavy work belongs in
a task the receiver enqueues. See docs/signals.md for an example receiver.

| signal | sent when | keyword arguments |
|---|---|---|
| `messages_added` | messages are fetched for the first time (their content is in the mirror) | `user_id`, `gmail_ids` |
| `messages_changed` | fetched messages' labels change (history, a rescan, a re-fetch) | `user_id`, `gmail_ids` |
| `messages_deleted` | fetched messages leave the mirror (deleted in Gmail) | `user_id`, `gmail_ids` |
| `run_completed` / `run_failed` | a sync run ends | `user_id`, `run_id`, `sync_type`, `message` |

A message listed but never fetched was never "added", so its deletion sends
nothing. Replaying history (every task may run twice) changes nothing, so sends
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

log = logging.getLogger(__name__)

messages_added = Signal()
messages_changed = Signal()
messages_deleted = Signal()
run_completed = Signal()
run_failed = Signal()

SENDER = "mailsync"


def _send_on_commit(signal: Signal, **kwargs) -> None:
    def send() -> None:
        for receiver, result in signal.send_robust(sender=SENDER, **kwargs):
            if isinstance(result, Exception):
                log.error(
                    "signal receiver %r failed",
                    receiver,
                    exc_info=(type(result), result, result.__traceback__),
                )

    transaction.on_commit(send)


def _messages(signal: Signal, user_id: int, gmail_ids: Iterable[str]) -> None:
    gmail_ids = sorted(set(gmail_ids))
    if gmail_ids:
        _send_on_commit(signal, user_id=user_id, gmail_ids=gmail_ids)


def added(user_id: int, gmail_ids: Iterable[str]) -> None:
    _messages(messages_added, user_id, gmail_ids)


def changed(user_id: int, gmail_ids: Iterable[str]) -> None:
    _messages(messages_changed, user_id, gmail_ids)


def deleted(user_id: int, gmail_ids: Iterable[str]) -> None:
    _messages(messages_deleted, user_id, gmail_ids)


def run_ended(user_id: int, run_id: int, sync_type: str, status: str, message: str = "") -> None:
    signal = run_completed if status == "completed" else run_failed
    _send_on_commit(signal, user_id=user_id, run_id=run_id, sync_type=sync_type, message=message)
