"""Threads fetched whole (threads.get, 10 units) beside messages fetched alone
(messages.get, 5 units) in the same batch requests: the quota optimum, and an exact
mirror with every message fetched once. Inline runs over real HTTP."""

from __future__ import annotations

from collections import Counter

import pytest

from mailsync import counters, sync
from mailsync.models import EmailMessage
from tests.gmail_fixtures import assert_exact_mirror, list_everything

pytestmark = pytest.mark.django_db

MESSAGES_GET = "gmail.users.messages.get"
THREADS_GET = "gmail.users.threads.get"


def optimum_units(snapshot: dict) -> int:
    """Sum over threads of min(10, 5 * n): threads.get or messages.get, whichever is less."""
    sizes = Counter(message["threadId"] for message in snapshot["messages"].values())
    return sum(min(10, 5 * n) for n in sizes.values())


def fetch_units(stats: dict) -> int:
    units = stats["units_by_method"]
    return units.get(MESSAGES_GET, 0) + units.get(THREADS_GET, 0)


def reply_to(emulator, email: str, gmail_id: str, labels=("INBOX",)) -> str:
    """Insert a reply to a message: Gmail puts it in the message's thread."""
    mailbox = emulator.mailbox(email)
    reference = f"<gen.{mailbox.seed}.{mailbox.num_of(gmail_id)}@emulator.invalid>"
    raw = (
        f"From: Bob <bob@example.com>\r\nTo: {email}\r\nSubject: Re: the thread\r\n"
        f"In-Reply-To: {reference}\r\nReferences: {reference}\r\n"
        f"Message-ID: <reply.{gmail_id}@example.com>\r\n\r\nA late reply.\r\n"
    ).encode()
    return emulator.insert_message(email, list(labels), raw=raw)


def test_threads_are_fetched_whole_at_the_quota_optimum(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=1200)
    snapshot = emulator.snapshot(user.email)
    emulator.reset_stats()

    run = sync.run_until_finished(sync.start_initial_sync(user))

    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, snapshot)
    stats = emulator.stats()
    assert set(stats["fetches"].values()) == {1}
    assert len(stats["fetches"]) == 1200
    assert stats["by_method"][THREADS_GET] > 0
    assert stats["by_method"][MESSAGES_GET] > 0
    assert fetch_units(stats) <= 1.03 * optimum_units(snapshot)
    assert counters.read(user.pk) == counters.recount(user.pk)


def test_a_thread_that_grew_after_the_listing_is_stored_whole_and_fetched_once(
    connected_mailbox, emulator
):
    user, _ = connected_mailbox(count=300)
    run, steps = list_everything(user)
    threads = Counter(EmailMessage.objects.filter(user=user).values_list("thread_id", flat=True))
    thread_id = next(t for t, n in threads.most_common() if n >= 3)
    member = EmailMessage.objects.filter(user=user, thread_id=thread_id).first().gmail_id
    late = reply_to(emulator, user.email, member)
    assert emulator.snapshot(user.email)["messages"][late]["threadId"] == thread_id

    sync.run_inline(steps)
    run = sync.run_until_finished(run)

    assert run.status == "completed", run.error_message
    row = EmailMessage.objects.get(user=user, gmail_id=late)
    assert row.internal_date is not None  # came with its thread, never listed
    assert emulator.stats()["fetches"][late] == 1
    # The next incremental sync replays its arrival: nothing is fetched again.
    incremental = sync.run_until_finished(sync.start_incremental_sync(user))
    assert incremental.status == "completed", incremental.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert set(emulator.stats()["fetches"].values()) == {1}
    assert counters.read(user.pk) == counters.recount(user.pk)


@pytest.mark.parametrize("include_spam_trash", [True, False])
def test_spam_and_trash_members_of_a_thread(
    connected_mailbox, emulator, settings, include_spam_trash
):
    settings.MAILSYNC_INCLUDE_SPAM_TRASH = include_spam_trash
    user, _ = connected_mailbox(count=300)
    snapshot = emulator.snapshot(user.email)
    threads = Counter(m["threadId"] for m in snapshot["messages"].values())
    thread_id = next(t for t, n in threads.most_common() if n >= 3)
    members = sorted(m for m, data in snapshot["messages"].items() if data["threadId"] == thread_id)
    emulator.trash_message(user.email, members[0])

    run = sync.run_until_finished(sync.start_initial_sync(user))

    assert run.status == "completed", run.error_message
    snapshot = emulator.snapshot(user.email)
    if not include_spam_trash:  # the mirror leaves spam and trash out, thread or not
        snapshot["messages"] = {
            m: data
            for m, data in snapshot["messages"].items()
            if not {"SPAM", "TRASH"} & set(data["labelIds"])
        }
    assert_exact_mirror(user, snapshot)
    assert (
        EmailMessage.objects.filter(user=user, gmail_id=members[0]).exists() is include_spam_trash
    )
    assert max(emulator.stats()["fetches"].values()) == 1
    assert counters.read(user.pk) == counters.recount(user.pk)
