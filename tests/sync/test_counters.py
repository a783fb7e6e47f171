"""The mailbox totals while batches store side by side (mailsync/counters.py)."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, connection, transaction

from mailsync import counters, sync
from mailsync.counters import Totals
from mailsync.models import MailboxCountsShare
from tests.gmail_fixtures import assert_exact_mirror, list_everything

only_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite runs one writing transaction at a time"
)


@pytest.mark.django_db
def test_the_totals_are_the_row_and_the_shares_until_a_writer_folds_them(user_factory):
    user = user_factory()
    with transaction.atomic():
        counters.lock(user.pk)
        counters.add(user.pk, messages=10, fetched=4)
    with transaction.atomic():
        counters.share(user.pk)
        counters.add_to_share(user.pk, 1, messages=3, fetched=2)
        counters.add_to_share(user.pk, 2, messages=-1, fetched=1, unavailable=1)
        counters.add_to_share(user.pk, 1, fetched=1)

    assert counters.read(user.pk) == Totals(messages=12, fetched=8, unavailable=1)
    with transaction.atomic():
        row = counters.lock(user.pk)
    assert (row.messages, row.fetched, row.unavailable) == (12, 8, 1)
    assert set(MailboxCountsShare.objects.values_list("messages", "fetched", "unavailable")) == {
        (0, 0, 0)
    }
    assert counters.read(user.pk) == Totals(messages=12, fetched=8, unavailable=1)


def _hold_share(user_id: int, held: threading.Event, release: threading.Event) -> None:
    """Another chain's batch, storing: the mailbox's lock held shared until released."""
    try:
        with transaction.atomic():
            counters.share(user_id)
            held.set()
            release.wait(30)
    finally:
        connection.close()


def _lock_within(user_id: int, timeout: str) -> None:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = %s", [timeout])
        counters.lock(user_id)


@only_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_batch_stores_while_another_chain_stores_and_writers_wait(connected_mailbox, emulator):
    """A batch does not wait for the other chains' batches (issue 13: a fifth of the
    workers' time went to waiting for the mailbox's lock); a writer that locks the
    mailbox (a listing page, a history page) waits for them, so its view is exact."""
    user, _ = connected_mailbox(count=150)
    run, steps = list_everything(user)
    held, release = threading.Event(), threading.Event()
    other_chain = threading.Thread(target=_hold_share, args=(user.pk, held, release))
    other_chain.start()
    try:
        assert held.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")
        first_chain = next(step for step in steps if step.stage == "fetch_batch")
        # It stores its batches: the other chain's share is no obstacle.
        follow = sync.run_step(first_chain)
        assert counters.read(user.pk).fetched > 0
        with pytest.raises(OperationalError, match="lock timeout"):
            _lock_within(user.pk, "200ms")
    finally:
        release.set()
        other_chain.join(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")

    sync.run_inline([*follow, *(step for step in steps if step is not first_chain)])
    run.refresh_from_db()
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert counters.read(user.pk) == counters.recount(user.pk)
    assert set(emulator.stats()["fetches"].values()) == {1}
