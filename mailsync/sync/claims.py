"""Claiming the next batch of work: messages to fetch one by one, and whole threads.

A claim is a lease on rows (see `pending.lease_seconds`), taken atomically so any
number of chains on any number of machines share the work: PostgreSQL skips rows
another claimer has locked (SELECT ... FOR UPDATE SKIP LOCKED); elsewhere a
conditional update only takes rows still unclaimed (SQLite's IMMEDIATE transactions
serialize claimers anyway).

Quota: messages.get costs 5 units a message, threads.get 10 units a thread (every
message in it). A thread with three or more messages still to fetch is cheaper
whole; with two it costs the same, and whole also brings any member the listing has
not reached yet. A thread is taken whole only when none of it is in the mirror yet
(a fetched member would be downloaded twice: a new reply to an old conversation is
fetched alone) and no other chain holds one of its messages.

While a full listing is still running, a thread's older messages may not be listed
yet: messages less than LISTING_LAG_PAGES behind the listing wait, so a thread is
seen whole before it is fetched (the INBOX, listed first, never waits).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from ..models import EmailMessage, SyncProgress
from .pending import claimable_messages, lease_seconds, messages_to_fetch

# listing_order of a message = page index * this + position on the page.
LISTING_ORDER_PAGE_STRIDE = 1000
# How far (in pages of 500 ids) fetching stays behind a running listing.
LISTING_LAG_PAGES = 2


@dataclass(frozen=True)
class Claimed:
    pk: int
    gmail_id: str
    failures: int = 0
    thread_id: str = ""


@dataclass
class Work:
    """What one batch request fetches: messages alone, and threads whole."""

    messages: list[Claimed] = field(default_factory=list)
    threads: dict[str, list[Claimed]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.messages or self.threads)

    @property
    def parts(self) -> int:
        return len(self.messages) + len(self.threads)

    def pks(self) -> dict[str, int]:
        """Every claimed message: Gmail id -> row pk."""
        rows = [*self.messages, *(row for rows in self.threads.values() for row in rows)]
        return {row.gmail_id: row.pk for row in rows}

    @property
    def retries_only(self) -> bool:
        """Only messages that already failed alone (see batches._probe_id)."""
        return not self.threads and all(row.failures for row in self.messages)


def listing_cutoff(user_id: int) -> int | None:
    """The listing order below which messages may be fetched now (None: all may)."""
    listing = (
        SyncProgress.objects.filter(
            Q(sync_type=SyncProgress.SyncType.INITIAL) | Q(fell_back_to_full=True),
            user_id=user_id,
            status=SyncProgress.Status.IN_PROGRESS,
            listing_completed=False,
        )
        .values_list("inbox_listed", "inbox_pages", "pages_listed")
        .first()
    )
    if listing is None:
        return None
    inbox_listed, inbox_pages, pages_listed = listing
    if not inbox_listed:
        return None  # listing the INBOX: what is listed is the INBOX, fetched at once
    return max(inbox_pages, pages_listed - LISTING_LAG_PAGES) * LISTING_ORDER_PAGE_STRIDE


def claimable_now(user_id: int, now: dt.datetime):
    """Messages this user's chains may claim right now, in listing order."""
    rows = claimable_messages(now, user_id=user_id)
    cutoff = listing_cutoff(user_id)
    if cutoff is not None:
        rows = rows.filter(listing_order__lt=cutoff)
    return rows.order_by("listing_order", "pk")


def claim_work(user_id: int, parts: int, slot: int | None = None) -> Work:
    """Atomically claim up to `parts` parts of work (a message, or a whole thread)."""
    now = timezone.now()
    lease = now + dt.timedelta(seconds=lease_seconds())
    with transaction.atomic():
        candidates = claimable_now(user_id, now)
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        rows = _outside_held_threads(user_id, candidates, parts, now)
        if not rows:
            return Work()
        sizes = _threads_worth_fetching_whole(
            user_id, {row.thread_id for row in rows if row.thread_id and not row.failures}, now
        )
        threads = _lock_whole_threads(user_id, sizes, now)
        alone = [row for row in rows if row.thread_id not in threads]
        work = Work(messages=_take(user_id, alone, now, lease, slot))
        members = [row for rows in threads.values() for row in rows]
        if members:
            EmailMessage.objects.filter(pk__in=[row.pk for row in members]).update(
                claimed_until=lease, claim_slot=slot
            )
            work.threads = threads
        return work


def claim_messages(user_id: int, limit: int, slot: int | None = None) -> list[Claimed]:
    """Atomically claim up to `limit` messages, each to be fetched alone."""
    now = timezone.now()
    lease = now + dt.timedelta(seconds=lease_seconds())
    with transaction.atomic():
        candidates = claimable_now(user_id, now)
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        return _take(
            user_id, _outside_held_threads(user_id, candidates, limit, now), now, lease, slot
        )


def _outside_held_threads(user_id: int, candidates, limit: int, now: dt.datetime) -> list[Claimed]:
    """Up to `limit` candidates whose thread has no message a live chain holds.

    A chain fetching a thread whole also brings the members the listing had not
    reached when it claimed the thread; listed meanwhile, such a member must wait
    until that chain stores the thread (it is then found fetched), or it would be
    fetched twice. (Retry waits, which no chain holds, do not count.)"""
    rows = [
        Claimed(*row)
        for row in candidates.values_list("pk", "gmail_id", "fetch_failures", "thread_id")[
            : 2 * limit
        ]
    ]
    threads = {row.thread_id for row in rows if row.thread_id}
    held = (
        set(
            messages_to_fetch(
                user_id=user_id,
                thread_id__in=threads,
                claimed_until__gt=now,
                claim_slot__isnull=False,
            ).values_list("thread_id", flat=True)
        )
        if threads
        else set()
    )
    return [row for row in rows if row.thread_id not in held][:limit]


