"""A mailbox's message and label totals, maintained as the sync writes.

Every transaction that inserts, deletes or (un)fetches a user's messages calls
`lock(user_id)` first and `add(...)` with its exact deltas before it commits. The
lock serializes one mailbox's writers (never two mailboxes'), so a writer's view of
which rows exist is exact, and the totals equal a recount at every commit. Readers
(the status page, the progress of a run) read one row instead of counting a table.

Stored batches are the exception, because they are most of a sync's writes and one
mailbox's chains store side by side (issue 13: waiting for this lock took a fifth of
the workers' time). A batch takes the lock shared (`share`), which only the writers
above exclude, locks the message rows it writes (so its deltas are exact for them),
and adds its deltas to its chain's share (`add_to_share`, MailboxCountsShare), not to
the mailbox's row that every other batch would wait for. The totals are the row plus
the shares; `lock` folds the shares into the row, so the row never goes negative.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum

from .models import EmailMessage, Label, MailboxCounts, MailboxCountsShare


@dataclass(frozen=True)
class Totals:
    messages: int = 0
    fetched: int = 0
    unavailable: int = 0
    labels: int = 0


def lock(user_id: int) -> MailboxCounts:
    """The user's counts row, locked until the current transaction ends, with the
    chains' shares folded into it: no batch is storing meanwhile."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("counters.lock() must run inside transaction.atomic()")
    row = MailboxCounts.objects.select_for_update().filter(user_id=user_id).first()
    if row is None:  # the row exists once the mailbox has been written to
        MailboxCounts.objects.bulk_create([MailboxCounts(user_id=user_id)], ignore_conflicts=True)
        row = MailboxCounts.objects.select_for_update().get(user_id=user_id)
    shares = _unfolded_shares(user_id)
    if shares:
        for name, value in zip(("messages", "fetched", "unavailable"), shares, strict=True):
            # Never below zero (a positive column): drift is the health check's to repair.
            setattr(row, name, max(0, getattr(row, name) + value))
        row.save(update_fields=["messages", "fetched", "unavailable"])
        MailboxCountsShare.objects.filter(user_id=user_id).update(
            messages=0, fetched=0, unavailable=0
        )
    return row


def share(user_id: int) -> None:
    """Lock the user's counts row shared until the current transaction ends: writers
    that `lock` it wait, batches storing with `add_to_share` do not."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("counters.share() must run inside transaction.atomic()")
    if connection.vendor != "postgresql":  # elsewhere a transaction that writes is alone
        MailboxCounts.objects.bulk_create([MailboxCounts(user_id=user_id)], ignore_conflicts=True)
        return
    if not _lock_shared(user_id):  # the row exists once the mailbox has been written to
        MailboxCounts.objects.bulk_create([MailboxCounts(user_id=user_id)], ignore_conflicts=True)
        _lock_shared(user_id)


def _lock_shared(user_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {MailboxCounts._meta.db_table} WHERE user_id = %s FOR SHARE",  # noqa: S608
            [user_id],
        )
        return cursor.fetchone() is not None


def add_to_share(
    user_id: int, slot: int, *, messages: int = 0, fetched: int = 0, unavailable: int = 0
) -> None:
    """Apply deltas (any sign) to the share of the chain in `slot`, under `share`."""
    if not (messages or fetched or unavailable):
        return
    table = MailboxCountsShare._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (user_id, slot, messages, fetched, unavailable) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, slot) DO UPDATE SET "
            f"messages = {table}.messages + excluded.messages, "
            f"fetched = {table}.fetched + excluded.fetched, "
            f"unavailable = {table}.unavailable + excluded.unavailable",
            [user_id, slot, messages, fetched, unavailable],
        )


def _unfolded_shares(user_id: int) -> tuple[int, int, int] | None:
    """The sum of the user's shares (None if all are zero)."""
    found = MailboxCountsShare.objects.filter(user_id=user_id).aggregate(
        messages=Sum("messages"), fetched=Sum("fetched"), unavailable=Sum("unavailable")
    )
    sums = (found["messages"] or 0, found["fetched"] or 0, found["unavailable"] or 0)
    return sums if any(sums) else None


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
    """The totals as of the last commit: the row and the shares in one statement, so
    that a batch committed in between is counted in both or in neither."""
    counts, shares = MailboxCounts._meta.db_table, MailboxCountsShare._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.messages + COALESCE(s.messages, 0), c.fetched + COALESCE(s.fetched, 0), "  # noqa: S608
            "c.unavailable + COALESCE(s.unavailable, 0), c.labels "
            f"FROM {counts} c LEFT JOIN (SELECT SUM(messages) AS messages, "
            "SUM(fetched) AS fetched, SUM(unavailable) AS unavailable "
            f"FROM {shares} WHERE user_id = %s) s ON 1 = 1 WHERE c.user_id = %s",
            [user_id, user_id],
        )
        row = cursor.fetchone()
    if row is None:
        return Totals()
    return Totals(*(int(value) for value in row))


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
