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
    members = claimable_messages(now, user_id=user_id, thread_id__in=sizes)
    if connection.features.has_select_for_update_skip_locked:
        members = members.select_for_update(skip_locked=True)
    threads: dict[str, list[Claimed]] = {}
    for row in members.values_list("pk", "gmail_id", "fetch_failures", "thread_id"):
        threads.setdefault(row[3], []).append(Claimed(*row))
    return {tid: rows for tid, rows in threads.items() if len(rows) == sizes[tid]}


def _threads_worth_fetching_whole(
    user_id: int, thread_ids: set[str], now: dt.datetime
) -> dict[str, int]:
    """Of these threads, those worth fetching whole, with their messages to fetch."""
    if not thread_ids:
        return {}
    unfetched = Q(internal_date__isnull=True)
    stats = (
        EmailMessage.objects.filter(user_id=user_id, thread_id__in=thread_ids)
        .values("thread_id")
        .annotate(
            to_fetch=Count("pk", filter=unfetched & Q(unavailable_since__isnull=True)),
            fetched=Count("pk", filter=~unfetched),
            held=Count("pk", filter=unfetched & Q(claimed_until__gte=now)),
        )
    )
    return {
        row["thread_id"]: row["to_fetch"]
        for row in stats
        if row["to_fetch"] >= 2 and not row["fetched"] and not row["held"]
    }
