"""The initial (full) sync: profile and labels, then the listing page by page."""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import counters, gmail, signals
from ..models import EmailMessage, SyncProgress
from .batches import fill_batch_slots
from .claims import LISTING_ORDER_PAGE_STRIDE
from .completion import complete_initial_sync_if_done, refresh_counts
from .labels import import_labels, label_pks_for, set_labels
from .pending import retry_failed_messages
from .resync import next_label_scan
from .runs import RELISTING_TYPES, clear_failure_notes
from .steps import Step, start_now
from .writes import insert_listed

User = get_user_model()
Status = SyncProgress.Status

# Rows a listing did not show, checked with Gmail per step (one batch request).
VERIFY_CHUNK = 100


def begin_initial_sync(user_id: int, run_id: int) -> list[Step]:
    """Stage 1: read the profile (its historyId is where incremental syncs will start)
    and import the labels, so messages find their labels when they arrive."""
    run = SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).first()
    if run is None:
        return []
    client = gmail.GmailClient(user_id)
    profile = client.get_profile()
    import_labels(user_id, client)
    User.objects.filter(pk=user_id).update(gmail_auth_error="")
    # A new full sync gives messages that failed before a fresh set of attempts.
    retry_failed_messages(user_id)
    # An earlier attempt's history id is older, so replays more: keep it.
    SyncProgress.objects.filter(pk=run_id, start_history_id="").update(
        start_history_id=profile.history_id
    )
    SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).update(
        status=Status.IN_PROGRESS,
        num_total=max(profile.messages_total, run.num_total),
        updated_at=timezone.now(),
    )
    return [Step("list_page", user_id, (run_id,))]


def list_page(user_id: int, run_id: int) -> list[Step]:
    """Stage 2: list pages of message ids into unfetched rows, saving the page token
    after each, for up to MAILSYNC_LIST_TASK_SECONDS; then a new task goes on. A first
    listing lists the INBOX first, then the whole mailbox (see claims.py).

    The batch chains start (start_now) as soon as a page gives them work, while the
    listing goes on: one task per page waited for the broker and for a free worker
    (the chains held them all), and fetching caught up with the listing and waited
    for it (issue 13)."""
    budget = min(settings.MAILSYNC_LIST_TASK_SECONDS, settings.MAILSYNC_TASK_MAX_SECONDS / 4)
    deadline = time.monotonic() + budget
    client = gmail.GmailClient(user_id)
    while True:
        run = _list_one_page(user_id, run_id, client)
        if run is None:
            return fill_batch_slots(user_id)
        # Inline (no task to start them from), the chains run after this step.
        chains = start_now(fill_batch_slots(user_id))
        if run.listing_completed:
            return [*chains, Step("verify_unlisted", user_id, (run_id,))]
        if chains or time.monotonic() >= deadline:
            return [*chains, Step("list_page", user_id, (run_id,))]


def _list_one_page(user_id: int, run_id: int, client: gmail.GmailClient) -> SyncProgress | None:
    """List the run's next page and store it; the run as it is now, or None if it
    ended, its listing did, or another delivery of this step stored the page."""
    run = SyncProgress.objects.filter(pk=run_id, status=Status.IN_PROGRESS).first()
    if run is None or run.listing_completed:
        return None
    token, inbox_phase = run.next_page_token, not run.inbox_listed
    page = client.list_message_ids(
        page_token=token,
        include_spam_trash=settings.MAILSYNC_INCLUDE_SPAM_TRASH and not inbox_phase,
        label_id="INBOX" if inbox_phase else None,
    )
    with transaction.atomic():
        # Locks in one order everywhere (the mailbox's counters, then its runs), as
        # storing a batch takes them: two orders deadlock under load.
        counters.lock(user_id)
        run = SyncProgress.objects.select_for_update().get(pk=run_id)
        if (
            run.next_page_token != token
            or run.inbox_listed != (not inbox_phase)
            or run.listing_completed
            or not run.is_active
        ):
            return None  # a duplicate delivery of this step already stored this page
        base = run.pages_listed * LISTING_ORDER_PAGE_STRIDE
        ids = [message_id for message_id, _ in page.ids]
        known = set(
            EmailMessage.objects.filter(user_id=user_id, gmail_id__in=ids).values_list(
                "gmail_id", flat=True
            )
        )
        new = {
            message_id: (message_id, thread_id, base + position)
            for position, (message_id, thread_id) in enumerate(page.ids)
            if message_id not in known
        }
        insert_listed(user_id, run_id, list(new.values()))
        # Rows we had before (a resync) are marked as still present in Gmail.
        EmailMessage.objects.filter(user_id=user_id, gmail_id__in=known).exclude(
            listed_by_run=run_id
        ).update(listed_by_run=run_id)
        counters.add(user_id, messages=len(new))
        run.next_page_token = page.next_page_token
        run.pages_listed += 1
        run.num_added += len(new)
        if inbox_phase and not page.next_page_token:
            # The INBOX is listed (and being fetched): now the whole mailbox.
            run.inbox_listed, run.inbox_pages = True, run.pages_listed
        else:
            run.listing_completed = not page.next_page_token
        refresh_counts(run)
        run.save()
    clear_failure_notes(user_id)
    return run