def _take(
    user_id: int, rows: list[Claimed], now: dt.datetime, lease: dt.datetime, slot: int | None
) -> list[Claimed]:
    """Claim these rows; returns those this claimer won (all, unless raced)."""
    if not rows:
        return []
    pks = [row.pk for row in rows]
    if connection.features.has_select_for_update_skip_locked:
        # The rows are locked (claim_work's SELECT ... FOR UPDATE SKIP LOCKED): by pk.
        # With the claimable conditions too, a planner without fresh statistics scanned
        # every row still to fetch (its partial index matches them) to find these.
        taken = EmailMessage.objects.filter(pk__in=pks)
    else:
        taken = claimable_messages(now, user_id=user_id).filter(pk__in=pks)
    if taken.update(claimed_until=lease, claim_slot=slot) == len(rows):
        return rows
    won = set(
        EmailMessage.objects.filter(pk__in=pks, claimed_until=lease).values_list("pk", flat=True)
    )
    return [row for row in rows if row.pk in won]


def _lock_whole_threads(
    user_id: int, sizes: dict[str, int], now: dt.datetime
) -> dict[str, list[Claimed]]:
    """Lock every message to fetch of these threads (thread id -> how many there are);
    a thread is kept only if all of them could be locked (PostgreSQL skips rows another
    claimer holds, so two claimers never take one thread, nor wait for each other)."""
    if not sizes:
        return {}
    if connection.vendor == "postgresql":
        # Which members are claimable is read, not filtered on: with those conditions
        # the planner took the partial index of every message still to fetch, for each
        # thread. The thread's fetched members are locked too, until this claim commits.
        members = [
            row[:4]
            for row in _per_thread(
                "SELECT m.id, m.gmail_id, m.fetch_failures, m.thread_id, "
                "m.internal_date IS NULL AND m.unavailable_since IS NULL "
                "AND (m.claimed_until IS NULL OR m.claimed_until < %(now)s) FROM {table} AS m "
                "WHERE m.user_id = %(user)s AND m.thread_id = t.thread_id FOR UPDATE SKIP LOCKED",
                {"user": user_id, "threads": list(sizes), "now": now},
            )
            if row[4]
        ]
    else:
        members = claimable_messages(now, user_id=user_id, thread_id__in=sizes).values_list(
            "pk", "gmail_id", "fetch_failures", "thread_id"
        )
    threads: dict[str, list[Claimed]] = {}
    for row in members:
        threads.setdefault(row[3], []).append(Claimed(*row))
    return {tid: rows for tid, rows in threads.items() if len(rows) == sizes[tid]}


def _threads_worth_fetching_whole(
    user_id: int, thread_ids: set[str], now: dt.datetime
) -> dict[str, int]:
    """Of these threads, those worth fetching whole, with their messages to fetch."""
    if not thread_ids:
        return {}
    if connection.vendor == "postgresql":
        stats = _per_thread(
            "SELECT t.thread_id, "
            "COUNT(*) FILTER (WHERE m.internal_date IS NULL AND m.unavailable_since IS NULL), "
            "COUNT(*) FILTER (WHERE m.internal_date IS NOT NULL), "
            "COUNT(*) FILTER (WHERE m.internal_date IS NULL AND m.claimed_until >= %(now)s) "
            "FROM {table} AS m WHERE m.user_id = %(user)s AND m.thread_id = t.thread_id",
            {"user": user_id, "threads": list(thread_ids), "now": now},
        )
    else:
        unfetched = Q(internal_date__isnull=True)
        stats = (
            EmailMessage.objects.filter(user_id=user_id, thread_id__in=thread_ids)
            .values("thread_id")
            .annotate(
                to_fetch=Count("pk", filter=unfetched & Q(unavailable_since__isnull=True)),
                fetched=Count("pk", filter=~unfetched),
                held=Count("pk", filter=unfetched & Q(claimed_until__gte=now)),
            )
            .values_list("thread_id", "to_fetch", "fetched", "held")
        )
    return {
        thread_id: to_fetch
        for thread_id, to_fetch, fetched, held in stats
        if to_fetch >= 2 and not fetched and not held
    }


def _per_thread(subquery: str, params: dict) -> list[tuple]:
    """PostgreSQL: run `subquery` once for each of `params["threads"]` (LATERAL, as
    `t.thread_id`), each on the (user, thread) index. As one query over `thread_id IN
    (...)`, a planner without fresh statistics took the user's every row and filtered
    them: 4.4 ms a claim at 13,000 rows, growing with the mailbox, against 0.3 ms
    (issue 13)."""
    table = connection.ops.quote_name(EmailMessage._meta.db_table)
    sql = (
        "SELECT lateral_rows.* FROM unnest(%(threads)s::varchar[]) AS t(thread_id) "  # noqa: S608
        f"CROSS JOIN LATERAL ({subquery.format(table=table)}) AS lateral_rows"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
