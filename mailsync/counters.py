"""A mailbox's message and label totals, maintained as the sync writes.

Every transaction that inserts, deletes or (un)fetches a user's messages calls
`lock(user_id)` first and `add(...)` with its exact deltas before it commits. The
lock serializes one mailbox's writers (never two mailboxes'), so a writer's view of
which rows exist is exact, and the totals equal a recount at every commit. Readers
(the status page, the progress of a run) read one row instead of counting a table.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, F, Q

from .models import EmailMessage, Label, MailboxCounts


@dataclass(frozen=True)
class Totals:
    messages: int = 0
    fetched: int = 0
    unavailable: int = 0
    labels: int = 0


def lock(user_id: int) -> MailboxCounts:
    """The user's counts row, locked until the current transaction ends."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("counters.lock() must run inside transaction.atomic()")
    row = MailboxCounts.objects.select_for_update().filter(user_id=user_id).first()
    if row is not None:  # the row exists once the mailbox has been written to
        return row
    MailboxCounts.objects.bulk_create([MailboxCounts(user_id=user_id)], ignore_conflicts=True)
    return MailboxCounts.objects.select_for_update().get(user_id=user_id)


def add(
    user_id: int, *, messages: int = 0, fetched: int = 0, unavailable: int = 0, labels: int = 0
) -> None:
    """Apply deltas (any sign) to the user's totals; a no-op when all are zero."""
    deltas = {
        name: F(name) + value
        for name, value in (
            ("messages", messages),
            ("fetched", fetched),
            ("unavailable", unavailable),
            ("labels", labels),
        )
        if value
    }
    if deltas:
        MailboxCounts.objects.filter(user_id=user_id).update(**deltas)


def count_labels(user_id: int) -> None:
    """Labels are few (Gmail allows 10,000): after a label write, count them again."""
    lock(user_id)
    MailboxCounts.objects.filter(user_id=user_id).update(
        labels=Label.objects.filter(user_id=user_id).count()
    )


def read(user_id: int) -> Totals:
    row = MailboxCounts.objects.filter(user_id=user_id).first()
    if row is None:
        return Totals()
    return Totals(row.messages, row.fetched, row.unavailable, row.labels)


def states_of(user_id: int, message_filter: Q) -> Totals:
    """How many of the user's messages matching `message_filter` are in each state:
    what deleting them takes off the totals. Bounded by the filter (a page, a batch)."""
    found = EmailMessage.objects.filter(message_filter, user_id=user_id).aggregate(
        messages=Count("pk"),
        fetched=Count("pk", filter=Q(internal_date__isnull=False)),
        unavailable=Count(
            "pk", filter=Q(internal_date__isnull=True, unavailable_since__isnull=False)
        ),
    )
    return Totals(found["messages"], found["fetched"], found["unavailable"])


def recount(user_id: int) -> Totals:
    """Count the rows (one mailbox's, bounded by it): for tests, and for the health
    check, which repairs any drift."""
    found = states_of(user_id, Q())
    labels = Label.objects.filter(user_id=user_id).count()
    return Totals(found.messages, found.fetched, found.unavailable, labels)


def repair(user_id: int) -> bool:
    """Set the totals to a recount; True if they had drifted."""
    with transaction.atomic():
        row = lock(user_id)
        actual = recount(user_id)
        current = Totals(row.messages, row.fetched, row.unavailable, row.labels)
        if current == actual:
            return False
        MailboxCounts.objects.filter(user_id=user_id).update(
            messages=actual.messages,
            fetched=actual.fetched,
            unavailable=actual.unavailable,
            labels=actual.labels,
        )
        return True