def verify_unlisted(user_id: int, run_id: int) -> list[Step]:
    """Stage 3: rows the listing did not show are asked for by id (format=minimal, in
    one batch request per step) before anything is deleted: Gmail's listing can skip
    a message while mail arrives or leaves, so absence alone proves nothing. A 404 is
    deleted; a message that is there is kept (its labels refreshed if fetched)."""
    run = SyncProgress.objects.filter(pk=run_id, status=Status.IN_PROGRESS).first()
    if run is None or not run.listing_completed:
        return []
    if run.unlisted_verified:
        return after_listing(user_id, run)
    unlisted = list(
        EmailMessage.objects.filter(user_id=user_id)
        .filter(Q(listed_by_run__isnull=True) | ~Q(listed_by_run=run_id))
        .order_by("pk")
        .values_list("pk", "gmail_id")[:VERIFY_CHUNK]
    )
    if not unlisted:
        SyncProgress.objects.filter(pk=run_id).update(unlisted_verified=True)
        run.unlisted_verified = True
        return after_listing(user_id, run)
    pks = dict((gmail_id, pk) for pk, gmail_id in unlisted)
    result = gmail.GmailClient(user_id).get_messages(list(pks), fmt="minimal")
    failure = next(iter(result.failed.values()), None)
    if isinstance(failure, gmail.TransientError | gmail.RateLimited) and not (
        result.found or result.gone
    ):
        raise failure  # Gmail fails as a whole: the runner waits and tries again
    with transaction.atomic():
        counters.lock(user_id)
        gone = EmailMessage.objects.filter(pk__in=[pks[g] for g in result.gone])
        lost = counters.states_of(user_id, Q(pk__in=[pks[g] for g in result.gone]))
        signals.deleted(
            user_id, gone.filter(internal_date__isnull=False).values_list("gmail_id", flat=True)
        )
        gone.delete()
        counters.add(
            user_id, messages=-lost.messages, fetched=-lost.fetched, unavailable=-lost.unavailable
        )
        # Present (or not answered clearly): kept, and not asked for again in this run.
        kept = [pk for gmail_id, pk in pks.items() if gmail_id not in result.gone]
        EmailMessage.objects.filter(pk__in=kept).update(listed_by_run=run_id)
        _refresh_labels(user_id, pks, result.found)
        SyncProgress.objects.filter(pk=run_id).update(
            num_deleted=F("num_deleted") + lost.messages, updated_at=timezone.now()
        )
    return [Step("verify_unlisted", user_id, (run_id,))]


def _refresh_labels(user_id: int, pks: dict[str, int], found: dict[str, dict]) -> None:
    fetched = set(
        EmailMessage.objects.filter(
            pk__in=[pks[g] for g in found], internal_date__isnull=False
        ).values_list("pk", flat=True)
    )
    labels = {
        pks[g]: list(data.get("labelIds") or []) for g, data in found.items() if pks[g] in fetched
    }
    if labels:
        relabelled = set_labels(
            labels, label_pks_for(user_id, {lid for ids in labels.values() for lid in ids})
        )
        signals.changed(user_id, (g for g in found if pks[g] in relabelled))


def after_listing(user_id: int, run: SyncProgress) -> list[Step]:
    """What follows a complete, verified listing: the label rescan of a resync, or the
    completion of the initial sync once every message is fetched."""
    steps = fill_batch_slots(user_id)
    if run.sync_type in RELISTING_TYPES:
        steps.extend(next_label_scan(user_id, run.pk, after=""))
    else:
        complete_initial_sync_if_done(user_id)
    return steps
