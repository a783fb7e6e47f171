"""Signals for apps built on the mirror: sent after commit, once per change."""

from __future__ import annotations

from collections import Counter

import pytest

from mailsync import signals, sync
from mailsync.models import EmailMessage

# Committed transactions: on_commit callbacks run as in production.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def received():
    """Every signal sent, as (signal name, kwargs), and what the database showed then."""
    log: list[tuple[str, dict]] = []

    def receiver(name):
        def receive(sender, **kwargs):
            kwargs.pop("signal", None)
            if name == "added":  # after commit: the messages are there, fetched
                kwargs["in_database"] = EmailMessage.objects.filter(
                    gmail_id__in=kwargs["gmail_ids"], internal_date__isnull=False
                ).count()
            log.append((name, kwargs))

        return receive

    connected = {
        "added": signals.messages_added,
        "changed": signals.messages_changed,
        "deleted": signals.messages_deleted,
        "completed": signals.run_completed,
        "failed": signals.run_failed,
    }
    handlers = {name: receiver(name) for name in connected}
    for name, signal in connected.items():
        signal.connect(handlers[name], weak=False)
    yield log
    for name, signal in connected.items():
        signal.disconnect(handlers[name])


def ids_of(log, name: str) -> Counter:
    return Counter(gid for kind, kwargs in log if kind == name for gid in kwargs["gmail_ids"])


def test_an_initial_sync_announces_each_message_once_and_its_end(connected_mailbox, received):
    user, _ = connected_mailbox(count=130)
    run = sync.run_until_finished(sync.start_initial_sync(user))
    assert run.status == "completed"
    added = ids_of(received, "added")
    assert len(added) == 130
    assert set(added.values()) == {1}
    assert all(kw["in_database"] == len(kw["gmail_ids"]) for k, kw in received if k == "added")
    assert not ids_of(received, "changed")
    assert not ids_of(received, "deleted")
    ends = [kw for kind, kw in received if kind == "completed"]
    assert ends == [{"user_id": user.pk, "run_id": run.pk, "sync_type": "initial", "message": ""}]


def test_incremental_changes_are_announced_once_and_replays_announce_nothing(
    connected_mailbox, emulator, received
):
    user, _ = connected_mailbox(count=60)
    sync.run_until_finished(sync.start_initial_sync(user))
    before_history = user.__class__.objects.get(pk=user.pk).gmail_history_id
    received.clear()
    ids = sorted(emulator.snapshot(user.email)["messages"])
    new = {emulator.insert_message(user.email) for _ in range(3)}
    for gone in ids[:2]:
        emulator.delete_message(user.email, gone)
    for relabel in ids[10:14]:
        emulator.modify_message(user.email, relabel, add=["STARRED"])

    run = sync.run_until_finished(sync.start_incremental_sync(user))

    assert run.status == "completed"
    assert ids_of(received, "added") == Counter(new)
    assert ids_of(received, "deleted") == Counter(ids[:2])
    assert ids_of(received, "changed") == Counter(ids[10:14])
    assert [kw["sync_type"] for kind, kw in received if kind == "completed"] == ["incremental"]

    # Every task may run twice: replaying the same history changes and announces nothing.
    received.clear()
    from mailsync import gmail

    page = gmail.GmailClient(user.pk).history_page(before_history)
    sync.apply_history_page(user.pk, page.records)
    assert received == []


def test_a_failed_run_is_announced(connected_mailbox, emulator, received):
    user, mailbox = connected_mailbox(count=5)
    emulator.revoke_refresh_token(mailbox.refresh_token)
    emulator.config.token_lifetime_s = 0
    from accounts.models import GoogleToken

    GoogleToken.objects.filter(account__user=user).update(access_token="")
    run = sync.run_until_finished(sync.start_initial_sync(user))
    assert run.status == "failed"
    failures = [kw for kind, kw in received if kind == "failed"]
    assert [(f["run_id"], f["sync_type"]) for f in failures] == [(run.pk, "initial")]
    assert "sign in with Google again" in failures[0]["message"]
